"""The one wiring place: which preprocessor, builder and deployer run, with which options, and
running them. `config.run`, `TrainJob`, `PredictionEndpoint` and every `fair` command call it.

    p = plan(entry, settings)           # choose the stages; validates, builds and contacts nothing
    dry_run(p)                          # {"mode", "build": the build plan, "manifests": [...]}
    res = execute(p, wait=True)         # package -> build -> deploy (-> wait): a RunResult

Serving is not a second pipeline: an entry packaged by the `serve` preprocessor (a model class)
goes to a deployer that serves (stages.deployers(serves=True)); the context carries a typed
ServeSpec that the serving deployers read. A KServe runtime (`model_format=`) needs no image:
the plan then has no preprocessor and no builder."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from . import runtime, stages
from . import settings as settings_mod
from .context import BuildContext, BuiltImage
from .deployers.template import pod_template
from .errors import BuildError, ConfigError, DeployError
from .progress import Progress, human_bytes
from .request import Request, Retrain, Stage, Variant, Wait
from .runhandle import log_lines  # noqa: F401 - importable from here, where the CLI finds it

if TYPE_CHECKING:
    from .publish.target import Target

PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
# The stages `plan` picks when nobody named one (rows of fairing.stages). Choosing is this
# module's job; every other fact about a stage is in the table or on its class.
PYTHON, NOTEBOOK, FUNCTION, SERVE = "python", "notebook", "function", "serve"
APPEND, ENGINE_BUILD = "append", "docker"
BATCH, SCHEDULED, SERVER, HERE = "job", "cronjob", "serving", "local"
CLUSTER = "cluster"  # a deployer row's `where`: the other value is HERE


# --- the result --------------------------------------------------------------------------------

@dataclass
class RunResult:
    """What `execute()` returns: the image, the deployer's handle and how it ran. Unpacks as
    `image, handle = fairing.config.run()`."""

    image: BuiltImage | None
    handle: Any
    mode: str  # "local process", "local container", "job on cluster", "dry run", "skipped (runtime)"
    plan: dict | None = None  # dry run: {"build": ..., "manifests": [...]}
    stages: list[dict] = field(default_factory=list)
    run: Any = None  # the run record (fairing.runs.record.Run); None for dry runs
    status: str | None = None  # how the workload ended, when execute waited for it
    value: Any = None  # the function's return value, when execute waited with Wait(result=...)

    def __iter__(self):
        return iter((self.image, self.handle))

    def __repr__(self) -> str:  # a notebook shows this (or the HTML below) for `fairing.config.run()`
        from .display import result_facts, run_text

        return run_text(*result_facts(self))

    def _repr_html_(self) -> str:
        from .display import result_facts, run_html

        return run_html(*result_facts(self), record=getattr(self.run, "doc", None))

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"mode": self.mode, "stages": self.stages}
        if self.image is not None:
            out["image"] = self.image.ref
            out["digest"] = self.image.digest or None
        if self.handle is not None:
            out["name"] = getattr(self.handle, "name", None)
            ns = getattr(self.handle, "namespace", None)
            if ns:
                out["namespace"] = ns
        if self.plan is not None:
            out["plan"] = self.plan
        return out


# --- the plan: which stages, with which options -------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What `plan` chose: the three stages with their final options, and the parsed target."""

    entry: Any
    settings: settings_mod.Settings
    preprocessor: Stage | None  # None: nothing to package (a KServe runtime)
    builder: Stage | None       # None: no image (local process mode, KServe runtime)
    target: Target | None       # where the image goes (fairing.publish.target), parsed once
    deployer: Stage
    mode: str
    prepare_kw: Mapping[str, Any] = field(default_factory=dict)  # passed to prepare(entry, **prepare_kw)
    name: str | None = None
    notes: tuple[str, ...] = ()
    # An error found while planning that must not come before the local checks (a missing engine
    # for an explicit --local-mode container): raised once the entry has been packaged.
    deferred: Exception | None = None
    retrain: Retrain | None = None  # register the outputs as a model version (+ the gate), in the pod

    def raise_deferred(self) -> None:
        if self.deferred is not None:
            raise self.deferred

    @property
    def serving(self) -> bool:
        return stages.stage("deployer", self.deployer.name).serves and (
            self.preprocessor is None or self.preprocessor.name == SERVE)

    @property
    def on_cluster(self) -> bool:
        return stages.stage("deployer", self.deployer.name).where == CLUSTER


