"""Fetching a run's outputs by run id: the record names the store (fairing.outputs.store), the
store's index for the run lists the files, each is streamed to disk and checked by digest. A file
already there with the same digest is not fetched again."""
from __future__ import annotations

import contextlib
import errno
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ConfigError, FairingError
from . import store as ostore


def store_of(record: dict, store_text: str | None = None) -> ostore.StoreSpec:
    """The outputs store a run record names (or `store_text`); ConfigError when it kept none."""
    return _store_of(record, store_text)


def _store_of(record: dict, store_text: str | None) -> ostore.StoreSpec:
    text = store_text or (record.get("outputs") or {}).get("store")
    if not text:
        raise ConfigError(f"run {record['id']} kept no outputs",
                          hint="runs keep $FAIRING_OUTPUT_DIR when an outputs store is set (outputs: in fairing.yaml, "
                               "or --outputs); a cluster run with a loopback registry keeps none")
    spec = ostore.parse(text)
    if spec is None:
        raise ConfigError(f"run {record['id']} kept no outputs (outputs: none)", hint="set an outputs store for the next runs")
    return spec


@contextlib.contextmanager
def _opened(record: dict, spec: ostore.StoreSpec):
    """The store's backend; a pvc:// store through a reader pod, for as long as this lasts."""
    if spec.claim is None:
        yield ostore.open_backend(spec)
        return
    from .pvc import Reader

    with Reader(record, spec) as backend:
        yield backend


def index(record: dict, *, store_text: str | None = None) -> tuple[dict, dict]:
    """(record, the store's index of the run: {"record", "files": [{path, size, digest}]}).
    `record` is the run's record (fairing.runs.get), which names the store."""
    spec = _store_of(record, store_text)
    with _opened(record, spec) as backend:
        return _index(record, spec, backend)


def _index(record: dict, spec: ostore.StoreSpec, backend: Any) -> tuple[dict, dict]:
    try:
        doc = backend.get_run(record["id"])
    except OSError as e:
        raise FairingError(f"cannot reach the outputs store {spec.text}: {e}", hint="check the network and the store's address") from None
    if doc is None:
        status = record.get("status")
        why = "it is still running" if status in ("Running", "Deployed") else "its pod could not save them (see its log)"
        raise FairingError(f"the outputs store {spec.text} holds nothing for run {record['id']} ({why})",
                           hint=f"fair runs show {record['id']}")
    return record, doc


def fetch(record: dict, dest: str | Path | None = None, *, path: str | None = None,
          store_text: str | None = None) -> Path:
    """The run's files (or only `path`) under `dest` (default ./outputs/RUN_ID); returns dest."""
    spec = _store_of(record, store_text)
    with _opened(record, spec) as backend:
        return _fetch(record, spec, backend, dest, path)


def _fetch(record: dict, spec: ostore.StoreSpec, backend: Any, dest: str | Path | None, path: str | None) -> Path:
    record, doc = _index(record, spec, backend)
    files = doc.get("files") or []
    if path is not None:
        want = str(PurePosixPath(path))
        files = [f for f in files if f["path"] == want]
        if not files:
            have = ", ".join(f["path"] for f in (doc.get("files") or [])[:8]) or "none"
            raise ConfigError(f"run {record['id']} has no output {path!r}", hint=f"its outputs: {have}")
    dest = Path(dest if dest is not None else Path("outputs") / record["id"]).absolute()
    for f in files:
        rel = PurePosixPath(f["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise FairingError(f"the store's index of run {record['id']} names an unsafe path {f['path']!r}",
                               hint="the store was written by something other than fairing")
        out = dest / rel
        if out.is_file() and out.stat().st_size == f["size"] and _digest(out) == f["digest"]:
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            backend.get_blob(f["digest"], str(out))
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise FairingError(f"no space left in {dest} for {f['path']} ({f['size']} bytes)",
                                   hint="free some space, or fetch elsewhere with --dest DIR") from None
            raise FairingError(f"fetching {f['path']} of run {record['id']} failed: {e}", hint="try again") from None
    return dest


def read_file(record: dict, name: str, *, store_text: str | None = None) -> bytes:
    """One output file's bytes (a function's result.pkl)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fairing-fetch-") as d:
        return (fetch(record, d, path=name, store_text=store_text) / name).read_bytes()


def _digest(p: Path) -> str:
    from ..image_runtime.outputs import file_digest

    return file_digest(str(p))


def listing(record: dict) -> list[dict[str, Any]]:
    """The files a record lists ([] when it lists none)."""
    return list((record.get("outputs") or {}).get("files") or [])
