"""Models with names: versions and aliases over the outputs store (no new server).

    import fairing
    v = fairing.models.register("iris", run="3f2a9c", path="model.joblib")   # version N
    fairing.models.promote("iris", v["version"], alias="champion")
    fairing.models.get("iris@champion")          # also "iris:3", "iris" (the latest)
    fairing.models.list()
    fairing.models.diff("iris:3", "iris:4")      # code, params, metrics, files
    fairing.models.files("iris@champion")        # the files, fetched and checked (a Path)
    fairing.models.sync()                        # MLflow's Model Registry brought up to date

A version is immutable and knows its run (image, code digest, params, metrics); an alias is a
pointer to a version by digest. With MLflow configured (the `mlflow` setting or
MLFLOW_TRACKING_URI) both are mirrored to MLflow's Model Registry: by register and promote here,
and by sync for what a retrain's pod registered and promoted (fairing.models.mirror). Nothing heavy
is imported until one of these is called."""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["register", "get", "promote", "list", "diff", "files", "resolve_run", "sync", "ConcurrentUpdate"]


def __getattr__(name: str):
    if name == "ConcurrentUpdate":
        from .registry import ConcurrentUpdate

        return ConcurrentUpdate
    raise AttributeError(f"module 'fairing.models' has no attribute {name!r}")


def _registry(store: str | None):
    from .registry import Registry

    return Registry(store)


def resolve_run(ref: str, *, runs_store: Any = None) -> dict:
    """The run record `ref` names: a run id (or prefix), run:ID, or best:TUNE_RUN_ID (the best
    trial of a tuning run)."""
    import fairing.runs as runs
    from ..errors import ConfigError

    text = str(ref).strip()
    if text.startswith("run:"):
        return runs.get(text[4:], store=runs_store)
    if text.startswith("best:"):
        tune = runs.get(text[5:], store=runs_store)
        if tune.get("command") != "tune":
            raise ConfigError(f"run {tune['id']} is a {tune.get('command')} run, not a tuning run",
                              hint="best:ID takes the id of a `fair tune` run (fair runs --last 5)")
        best = (tune.get("best") or {}).get("run")
        if not best:
            raise ConfigError(f"tuning run {tune['id']} has no best trial", hint=f"fair runs --parent {tune['id']}")
        return runs.get(best, store=runs_store)
    return runs.get(text, store=runs_store)


def register(name: str, run: str | dict, *, path: str | None = None, store: str | None = None,
             mlflow: str | None = None) -> dict:
    """Version N+1 of model `name` from a run's outputs (`run`: id, run:ID, best:TUNE_ID, or a
    record); only `path` (a file or directory of the outputs) when given. Returns the version;
    a run whose files (the same ones) are a version already gets that version ("already": True)."""
    record = run if isinstance(run, dict) else resolve_run(run)
    reg = _registry(store)
    v = reg.register(name, record, path=path, run_ref=None if isinstance(run, dict) else str(run))
    _mirror(reg, mlflow, name)  # also when "already": MLflow may lag what a pod registered
    return v


def get(ref: str, *, store: str | None = None) -> dict:
    """The version NAME, NAME:N or NAME@ALIAS names (its "ref" is NAME:N, its "digest" the
    document's)."""
    return _registry(store).get(ref)


def promote(name: str, version: int | str, alias: str = "champion", *, store: str | None = None,
            mlflow: str | None = None) -> dict:
    """Point NAME@ALIAS at version `version`. Of two promotions at once one wins; the other
    raises ConcurrentUpdate and changes nothing."""
    reg = _registry(store)
    move = reg.promote(name, version, alias)
    _mirror(reg, mlflow, name)  # unchanged here, MLflow may still lag (a pod moved it before)
    return move


def list(*, store: str | None = None) -> "list[dict]":  # noqa: A001
    """[{name, versions: [N...], latest: {...}, aliases: {alias: N}}] for every model in the store."""
    reg = _registry(store)
    out = []
    for name in reg.models():
        vs = reg.versions(name)
        latest = reg.version(name, vs[-1])
        out.append({"name": name, "versions": vs, "latest": vs[-1], "created": latest.get("created"),
                    "run": (latest.get("run") or {}).get("id"),
                    "aliases": {a: m["version"] for a, m in reg.aliases(name).items()}})
    return out


def diff(a: str, b: str, *, store: str | None = None) -> dict:
    """What changed from version `a` to `b`: code (source digest and files), image, params,
    metrics and the model files."""
    from .compare import diff as _diff

    reg = _registry(store)
    return _diff(reg.get(a), reg.get(b))


def files(ref: str, dest: str | Path | None = None, *, store: str | None = None) -> Path:
    """The files of a model version (NAME, NAME:N, NAME@ALIAS; or run:ID / best:TUNE_ID for a
    run's outputs), fetched into `dest` (default: a cache dir keyed by the version's digest) and
    checked by digest; returns the directory."""
    from .serve import fetch_model

    return fetch_model(ref, dest, store=store).dir


def sync(name: str | None = None, *, store: str | None = None, mlflow: str | None = None) -> "list[dict]":
    """Bring MLflow's Model Registry up to date with this one: the versions it lacks (a retrain's
    pod registers with no MLflow client) made, its aliases moved to where they point here. Checks
    every model (or `name`) on both sides; idempotent. Returns a report a model: {"model",
    "versions": [[N, MLflow version]], "aliases": [[alias, N, MLflow version, was]], "conflicts"}."""
    from ..errors import ConfigError, FairingError
    from .mirror import not_updated, run, uri_of
    from .registry import check_name

    uri = uri_of(mlflow)
    if not uri:
        raise ConfigError("MLflow is not configured: there is nothing to sync the models to",
                          hint="set mlflow: in fairing.yaml or MLFLOW_TRACKING_URI, or pass --mlflow URI")
    reg = _registry(store)
    if name is not None:
        reg.get(check_name(name))  # a model that is not there: one line naming the ones that are
    try:
        return run(reg, uri, None if name is None else [name], force=True)
    except FairingError:
        raise
    except Exception as e:  # noqa: BLE001 - the server's own error, in one line
        raise FairingError(not_updated(uri, e),
                           hint="check that the MLflow server answers, then run fair models sync again") from None


def _mirror(reg, uri: str | None, name: str | None = None) -> "list[dict]":
    """The sync on the way (register, promote, the CLI's list and show): skipped when nothing
    changed, one warning when MLflow fails."""
    from .mirror import on_the_way

    return on_the_way(reg, uri, None if name is None else [name])
