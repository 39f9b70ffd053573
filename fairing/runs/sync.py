"""`fair runs sync`: the runs an outputs store holds become records here. The pod writes each
run's record into the store with its outputs (a CronJob's runs, trials no client waited for), so a
teammate, a CI job and the nightly retrain all see the same runs; the local SQLite store is the cache."""
from __future__ import annotations

from typing import Any, Iterable

from .store import Store


def stores_known(store: Store, setting: str | None) -> list[str]:
    seen: list[str] = [setting] if setting else []
    for r in store.list():
        text = (r.get("outputs") or {}).get("store")
        if text and text not in seen and not text.startswith("pvc://"):
            seen.append(text)
    return seen


def record_from_index(doc: dict, store_text: str) -> dict:
    """A local record for a run the store holds: what the pod knew (status, times, its parent,
    the image) and the files it kept."""
    rec = dict(doc.get("record") or {})
    rid = rec["id"]
    parent = rec.get("parent")
    out = {"id": rid, "created": rec.get("started") or rec.get("finished") or "", "time": rec.get("started"),
           "command": "scheduled" if parent else "run", "status": rec.get("status") or "Unknown",
           "finished": rec.get("finished"), "duration": rec.get("seconds"), "parent": parent,
           "entry": " ".join(rec.get("command") or [])[:200] or None,
           "workload": {"name": rec.get("job") or rec.get("host")},
           "image": {"ref": rec.get("image")}, "recorded_by": rec.get("recorded_by") or "pod",
           "outputs": {"store": store_text, "files": doc.get("files") or []}}
    for key in ("metrics", "model"):  # a retrain's pod: what the gate read, and why it promoted or not
        if rec.get(key):
            out[key] = rec[key]
    if rec.get("exit_code"):
        out["reason"] = f"exit code {rec['exit_code']}"
    return out


def sync(stores: Iterable[str] | str | None = None, *, store: Any = None) -> list[str]:
    from ..outputs import store as ostore
    from ..settings import load

    local = store or Store()
    if isinstance(stores, str):
        stores = [stores]
    texts = list(stores) if stores else stores_known(local, load().outputs)
    have = {r["id"] for r in local.list()}
    imported = []
    for text in texts:
        spec = ostore.parse(text)
        if spec is None or spec.claim is not None:
            continue
        backend = ostore.open_backend(spec)
        for rid in backend.list_runs():
            if rid in have:
                continue
            doc = backend.get_run(rid)
            if not doc or not (doc.get("record") or {}).get("id"):
                continue
            local.put(record_from_index(doc, spec.text))
            have.add(rid)
            imported.append(rid)
    return imported
