"""The one-liner API, for notebooks and scripts:

    import fairing
    fairing.config.set_preprocessor("notebook")               # or python / function / full_notebook
    fairing.config.set_builder("append", base_image="python:3.11-slim", registry="127.0.0.1:5000/me")
    fairing.config.set_deployer("job", namespace="team")
    image, handle = fairing.config.run()

    train = fairing.config.fn(train)                         # run one function remotely
    accuracy = train(epochs=3)

Anything not set explicitly comes from the effective settings (fairing.yaml / FAIRING_* / defaults,
see `fairing.settings`); with no registry and no cluster the `local` deployer runs the code here.
Inside the image the pipeline built (FAIRING_RUNTIME=1), `run()` does nothing, so a notebook that
calls it does not launch itself again.

`plan()` + `execute()` are the pipeline itself: TrainJob and the CLI use them too."""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from . import plugins, runtime
from . import settings as settings_mod
from .context import BuildContext, BuiltImage, pod_template
from .errors import BuildError, ConfigError, FairingError
from .progress import Progress, human_bytes

PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
CLUSTER_DEPLOYERS = ("job", "tfjob", "pytorchjob", "cronjob", "serving", "inferenceservice")


# --- the result --------------------------------------------------------------------------------

@dataclass
class RunResult:
    """What `run()` returns: the image, the deployer's handle and how it ran. Unpacks as
    `image, handle = fairing.config.run()`."""

    image: BuiltImage | None
    handle: Any
    mode: str  # "local process", "local container", "job on cluster", "dry run", "skipped (runtime)"
    plan: dict | None = None  # dry run: {"build": ..., "manifests": [...]}
    stages: list[dict] = field(default_factory=list)
    run: Any = None  # the run record (fairing.runs.record.Run); None for dry runs

    def __iter__(self):
        return iter((self.image, self.handle))

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

@dataclass
class Plan:
    entry: Any
    settings: settings_mod.Settings
    preprocessor: tuple[str, dict]
    builder: tuple[str, dict] | None  # None: no image (local process mode)
    target: str | None
    deployer: tuple[str, dict]
    mode: str
    prepare_kw: dict = field(default_factory=dict)  # passed to prepare(entry, **prepare_kw)
    name: str | None = None
    notes: list[str] = field(default_factory=list)


def check_name(kind: str, name: str) -> str:
    """Fail on an unknown stage name without importing the implementation (kept for the real run)."""
    table = plugins._KINDS[kind]
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}", hint=f"choose one of: {', '.join(sorted(table))}")
    return name


def guess_preprocessor(entry: Any) -> str:
    if callable(entry) and not isinstance(entry, (str, os.PathLike)):
        return "function"
    if entry is None:
        return "notebook" if runtime.in_notebook() else "python"
    if str(entry).endswith(".ipynb"):
        return "notebook"
    return "python"


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


def _split(spec: tuple[str, dict] | None) -> tuple[str | None, dict]:
    return (spec[0], dict(spec[1])) if spec else (None, {})


