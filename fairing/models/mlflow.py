"""Model versions and aliases mirrored to MLflow's Model Registry (when MLflow is configured), so
`models:/NAME@champion` there resolves to the same files (same digests) as NAME@champion here.

The outputs store stays the truth and MLflow follows it: `reconcile` makes the MLflow versions
fairing has that MLflow lacks and moves MLflow's aliases to where fairing's point. It is the one way
in, whoever wrote to the store (this client, or a retrain's pod, which has no MLflow client), so it
is idempotent: each MLflow version carries tags fairing.version, fairing.digest and fairing.run_id,
and a fairing version is made in MLflow only when no MLflow version has its tag. It never rewrites
history: nothing in MLflow is deleted or changed but an alias of fairing's; an MLflow version whose
digest is not fairing's (another store's model of the same name) is reported, not touched.
MLflow keeps its own copy of the files (its artifact store is the only place a models:/ URI can
point at). A tracking server that does not answer costs one warning (see fairing.models.mirror)."""
from __future__ import annotations

import tempfile
from typing import Any

EXPERIMENT = "fairing-models"
TAGS = ("fairing.version", "fairing.digest", "fairing.run_id")


def client(uri: str):
    from ..runs.mlflow import MlflowTracker

    return MlflowTracker(uri).client()


def _mlflow_versions(c, name: str) -> dict[str, list]:
    """{fairing.version: [MLflow versions with that tag, oldest first]} of model `name`."""
    out: dict[str, list] = {}
    token = None
    while True:
        page = c.search_model_versions(f"name='{name}'", page_token=token)
        for mv in page:
            n = (mv.tags or {}).get("fairing.version")
            if n is not None:
                out.setdefault(n, []).append(mv)
        token = getattr(page, "token", None)
        if not token:
            break
    for mvs in out.values():
        mvs.sort(key=lambda mv: int(mv.version))
    return out


def _registered_model(c, name: str, store: str):
    try:
        return c.get_registered_model(name)
    except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST: make it (a dead server fails below too)
        return c.create_registered_model(name, tags={"fairing.store": store},
                                         description=f"mirrored from the fairing model registry in {store}")


def reconcile(c, reg: Any, name: str) -> dict:
    """MLflow's model `name` brought up to date with fairing's: the versions it lacks made, its
    aliases moved. Returns {"model", "versions": [[N, MLflow version]] made, "aliases": [[alias,
    N, MLflow version, MLflow's previous or None]] moved, "conflicts": [one line each]}."""
    done: dict = {"model": name, "versions": [], "aliases": [], "conflicts": []}
    rm = _registered_model(c, name, reg.text)
    have = _mlflow_versions(c, name)
    mine: dict[int, Any] = {}  # fairing version -> its MLflow version, when they agree
    for n in reg.versions(name):
        v = reg.get(f"{name}:{n}")
        same = [mv for mv in have.get(str(n), []) if (mv.tags or {}).get("fairing.digest") == v["digest"]]
        if same:
            mine[n] = same[0]
        elif have.get(str(n)):
            other = have[str(n)][0]
            done["conflicts"].append(f"MLflow's {name} version {other.version} is fairing {name}:{n} with digest "
                                     f"{(other.tags or {}).get('fairing.digest')}, not {v['digest']} (another store's "
                                     f"model of the same name?): left as it is")
        else:
            mine[n] = _make_version(c, reg, v)
            done["versions"].append([n, int(mine[n].version)])
    theirs = dict(getattr(rm, "aliases", None) or {})
    for alias, move in reg.aliases(name).items():
        mv = mine.get(move["version"])
        if mv is None or (mv.tags or {}).get("fairing.digest") != move["digest"]:
            continue  # a conflict, said above: MLflow's alias is not fairing's to move there
        if str(theirs.get(alias)) != str(mv.version):
            c.set_registered_model_alias(name, alias, mv.version)
            done["aliases"].append([alias, move["version"], int(mv.version),
                                    None if theirs.get(alias) is None else int(theirs[alias])])
    return done


def _make_version(c, reg: Any, v: dict):
    """Version v of the fairing registry as an MLflow model version: its files logged to a run of
    the fairing-models experiment, tagged with its number, digest and run."""
    from .serve import fetch_model

    name, n = v["model"], v["version"]
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
    # Uploading took a while: another client syncing at once may have made it meanwhile.
    again = [mv for mv in _mlflow_versions(c, name).get(str(n), [])
             if (mv.tags or {}).get("fairing.digest") == v["digest"]]
    if again:
        return again[0]
    return c.create_model_version(name, f"{mr.info.artifact_uri}/model", run_id=mr.info.run_id,
                                  tags={k: tags[k] for k in TAGS},
                                  description=f"fairing {name}:{n} from run {run.get('id')}")
