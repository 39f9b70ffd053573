"""`fair runs rerun ID`: the same image (by digest), the same parameters, a new run.

The parameters are part of the image (a script's arguments are its entrypoint, a function's
arguments are pickled into it), so running the recorded digest again with the recorded deployer
reproduces the run. Pod options (mutators) are recorded by name only and are not replayed."""
from __future__ import annotations

from typing import Any, Callable

from ..deployers import labels as L
from ..errors import ConfigError
from .record import Run, start

# Deployer options that are not replayed: callables (recorded as names) and one-shot flags.
NOT_REPLAYED = ("mutators", "dry_run", "name")


def plan(doc: dict) -> tuple[str, dict, Any]:
    """(deployer name, options, BuiltImage) to run `doc`'s image again. Fails with a one-line
    reason when the record cannot be replayed."""
    from ..context import BuiltImage

    rid = doc["id"]
    if doc.get("command") in ("deploy", "build"):
        raise ConfigError(f"run {rid} is a {doc['command']}, not a training run",
                          hint="rerun works on `fair train` runs; serve again with `fair deploy`")
    image = doc.get("image") or {}
    ref = image.get("ref") or ""
    engine_id = ref.startswith("sha256:")  # built into the local engine (docker builder, no registry)
    if not ref or ref.startswith("context:") or "@sha256:" not in ref and not engine_id:
        raise ConfigError(f"run {rid} has no image pinned by digest to run again "
                          f"({'it ran as a local process' if ref.startswith('context:') else 'it never built one'})",
                          hint="runs built into a registry or a container engine can be rerun")
    how = doc.get("how") or {}
    d = how.get("deployer") or {}
    name = d.get("name")
    if not name:
        raise ConfigError(f"run {rid} does not record its deployer", hint="run it again with `fair train`")
    opts = {k: v for k, v in (d.get("options") or {}).items() if k not in NOT_REPLAYED}
    masked = [k for k, v in opts.items() if v == "***"]
    if masked:
        raise ConfigError(f"run {rid}'s deployer option {masked[0]!r} was a secret and is not recorded",
                          hint="run it again with `fair train`")
    if name == "local" and opts.get("mode") == "process":
        raise ConfigError(f"run {rid} ran as a local process: there is no image to run again",
                          hint="rerun needs a run built into a registry or a container engine")
    tpl = {"metadata": {"labels": dict(L.MANAGED)},
           "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": ref}]}}
    return name, opts, BuiltImage(ref=ref, digest=image.get("digest") or ref.rpartition("@")[2], tag=image.get("tag"),
                                  pod_template=tpl)


def rerun(run_id: str, *, store=None, warn: Callable[[str], None] | None = None,
          mutators: tuple = (), settings=None) -> tuple[Run, Any]:
    """Deploy the recorded image again; returns (the new record, the handle). The caller waits."""
    from .. import stages
    from . import hook
    from .store import Store

    st = store or Store()
    old = st.get(run_id)
    name, opts, image = plan(old)
    if mutators:
        opts["mutators"] = tuple(mutators)
    deployer = stages.load("deployer", name)(**opts)
    run = start("rerun", entry=old.get("entry"), how=old.get("how"), params=old.get("params"), store=st,
                git=False, warn=warn, settings=settings)
    for key in ("source", "requirements", "git", "artifacts"):
        if old.get(key) is not None:
            run.doc[key] = old[key]
    run.doc["rerun_of"] = old["id"]
    run.doc["image"] = dict(old.get("image") or {})
    try:
        hook.tag(deployer, run, image)
        handle = deployer.deploy(image)
        run.deployed(handle, status="Deployed")
    except BaseException as e:
        run.fail(e)
        raise
    return run, handle
