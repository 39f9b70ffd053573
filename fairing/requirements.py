"""Requirements for the image: an explicit list, a requirements.txt, or pyproject.toml dependencies.

Kept exactly as the user wrote them (pins, extras, markers) and in their order. The only change is
dropping exact duplicate lines (they arise from `-r` includes of a shared base file); pip would accept
them anyway, so removing them only makes the builder's layer key stable.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Sequence, Union

from .errors import ConfigError

RequirementsSpec = Union[None, str, os.PathLike, Sequence[str]]

# "pkg # comment" -> "pkg"; a '#' glued to text (a URL fragment like #egg=) is not a comment.
_COMMENT = re.compile(r"(^|\s+)#.*$")


def resolve(spec: RequirementsSpec, base_dir: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Turn a requirements spec into a tuple of requirement strings.

    `spec` is None (nothing), a list of requirement strings, or a path to a requirements file
    (`*.txt`) or a `pyproject.toml`. A relative path is taken relative to `base_dir` (default: cwd).
    """
    if spec is None:
        return ()
    if isinstance(spec, (str, os.PathLike)) and _looks_like_path(spec):
        path = Path(base_dir or ".") / Path(spec)
        if path.name == "pyproject.toml":
            return _dedup(from_pyproject(path))
        return _dedup(from_file(path))
    if isinstance(spec, str):
        raise ConfigError(
            f"requirements {spec!r} is neither a list nor an existing file",
            hint="pass a list like ['numpy==1.26.4'] or a path to requirements.txt / pyproject.toml",
        )
    reqs = []
    for item in spec:
        if not isinstance(item, str):
            raise ConfigError(f"requirement {item!r} is not a string", hint="pass requirement strings like 'numpy==1.26.4'")
        line = item.strip()
        if line:
            _validate(line, where=f"requirement {line!r}")
            reqs.append(line)
    return _dedup(reqs)


def _looks_like_path(spec) -> bool:
    if isinstance(spec, os.PathLike):
        return True
    return spec.endswith((".txt", ".toml", ".in")) or os.sep in spec or "/" in spec


def from_file(path: str | os.PathLike, _seen: frozenset = frozenset()) -> list[str]:
    """Parse a pip requirements file: comments, blank lines, `\\` continuations and `-r` includes
    (relative to the including file). Other pip options are refused: they would either be ignored
    silently or, for index URLs, carry credentials into the image."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"requirements file {path} does not exist", hint="check the path, or pass the requirements as a list")
    real = path.resolve()
    if real in _seen:
        raise ConfigError(f"requirements file {path} includes itself through -r", hint="remove the circular -r line")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read requirements file {path}: {e}", hint="check the file's permissions and encoding") from None
    reqs: list[str] = []
    for lineno, line in _logical_lines(text):
        where = f"{path}:{lineno}"
        m = re.match(r"^(-r|--requirement)(?:\s+|=)?(.+)$", line)
        if m:
            reqs.extend(from_file(path.parent / m.group(2).strip(), _seen | {real}))
            continue
        if line.startswith("-"):
            raise ConfigError(
                f"{where}: pip option {line.split()[0]!r} is not supported in fairing requirements",
                hint="list plain requirements (name==version, name @ url); configure package indexes in the builder, "
                "not in the image",
            )
        _validate(line, where=where)
        reqs.append(line)
    return reqs


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        if not buf:
            start = n
        if raw.endswith("\\"):
            buf += raw[:-1]
            continue
        line = _COMMENT.sub("", buf + raw).strip()
        buf = ""
        if line:
            yield start, line
    if buf.strip():
        yield start, _COMMENT.sub("", buf).strip()


def from_pyproject(path: str | os.PathLike) -> list[str]:
    """`[project].dependencies` of a pyproject.toml (PEP 621)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pyproject file {path} does not exist", hint="check the path")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}", hint="fix the file") from None
    project = data.get("project")
    if not isinstance(project, dict):
        raise ConfigError(f"{path} has no [project] table", hint="declare [project].dependencies (PEP 621), or pass a requirements.txt")
    if "dependencies" in (project.get("dynamic") or []):
        raise ConfigError(
            f"{path} declares its dependencies as dynamic", hint="pass a requirements.txt or an explicit list instead"
        )
    deps = project.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ConfigError(f"{path}: [project].dependencies must be a list of strings", hint="fix the file")
    for d in deps:
        _validate(d, where=f"{path} [project].dependencies")
    return [d.strip() for d in deps]


def _validate(line: str, where: str) -> None:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        Requirement(line)
    except InvalidRequirement as e:
        raise ConfigError(f"{where}: {line!r} is not a valid requirement ({e})", hint="use PEP 508 form, e.g. numpy==1.26.4") from None


def name_of(req: str) -> str:
    """Canonical project name of a requirement string ('Scikit_Learn>=1' -> 'scikit-learn')."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    return canonicalize_name(Requirement(req).name)


def ensure(reqs: Sequence[str], needed: Iterable[str]) -> tuple[str, ...]:
    """Append each of `needed` unless a requirement with the same project name is already there, so a
    user's own pin always wins over the one fairing would add."""
    have = {name_of(r) for r in reqs}
    out = list(reqs)
    for n in needed:
        if name_of(n) not in have:
            out.append(n)
            have.add(name_of(n))
    return tuple(out)


def _dedup(reqs: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    out = []
    for r in reqs:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return tuple(out)