def guess_preprocessor(entry: Any) -> str:
    if callable(entry) and not isinstance(entry, (str, os.PathLike)):
        return FUNCTION
    if entry is None:
        return NOTEBOOK if runtime.in_notebook() else PYTHON
    if str(entry).endswith(".ipynb"):
        return NOTEBOOK
    return PYTHON


def cluster_configured(settings: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> bool:
    """Is there a kubeconfig (or an in-cluster service account) to talk to?"""
    environ = os.environ if environ is None else environ
    if settings.get("kubeconfig"):
        return True
    if any(Path(p).is_file() for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p):
        return True
    if environ.get("KUBERNETES_SERVICE_HOST") and Path(
            "/var/run/secrets/kubernetes.io/serviceaccount/token").is_file():
        return True
    return Path("~/.kube/config").expanduser().is_file() and "KUBECONFIG" not in environ


def default_base_image() -> str:
    return "python:%d.%d-slim" % sys.version_info[:2]


def entry_name(entry: Any) -> str:
    if callable(entry) and not isinstance(entry, (str, os.PathLike)):
        return getattr(entry, "__name__", "fn")
    if entry is None:
        return "notebook"
    p = Path(str(entry))
    return (p.stem if p.suffix else p.resolve().name) or "job"


def repo_name(name: str) -> str:
    """A valid repository path from any name."""
    return re.sub(r"[^a-z0-9._/-]+", "-", name.lower()).strip("-._/") or "fairing-job"


def serving_deployer(name: str) -> str:
    """The canonical name of a deployer that serves models; one-line error otherwise."""
    canon = stages.canonical("deployer", name)
    if canon not in stages.DEPLOYERS:
        raise ConfigError(f"unknown serving deployer {name!r}",
                          hint="choose one of: serving (Deployment+Service), inferenceservice (KServe), local")
    if not stages.DEPLOYERS[canon].serves:
        raise ConfigError(f"the {name} deployer does not serve models",
                          hint=f"use --deployer {', '.join(stages.deployers(serves=True))}")
    return canon


def _split(spec: Stage | None) -> tuple[str | None, dict]:
    return (spec.name, dict(spec.options)) if spec else (None, {})


def _choose_deployer(s, d_name, registry_url, serve: bool, notes: list[str]) -> str:
    if d_name:
        return serving_deployer(d_name) if serve else stages.check("deployer", d_name)
    if s.deployer:
        return serving_deployer(s.deployer) if serve else stages.check("deployer", s.deployer)
    if serve:
        return SERVER if registry_url and cluster_configured(s) else HERE
    if s.schedule:
        return SCHEDULED
    if registry_url and cluster_configured(s):
        return BATCH
    if registry_url:
        notes.append("no kubeconfig found: running locally (set --deployer job to use a cluster)")
    elif cluster_configured(s):
        notes.append("no registry configured: running locally (set --registry to use the cluster)")
    return HERE


def plan(req: Request) -> Plan:
    """Choose the three stages for a request (with `build_only`, for `fair build`: always an image;
    with `prebuilt`, an image exists already: nothing to package or build). Explicit stages win
    over settings; settings over guesses. Only validates; nothing is built or contacted except a
    quick engine probe for the local deployer."""
    s, entry, name = req.settings, req.entry, req.name
    build_only, prebuilt, deployer = req.build_only, req.prebuilt, req.deployer
    notes: list[str] = []
    pre_name, pre_kw = _split(req.preprocessor)
    pre_name = stages.check("preprocessor", pre_name or s.preprocessor or guess_preprocessor(entry))
    serve = pre_name == SERVE
    b_name, b_kw = _split(req.builder)
    d_name, d_kw = _split(deployer)
    registry_url = b_kw.pop("registry", None) or s.registry
    if registry_url and "://" in registry_url:
        # Checked here: joined with the image name, the error would name a reference nobody typed.
        raise ConfigError(f"invalid --registry {registry_url!r}: it must not contain a URL scheme",
                          hint="drop the scheme: HOST[:PORT]/PATH, e.g. 127.0.0.1:5000/team")
    image_name = b_kw.pop("image_name", None) or s.image_name
    target = b_kw.pop("target", None)

    d_name_given = d_name is not None
    d_name = _choose_deployer(s, d_name, registry_url, serve, notes)
    if s.schedule and not serve and d_name != SCHEDULED:
        if d_name == BATCH or not s.is_set("deployer") and not d_name_given:
            d_name = SCHEDULED
        else:
            raise ConfigError(f"--schedule needs the cronjob deployer, not {d_name!r}",
                              hint="drop --deployer, or use --deployer cronjob")
    where = stages.DEPLOYERS[d_name].where
    runtime_model = serve and bool(d_kw.get("model_format"))  # a KServe runtime: no image at all
    no_build = runtime_model or prebuilt
    if where == CLUSTER and not no_build and not registry_url and not (target and not target.startswith("oci:")):
        what = "no registry: the" if serve else "the"
        raise ConfigError(f"{what} {d_name} deployer needs a registry the cluster can pull from",
                          hint="pass --registry HOST[:PORT]/PATH (or set registry in fairing.yaml), "
                               f"or {'serve' if serve else 'run'} locally with --deployer local")

    mode = f"{d_name} on cluster"
    local_mode = engine = deferred = None
    if where == HERE and build_only and (registry_url or target):
        local_mode = mode = "build"  # the image goes to the registry/target; nothing runs here
    elif where == HERE:
        from .checks import unused_cluster_options, unused_local_options
        from .deployers.local import resolve_mode

        fell_back = not s.deployer and not d_name_given  # local because no cluster was found, not chosen
        # No option silently dropped; judged before the engine probe (nothing contacted yet), and
        # again after it for a registry that a local process would not push to.
        refuse = unused_cluster_options if fell_back else unused_local_options
        refuse(s, local_mode=None)
        # A model server always runs in a container (it needs its port published).
        wanted = "container" if serve else d_kw.get("mode") or s.local_mode
        try:
            local_mode, engine = resolve_mode(wanted, d_kw.get("docker_host") or s.docker_host)
        except DeployError as e:
            if wanted != "container":
                raise
            # Said after packaging: a missing file or a bad notebook is the first thing to fix.
            local_mode, engine, deferred = "container", None, e
        d_kw["mode"] = local_mode
        if engine:
            d_kw["docker_host"] = engine
        mode = f"local {local_mode}"
        refuse(s, local_mode=local_mode)

    base_image = b_kw.pop("base_image", None) or s.base_image or default_base_image()
    if b_name or s.builder:
        stages.check("builder", b_name or s.builder)  # a typo fails even when nothing gets built
    if no_build:
        b_spec = None
    elif local_mode == "process" and not b_name:
        if build_only:
            raise ConfigError("nothing to build into: no registry and no container engine",
                              hint="pass --registry HOST/PATH, --target oci:DIR, or start Docker/Podman")
        if s.builder:
            notes.append(f"local process mode: builder {s.builder!r} not used (no registry, no engine)")
        b_spec = None  # the local process runs the materialised context: nothing to build
    else:
        b_name = stages.check("builder", b_name or s.builder or (APPEND if registry_url or target else ENGINE_BUILD))
        image_base = image_name or "fairing-" + (name if serve and name else entry_name(entry))
        if not target:
            if registry_url:
                target = registry_url.rstrip("/") + "/" + repo_name(image_base)
            elif b_name == ENGINE_BUILD:
                # No registry: keep the image in the local engine (the local deployer runs it there).
                target = "localhost/" + repo_name(image_base)
                b_kw.setdefault("push", False)
            else:
                raise ConfigError(f"the {b_name} builder needs somewhere to put the image",
                                  hint="pass --registry HOST[:PORT]/PATH")
        if b_name == ENGINE_BUILD:
            b_kw.setdefault("docker_host", engine or s.docker_host)
        if b_name == "append" and s.ca_file:
            b_kw.setdefault("ca_file", s.ca_file)
        b_kw["base_image"] = base_image
        b_spec = Stage(b_name, b_kw)
        # Parsed once, here, for the kinds this builder can publish to; every stage after gets the value.
        from .publish.target import parse

        target = parse(target, builder=b_name, accepts=stages.load("builder", b_name).accepts_for(b_kw))

    # The deployer class says which settings it reads (namespace, queue, schedule, pod options...).
    d_cls = stages.load("deployer", d_name)
    d_kw = d_cls.options_from_settings(s, d_kw)
    check_deployer_settings(s, d_name, d_cls, notes)

    pre_spec: Stage | None = None
    if not runtime_model:
        reqs = settings_mod.requirements_list(s) or None
        if reqs is not None:
            pre_kw.setdefault("requirements", reqs)
        pre_spec = Stage(pre_name, pre_kw)
    if req.retrain is not None:
        check_retrain(req.retrain, s, serve=serve, where=where, target=target if b_spec else None)
    return Plan(entry=entry, settings=s, preprocessor=pre_spec, builder=b_spec, target=target if b_spec else None,
                deployer=Stage(d_name, d_kw), mode=mode, prepare_kw=dict(req.prepare), name=name,
                notes=tuple(notes), deferred=deferred, retrain=req.retrain)


def check_retrain(r: Retrain, s, *, serve: bool, where: str, target: Any) -> None:
    """--register / --promote-if, checked before anything is built or created: the model name, the
    gate's grammar, and a store the pod can write the model to."""
    from .image_runtime.modeldocs import GateError, parse_gate
    from .models.registry import check_name

    check_name(r.model)
    if r.gate is not None:
        try:
            parse_gate(r.gate)
        except GateError as e:
            raise ConfigError(e.message, hint=e.hint) from None
    if serve:
        raise ConfigError("--register is for training runs, not for serving",
                          hint="serve a registered model with fair deploy ... --model NAME@ALIAS")
    if where != CLUSTER:
        raise ConfigError("--register needs a cluster run: its pod registers the model when the run ends",
                          hint=f"run on the cluster (--registry and a kubeconfig), or register afterwards: "
                               f"fair models register {r.model} --run RUN_ID")
    from .outputs import store as ostore

    store, note = ostore.for_run(s.outputs, str(target) if target is not None else None, on_cluster=True)
    if store is None:
        raise ConfigError(f"--register {r.model} needs an outputs store to keep the model in"
                          + (f" ({note.split(': ', 1)[1].split(';')[0]})" if note else ""),
                          hint="set outputs: oci://HOST/REPO or s3://BUCKET/PREFIX (fairing.yaml, or --outputs)")
    if store.claim is not None:
        raise ConfigError(f"--register {r.model}: the model registry cannot live in {store.text}, which is not readable from here",
                          hint="use oci://HOST/REPO or s3://BUCKET/PREFIX for --outputs")


# --- running a plan ----------------------------------------------------------------------------

def prepare(p: Plan, progress: Progress, *, extra_files: Mapping[str, bytes] | None = None,
            launcher: Sequence[str] = ()) -> BuildContext | None:
    """Package the entry; `extra_files` (path in the context -> bytes) are added to what the
    preprocessor made (the KFP component shim). With `launcher`, the image's entrypoint becomes
    `[*launcher, JSON of the preprocessor's command]`: a program that runs the command it is
    given, else that one (the KFP shim: kfp.local passes a component's command as arguments)."""
    if p.preprocessor is None:
        p.raise_deferred()
        return None
    name, kw = p.preprocessor.name, p.preprocessor.options
    with progress.stage("package") as st:
        pre = stages.load("preprocessor", name)(**kw)
        ctx = pre.prepare(p.entry, **p.prepare_kw)
        from .skew import check_context

        check_context(ctx)  # pickled objects vs the image's pins, warned before anything is built
        # Runtime mode marker: whatever runs this context knows it is the workload, not the author.
        ctx = dataclasses.replace(ctx, env={**ctx.env, runtime.RUNTIME_ENV: "1"},
                                  files={**ctx.files, **dict(extra_files or {})})
        if launcher:  # an exported KFP component: KFP's artifact is its outputs dir
            ctx = dataclasses.replace(ctx, entrypoint=(*launcher, json.dumps(list(ctx.entrypoint))))
        elif ctx.serve is None:
            ctx = with_outputs_shim(ctx)
        st.detail = f"{name}: {len(ctx.files)} files, {human_bytes(ctx.size())}"
    p.raise_deferred()
    return ctx


def runtime_files(names: Sequence[str]) -> dict[str, bytes]:
    """{path in the context: bytes} of image_runtime modules shipped beside the command."""
    from .preprocessors.base import RUNTIME_DIR

    here = Path(__file__).parent / "image_runtime"
    return {f"{RUNTIME_DIR}/{n}": (here / n).read_bytes() for n in names}


def with_outputs_shim(ctx: BuildContext) -> BuildContext:
    """The context's command, wrapped by the outputs shim (image_runtime/outputs.py): it keeps
    $FAIRING_OUTPUT_DIR when the run names a store, and execs the command unchanged when not."""
    from .preprocessors.base import RUNTIME_DIR

    from .image_runtime import SHIM_FILES

    files = runtime_files(SHIM_FILES)
    entry = tuple(ctx.entrypoint)
    if not entry:
        return ctx
    python = entry[0] if Path(entry[0]).name.startswith("python") else "python3"
    return dataclasses.replace(ctx, files={**ctx.files, **files},
                               entrypoint=(python, f"{RUNTIME_DIR}/outputs.py", "--", *entry))


def make_builder(p: Plan):
    return stages.load("builder", p.builder.name)(**p.builder.options)


def make_deployer(p: Plan, variant: Variant | None = None):
    """The plan's deployer; a `variant` adds a name, mutators (after the plan's) and options."""
    kw = dict(p.deployer.options)
    if p.name and "name" not in kw:
        kw["name"] = p.name
    if variant is not None:
        kw["mutators"] = (*(kw.get("mutators") or ()), *variant.mutators)
        if variant.name:
            kw["name"] = variant.name
        kw.update(variant.options)
    if p.retrain is not None:  # what the pod's outputs shim registers (shown by dry runs too)
        from .deployers import pod
        from .image_runtime.outputs import GATE_ENV, REGISTER_ENV

        env = {REGISTER_ENV: p.retrain.model, **({GATE_ENV: p.retrain.gate} if p.retrain.gate else {})}
        kw["mutators"] = (*(kw.get("mutators") or ()), pod.env(env))
    return stages.load("deployer", p.deployer.name)(**kw)


def context_image(ctx: BuildContext) -> BuiltImage:
    """Local process mode: the "image" is the context itself, run from a temp dir."""
    from .builders.base import context_hash

    ref = f"context:{context_hash(ctx)}"
    return BuiltImage(ref=ref, digest="", pod_template=pod_template(ref, ctx), context=ctx)


def build(p: Plan, ctx: BuildContext | None, progress: Progress) -> BuiltImage | None:
    if ctx is None:
        return None
    if p.builder is None:
        return context_image(ctx)
    builder = make_builder(p)
    with progress.stage("build") as st:
        st.detail = f"{p.builder.name} -> {p.target.text}"
        try:
            image = build_and_publish(builder, ctx, p.target)
        except BuildError as e:
            if not p.on_cluster and not p.settings.base_image \
                    and p.builder.options.get("base_image") == default_base_image():
                # The default base image may be unreachable (offline engine): say how to get past it.
                raise BuildError(e.message, hint=f"the default base image {default_base_image()} could not be used; "
                                 "pass --base-image IMAGE the engine can pull, or run without the engine with "
                                 "--local-mode process") from None
            raise
        if image.context is None:
            image = dataclasses.replace(image, context=ctx)
        stats = image.stats
        st.detail = (f"{p.builder.name}: {stats.layers_uploaded} layers pushed, {stats.layers_skipped} "
                     f"reused, {human_bytes(stats.bytes_uploaded)}")
    progress.note(image.ref)
    return image


def build_and_publish(builder: Any, ctx: BuildContext, target: Target) -> BuiltImage:
    """The builder makes the image value; publishing it is a stage of its own, whose publisher
    fairing.publish.pick chooses (ko's build, then publish). Timed as one build."""
    import time

    from .publish.pick import publish

    t0 = time.monotonic()
    t = builder.target(target, ctx)  # tagged with the context hash when the target has no tag
    image = builder.image(ctx, t)
    t1 = time.monotonic()
    built = builder.published(publish(image, t, builder.publish_needs()), time.monotonic() - t1)
    return dataclasses.replace(built, context=ctx, stats=dataclasses.replace(built.stats, seconds=time.monotonic() - t0))


def placeholder_ref(target: "Target | str", tag: str | None = None) -> str:
    """`target` pinned to PLACEHOLDER_DIGEST: deployers insist on digest-pinned images, and the
    real digest exists only after the build."""
    from .oci.reference import split_tag

    if isinstance(target, str):
        repo, target_tag = split_tag(target)
    else:
        repo, target_tag = target.name, target.tag
    tag = tag or target_tag
    return f"{repo}:{tag}@{PLACEHOLDER_DIGEST}" if tag else f"{repo}@{PLACEHOLDER_DIGEST}"


def check_deployer_settings(s: settings_mod.Settings, d_name: str, cls: type, notes: list[str]) -> None:
    """Settings only some deployers take (--queue, the trainjob options: each deployer class says
    which) reach only those; given explicitly to another deployer they are an error rather than
    silently ignored (a queue from fairing.yaml or FAIRING_QUEUE only earns a note: it is meant
    for cluster runs)."""
    if s.queue and not cls.queueable():
        if s.source("queue") not in ("cli", "argument"):
            notes.append(f"queue {s.queue!r} ({s.source('queue')}) not used: the {d_name} deployer is not queued")
        else:
            queueable = [n for n, c in stages.deployer_classes() if c.queueable()]
            raise ConfigError(f"--queue needs a training deployer that Kueue can hold, not {d_name!r}",
                              hint=f"use --deployer {' / '.join(queueable)}, or drop --queue")
    for owner, other in stages.deployer_classes():
        for key in other.own_settings:
            if s[key] is not None and key not in cls.own_settings:
                what = f" ({other.title})" if other.title else ""
                raise ConfigError(f"--{key.replace('_', '-')} is an option of the {owner} deployer, not {d_name!r}",
                                  hint=f"add --deployer {owner}{what}, or drop the option")


def check_deploy(p: Plan, deployer: Any, ctx: BuildContext | None) -> None:
    """Everything the deployer can check before there is an image, so bad deploy input fails
    before a tag is pushed: the kubeconfig and context load (no API call), and the manifests
    render from a placeholder image (the context kind, the options against the pod template)."""
    if p.builder is None or ctx is None:
        return  # nothing is pushed: the deployer checks as it runs
    if p.on_cluster:
        getattr(deployer, "kube", None)  # loads the kubeconfig: a missing file or unknown context fails now
        check = getattr(deployer, "preflight", None)
        if check is not None:  # API checks: the queue / the Kubeflow Trainer runtime exist
            check()
    ref = placeholder_ref(p.target)
    deployer.render(BuiltImage(ref=ref, digest="", pod_template=pod_template(ref, ctx), context=ctx))


def build_plan(p: Plan, ctx: BuildContext | None) -> tuple[dict, BuiltImage | None]:
    """What the build would do, and a placeholder image for rendering manifests."""
    if ctx is None:
        return {"builder": None, "note": "KServe runtime: no image is built"}, None
    if p.builder is None:
        image = context_image(ctx)
        return {"builder": None, "note": "local process: the context runs from a temp dir",
                "files": sorted(ctx.files), "requirements": list(ctx.requirements)}, image
    out = make_builder(p).plan(ctx, p.target)
    ref = placeholder_ref(str(out.get("target") or p.target), out.get("tag"))
    out["digest"] = "known after the build (manifests show sha256:000...)"
    return out, BuiltImage(ref=ref, digest="", pod_template=pod_template(ref, ctx), context=ctx)


def dry_run(p: Plan, progress: Progress | None = None, *, image: BuiltImage | None = None,
            variant: Variant | None = None, build_only: bool = False, per_job: bool | None = None,
            follow: bool = False) -> dict:
    """The build plan and every manifest (of the deployer with `variant`), without building or
    applying anything. `build_only`: the build plan alone (`fair build --dry-run`). `per_job`:
    as keep_outputs takes it (Katib's trials). `follow`: the run would follow the log (a Job then
    waits for the client's attach, as execute sets it)."""
    progress = progress or Progress(enabled=False)
    if build_only:
        ctx = prepare(p, progress)
        return {"mode": "build", "build": make_builder(p).plan(ctx, p.target), "manifests": []}
    ctx = image.context if image is not None else None
    if image is not None:
        plan_out = {"builder": None, "image": image.ref}
    else:
        ctx = prepare(p, progress)
        plan_out, image = build_plan(p, ctx)
    deployer = make_deployer(p, variant)
    if follow and hasattr(deployer, "follow"):
        deployer.follow = True
    # What a real run (or tuning trial) puts on its objects: run id and source hash labels,
    # FAIRING_RUN_ID and FAIRING_IMAGE, from a record that is never saved (a dry run makes no run).
    from .runs import hook

    run = hook.unsaved(ctx)
    hook.tag(deployer, run, image)
    # A training run (or trial) on a cluster keeps its outputs: the env, volumes and Secret it
    # would get. Serving keeps no outputs.
    wired = dry_outputs(p, deployer, image, run.id, per_job=per_job) \
        if p.on_cluster and not p.serving and image is not None else None
    manifests = deployer.render(image)
    # The Secret goes where the workload goes (the namespace as rendered: no kubeconfig needed).
    secret = wired.secret(((manifests[0] if manifests else {}).get("metadata") or {}).get("namespace"),
                          redacted=True) if wired is not None else None
    return {"mode": p.mode, "build": plan_out, "manifests": ([secret] if secret else []) + manifests}


def build_modelcar(p: Plan, model_files: Any, progress: Progress) -> BuiltImage:
    """A KServe modelcar of `model_files` (fairing.models.serve.ModelFiles) for the plan's
    inferenceservice deployer: the deployer's preflight first (KServe installed), so nothing is
    pushed when it is not; then the plan's builder pushes it beside the serving image."""
    from .models import modelcar

    make_deployer(p).preflight()
    with progress.stage("modelcar"):
        return modelcar.build(make_builder(p), p.target, model_files)


def build_image(p: Plan, progress: Progress, *, variant: Variant | None = None,
                extra_files: Mapping[str, bytes] | None = None, launcher: Sequence[str] = (),
                run: Any = None, preflight: bool = True) -> BuiltImage | None:
    """Package and build only. With `preflight`, the deployer (with `variant`) renders a
    placeholder first, so bad deploy options fail before anything is pushed; `run` (a record)
    learns what was packaged and built."""
    ctx = prepare(p, progress, extra_files=extra_files, launcher=launcher)
    if run is not None and ctx is not None:
        run.packaged(ctx)
    if preflight:
        check_deploy(p, make_deployer(p, variant), ctx)
    image = build(p, ctx, progress)
    if run is not None and image is not None:
        run.built(image, **base_fields(p))
    return image


def base_fields(p: Plan) -> dict:
    """The plan's base image (and its digest) as a run record's built() takes them."""
    from .runs import hook

    return dict(zip(("base_image", "base_digest"), hook.base_of(p)))


def execute(p: Plan, progress: Progress | None = None, *, wait: Wait | bool | None = None,
            image: BuiltImage | None = None, command: str = "train", parent: str | None = None,
            before_deploy: Callable[[Any], None] | None = None) -> RunResult:
    """Package, build, deploy; with `wait` (True, or a Wait saying how), also wait for the
    workload. `image` skips packaging and building (deploy an image built earlier).
    `before_deploy(deployer)` runs once the image is built, before anything is applied (a modelcar
    is pushed there: after the serving image, so a failed build leaves no modelcar tag). Every real run
    is recorded (fairing.runs): `result.run` is its record. Without `wait`, the handle is a
    RunHandle: the record is settled when it is waited on later (serving handles excepted: an
    endpoint's record is the facade's to finish)."""
    from .runhandle import RunHandle, wait_for

    policy = Wait() if wait is True else wait or None
    progress = progress or Progress()
    for note in p.notes:
        progress.note(note)
    if p.settings.dry_run:
        return RunResult(None, None, "dry run", plan=dry_run(p, progress, image=image, follow=follows(p, policy)),
                         stages=progress.summary())
    from .runs import hook

    run = hook.start_for_plan(command, p, parent=parent)
    ctx = image.context if image is not None else None
    try:
        deployer = make_deployer(p)  # its constructor checks the name, namespace and options
        if follows(p, policy) and hasattr(deployer, "follow"):
            deployer.follow = True  # a Job: its pod waits for this client's attach (fairing.kube.attach)
        if image is None:
            ctx = prepare(p, progress)
            if ctx is not None:
                run.packaged(ctx)
            check_deploy(p, deployer, ctx)
            image = build(p, ctx, progress)
            if image is not None:
                run.built(image, **base_fields(p))
        else:
            p.raise_deferred()
            if ctx is not None:
                run.packaged(ctx)
                run.built(image)
        hook.tag(deployer, run, image)  # run id + source hash on every object; env for the model server
        if not p.serving and image is not None:
            keep_outputs(p, deployer, run, image, progress)
        serve = ctx.serve if ctx is not None else None
        if serve is not None and serve.follow_store and p.on_cluster:
            follow_store(p, deployer, run, serve.follow_store)
        if before_deploy is not None:
            before_deploy(deployer)
        with progress.stage("deploy") as st:
            handle = deployer.deploy(image)
            mode = getattr(handle, "mode", None)
            st.detail = f"{p.deployer.name}: {getattr(handle, 'name', '')}" + (f" ({mode})" if mode else "")
        run.deployed(handle, status="Deployed" if not policy else None)
    except BaseException as e:
        run.fail(e)
        raise
    is_fn = ctx is not None and ctx.kind == FUNCTION
    if not p.serving:
        handle = RunHandle(handle, run, result=is_fn)
    result = RunResult(image, handle, f"local {mode}" if not p.on_cluster and mode else p.mode, run=run)
    if policy:
        result.status, result.value = wait_for(
            handle, progress, policy, timeout=p.settings.timeout, run=run, result=is_fn)
    result.stages = progress.summary()
    return result


def follows(p: Plan, policy: Wait | None) -> bool:
    """This process will follow the workload's log as it runs (a wait with on_log, on a cluster)."""
    return bool(policy and policy.on_log is not None and p.on_cluster and not p.serving)


def keep_outputs(p: Plan, deployer: Any, run: Any, image: BuiltImage, progress: Progress | None, *,
                 save: bool = True, store: Any = False, per_job: bool | None = None) -> None:
    """Where the run's outputs are kept (fairing.outputs.store), in its record; a cluster
    workload's pods get the store, and its credentials in the run's Secret (fairing.outputs.wire).
    Local runs are saved by this process when they end (fairing.runs.hook.keep_local_outputs).
    `save=False`: the record is only updated in memory (a tuning trial, prepared in a worker
    thread; the calling thread saves it). `store`: already chosen (many trials of one build; the
    note said once). `per_job`: each Job made from the workload is a run of its own, named from
    the Job (a CronJob's runs; Katib's trials): default, the deployer's kind says."""
    from .outputs import store as ostore

    if store is False:
        store, note = ostore.for_run(p.settings.outputs, image.ref, on_cluster=p.on_cluster)
        if note and progress is not None:
            progress.note(note)
    if save:
        run.note(outputs={"store": store.text if store else None})
    else:
        run.doc["outputs"] = {"store": store.text if store else None}
    deployer.outputs_store = store
    if not p.on_cluster or not isinstance(getattr(deployer, "mutators", None), tuple):
        return
    from .outputs import wire

    if p.retrain is not None and save:
        run.note(model={"register": p.retrain.model, "gate": p.retrain.gate, "store": store.text})
    wire_outputs(p, deployer, store, run.id, per_job=per_job)


def wire_outputs(p: Plan, deployer: Any, store: Any, run_id: str, *, per_job: bool | None = None) -> Any:
    """The outputs mutator (env, store volume, the run's credentials Secret) added to a cluster
    deployer's pod options; returns it (its .secret() is the Secret it will create)."""
    from .outputs import store as ostore
    from .outputs import wire

    creds = ostore.credentials(store) if store is not None else {}
    ca_pem = None
    if creds and p.settings.ca_file:
        ca_pem = Path(p.settings.ca_file).expanduser().read_bytes()
    m = wire.mutator(store, run_id, creds=creds, ca_pem=ca_pem,
                     per_job=type(deployer).per_job_runs if per_job is None else per_job)
    deployer.mutators = deployer.mutators + (m,)
    return m


def dry_outputs(p: Plan, deployer: Any, image: BuiltImage, run_id: str, *, per_job: bool | None = None) -> Any:
    """A dry run's share of keep_outputs: the same outputs env and volumes on the pods (the
    mutator, returned: its .secret(ns, redacted=True) is the run's Secret with placeholders for
    its values, never the credentials), so the printed manifests are what a real run applies.
    `run_id`: the one the manifests show. None when the deployer takes no pod options."""
    from .outputs import store as ostore

    store, _ = ostore.for_run(p.settings.outputs, image.ref, on_cluster=True)
    deployer.outputs_store = store
    if not isinstance(getattr(deployer, "mutators", None), tuple):
        return None
    return wire_outputs(p, deployer, store, run_id, per_job=per_job)


def follow_store(p: Plan, deployer: Any, run: Any, store_text: str) -> None:
    """A model server following an alias reads the model registry's store: the pod gets the store
    and its credentials, in the run's Secret (owned by the Deployment), as a run's outputs do."""
    from .outputs import store as ostore
    from .outputs import wire

    if not isinstance(getattr(deployer, "mutators", None), tuple):
        return
    store = ostore.parse(store_text)
    creds = ostore.credentials(store)
    ca_pem = Path(p.settings.ca_file).expanduser().read_bytes() if creds and p.settings.ca_file else None
    deployer.mutators = deployer.mutators + (wire.mutator(store, run.id, creds=creds, ca_pem=ca_pem),)


def build_recorded(p: Plan, progress: Progress, *, command: str = "build",
                   extra_files: Mapping[str, bytes] | None = None,
                   launcher: Sequence[str] = ()) -> tuple[BuiltImage | None, Any]:
    """`fair build` (and `fair export kfp`, with its shim in `extra_files` and as `launcher`):
    package and build only, recorded like any run; returns (image, record)."""
    from .runs import hook

    run = hook.start_for_plan(command, p)
    try:
        # Nothing is deployed: no deployer to check beforehand.
        image = build_image(p, progress, extra_files=extra_files, launcher=launcher, run=run, preflight=False)
    except BaseException as e:
        run.fail(e)
        raise
    run.finish("Succeeded")
    return image, run


def wait_for(handle: Any, progress: Progress, *, timeout: float | None = None,
             on_log: Callable[[str], None] | None = None, run: Any = None) -> str:
    """Wait for a handle, streaming its logs to `on_log`, recording the outcome in `run`."""
    from . import runhandle

    status, _ = runhandle.wait_for(handle, progress, Wait(on_log=on_log), timeout=timeout, run=run)
    return status
