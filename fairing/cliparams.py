"""`fair`'s parameters coerced without pydantic when the value is plain.

typer 0.29 (its own vendored click, pydantic for coercion) coerces each parameter of the command
run with a pydantic TypeAdapter built on first use, even for an option left unset: for `fair train`
that is the pydantic import and ~40 adapters, ~0.06 s of every command at low load (0.1-0.14 s at load 3-11),
before anything of fairing's runs. `install()` puts a cheap step in front of typer's: an unset
option, a str given a str, a list of str, an int given as plain decimal digits within its bounds,
a value already of its exact type, or a Path given a str (then typer's own path checks) give the
value pydantic would give, at once. Anything else (a custom parser, choices, a number out of
bounds or not in plain digits, bytes, ...) goes to typer's own coercion, built on first use as
before, so results and error messages stay typer's. With a typer that coerces otherwise (older
ones use click's types), `install()` does nothing."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, List

try:  # typer's path checks after the conversion (no pydantic in them for a Path value)
    from typer._param_types import coerce_cli_path as _path_checks
except ImportError:  # pragma: no cover - another typer: its own coercion does it all
    _path_checks = None

# Plain decimal digits, short enough to be an ordinary int: pydantic parses these to int(text) too
# (it also takes "+3", " 5", "1_000", "3.0"; those go to it).
_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")


class _Missing:
    pass


MISSING = _Missing()  # "not a plain value": typer's own coercion decides


def plain(annotation: Any, info: Any, value: Any) -> Any:
    """The coerced value, if `value` is plain for `annotation` (typer's ParameterInfo `info`), else MISSING."""
    if getattr(info, "parser", None) is not None:
        return MISSING
    if annotation is str:
        return value if type(value) is str else MISSING
    if annotation in (List[str], list[str]):
        if isinstance(value, (list, tuple)) and all(type(v) is str for v in value):
            return list(value)
        return MISSING
    if annotation is bool or annotation is float:
        return value if type(value) is annotation else MISSING
    if annotation is int and not getattr(info, "clamp", False):
        if type(value) is str and _INT.fullmatch(value):
            value = int(value)
        if type(value) is not int:
            return MISSING
        low, high = getattr(info, "min", None), getattr(info, "max", None)
        if (low is not None and value < low) or (high is not None and value > high):
            return MISSING  # typer's error message
        return value
    return MISSING


class PlainFirst:
    """A parameter's runtime coercion: plain values here, the rest by typer's, built when first needed."""

    def __init__(self, descriptor: Any, build: Any):
        self.descriptor, self._build, self._typers = descriptor, build, None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multi = param.multiple or param.nargs == -1
        if value is None:  # unset: what typer's RuntimeParam.coerce returns, without building it
            return () if multi else None
        d = self.descriptor
        if d.file_annotation is None and not (multi and isinstance(value, str)):
            got = plain(d.annotation, d.parameter_info, value)
            if got is not MISSING:
                return got
            if d.annotation is Path and type(value) is str and _path_checks is not None \
                    and getattr(d.parameter_info, "path_type", None) in (None, Path):
                # pydantic's Path of a str is Path(str); typer's own checks (exists, readable...) follow.
                try:
                    return _path_checks(Path(value), d.parameter_info, path_type=Path, param=param, ctx=ctx)
                except ValueError:
                    pass  # ("embedded null byte"): pydantic words it; typer's coercion below does
        if self._typers is None:
            self._typers = self._build(d)
        return self._typers.coerce(value, param=param, ctx=ctx)


def install() -> bool:
    """Put PlainFirst in front of typer's coercion (once); False if this typer does not coerce that way."""
    try:
        from typer import core
    except ImportError:  # pragma: no cover - typer is a dependency
        return False
    build = getattr(core, "build_runtime_param", None)
    if build is None or not hasattr(core, "_TyperParameter"):
        return False
    if getattr(build, "plain_first", False):
        return True

    def build_plain_first(descriptor: Any) -> PlainFirst:
        return PlainFirst(descriptor, build)

    build_plain_first.plain_first = True  # type: ignore[attr-defined]
    build_plain_first.typers = build  # type: ignore[attr-defined]
    core.build_runtime_param = build_plain_first
    return True
