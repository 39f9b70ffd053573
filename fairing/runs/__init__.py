"""Run records: every train, build, deploy (and tuning trial) remembers what ran, how, and how it
ended, in a local SQLite store (see fairing.runs.store; FAIRING_RUNS moves it).

    import fairing
    for r in fairing.runs.list(last=5): print(r["id"], r["status"], r.get("metrics"))
    fairing.runs.get("3fa2c1")            # a full record (an id prefix is enough)
    fairing.runs.diff("3fa2c1", "9bd0e4")   # files, requirements, params, base image, metrics

Nothing heavy is imported until one of these is called."""
from __future__ import annotations

from typing import Any

__all__ = ["list", "get", "diff", "start", "settle", "outputs", "files", "sync"]


def list(last: int | None = None, status: str | None = None, *, command: str | None = None,  # noqa: A001
         parent: str | None = None, store: Any = None) -> "list[dict]":
    """Records, newest first; `status` filters (Succeeded, Failed, Running, Deployed, ...)."""
    from .store import Store

    return (store or Store()).list(last=last, status=status, command=command, parent=parent)


def get(run_id: str, *, store: Any = None) -> dict:
    """One record by id or unique id prefix (a dict; in a notebook, its facts and its metrics
    over steps as a small chart)."""
    from .compare import Record
    from .store import Store

    return Record((store or Store()).get(run_id))


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


FINAL = ("Succeeded", "Failed")


def settle(run_id: str | None, status: str, *, store: Any = None) -> bool:
    """A detached run's outcome, seen later (`fair status NAME`): a record still Deployed/Running
    takes a final status. Returns whether the record changed; never fails the caller."""
    if not run_id or status not in FINAL:
        return False
    import time

    from .store import Store

    try:
        s = store or Store()
        doc = s.get(run_id)
        if doc.get("status") in FINAL or doc.get("command") == "deploy":
            return False
        doc["status"] = status
        doc["duration"] = round(time.time() - float(doc["created"]), 3)
        doc["settled_by"] = "status"  # seen after the fact: the duration is an upper bound
        s.put(doc)
        return True
    except Exception:  # noqa: BLE001 - a record elsewhere (another machine's store) is not an error here
        return False



def outputs(run_id: str, dest: Any = None, *, path: str | None = None, store: Any = None):
    """The run's output files, fetched from its outputs store to `dest` (default
    ./outputs/RUN_ID; only `path` when given); returns that directory (a pathlib.Path)."""
    from ..outputs.fetch import fetch

    return fetch(get(run_id, store=store), dest, path=path)


def files(run_id: str, *, store: Any = None) -> "list[dict]":
    """The run's output files [{path, size, digest, mediaType}] as its outputs store's index lists
    them. A record that lists none yet (a pvc:// run: its volume is read only from a pod; a run
    submitted and never waited on) has the index read now (for pvc://, by a short-lived reader
    Job, see fairing.outputs.pvc) and keeps the list, so the next look needs no store or pod."""
    from ..outputs.fetch import index, listing
    from .store import Store

    s = store or Store()
    doc = s.get(run_id)
    kept = doc.get("outputs") or {}
    if kept.get("files") is None:
        _, idx = index(doc)
        kept = {k: v for k, v in kept.items() if k != "error"}
        doc["outputs"] = {**kept, "files": idx.get("files") or [],
                          **({"refused": idx["refused"]} if idx.get("refused") else {})}
        s.put(doc)
    return listing(doc)


def sync(stores: "Any" = None, *, store: Any = None) -> "list[str]":
    """Import the runs an outputs store holds that this machine has no record of (a CronJob's
    runs, a teammate's): each becomes a record here. `stores`: store URLs (default: the `outputs`
    setting and every store a local record names). Returns the ids imported."""
    from .sync import sync as _sync

    return _sync(stores, store=store)
