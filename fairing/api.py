"""Friendly wrappers over fairing.pipeline.

    job = fairing.TrainJob("train.py", registry="127.0.0.1:5000/me", requirements=["numpy==1.26.4"],
                           resources={"cpu": "2", "memory": "4Gi"})
    handle = job.submit()
    for line in handle.logs(follow=True): print(line)
    handle.wait(); handle.delete()

`entry_point` may be a function (its return value comes back from `handle.result()`), a `.py`
file, a directory (with train.py/main.py or `executable=`), or a `.ipynb` notebook. A `schedule`
makes it a CronJob. `deployer="trainjob", nodes=2` runs it as a Kubeflow TrainJob (Kubeflow Trainer
v2; not this class) and `queue="team-queue"` submits it to a Kueue LocalQueue.
Unset options come from fairing.yaml / FAIRING_* (see fairing.settings).
PredictionEndpoint lives in fairing.serving and is re-exported here lazily."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from . import pipeline
from . import settings as settings_mod
from .errors import ConfigError
from .progress import Progress
from .request import Request, Stage

__all__ = ["TrainJob", "PredictionEndpoint"]

_RESOURCE_KEYS = {"cpu": "cpu", "memory": "memory", "gpu": "gpus", "gpus": "gpus"}


class TrainJob:
    def __init__(self, entry_point: str | Callable | Any, *, base_image: str | None = None,
                 registry: str | None = None, deployer: str | None = None, builder: str | None = None,
                 preprocessor: str | None = None, requirements: Sequence[str] | str | None = None,
                 resources: Mapping[str, Any] | None = None, schedule: str | None = None,
                 namespace: str | None = None, kubeconfig: str | None = None, context: str | None = None,
                 env: Mapping[str, str] | None = None,
                 name: str | None = None, image_name: str | None = None, args: Sequence[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, profile: str | None = None,
                 timeout: int | None = None, dry_run: bool = False, queue: str | None = None,
                 nodes: int | None = None, procs_per_node: int | None = None, runtime: str | None = None,
                 preprocessor_options: Mapping[str, Any] | None = None,
                 builder_options: Mapping[str, Any] | None = None,
                 deployer_options: Mapping[str, Any] | None = None,
                 progress: bool | None = None, outputs: str | None = None,
                 register: str | None = None, promote_if: str | None = None):
        if entry_point is None:
            raise ConfigError("TrainJob needs an entry point", hint="pass a function, a .py file, a directory or a .ipynb")
        self.entry_point = entry_point
        overrides: dict[str, Any] = {
            "base_image": base_image, "registry": registry, "deployer": deployer, "builder": builder,
            "preprocessor": preprocessor, "requirements": requirements, "schedule": schedule,
            "namespace": namespace, "kubeconfig": kubeconfig, "context": context, "env": env, "image_name": image_name, "timeout": timeout,
            "queue": queue, "nodes": nodes, "procs_per_node": procs_per_node, "runtime": runtime,
            "dry_run": dry_run or None, "outputs": outputs,
        }
        for k, v in (resources or {}).items():
            if k not in _RESOURCE_KEYS:
                raise ConfigError(f"unknown resource {k!r}", hint="resources take cpu, memory and gpus")
            overrides[_RESOURCE_KEYS[k]] = v
        # Validated now, so a typo fails at construction rather than after packaging.
        self.settings = settings_mod.load(overrides, profile=profile, cli_source="argument")
        self.name = name
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self._pre_kw = dict(preprocessor_options or {})
        self._builder_kw = dict(builder_options or {})
        self._deployer_kw = dict(deployer_options or {})
        if promote_if is not None and register is None:
            raise ConfigError("promote_if needs register=NAME: the gate promotes a version of that model",
                              hint='e.g. TrainJob(..., register="iris", promote_if="accuracy >= champion")')
        from .request import Retrain

        self.retrain = Retrain(register, promote_if) if register is not None else None
        self.progress = progress
        self.image = None
        self.handle = None

    def plan(self) -> pipeline.Plan:
        s = self.settings
        pre = Stage(s.preprocessor or pipeline.guess_preprocessor(self.entry_point), self._pre_kw)
        # builder_options apply to the default builder too (the plan picks it when the name is None).
        builder = Stage(s.builder, self._builder_kw) if s.builder or self._builder_kw else None
        deployer = Stage(s.deployer, self._deployer_kw) if s.deployer else None
        prepare_kw = {}
        if pre.name == "function":
            prepare_kw = {"args": self.args, "kwargs": self.kwargs}
        elif self.args:
            prepare_kw = {"args": [str(a) for a in self.args]}
        return pipeline.plan(Request(self.entry_point, s, preprocessor=pre, builder=builder, deployer=deployer,
                                     prepare=prepare_kw, name=self.name, retrain=self.retrain))

    def dry_run(self) -> dict:
        """The build plan and the manifests, without building or applying anything."""
        return pipeline.dry_run(self.plan())

    def submit(self, *, wait: bool = False, quiet: bool | None = None, keep: bool | None = None) -> Any:
        """Package, build and deploy; returns the deployer's handle (status/wait/logs/result/delete).
        With `wait`, the log shows as it runs (unless `quiet`, or progress=False) and an interrupt
        deletes the workload (`keep=True`: it keeps running)."""
        from .config import kept, waiting

        if quiet is None and self.progress is False:
            quiet = True
        p = self.plan()
        res = pipeline.execute(p, Progress(enabled=self.progress),
                               wait=waiting(quiet, kept(keep, p.settings)) if wait else None)
        self.image, self.handle = res.image, res.handle
        self.result_info = res
        return res.handle if res.handle is not None else res


def attach(name: str, *, namespace: str | None = None, kubeconfig: str | None = None, context: str | None = None,
           deployer: str | None = None, profile: str | None = None) -> Any:
    """A handle for a workload started earlier (by `fair train`, or a call that was interrupted with
    keep=True): `fairing.attach("train-ab12c").wait()` shows its log until it ends. Interrupting
    that wait leaves the workload running (it was not started here); `.delete()` removes it."""
    from . import workloads
    from .runhandle import RunHandle

    s = settings_mod.load({"namespace": namespace, "kubeconfig": kubeconfig, "context": context,
                           "deployer": deployer}, profile=profile, cli_source="argument")
    inner = workloads.attach(name, s)
    return RunHandle(inner, _record_of(workloads.run_id_of(inner)), owned=False)


def _record_of(run_id: str | None) -> Any:
    """The run record (to settle when the wait ends) from this machine's store, or None."""
    if not run_id:
        return None
    try:
        from .runs.record import Run
        from .runs.store import Store

        store = Store()
        return Run(store.get(run_id), store)
    except Exception:  # noqa: BLE001 - started elsewhere: nothing to settle here
        return None