def plan(entry: Any, settings: settings_mod.Settings, *, preprocessor: tuple[str, dict] | None = None,
         builder: tuple[str, dict] | None = None, deployer: tuple[str, dict] | None = None,
         prepare_kw: Mapping[str, Any] | None = None, name: str | None = None,
         build_only: bool = False) -> Plan:
    """Choose the three stages (with `build_only`, for `fair build`: always an image). Explicit (name, kwargs) pairs win over settings; settings over
    guesses. Only validates; nothing is built or contacted except a quick engine probe for the
    local deployer."""
    s = settings
    notes: list[str] = []
    pre_name, pre_kw = _split(preprocessor)
    pre_name = pre_name or s.preprocessor or guess_preprocessor(entry)
    check_name("preprocessor", pre_name)
    b_name, b_kw = _split(builder)
    d_name, d_kw = _split(deployer)
    registry = b_kw.pop("registry", None) or s.registry
    if registry and "://" in registry:
        # Checked here: joined with the image name, the error would name a reference nobody typed.
        raise ConfigError(f"invalid --registry {registry!r}: it must not contain a URL scheme",
                          hint="drop the scheme: HOST[:PORT]/PATH, e.g. 127.0.0.1:5000/team")
    image_name = b_kw.pop("image_name", None) or s.image_name
    target = b_kw.pop("target", None)

    if not d_name:
        if s.deployer:
            d_name = s.deployer
        elif s.schedule:
            d_name = "cronjob"
        elif registry and cluster_configured(s):
            d_name = "job"
        else:
            d_name = "local"
            if registry:
                notes.append("no kubeconfig found: running locally (set --deployer job to use a cluster)")
            elif cluster_configured(s):
                notes.append("no registry configured: running locally (set --registry to use the cluster)")
    check_name("deployer", d_name)  # unknown names fail here, before any work
    if s.schedule and d_name != "cronjob":
        if d_name == "job" or not s.is_set("deployer") and not deployer:
            d_name = "cronjob"
        else:
            raise ConfigError(f"--schedule needs the cronjob deployer, not {d_name!r}",
                              hint="drop --deployer, or use --deployer cronjob")
    if d_name in CLUSTER_DEPLOYERS and not registry and not (target and not target.startswith("oci:")):
        raise ConfigError(f"the {d_name} deployer needs a registry the cluster can pull from",
                          hint="pass --registry HOST[:PORT]/PATH (or set registry in fairing.yaml), "
                               "or run locally with --deployer local")

    mode = "cluster"
    local_mode = engine = None
    if d_name == "local" and build_only and (registry or target):
        local_mode = "build"  # the image goes to the registry/target; nothing runs here
    elif d_name == "local":
        from .deployers.local import resolve_mode

        wanted = d_kw.get("mode") or s.local_mode
        local_mode, engine = resolve_mode(wanted, d_kw.get("docker_host") or s.docker_host)
        d_kw["mode"] = local_mode
        if engine:
            d_kw["docker_host"] = engine
        mode = f"local {local_mode}"

    base_image = b_kw.pop("base_image", None) or s.base_image or default_base_image()
    if b_name or s.builder:
        check_name("builder", b_name or s.builder)  # a typo fails even when nothing gets built
    if local_mode == "process" and not b_name:
        if build_only:
            raise ConfigError("nothing to build into: no registry and no container engine",
                              hint="pass --registry HOST/PATH, --target oci:DIR, or start Docker/Podman")
        if s.builder:
            notes.append(f"local process mode: builder {s.builder!r} not used (no registry, no engine)")
        b_spec = None  # the local process runs the materialised context: nothing to build
    else:
        if not b_name:
            b_name = s.builder or ("append" if registry or target else "docker")
        check_name("builder", b_name)
        if not target:
            if registry:
                target = registry.rstrip("/") + "/" + _repo(image_name or "fairing-" + entry_name(entry))
            elif b_name == "docker":
                # No registry: keep the image in the local engine (the local deployer runs it there).
                target = "localhost/" + _repo(image_name or "fairing-" + entry_name(entry))
                b_kw.setdefault("push", False)
            else:
                raise ConfigError(f"the {b_name} builder needs somewhere to put the image",
                                  hint="pass --registry HOST[:PORT]/PATH")
        if b_name == "docker":
            b_kw.setdefault("docker_host", engine or s.docker_host)
        b_kw["base_image"] = base_image
        b_spec = (b_name, b_kw)

    if d_name in CLUSTER_DEPLOYERS:
        for key in ("namespace", "context", "kubeconfig"):
            if s[key] and key not in d_kw:
                d_kw[key] = s[key]
        if d_name == "cronjob" and "schedule" not in d_kw:
            if not s.schedule:
                raise ConfigError("the cronjob deployer needs a schedule",
                                  hint='pass --schedule "0 3 * * *"')
            d_kw["schedule"] = s.schedule
        mode = f"{d_name} on cluster"
    d_kw.setdefault("mutators", tuple(_mutators(s)))
    if s.dry_run:
        d_kw["dry_run"] = True

    pre_kw.setdefault("requirements", settings_mod.requirements_list(s) or None)
    if pre_kw["requirements"] is None:
        del pre_kw["requirements"]
    return Plan(entry=entry, settings=s, preprocessor=(pre_name, pre_kw), builder=b_spec, target=target,
                deployer=(d_name, d_kw), mode=mode, prepare_kw=dict(prepare_kw or {}), name=name,
                notes=notes)


