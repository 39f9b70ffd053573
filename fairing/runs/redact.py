"""What a record may hold: options made printable, with secrets left out.

Keys that name a secret are replaced, URL credentials are masked, callables (pod options) are
recorded by their description (which names variables, never values), env values are dropped."""
from __future__ import annotations

import re
from typing import Any

MASK = "***"
SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|credential|auth|private[_-]?key|cookie",
                        re.I)
URL_CREDS = re.compile(r"(://)[^/@\s:]+(:[^/@\s]*)?@")


def text(s: str) -> str:
    """Mask user:password in URLs (git+https://user:tok@host/..., --index-url https://u:p@...)."""
    return URL_CREDS.sub(r"\1" + MASK + "@", s)


def value(v: Any, depth: int = 0) -> Any:
    """A JSON-able copy of `v` with secrets removed."""
    if depth > 6:
        return "..."
    if v is None or isinstance(v, (bool, int, float)):
        return v
    if isinstance(v, str):
        return text(v)
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            k = str(k)
            if k in ("env", "environment") and isinstance(x, dict):
                out[k] = sorted(x)  # names only: values may be credentials
            elif SECRET_KEY.search(k):
                out[k] = MASK if x not in (None, "", False) else x
            else:
                out[k] = value(x, depth + 1)
        return out
    if isinstance(v, (list, tuple, set, frozenset)):
        return [value(x, depth + 1) for x in v]
    if callable(v):
        return getattr(v, "__name__", type(v).__name__)
    return text(_short(repr(v)))


def _short(s: str, n: int = 500) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


def short_repr(v: Any, n: int = 500) -> str:
    """repr() of a value for the record (function results, arguments), cut to n characters."""
    try:
        r = repr(v)
    except Exception as e:  # noqa: BLE001 - a broken __repr__ must not fail the run
        r = f"<unrepresentable {type(v).__name__}: {e}>"
    return text(_short(r, n))