def endpoint(model: Any, settings: settings_mod.Settings, *, name: str | None = None,
             replicas: int | None = None, files: Sequence[str] | None = None, storage_uri: str | None = None,
             out: Callable[[str], None] | None = print, model_ref: str | None = None,
             max_batch_size: int | None = None, max_latency_ms: float | None = None, modelcar: bool = False):
    """A PredictionEndpoint for `model` ("file.py:Class" or a class) configured from settings (what
    `fair deploy` uses). The pipeline's plan decides the deployer (`serving` with a registry and a
    cluster, else `local`), the builder and the target; `files` (model files to ship) and
    `storage_uri` (fetched when the server starts) go to the serve preprocessor; `modelcar` serves
    `model_ref`'s files from a KServe modelcar (inferenceservice deployer)."""
    from .serving import PredictionEndpoint

    options = {"replicas": replicas} if replicas else {}
    if modelcar:
        options["modelcar"] = True
    return PredictionEndpoint(model, name=name, settings=settings, deployer=settings.deployer, files=list(files) if files else None,
                              storage_uri=storage_uri, out=out, model_ref=model_ref,
                              max_batch_size=max_batch_size, max_latency_ms=max_latency_ms, **options)


def __getattr__(name: str):
    if name == "PredictionEndpoint":
        from .serving import PredictionEndpoint

        return PredictionEndpoint
    raise AttributeError(f"module 'fairing.api' has no attribute {name!r}")
