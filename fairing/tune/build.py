"""The one build of a tuning run, and the per-trial deployers that reuse it.

Everything goes through fairing.pipeline (plan / build_image / dry_run / make_deployer), so a
tuning run packages and builds exactly like `fair train`, once, and every trial runs the same
digest. A trial is a Variant of the plan's deployer (fairing.request): its name, and its
parameters added to the pod template by `trial_mutator`: `--name value` arguments (scripts and notebooks) and
FAIRING_PARAM_<NAME> environment variables (everyone; the function wrapper reads them)."""
from __future__ import annotations

import copy
import os
import re
from typing import Any, Callable, Mapping

from ..context import BuiltImage
from ..errors import ConfigError
from ..request import Request, Stage, Variant
from .space import Choice, IntRange, Param, env_name, value_text

BACKENDS = ("katib", "jobs", "local")


def backend_deployer(backend: str) -> str:
    """The deployer a backend's trials run on: the first whose class lists the backend in its
    `tune_backends` (Katib's trialSpec is the Job manifest too)."""
    from .. import stages

    return next(name for name, cls in stages.deployer_classes() if backend in cls.tune_backends)


def deployer_backend(deployer: str) -> str | None:
    """The backend a deployer the user named implies (its class's first `tune_backends`), or None:
    that deployer cannot run trials (yet)."""
    from .. import stages

    backends = stages.load("deployer", deployer).tune_backends if deployer in stages.DEPLOYERS else ()
    return backends[0] if backends else None


def is_function(entry: Any) -> bool:
    return callable(entry) and not isinstance(entry, (str, os.PathLike))


def function_spec(space: Mapping[str, Param]) -> dict:
    """The plain-data description of the space the in-image wrapper uses to type values back."""
    spec = {}
    for name, p in space.items():
        entry: dict[str, Any] = {"env": env_name(name)}
        if isinstance(p, Choice):
            entry["type"] = "choice"
            entry["choices"] = [[value_text(v), v] for v in p.values]
        elif isinstance(p, IntRange):
            entry["type"] = "int"
        else:
            entry["type"] = "float"
        spec[name] = entry
    return spec


def choose_backend(backend: str | None, settings: Any, *, probe: Callable[[], bool] | None = None) -> tuple[str, str | None]:
    """(backend, note). Explicit wins; a --deployer maps onto a backend; else katib when the cluster
    has Katib (`probe`), jobs with a registry and a cluster, local otherwise."""
    from .. import pipeline

    dep = settings.deployer
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"unknown tuning backend {backend!r}", hint=f"choose one of: {', '.join(BACKENDS)}")
    if dep:
        implied = deployer_backend(dep)
        if implied is None:
            raise ConfigError(f"tuning trials cannot run on the {dep} deployer",
                              hint="use --backend katib|jobs|local (trials run as batch Jobs or locally)")
        if backend is None:
            return implied, f"backend {implied} (from deployer {dep})"
        if backend_deployer(backend) != dep:
            raise ConfigError(f"--backend {backend} runs trials as {backend_deployer(backend)}, but --deployer is {dep}",
                              hint="drop --deployer; --backend decides where trials run")
        return backend, None
    if backend is not None:
        return backend, None
    if settings.registry and pipeline.cluster_configured(settings):
        if probe is not None and probe():
            return "katib", "backend katib (the cluster has Katib)"
        return "jobs", "backend jobs (registry and cluster configured" + \
            (", no Katib found)" if probe is not None else "; katib is used when the cluster has it)")
    return "local", "backend local (no registry and cluster configured)"


def plan(entry: Any, settings: Any, space: Mapping[str, Param], objective: str, backend: str, *,
         name: str | None = None, args: list[str] | None = None, job_options: Mapping[str, Any] | None = None):
    """The pipeline plan of the one build: the entry (a function wrapped to read its parameters)
    packaged by its preprocessor, built by the configured builder, with the backend's deployer."""
    from .. import pipeline, stages
    from .trialfn import make_trial_function

    if settings.schedule:
        raise ConfigError("a tuning run cannot be scheduled (--schedule makes a CronJob)",
                          hint="drop --schedule / schedule: for fair tune")
    deployer = backend_deployer(backend)
    d_kw: dict[str, Any] = {}
    if stages.stage("deployer", deployer).where == "cluster":
        # A failed trial is a result, not something to retry.
        d_kw = {"backoff_limit": 0, **dict(job_options or {})}
    preprocessor = None
    prepare_kw: dict[str, Any] = {}
    if is_function(entry):
        if settings.preprocessor and settings.preprocessor != "function":
            raise ConfigError(f"a function cannot use the {settings.preprocessor} preprocessor",
                              hint="drop --preprocessor / preprocessor= for a function")
        entry = make_trial_function(entry, function_spec(space), objective)
        # The wrapper's module is pickled by value: fairing is not installed in the image.
        preprocessor = Stage("function", {"by_value": ("fairing.tune.trialfn",)})
        prepare_kw = {"args": (), "kwargs": {}}
    elif args:
        prepare_kw = {"args": list(args)}
    return pipeline.plan(Request(entry, settings, preprocessor=preprocessor, deployer=Stage(deployer, d_kw),
                                 prepare=prepare_kw, name=name))


