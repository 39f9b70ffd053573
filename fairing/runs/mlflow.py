"""Each finished run, also in MLflow (when MLFLOW_TRACKING_URI, --mlflow or the `mlflow` setting
names a tracking server): an experiment named after the entry (or --experiment), the run's params,
its metrics (per step when the log printed `step=`), tags tying it to the image, the code and the
fairing record, and the record itself plus the result as artifacts.

The mlflow client is imported here only. A server that does not answer costs one warning (see
fairing.runs.trackers): requests get a short timeout and no retries, so a dead server does not
hold the run for minutes."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from .trackers import Tracker

TIMEOUT_S = "10"


def experiment_name(doc: dict) -> str:
    entry = str(doc.get("entry") or doc.get("command") or "fairing")
    if ":" in entry and not entry.startswith(("/", ".")):
        entry = entry.rsplit(":", 1)[1]  # module:function / model.py:Class
    return Path(entry.rstrip("/")).stem or entry


def _flat_params(params: dict) -> dict[str, str]:
    out = {}
    for k, v in params.items():
        out[k] = " ".join(map(str, v)) if isinstance(v, list) else str(v)
    return {k: v[:6000] for k, v in out.items()}


def tags_of(doc: dict) -> dict[str, str]:
    image = doc.get("image") or {}
    git = doc.get("git") or {}
    how = doc.get("how") or {}
    tags = {
        "fairing.run_id": doc["id"], "fairing.command": doc.get("command"), "fairing.status": doc.get("status"),
        "fairing.image": image.get("ref"), "fairing.image_digest": image.get("digest"),
        "fairing.base_image": image.get("base"), "fairing.base_image_digest": image.get("base_digest"),
        "fairing.source_digest": (doc.get("source") or {}).get("digest"),
        "fairing.preprocessor": (how.get("preprocessor") or {}).get("name"),
        "fairing.builder": (how.get("builder") or {}).get("name"),
        "fairing.deployer": (how.get("deployer") or {}).get("name"),
        "fairing.mode": how.get("mode"), "fairing.entry": doc.get("entry"),
        "mlflow.source.git.commit": git.get("commit"), "mlflow.source.git.branch": git.get("branch"),
        "fairing.git_dirty": None if git.get("dirty") is None else str(git["dirty"]).lower(),
        "mlflow.user": doc.get("user"), "mlflow.runName": doc["id"],
    }
    return {k: str(v) for k, v in tags.items() if v not in (None, "")}


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, uri: str, *, experiment: str | None = None, warn: Callable[[str], None] | None = None):
        super().__init__(warn)
        self.uri = uri
        self.experiment = experiment

    def client(self):
        # A tracking server that is down must cost seconds, not mlflow's default minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", TIMEOUT_S)
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise RuntimeError("the mlflow package is not installed (pip install 'fairing[mlflow]')") from None
        return MlflowClient(tracking_uri=self.uri)

    def _create(self, c, run):
        """A new MLflow run for `run` (its id goes into the record)."""
        doc = run.doc
        name = self.experiment or experiment_name(doc)
        exp = c.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else c.create_experiment(name)
        tags = tags_of(doc)
        parent = self._parent_mlflow_id(run)
        if parent:
            tags["mlflow.parentRunId"] = parent  # tuning trials nest under their tuning run
        start_ms = int(float(doc["created"]) * 1000)
        mr = c.create_run(exp_id, start_time=start_ms, tags=tags, run_name=doc["id"])
        doc["mlflow"] = {"run_id": mr.info.run_id, "experiment": name, "experiment_id": exp_id,
                         "tracking_uri": _safe_uri(self.uri)}
        return mr

    def opened(self, run) -> None:
        self._create(self.client(), run)

    def finished(self, run) -> None:
        from mlflow.entities import Metric, Param, RunTag

        doc = run.doc
        c = self.client()
        opened = (doc.get("mlflow") or {}).get("run_id")
        if opened:  # made at the start (a tuning run): bring its tags up to date
            mr = c.get_run(opened)
            c.log_batch(opened, tags=[RunTag(k, v) for k, v in tags_of(doc).items()])
        else:
            mr = self._create(c, run)
        rid = mr.info.run_id
        now = int(time.time() * 1000)
        metrics = []
        steps = doc.get("metric_steps") or {}
        for key, points in steps.items():
            metrics += [Metric(key, float(v), now, int(s)) for s, v in points]
        for key, v in (doc.get("metrics") or {}).items():
            if key not in steps:
                metrics.append(Metric(key, float(v), now, 0))
        params = [Param(k, v) for k, v in _flat_params(doc.get("params") or {}).items()]
        for i in range(0, len(params), 100):  # log_batch takes at most 100 params / 1000 items
            c.log_batch(rid, params=params[i:i + 100])
        for i in range(0, len(metrics), 900):
            c.log_batch(rid, metrics=metrics[i:i + 900])
        c.log_text(rid, json.dumps(doc, indent=2, sort_keys=True, default=str), "fairing/run.json")
        if "result" in doc:
            c.log_text(rid, str(doc["result"]), "fairing/result.txt")
        for label, path in run.files.items():  # outputs a local run left here (result.pkl, executed notebook)
            c.log_artifact(rid, path, f"fairing/{label}")
            doc.setdefault("artifacts", {})[label] = f"{mr.info.artifact_uri}/fairing/{label}/{Path(path).name}"
        if getattr(run, "outputs_local", None):  # what the run kept in $FAIRING_OUTPUT_DIR, local or cluster
            c.log_artifacts(rid, run.outputs_local, "outputs")
            doc.setdefault("artifacts", {})["outputs"] = f"{mr.info.artifact_uri}/outputs"
        ok = doc.get("status") in ("Succeeded", "Ready", "Deployed")
        c.set_terminated(rid, "FINISHED" if ok else "FAILED", end_time=now)

    def _parent_mlflow_id(self, run) -> str | None:
        parent = run.doc.get("parent")
        if not parent or run.store is None:
            return None
        try:
            return ((run.store.get(parent) or {}).get("mlflow") or {}).get("run_id")
        except Exception:  # noqa: BLE001 - a parent not recorded (or not in MLflow): the run is top level
            return None


def _safe_uri(uri: str) -> str:
    from .redact import text

    return text(uri)