def _repo(name: str) -> str:
    return re.sub(r"[^a-z0-9._/-]+", "-", name.lower()).strip("-._/") or "fairing-job"


def _mutators(s: Mapping[str, Any]) -> list[Callable]:
    """Pod options from settings, as the shared mutators in fairing.deployers.pod."""
    if not (s.get("cpu") or s.get("memory") or s.get("gpus") or s.get("env")):
        return []
    from .deployers import pod

    out = []
    if s.get("cpu"):
        out.append(pod.cpu(s["cpu"]))
    if s.get("memory"):
        out.append(pod.memory(s["memory"]))
    if s.get("gpus"):
        out.append(pod.gpu(s["gpus"]))
    if s.get("env"):
        out.append(pod.env(dict(s["env"])))
    return out


# --- running a plan ----------------------------------------------------------------------------

def prepare(p: Plan, progress: Progress) -> BuildContext:
    name, kw = p.preprocessor
    with progress.stage("package") as st:
        pre = plugins.load("preprocessor", name)(**kw)
        ctx = pre.prepare(p.entry, **p.prepare_kw)
        # Runtime mode marker: whatever runs this context knows it is the workload, not the author.
        ctx = dataclasses.replace(ctx, env={**ctx.env, runtime.RUNTIME_ENV: "1"})
        st.detail = f"{name}: {len(ctx.files)} files, {human_bytes(ctx.size())}"
    return ctx


def make_builder(p: Plan):
    name, kw = p.builder
    return plugins.load("builder", name)(**kw)


def make_deployer(p: Plan):
    name, kw = p.deployer
    if p.name and "name" not in kw:
        kw = {**kw, "name": p.name}
    return plugins.load("deployer", name)(**kw)


def build(p: Plan, ctx: BuildContext, progress: Progress) -> BuiltImage:
    if p.builder is None:
        # Local process mode: the "image" is the context itself, run from a temp dir.
        from .builders.base import context_hash

        h = context_hash(ctx)
        return BuiltImage(ref=f"context:{h}", digest="", pod_template=pod_template(f"context:{h}", ctx),
                          context=ctx)
    builder = make_builder(p)
    with progress.stage("build") as st:
        st.detail = f"{p.builder[0]} -> {p.target}"
        try:
            image = builder.build(ctx, p.target)
        except BuildError as e:
            if p.deployer[0] == "local" and not p.settings.base_image \
                    and p.builder[1].get("base_image") == default_base_image():
                # The default base image may be unreachable (offline engine): say how to get past it.
                raise BuildError(e.message, hint=f"the default base image {default_base_image()} could not be used; "
                                 "pass --base-image IMAGE the engine can pull, or run without the engine with "
                                 "--local-mode process") from None
            raise
        if image.context is None:
            image = dataclasses.replace(image, context=ctx)
        stats = image.stats
        st.detail = (f"{p.builder[0]}: {stats.layers_uploaded} layers pushed, {stats.layers_skipped} "
                     f"reused, {human_bytes(stats.bytes_uploaded)}")
    progress.note(image.ref)
    return image


def _placeholder_ref(target: str, tag: str | None = None) -> str:
    """`target` pinned to PLACEHOLDER_DIGEST: deployers insist on digest-pinned images, and the
    real digest exists only after the build."""
    from .builders.base import split_tag

    repo, target_tag = split_tag(target)
    tag = tag or target_tag
    return f"{repo}:{tag}@{PLACEHOLDER_DIGEST}" if tag else f"{repo}@{PLACEHOLDER_DIGEST}"


def preflight(p: Plan, deployer: Any, ctx: BuildContext) -> None:
    """Everything the deployer can check before there is an image, so bad deploy input fails
    before a tag is pushed: the kubeconfig and context load (no API call), and the manifests
    render from a placeholder image (the context kind, the options against the pod template)."""
    if p.builder is None:
        return  # local process mode: nothing is pushed, the deployer checks as it runs
    if p.deployer[0] in CLUSTER_DEPLOYERS:
        getattr(deployer, "kube", None)  # loads the kubeconfig: a missing file or unknown context fails now
    ref = _placeholder_ref(p.target)
    deployer.render(BuiltImage(ref=ref, digest="", pod_template=pod_template(ref, ctx), context=ctx))


