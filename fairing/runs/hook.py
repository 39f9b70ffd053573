"""The pipeline's side of run records: make a record from a plan, tag the deployer's objects with
it, and tell it how the run went. fairing.pipeline calls these; nothing else does."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from . import redact
from .record import Run, start

_PREFER_STR = (str, int, float, bool, type(None))


def params_of(entry: Any, prepare_kw: Mapping[str, Any]) -> dict:
    """The run's parameters: a function's arguments by parameter name, or a script's `--name
    value` / `--name=value` arguments (all of argv is kept under "argv")."""
    args = list(prepare_kw.get("args") or ())
    kwargs = dict(prepare_kw.get("kwargs") or {})
    if callable(entry) and not isinstance(entry, str):
        try:
            bound = inspect.signature(entry).bind_partial(*args, **kwargs)
            named = dict(bound.arguments)
        except (TypeError, ValueError):
            named = {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
        return {k: v if isinstance(v, _PREFER_STR) else redact.short_repr(v, 200) for k, v in named.items()}
    out: dict[str, Any] = {}
    if args:
        argv = [str(a) for a in args]
        shown = list(argv)  # argv as recorded: values of secret-looking flags masked
        i = 0
        while i < len(argv):
            a = argv[i]
            if a.startswith("--") and len(a) > 2:
                key, eq, val = a[2:].partition("=")
                secret = bool(redact.SECRET_KEY.search(key))
                if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                    val, i = argv[i + 1], i + 1
                    if secret:
                        shown[i] = redact.MASK
                elif not eq:
                    val = "true"
                elif secret:
                    shown[i] = f"--{key}={redact.MASK}"
                out[key.replace("-", "_")] = val  # secret keys are masked by redact.value in start()
            i += 1
        out["argv"] = shown
    return out


def how_of(p) -> dict:
    """Stage names and options from a plan (fairing.config.Plan); redacted by start()."""
    pre = p.preprocessor  # None: a KServe runtime, nothing packaged
    d_kw = p.deployer.options
    how: dict[str, Any] = {"preprocessor": {"name": pre.name if pre else None, "options": dict(pre.options) if pre else {}},
                           "deployer": {"name": p.deployer.name, "options": dict(d_kw)}, "mode": p.mode}
    if p.builder is not None:
        how["builder"] = {"name": p.builder.name, "options": dict(p.builder.options)}
        how["target"] = p.target.text if p.target is not None else None
    for key in ("namespace", "context"):
        if d_kw.get(key):
            how[key] = d_kw[key]
    return how


def start_for_plan(command: str, p, *, parent: str | None = None, warn: Callable[[str], None] | None = None) -> Run:
    return start(command, entry=p.entry, how=how_of(p), params=params_of(p.entry, p.prepare_kw),
                 parent=parent, settings=p.settings, warn=warn)


RUN_ID_ENV, IMAGE_ENV = "FAIRING_RUN_ID", "FAIRING_IMAGE"


def unsaved(ctx: Any = None) -> Run:
    """A record that is never written (a dry run's): a fresh id and the source digest of `ctx`,
    what `tag` puts on the manifests a real run would apply."""
    from .record import new_id
    from .source import source_digest

    doc: dict[str, Any] = {"id": new_id()}
    if ctx is not None:
        try:
            doc["source"] = {"digest": source_digest(ctx)}
        except OSError:
            pass  # a file vanished meanwhile: the manifests lack the source hash, as a record would
    return Run(doc)


def tag(deployer: Any, run: Run, image: Any = None) -> None:
    """Put the run id and source hash on everything the deployer creates (its labels/annotations
    options, which every fairing deployer applies to its objects and pod templates), and give the
    workload its run id and image reference as environment variables (the model server labels its
    metrics with them)."""
    for attr, extra in (("labels", run.labels()), ("annotations", run.annotations())):
        current = getattr(deployer, attr, None)
        if isinstance(current, dict):
            current.update(extra)
    mutators = getattr(deployer, "mutators", None)
    if isinstance(mutators, tuple):
        from ..deployers import pod

        env = {RUN_ID_ENV: run.id}
        if image is not None and getattr(image, "ref", None):
            env[IMAGE_ENV] = image.ref
        deployer.mutators = mutators + (pod.env(env),)


def base_of(p) -> tuple[str | None, str | None]:
    """(base image as given, its digest) for the plan's builder. The digest is asked of the base
    image's registry (one HEAD, as the append builder does); None when it cannot be known."""
    if p.builder is None:
        return None, None
    base = p.builder.options.get("base_image")
    if not base:
        return None, None
    if "@sha256:" in base:
        return base, base.split("@", 1)[1]
    if base.startswith("oci:") or p.builder.name == "docker":
        return base, None  # a layout or the engine's own copy: no registry to ask
    try:
        from ..oci import reference
        from ..oci.registry import client_for, pinned

        ref = reference.parse(base)
        # The digest the build pinned the tag to (what it built on), else one HEAD of its own.
        known = pinned(ref.registry, ref.repository, ref.identifier)
        if known:
            return base, known
        opts = {k: v for k, v in p.builder.options.items() if k in ("insecure", "ca_file")}
        return base, client_for(ref.registry, retries=0, timeout=(3.0, 10.0), **opts).manifest_digest(ref.repository, ref.identifier)
    except Exception:  # noqa: BLE001 - unreachable or private base: the record just lacks the digest
        return base, None


def local_outputs(handle: Any) -> dict[str, str]:
    """{label: local path} of the workload's outputs (result.pkl, the executed notebook) that exist
    on this machine: a local process writes them to its output dir. Trackers upload these."""
    from pathlib import Path, PurePosixPath

    from ..context import OUTPUT_DIR

    out_dir, ctx = getattr(handle, "output_dir", None), getattr(handle, "context", None)
    if out_dir is None or ctx is None:
        return {}
    found = {}
    for label, path in ctx.outputs.items():
        p = PurePosixPath(path)
        if p.is_relative_to(OUTPUT_DIR):
            local = Path(out_dir) / p.relative_to(OUTPUT_DIR)
            if local.is_file():
                found[label] = str(local)
    return found



def settle_outputs(handle: Any, run: Run, *, persist: bool = True) -> None:
    """The run ended: a local run's output dir is saved to its store here (a cluster pod saves its
    own), and the record lists what the store holds for it (path, size, digest per file). Never
    fails the caller: a store that cannot be read leaves the record saying so."""
    import contextlib

    outputs = dict(run.doc.get("outputs") or {})
    if not outputs.get("store") or outputs.get("files") is not None:
        return
    from ..outputs import store as ostore

    try:
        spec = ostore.parse(outputs["store"])
        if spec is None or spec.claim is not None:
            return  # a pvc:// store is read through a pod (fair runs outputs)
        backend = ostore.open_backend(spec)
        local = getattr(handle, "output_dir", None)
        copy = getattr(handle, "copy_outputs", None)
        if local is not None or copy is not None:
            from ..image_runtime.outputs import save

            with (contextlib.nullcontext(local) if local is not None else copy()) as d:
                if d and run.trackers:
                    import shutil
                    import tempfile

                    run.outputs_local = tempfile.mkdtemp(prefix="fairing-outputs-")
                    shutil.copytree(d, run.outputs_local, dirs_exist_ok=True)
                status = run.doc.get("status")
                if status not in ("Succeeded", "Failed"):  # a trial settles before its record ends
                    try:
                        status = handle.status()
                    except Exception:  # noqa: BLE001 - unknown: the index says so
                        status = None
                record = {"id": run.id, "status": status, "started": run.doc.get("started"),
                          "finished": run.doc.get("finished"), "recorded_by": "client"}
                doc = save(str(d) if d else "/nonexistent", backend, run.id, record, attempts=3)
        else:
            doc = backend.get_run(run.id)
            if doc and doc.get("files") and run.trackers:  # MLflow gets a cluster run's files too
                import tempfile

                from ..outputs.fetch import fetch

                run.outputs_local = str(fetch({**run.doc, "outputs": outputs}, tempfile.mkdtemp(prefix="fairing-outputs-")))
        if doc is not None:
            outputs["files"] = doc.get("files") or []
            if doc.get("refused"):
                outputs["refused"] = doc["refused"]
            pod_model = (doc.get("record") or {}).get("model")
            if pod_model:  # a retrain's pod registered (or not, and says why)
                run.doc["model"] = {**(run.doc.get("model") or {}), **pod_model}
    except Exception as e:  # noqa: BLE001 - the run's outcome stands; the record says what is missing
        outputs["error"] = redact.text(getattr(e, "message", None) or str(e))
    run.doc["outputs"] = outputs
    if persist:  # False: another thread owns the record's store (a tuning trial)
        run.save()
