"""Model versions and aliases mirrored to MLflow's Model Registry (when MLflow is configured), so
`models:/NAME@champion` there resolves to the same files (same digests) as NAME@champion here.

The outputs store stays the truth: a version is mirrored after it is written there, an alias after
it moved there. MLflow keeps its own copy of the files (its artifact store is the only place a
models:/ URI can point at); each MLflow version carries tags fairing.version, fairing.digest and
fairing.run_id, which is how the alias finds its version. A tracking server that does not answer
costs one warning, as for run tracking (fairing.runs.trackers)."""
from __future__ import annotations

import tempfile
import warnings
from typing import Any

EXPERIMENT = "fairing-models"


def _client(uri: str):
    from ..runs.mlflow import MlflowTracker

    return MlflowTracker(uri).client()


def mirror(uri: str, reg: Any, what: str, doc: dict) -> None:
    from ..runs.redact import text as redact

    import contextlib
    import sys

    try:
        # MLflow prints "View run ..." lines on stdout: they would break `-o json`.
        with contextlib.redirect_stdout(sys.stderr):
            c = _client(uri)
            if what == "version":
                mirror_version(c, reg, doc)
            else:
                mirror_alias(c, reg, doc)
    except Exception as e:  # noqa: BLE001 - the store has it; MLflow is a mirror
        warnings.warn(f"MLflow model registry at {redact(uri)} not updated ({type(e).__name__}: "
                      f"{' '.join(str(e).split())[:200]}); the model is kept in {reg.text}", stacklevel=3)


def _mlflow_version(c, name: str, n: int):
    for mv in c.search_model_versions(f"name='{name}'"):
        if (mv.tags or {}).get("fairing.version") == str(n):
            return mv
    return None


def mirror_version(c, reg: Any, v: dict):
    """Version v of the fairing registry as an MLflow model version (made once; found again by
    its fairing.version tag)."""
    from .serve import fetch_model

    name, n = v["model"], v["version"]
    try:
        c.get_registered_model(name)
    except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST: make it
        c.create_registered_model(name, tags={"fairing.store": reg.text},
                                  description=f"mirrored from the fairing model registry in {reg.text}")
    found = _mlflow_version(c, name, n)
    if found is not None:
        return found
    run = v.get("run") or {}
    exp = c.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp is not None else c.create_experiment(EXPERIMENT)
    tags = {"fairing.model": name, "fairing.version": str(n), "fairing.digest": v["digest"],
            "fairing.run_id": str(run.get("id")), "mlflow.runName": f"{name}:{n}"}
    if run.get("image"):
        tags["fairing.image"] = str(run["image"])
    mr = c.create_run(exp_id, tags=tags, run_name=f"{name}:{n}")
    with tempfile.TemporaryDirectory(prefix="fairing-mlflow-") as d:
        fetch_model(f"{name}:{n}", d, store=reg.spec.text if reg.spec is not None else None)
        c.log_artifacts(mr.info.run_id, d, "model")
    c.set_terminated(mr.info.run_id, "FINISHED")
    return c.create_model_version(name, f"{mr.info.artifact_uri}/model", run_id=mr.info.run_id,
                                  tags={k: tags[k] for k in ("fairing.version", "fairing.digest", "fairing.run_id")},
                                  description=f"fairing {name}:{n} from run {run.get('id')}")


def mirror_alias(c, reg: Any, move: dict) -> None:
    name, n = move["model"], move["version"]
    mv = _mlflow_version(c, name, n)
    if mv is None:  # registered before MLflow was configured: mirror it now
        mv = mirror_version(c, reg, reg.get(f"{name}:{n}"))
    c.set_registered_model_alias(name, move["alias"], mv.version)
