"""The recorder the pipeline calls: start() when a command begins, then packaged / built /
deployed / log / finish as the run goes. Each step rewrites this run's row in the store.

Recording never breaks a run: a store that cannot be written gives one warning and the run goes on.
A record holds no secret: options pass through fairing.runs.redact first."""
from __future__ import annotations

import getpass
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from ..deployers import labels as L  # the label keys, defined once
from . import redact
from .metrics import MetricLog
from ..messages import info

log = logging.getLogger(__name__)

RUN_ID_LABEL, SOURCE_HASH_LABEL, SOURCE_DIGEST_ANNOTATION = L.RUN_ID, L.SOURCE_HASH, L.SOURCE_DIGEST_ANNOTATION
RUNNING, SUCCEEDED, FAILED, DEPLOYED = "Running", "Succeeded", "Failed", "Deployed"


def new_id() -> str:
    # Valid as a Kubernetes label value and a name suffix; 12 hex digits make collisions negligible.
    return uuid.uuid4().hex[:12]


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return os.environ.get("USER")


def _entry_text(entry: Any) -> str | None:
    if entry is None:
        return None
    if callable(entry) and not isinstance(entry, (str, os.PathLike)):
        mod = getattr(entry, "__module__", None) or ""
        return f"{mod}:{getattr(entry, '__qualname__', getattr(entry, '__name__', 'fn'))}".lstrip(":")
    return str(entry)