def dry_run(p: Plan, progress: Progress | None = None) -> dict:
    """The build plan and every manifest, without building or applying anything."""
    progress = progress or Progress(enabled=False)
    ctx = prepare(p, progress)
    if p.builder is not None:
        build_plan = make_builder(p).plan(ctx, p.target)
        ref = _placeholder_ref(str(build_plan.get("target") or p.target), build_plan.get("tag"))
        build_plan["digest"] = "known after the build (manifests show sha256:000...)"
    else:
        from .builders.base import context_hash

        ref = f"context:{context_hash(ctx)}"
        build_plan = {"builder": None, "note": "local process: the context runs from a temp dir",
                      "files": sorted(ctx.files), "requirements": list(ctx.requirements)}
    image = BuiltImage(ref=ref, digest="", pod_template=pod_template(ref, ctx), context=ctx)
    deployer = make_deployer(p)
    manifests = deployer.render(image)
    return {"mode": p.mode, "build": build_plan, "manifests": manifests}


def execute(p: Plan, progress: Progress | None = None, *, wait: bool = False,
            on_log: Callable[[str], None] | None = None, command: str = "train",
            parent: str | None = None) -> RunResult:
    """Package, build, deploy; with `wait`, also wait for the workload (streaming logs to `on_log`).
    Every real run is recorded (fairing.runs): `result.run` is its record."""
    progress = progress or Progress()
    for note in p.notes:
        progress.note(note)
    if p.settings.dry_run:
        return RunResult(None, None, "dry run", plan=dry_run(p, progress), stages=progress.summary())
    from .runs import hook

    run = hook.start_for_plan(command, p, parent=parent)
    try:
        deployer = make_deployer(p)  # its constructor checks the name, namespace and options
        ctx = prepare(p, progress)
        run.packaged(ctx)
        preflight(p, deployer, ctx)
        image = build(p, ctx, progress)
        base, base_digest = hook.base_of(p)
        run.built(image, base_image=base, base_digest=base_digest)
        hook.tag(deployer, run, image)  # run id + source hash on every object it creates
        with progress.stage("deploy") as st:
            handle = deployer.deploy(image)
            mode = getattr(handle, "mode", None)
            st.detail = f"{p.deployer[0]}: {getattr(handle, 'name', '')}" + (f" ({mode})" if mode else "")
        run.deployed(handle, status="Deployed" if not wait else None)
    except BaseException as e:
        run.fail(e)
        raise
    result = RunResult(image, handle, f"local {mode}" if p.deployer[0] == "local" and mode else p.mode, run=run)
    if wait:
        wait_for(handle, progress, timeout=p.settings.timeout, on_log=on_log, run=run,
                 result=ctx.kind == "function")
    result.stages = progress.summary()
    return result


def wait_for(handle: Any, progress: Progress, *, timeout: float | None = None,
             on_log: Callable[[str], None] | None = None, run: Any = None, finish: bool = True,
             result: bool = False) -> str:
    """Wait for the workload; with `on_log`, stream its logs meanwhile (logs end when it ends).
    With `run` (a record), metrics are taken from the log lines and, with `finish`, the record
    gets the outcome (and, with `result`, the function's return value)."""
    try:
        with progress.stage("wait") as st:
            if on_log is not None:
                for line in _lines(handle.logs(follow=True)):
                    if run is not None:
                        run.log(line)
                    on_log(line)
            status = handle.wait(timeout=timeout)
            st.detail = str(status)
    except BaseException as e:
        if run is not None:
            from .runs.hook import local_outputs

            _read_metrics(handle, run, streamed=on_log is not None)
            run.fail(e, files=local_outputs(handle))  # a failed notebook's executed copy matters most
        raise
    if run is not None:
        _read_metrics(handle, run, streamed=on_log is not None)
        if finish:
            from .runs.hook import local_outputs

            value, has = _result_of(handle) if result else (None, False)
            run.finish(str(status), result=value, has_result=has, files=local_outputs(handle))
    return status


def _read_metrics(handle: Any, run: Any, *, streamed: bool) -> None:
    """Metrics from the finished workload's log, when it was not streamed through the record."""
    if streamed:
        return
    try:
        for line in _lines(handle.logs(follow=False)):
            run.log(line)
    except Exception:  # noqa: BLE001 - logs may be gone (cleanup); the record just has no metrics
        pass


