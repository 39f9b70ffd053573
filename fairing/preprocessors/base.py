"""What every preprocessor shares: options, requirements, extra files and the context-size guard.

A preprocessor turns one entry (a path, a notebook, a function) into a BuildContext. Subclasses
implement `prepare(entry, **kw)` and finish with `self._context(...)`, which applies the shared
options so all four behave the same way.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping, Sequence

from .. import requirements as reqs_mod, settings
from ..context import BuildContext, ServeSpec, Source
from ..errors import BuildError, ConfigError
from .files import collect

DEFAULT_MAX_CONTEXT_BYTES = 64 * 1024 * 1024
MAX_CONTEXT_ENV = "FAIRING_MAX_CONTEXT_BYTES"
PYTHON = "python3"  # what every Python image has (Debian, python:*-slim, venvs); plain `python` is missing on Debian
RUNTIME_DIR = ".fairing"  # where generated shims and pickles go inside the context


class Preprocessor:
    """Base class. Options common to every kind:

    requirements: list of requirement strings, or a path to requirements.txt / pyproject.toml.
    include: extra files or directories to ship next to the entry (same ignore rules), each placed
        at its path relative to the entry's directory (or its name, if outside it).
    max_context_bytes: refuse contexts bigger than this (default env FAIRING_MAX_CONTEXT_BYTES or
        64 MiB): `.git` folders and datasets shipped by accident make slow builds and huge images.
    """

    kind = "base"

    def __init__(
        self,
        *,
        requirements: reqs_mod.RequirementsSpec = None,
        include: Sequence[str | os.PathLike] = (),
        max_context_bytes: int | None = None,
    ):
        self.requirements = requirements
        self.include = tuple(include)
        self.max_context_bytes = max_context_bytes

    def prepare(self, entry, **kw) -> BuildContext:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- helpers for subclasses -------------------------------------------------------------------

    def limit(self) -> int:
        if self.max_context_bytes is not None:
            return int(self.max_context_bytes)
        limit = settings.max_context_bytes()
        return DEFAULT_MAX_CONTEXT_BYTES if limit is None else limit

    def resolve_requirements(self, base_dir: Path | None, auto: Path | None = None) -> tuple[str, ...]:
        """The user's requirements; when none were given, `auto` (a requirements.txt found in the
        context directory) if it exists."""
        if self.requirements is None and auto is not None and auto.is_file():
            return reqs_mod.resolve(auto)
        return reqs_mod.resolve(self.requirements, base_dir)

    def included_files(self, base_dir: Path) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for item in self.include:
            p = Path(item)
            p = p if p.is_absolute() else base_dir / p
            if not p.exists():
                raise ConfigError(f"included path {item} does not exist", hint="check the `include` list")
            # Normalise '..' first (relative_to is lexical): 'proj/../x' is outside and ships as 'x'.
            p = Path(os.path.normpath(p.absolute()))
            try:
                rel = p.relative_to(os.path.normpath(base_dir.absolute())).as_posix()
            except ValueError:
                rel = p.name
            if p.is_dir():
                files.update(collect(p, prefix="" if rel == "." else rel + "/"))
            else:
                files[rel] = p.absolute()
        return files

    def _context(
        self,
        files: Mapping[str, Source],
        entrypoint: Sequence[str],
        *,
        requirements: Iterable[str] = (),
        python: str | None = None,
        env: Mapping[str, str] | None = None,
        outputs: Mapping[str, str] | None = None,
        serve: ServeSpec | None = None,
    ) -> BuildContext:
        files = {_check_dst(k): v for k, v in sorted(files.items())}
        check_size(files, self.limit())
        return BuildContext(
            files=files,
            entrypoint=tuple(entrypoint),
            requirements=tuple(requirements),
            python=python,
            env=dict(env or {}),
            kind=self.kind,
            outputs=dict(outputs or {}),
            serve=serve,
        )


def host_python() -> str:
    return "%d.%d" % sys.version_info[:2]


def _check_dst(dst: str) -> str:
    p = PurePosixPath(dst)
    if p.is_absolute() or ".." in p.parts or not dst:
        raise ConfigError(f"context path {dst!r} must be relative and inside the context", hint="report this as a bug")
    return p.as_posix()


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _size(src: Source) -> int:
    return len(src) if isinstance(src, bytes) else Path(src).stat().st_size


def check_size(files: Mapping[str, Source], limit: int) -> int:
    """Refuse a context over `limit` bytes, naming the biggest top-level paths (a folder's size is the
    sum of its files), which is where an accidental dataset or .git copy shows up."""
    sizes = {dst: _size(src) for dst, src in files.items()}
    total = sum(sizes.values())
    if total <= limit:
        return total
    groups: dict[str, int] = {}
    for dst, n in sizes.items():
        head, sep, _ = dst.partition("/")
        key = head + "/" if sep else head
        groups[key] = groups.get(key, 0) + n
    if len(groups) == 1:  # one folder holds everything: name its biggest files instead
        groups = sizes
    biggest = sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    names = ", ".join(f"{k} ({size_text(v)})" for k, v in biggest)
    raise BuildError(
        f"build context is {size_text(total)}, over the {size_text(limit)} limit; biggest: {names}",
        hint=f"add them to .fairingignore, or raise the limit with {MAX_CONTEXT_ENV}",
    )