class Run:
    """One run's record, kept in memory and written through to the store."""

    def __init__(self, doc: dict, store=None, *, warn: Callable[[str], None] | None = None):
        self.doc = doc
        self._store = store
        self._warned = False
        self._warn = warn
        self.metrics = MetricLog()
        self._t0 = time.monotonic()
        self.trackers: list[Any] = []  # MLflow etc.: get the same calls (see fairing.runs.mlflow)
        self.files: dict[str, str] = {}  # local output files for trackers (see finish)
        self.outputs_local: str | None = None  # a temp copy of the run's outputs dir, for trackers

    @property
    def id(self) -> str:
        return self.doc["id"]

    @property
    def store(self):
        return self._store

    # -- identity for the cluster ----------------------------------------------------------------
    def labels(self) -> dict[str, str]:
        out = {RUN_ID_LABEL: self.id}
        src = (self.doc.get("source") or {}).get("digest")
        if src:
            out[SOURCE_HASH_LABEL] = src.split(":", 1)[-1][:12]
        return out

    def annotations(self) -> dict[str, str]:
        src = (self.doc.get("source") or {}).get("digest")
        return {SOURCE_DIGEST_ANNOTATION: src} if src else {}

    # -- the steps -------------------------------------------------------------------------------
    def packaged(self, ctx) -> None:
        """The build context is known: source digest, files, requirements as given."""
        from .source import file_hashes, source_digest

        try:
            self.doc["source"] = {"digest": source_digest(ctx), "kind": ctx.kind, "files": file_hashes(ctx)}
        except OSError as e:  # a file vanished between packaging and now: record what we can
            self.doc["source"] = {"kind": ctx.kind, "error": str(e)}
        self.doc.setdefault("requirements", {})["given"] = [redact.text(r) for r in ctx.requirements]
        self.doc["artifacts"] = dict(self.doc.get("artifacts") or {}, **{k: v for k, v in ctx.outputs.items()})
        self.save()

    def built(self, image, *, base_image: str | None = None, base_digest: str | None = None) -> None:
        img = self.doc.setdefault("image", {})
        img.update({"ref": image.ref, "digest": image.digest or None, "tag": image.tag})
        if base_image:
            img["base"] = base_image
        if base_digest:
            img["base_digest"] = base_digest
        resolved = getattr(image, "resolved_requirements", None)
        if resolved:
            self.doc.setdefault("requirements", {})["resolved"] = list(resolved)
        self.save()

    def open(self) -> None:
        """Make the trackers' run now, not when this one finishes: runs nested under this one
        (tuning trials) can then name it as their parent."""
        for t in self.trackers:
            t.call("opened", self)
        if self.trackers:
            self.save()

    def deployed(self, handle, *, status: str | None = None) -> None:
        w = {"name": getattr(handle, "name", None)}
        for key in ("namespace", "mode", "url"):
            v = getattr(handle, key, None)
            if isinstance(v, str) and v:
                w[key] = v
        self.doc["workload"] = w
        if status:
            self.doc["status"] = status
        self.save()
        for t in self.trackers:
            t.call("deployed", self)

    def log(self, line: str) -> None:
        """One line of the workload's log: metrics are taken from it."""
        self.metrics.feed(line)

    def note(self, **fields: Any) -> None:
        """Extra fields (redacted) in the record, e.g. note(params={...})."""
        self.doc.update(redact.value(fields))
        self.save()

    def finish(self, status: str, reason: str | None = None, *, result: Any = None, has_result: bool = False,
               artifacts: Mapping[str, str] | None = None, files: Mapping[str, str] | None = None) -> None:
        """The outcome. `files` are local copies of outputs ({label: path}) for trackers to upload;
        they are temporary, so the record keeps where the tracker put them, not these paths."""
        self.files = dict(files or {})
        self.doc["status"] = status
        if reason:
            self.doc["reason"] = redact.text(" ".join(str(reason).split()))
        self.doc["finished"] = _now_iso()
        self.doc["duration"] = round(time.monotonic() - self._t0, 3)
        if has_result:
            self.doc["result"] = redact.short_repr(result)
        if artifacts:
            self.doc.setdefault("artifacts", {}).update(artifacts)
        if self.metrics.last:
            self.doc["metrics"] = dict(self.metrics.last)
        if self.metrics.steps:
            self.doc["metric_steps"] = {k: [list(p) for p in v] for k, v in self.metrics.steps.items()}
        self.save()
        for t in self.trackers:
            t.call("finished", self)
        if self.trackers:
            self.save()  # trackers may have added their ids (mlflow run id)
        if self.outputs_local:
            import shutil

            shutil.rmtree(self.outputs_local, ignore_errors=True)
            self.outputs_local = None

    def fail(self, exc: BaseException, *, files: Mapping[str, str] | None = None) -> None:
        if isinstance(exc, KeyboardInterrupt):
            self.finish(FAILED, "interrupted", files=files)
            return
        msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        self.finish(FAILED, msg, files=files)

    # -- storage ---------------------------------------------------------------------------------
    def save(self) -> None:
        if self._store is None:
            return
        try:
            self._store.put(self.doc)
        except Exception as e:  # noqa: BLE001 - recording must never break the run itself
            if not self._warned:
                self._warned = True
                msg = f"warning: run {self.id} not recorded in {self._store.path}: {getattr(e, 'message', e)}"
                (self._warn or info)(msg)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def start(command: str, *, entry: Any = None, how: Mapping[str, Any] | None = None,
          params: Mapping[str, Any] | None = None, parent: str | None = None, store=None,
          git: bool = True, settings: Mapping[str, Any] | None = None,
          warn: Callable[[str], None] | None = None, run_id: str | None = None) -> Run:
    """A new record (status Running) for `command` ("train", "build", "deploy", "trial", ...).
    `how` holds the stage names and options (redacted here); `params` the arguments."""
    from .store import Store
    from .source import git_state

    now = time.time()
    doc: dict[str, Any] = {
        "id": run_id or new_id(), "created": now, "time": _now_iso(), "user": _user(), "host": socket.gethostname(),
        "command": command, "entry": _entry_text(entry), "status": RUNNING, "parent": parent,
        "how": redact.value(dict(how or {})), "params": redact.value(dict(params or {})),
    }
    if git:
        doc["git"] = git_state(entry if isinstance(entry, (str, os.PathLike)) else None)
    run = Run(doc, store if store is not None else Store(), warn=warn)
    attach_trackers(run, settings or {}, warn=warn)
    run.save()
    return run


def attach_trackers(run: Run, settings: Mapping[str, Any], warn: Callable[[str], None] | None = None) -> None:
    """The trackers `settings` name (MLflow when a tracking URI is set). Chosen here, not in
    fairing.runs.trackers, which the trackers themselves import: no cycle."""
    from .trackers import mlflow_uri

    uri = mlflow_uri(settings)
    if uri:
        from .mlflow import MlflowTracker

        run.trackers.append(MlflowTracker(uri, experiment=settings.get("experiment") if hasattr(settings, "get") else None,
                                          warn=warn))