def build_once(p: Any, progress: Any, mutators: tuple = ()) -> BuiltImage:
    """Package and build once. A trial's deployer renders a placeholder first, so bad deploy
    options fail before anything is pushed."""
    from .. import pipeline

    return pipeline.build_image(p, progress, variant=trial(p, "preflight", {}, with_args=False, mutators=mutators))


def dry_run(p: Any, params: Mapping[str, Any], progress: Any, *, with_args: bool = True,
            texts: Mapping[str, str] | None = None, name: str | None = None, mutators: tuple = (),
            per_job: bool | None = None) -> dict:
    """The build plan and one trial's manifests (with `params`, or Katib placeholders in `texts`),
    building and applying nothing: pipeline.dry_run on the plan with the trial's deployer, wired
    for outputs as a trial is (`per_job`: Katib's trials name their runs after their Jobs)."""
    from .. import pipeline

    return pipeline.dry_run(p, progress, variant=trial(p, name, params, with_args=with_args, texts=texts,
                                                       mutators=mutators), per_job=per_job)


def trial(p: Any, trial_name: str | None, params: Mapping[str, Any], *, with_args: bool = True,
          texts: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None,
          mutators: tuple = ()) -> Variant:
    """One trial as a Variant of the plan's deployer: its name, and its parameters applied after
    the settings' pod options and the caller's `mutators`."""
    return Variant(name=trial_name, mutators=(*mutators, trial_mutator(params, with_args=with_args, texts=texts)),
                   options=dict(extra or {}))


def trial_mutator(params: Mapping[str, Any], *, with_args: bool = True, texts: Mapping[str, str] | None = None):
    """Adds a trial's parameters to the main container: `--name value` args (scripts, notebooks)
    and FAIRING_PARAM_<NAME> env. `texts` gives the text per name when it is not the value's own
    (Katib's ${trialParameters.name} placeholders)."""
    from ..deployers import pod

    values = {n: value_text(v) for n, v in params.items()}
    values.update(texts or {})

    def mutate(template: dict) -> dict:
        t = copy.deepcopy(dict(template))
        c = pod.find_container(t)
        if with_args:
            extra = []
            for n, text in values.items():
                extra += [f"--{n}", text]
            c["args"] = list(c.get("args") or []) + extra
        env = [e for e in c.get("env") or [] if not str(e.get("name", "")).startswith("FAIRING_PARAM_")]
        env += [{"name": env_name(n), "value": text} for n, text in values.items()]
        c["env"] = env
        return t

    mutate.__name__ = mutate.__qualname__ = "tune.params(" + ", ".join(values) + ")"
    return mutate


def trial_deployer(p: Any, trial_name: str, params: Mapping[str, Any], *, with_args: bool = True,
                   texts: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None,
                   mutators: tuple = ()):
    """A deployer for one trial: the plan's deployer with the trial's name and parameters (after
    the settings' pod options and the caller's `mutators`)."""
    from .. import pipeline

    return pipeline.make_deployer(p, trial(p, trial_name, params, with_args=with_args, texts=texts, extra=extra,
                                           mutators=mutators))


def experiment_name(entry: Any, name: str | None = None) -> str:
    """A DNS-1035 name for the run (trial names add -<number>)."""
    import uuid

    from .. import pipeline

    if name:
        from ..kube.client import validate_name

        # Trials are named NAME-N (Jobs, containers, Katib Trials): leave room for the number.
        return validate_name(name, "tuning run name", max_len=56, dns1035=True)
    base = re.sub(r"[^a-z0-9-]+", "-", ("tune-" + pipeline.entry_name(entry)).lower()).strip("-")[:40].strip("-")
    return f"{base}-{uuid.uuid4().hex[:5]}"
