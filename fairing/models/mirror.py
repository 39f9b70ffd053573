"""Keeping MLflow's Model Registry up to date with fairing's, from any client that has MLflow
configured. A retrain's pod registers and promotes with no MLflow client (the image is stdlib
only), so the client mirrors what it finds: explicitly (`fair models sync`, fairing.models.sync)
and on the way whenever it touches the registry anyway (register, promote, `fair models list/show`,
`fair runs sync`, a waited-on retrain).

On the way it must cost nothing when nothing changed: the documents of a model are written once
and never changed (model.NAME.vN, model.NAME.ALIAS.K), so their names are its state. One listing of
the store gives them; a model whose names are the ones this machine last mirrored to this MLflow
(kept in the cache dir) is skipped without importing mlflow or calling the server. The explicit
sync checks everything, MLflow's side included (a version deleted there is made again)."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Any, Iterable

from ..image_runtime.modeldocs import ALIAS_RE, VERSION_RE


def uri_of(uri: str | None) -> str | None:
    from ..runs.trackers import mlflow_uri
    from ..settings import load

    return uri or mlflow_uri(load())


def state(names: Iterable[str]) -> dict[str, str]:
    """{model: a digest of its version and alias-move document names} from a listing of model.*"""
    per: dict[str, list[str]] = {}
    for n in names:
        parts = n.split(".")
        immutable = (len(parts) == 3 and VERSION_RE.match(parts[2])) or \
            (len(parts) == 4 and ALIAS_RE.match(parts[2]) and parts[3].isdigit())
        if parts[0] == "model" and immutable:
            per.setdefault(parts[1], []).append(n)
    return {m: hashlib.sha256("\n".join(sorted(ns)).encode()).hexdigest()[:32] for m, ns in per.items()}


def _marks_file():
    from ..settings import cache_dir

    return cache_dir() / "mlflow-models.json"


def _key(uri: str, reg: Any) -> str:
    from ..runs.redact import text as redact

    return f"{redact(uri)} {reg.text}"


def _read_marks() -> dict:
    try:
        return json.loads(_marks_file().read_text())
    except (OSError, ValueError):
        return {}


def _write_marks(key: str, done: dict[str, str]) -> None:
    """Remember what was mirrored (rename into place: two clients at once lose at most a skip)."""
    path = _marks_file()
    marks = _read_marks()
    marks.setdefault(key, {}).update(done)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(marks, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: the next command checks again, that is all


def run(reg: Any, uri: str, names: Iterable[str] | None = None, *, force: bool = False) -> list[dict]:
    """Reconcile the models `names` (all of the store's when None) of `reg` into MLflow at `uri`;
    with force=False those unchanged since this machine last did are skipped. Returns one report a
    model reconciled (fairing.models.mlflow.reconcile). Raises what the server or store raises."""
    import contextlib
    import logging
    import sys

    now = state(reg.names("model."))
    want = sorted(now) if names is None else [n for n in names if n in now]
    key = _key(uri, reg)
    marks = {} if force else _read_marks().get(key, {})
    todo = [n for n in want if marks.get(n) != now[n]]
    if not todo:
        return []
    from . import mlflow

    reports = []
    # MLflow prints "View run ..." lines on stdout (they would break `-o json`) and logs "Waiting up
    # to 300 seconds for model version to finish creation" at INFO: our lines say what happened.
    with contextlib.redirect_stdout(sys.stderr):
        c = mlflow.client(uri)  # imports mlflow, which sets up its logger: quieted after that
    chatter = logging.getLogger("mlflow")
    level = chatter.level
    chatter.setLevel(max(level, logging.WARNING))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            for name in todo:
                reports.append(mlflow.reconcile(c, reg, name))
                # Conflicts are said each time they are looked for, but not looked for again until
                # the model changes: MLflow's history is not rewritten, so they do not go away.
                _write_marks(key, {name: now[name]})
    finally:
        chatter.setLevel(level)
    return reports


def on_the_way(reg: Any, uri: str | None, names: Iterable[str] | None = None) -> list[dict]:
    """The implicit sync: nothing without MLflow configured, skips what did not change, and a
    server (or store) that fails costs one warning, never the command that touched the registry."""
    uri = uri_of(uri)
    if not uri:
        return []
    try:
        reports = run(reg, uri, names)
    except Exception as e:  # noqa: BLE001 - the store has it; MLflow is a mirror
        warnings.warn(f"{not_updated(uri, e)}; the model is kept in {reg.text}; fair models sync tries again",
                      stacklevel=3)
        return []
    from ..messages import notice

    for is_warning, line in lines(reports, quiet_when_none=True):
        warnings.warn(line, stacklevel=3) if is_warning else notice(line)
    return reports


def not_updated(uri: str, e: BaseException) -> str:
    """What a failed sync says: the server (no credentials in its URI) and its error, one line."""
    from ..runs.redact import text as redact

    return (f"MLflow model registry at {redact(uri)} not updated ({type(e).__name__}: "
            f"{' '.join(str(getattr(e, 'message', None) or e).split())[:200]})")


def lines(reports: list[dict], *, quiet_when_none: bool = False) -> list[tuple[bool, str]]:
    """What a sync did, (is a warning, line) each: versions made, aliases moved, conflicts left."""
    out = []
    for r in reports:
        name = r["model"]
        for n, m in r["versions"]:
            out.append((False, f"mirrored {name}:{n} to MLflow (its version {m})"))
        for alias, n, m, was in r["aliases"]:
            out.append((False, f"MLflow {name}@{alias} -> {name}:{n} (its version {m}"
                        + (f", was {was})" if was is not None else ")")))
        out.extend((True, c) for c in r["conflicts"])
        if not (r["versions"] or r["aliases"] or r["conflicts"]) and not quiet_when_none:
            out.append((False, f"MLflow is up to date with {name}"))
    return out


def after_runs(records: Iterable[dict], uri: str | None = None) -> list[dict]:
    """The sync on the way for runs whose pod registered a model (a retrain's records, imported by
    `fair runs sync` or settled by a wait): those models, in the store each run kept its outputs in."""
    from .registry import Registry

    uri = uri_of(uri)
    if not uri:
        return []
    per: dict[str, list[str]] = {}
    for r in records:
        model = r.get("model") or {}
        store = (r.get("outputs") or {}).get("store")
        if model.get("registered") and model.get("name") and store and not store.startswith("pvc://"):
            per.setdefault(store, [])
            if model["name"] not in per[store]:
                per[store].append(model["name"])
    reports = []
    for store, names in per.items():
        try:
            reg = Registry(store)
        except Exception as e:  # noqa: BLE001 - a store this machine cannot use: said, not fatal
            warnings.warn(f"models of {store} not mirrored to MLflow: {getattr(e, 'message', None) or e}", stacklevel=2)
            continue
        reports += on_the_way(reg, uri, names)
    return reports
