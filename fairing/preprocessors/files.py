"""Collect the files of a directory into a build-context file map.

Honours `.fairingignore` and `.gitignore` (gitignore semantics via `pathspec`, nested files apply
to their own directory), always leaves out VCS data, caches and virtualenvs, refuses symlinks that
leave the root and files that are not regular or not readable: all checked here, up front, so a
builder never finds a surprise halfway through writing a layer.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import BuildError, ConfigError

IGNORE_FILES = (".gitignore", ".fairingignore")  # later files win, so .fairingignore can re-include
# Never useful in an image and often huge; users ship these by accident.
ALWAYS_EXCLUDED_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".ipynb_checkpoints", ".venv", ".tox",
                                  ".mypy_cache", ".pytest_cache", ".ruff_cache"})
ALWAYS_EXCLUDED_SUFFIXES = (".pyc", ".pyo")


class _Rules:
    """The ignore specs in force for one directory: (dir prefix, spec) pairs, outermost first."""

    def __init__(self, specs=()):
        self.specs = tuple(specs)

    def child(self, dir_abs: Path, rel_dir: str) -> "_Rules":
        import pathspec

        new = []
        for name in IGNORE_FILES:
            f = dir_abs / name
            if f.is_file():
                try:
                    lines = f.read_text(encoding="utf-8").splitlines()
                except (OSError, UnicodeDecodeError) as e:
                    raise ConfigError(f"cannot read {f}: {e}", hint="fix or remove the ignore file") from None
                new.append((rel_dir, pathspec.GitIgnoreSpec.from_lines(lines)))
        return _Rules(self.specs + tuple(new)) if new else self

    def ignored(self, rel: str, is_dir: bool) -> bool:
        # gitignore semantics: the last matching pattern across all applicable files decides.
        verdict = False
        for prefix, spec in self.specs:
            sub = rel[len(prefix) + 1:] if prefix else rel
            if is_dir:
                sub += "/"
            res = spec.check_file(sub)
            if res.include is not None:
                verdict = res.include  # include=True means "matched an ignore pattern"
        return verdict


def _is_venv(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file() or (path / "conda-meta").is_dir()


def collect(root: str | os.PathLike, *, prefix: str = "") -> dict[str, Path]:
    """Map of `prefix + relative POSIX path` -> absolute Path for every file to ship under `root`.

    Symlinks are followed when they stay inside `root` (shipped as the file they point to) and
    refused when they leave it: copying /etc or a home directory into an image is never intended.
    """
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"{root} does not exist", hint="check the path")
    root_real = root.resolve()
    files: dict[str, Path] = {}
    visited: set[Path] = set()

    def walk(dir_abs: Path, rel_dir: str, rules: _Rules) -> None:
        real = dir_abs.resolve()
        if real in visited:  # a symlink loop inside the root
            return
        visited.add(real)
        rules = rules.child(dir_abs, rel_dir)
        try:
            entries = sorted(os.scandir(dir_abs), key=lambda e: e.name)
        except OSError as e:
            raise BuildError(f"cannot list directory {dir_abs}: {e.strerror}", hint=_ignore_hint(rel_dir)) from None
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            path = Path(entry.path)
            if entry.is_symlink():
                target = _check_symlink(path, rel, root_real)
                is_dir = target.is_dir()
            else:
                is_dir = entry.is_dir(follow_symlinks=False)
            if is_dir:
                if entry.name in ALWAYS_EXCLUDED_DIRS or _is_venv(path) or rules.ignored(rel, True):
                    continue
                walk(path, rel, rules)
                continue
            if entry.name.endswith(ALWAYS_EXCLUDED_SUFFIXES) or rules.ignored(rel, False):
                continue
            _check_readable(path, rel)
            files[prefix + rel] = path.absolute()

    if root.is_dir():
        walk(root, "", _Rules())
    else:
        _check_readable(root, root.name)
        files[prefix + root.name] = root.absolute()
    return files


def _check_symlink(path: Path, rel: str, root_real: Path) -> Path:
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise BuildError(
            f"{rel} is a broken symlink (-> {os.readlink(path)})", hint=f"remove it or add {rel!r} to .fairingignore"
        ) from None
    if target != root_real and root_real not in target.parents:
        raise BuildError(
            f"{rel} is a symlink to {target}, outside the build context {root_real}",
            hint=f"copy the file into the context, or add {rel!r} to .fairingignore",
        )
    return target


def _check_readable(path: Path, rel: str) -> None:
    try:
        st = path.stat()
    except OSError as e:
        raise BuildError(f"cannot read {rel}: {e.strerror}", hint=_ignore_hint(rel)) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        raise BuildError(f"{rel} is {kind}, not a regular file", hint=_ignore_hint(rel))
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise BuildError(f"cannot read {rel}: {e.strerror}", hint=_ignore_hint(rel)) from None


def _ignore_hint(rel: str) -> str:
    return f"fix its permissions, or add {rel!r} to .fairingignore"