def _result_of(handle: Any) -> tuple[Any, bool]:
    try:
        return handle.result(), True
    except Exception:  # noqa: BLE001 - no result to record is not a failed run
        return None, False


def _lines(logs: Any):
    if logs is None:
        return
    if isinstance(logs, (str, bytes)):
        logs = logs.decode(errors="replace") if isinstance(logs, bytes) else logs
        yield from logs.splitlines()
        return
    for item in logs:
        if isinstance(item, bytes):
            item = item.decode(errors="replace")
        yield item.rstrip("\n")


# --- the one-liner API -------------------------------------------------------------------------

class Config:
    """Pending choices for `run()`; the module-level functions use one shared instance."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.preprocessor: tuple[str, dict] | None = None
        self.builder: tuple[str, dict] | None = None
        self.deployer: tuple[str, dict] | None = None

    def set_preprocessor(self, name: str, **kw: Any) -> None:
        check_name("preprocessor", name)
        self.preprocessor = (name, kw)

    def set_builder(self, name: str, **kw: Any) -> None:
        check_name("builder", name)
        self.builder = (name, kw)

    def set_deployer(self, name: str, **kw: Any) -> None:
        check_name("deployer", name)
        self.deployer = (name, kw)

    def plan(self, entry: Any = None, *, settings: settings_mod.Settings | None = None,
             prepare_kw: Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
        s = settings or settings_mod.load()
        if overrides:
            s = s.with_overrides(overrides)
        pre = self.preprocessor
        if entry is None and pre is not None:
            # set_preprocessor("python", executable="train.py") style: the entry is one of its options
            kw = dict(pre[1])
            for key in ("entry", "entry_point", "path", "notebook_file", "function"):
                if key in kw:
                    entry = kw.pop(key)
                    break
            pre = (pre[0], kw)
        return plan(entry, s, preprocessor=pre, builder=self.builder, deployer=self.deployer,
                    prepare_kw=prepare_kw)

    def run(self, entry: Any = None, *, wait: bool = False, progress: Progress | None = None,
            **overrides: Any) -> RunResult:
        """Package `entry` (default: the preprocessor's option, or the running notebook), build, deploy.
        Returns a RunResult (unpacks as `image, handle`). Inside the built image: does nothing."""
        if runtime.in_runtime():
            return RunResult(None, None, "skipped (runtime)")
        p = self.plan(entry, **overrides)
        return execute(p, progress or Progress(), wait=wait)

    def fn(self, f: Callable, **overrides: Any) -> Callable:
        """`fn(f)(*args, **kw)` runs `f(*args, **kw)` as a workload and returns its return value.
        Inside the built image it simply calls `f`."""
        import functools

        @functools.wraps(f)
        def remote(*args: Any, **kwargs: Any) -> Any:
            if runtime.in_runtime():
                return f(*args, **kwargs)
            pre = self.preprocessor if self.preprocessor and self.preprocessor[0] == "function" else None
            s = settings_mod.load()
            if overrides:
                s = s.with_overrides(overrides)
            p = plan(f, s, preprocessor=pre or ("function", {}), builder=self.builder,
                     deployer=self.deployer, prepare_kw={"args": args, "kwargs": kwargs})
            progress = Progress()
            res = execute(p, progress, wait=False)
            handle = res.handle
            wait_for(handle, progress, timeout=s.timeout, run=res.run, finish=False)
            try:
                value = handle.result()
            except BaseException as e:
                res.run.fail(e)
                raise
            from .runs.hook import local_outputs

            res.run.finish("Succeeded", result=value, has_result=True, files=local_outputs(handle))
            # Clean up only after success: a failed workload stays for `fair logs NAME`.
            _cleanup(handle)
            return value

        return remote


def _cleanup(handle: Any) -> None:
    try:
        handle.delete()
    except FairingError:
        pass  # the result is what the caller asked for; a failed cleanup is not worth hiding it


_config = Config()
set_preprocessor = _config.set_preprocessor
set_builder = _config.set_builder
set_deployer = _config.set_deployer
reset = _config.reset
run = _config.run
fn = _config.fn
