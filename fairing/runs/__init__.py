"""Run records: every train, build, deploy (and tuning trial) remembers what ran, how, and how it
ended, in a local SQLite store (see fairing.runs.store; FAIRING_RUNS moves it).

    import fairing
    for r in fairing.runs.list(last=5): print(r["id"], r["status"], r.get("metrics"))
    fairing.runs.get("3fa2c1")            # a full record (an id prefix is enough)
    fairing.runs.diff("3fa2c1", "9bd0e4")   # files, requirements, params, base image, metrics

Nothing heavy is imported until one of these is called."""
from __future__ import annotations

from typing import Any

__all__ = ["list", "get", "diff", "start"]


def list(last: int | None = None, status: str | None = None, *, command: str | None = None,  # noqa: A001
         parent: str | None = None, store: Any = None) -> "list[dict]":
    """Records, newest first; `status` filters (Succeeded, Failed, Running, Deployed, ...)."""
    from .store import Store

    return (store or Store()).list(last=last, status=status, command=command, parent=parent)


def get(run_id: str, *, store: Any = None) -> dict:
    """One record by id or unique id prefix."""
    from .store import Store

    return (store or Store()).get(run_id)


def diff(a: str | dict, b: str | dict, *, store: Any = None) -> dict:
    """What changed from run `a` to run `b` (ids or records)."""
    from .compare import diff as _diff
    from .store import Store

    s = store or Store()
    return _diff(a if isinstance(a, dict) else s.get(a), b if isinstance(b, dict) else s.get(b))


def start(command: str, **kw: Any):
    """A new record for `command`; see fairing.runs.record.start (the pipeline's hook)."""
    from .record import start as _start

    return _start(command, **kw)
