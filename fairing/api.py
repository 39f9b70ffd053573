"""Friendly wrappers over the pipeline in fairing.config.

    job = fairing.TrainJob("train.py", registry="127.0.0.1:5000/me", requirements=["numpy==1.26.4"],
                           resources={"cpu": "2", "memory": "4Gi"})
    handle = job.submit()
    for line in handle.logs(follow=True): print(line)
    handle.wait(); handle.delete()

`entry_point` may be a function (its return value comes back from `handle.result()`), a `.py`
file, a directory (with train.py/main.py or `executable=`), or a `.ipynb` notebook. A `schedule`
makes it a CronJob. Unset options come from fairing.yaml / FAIRING_* (see fairing.settings).
PredictionEndpoint lives in fairing.serving and is re-exported here lazily."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import fairing.config as config_mod  # `from . import config` recurses through fairing.__getattr__
from . import settings as settings_mod
from .errors import ConfigError
from .progress import Progress

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
                 timeout: int | None = None, dry_run: bool = False,
                 preprocessor_options: Mapping[str, Any] | None = None,
                 builder_options: Mapping[str, Any] | None = None,
                 deployer_options: Mapping[str, Any] | None = None,
                 progress: bool | None = None):
        if entry_point is None:
            raise ConfigError("TrainJob needs an entry point", hint="pass a function, a .py file, a directory or a .ipynb")
        self.entry_point = entry_point
        overrides: dict[str, Any] = {
            "base_image": base_image, "registry": registry, "deployer": deployer, "builder": builder,
            "preprocessor": preprocessor, "requirements": requirements, "schedule": schedule,
            "namespace": namespace, "kubeconfig": kubeconfig, "context": context, "env": env, "image_name": image_name, "timeout": timeout,
            "dry_run": dry_run or None,
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
        self.progress = progress
        self.image = None
        self.handle = None

    def plan(self) -> config_mod.Plan:
        s = self.settings
        pre = (s.preprocessor or config_mod.guess_preprocessor(self.entry_point), self._pre_kw)
        # builder_options apply to the default builder too (config.plan picks it when the name is None).
        builder = (s.builder, self._builder_kw) if s.builder or self._builder_kw else None
        deployer = (s.deployer, self._deployer_kw) if s.deployer else None
        prepare_kw = {}
        if pre[0] == "function":
            prepare_kw = {"args": self.args, "kwargs": self.kwargs}
        elif self.args:
            prepare_kw = {"args": [str(a) for a in self.args]}
        return config_mod.plan(self.entry_point, s, preprocessor=pre, builder=builder, deployer=deployer,
                               prepare_kw=prepare_kw, name=self.name)

    def dry_run(self) -> dict:
        """The build plan and the manifests, without building or applying anything."""
        return config_mod.dry_run(self.plan())

    def submit(self, *, wait: bool = False) -> Any:
        """Package, build and deploy; returns the deployer's handle (status/wait/logs/result/delete)."""
        res = config_mod.execute(self.plan(), Progress(enabled=self.progress), wait=wait)
        self.image, self.handle = res.image, res.handle
        self.result_info = res
        return res.handle if res.handle is not None else res


def endpoint(model: Any, settings: settings_mod.Settings, *, name: str | None = None,
             replicas: int | None = None, files: Sequence[str] | None = None, storage_uri: str | None = None,
             out: Callable[[str], None] | None = print):
    """A PredictionEndpoint for `model` ("file.py:Class" or a class) configured from settings (what
    `fair deploy` uses): `serving` with a registry and a cluster, else `local` through the engine
    (built straight into it by the docker builder when there is no registry). `files` (model files
    to ship) and `storage_uri` (fetched when the server starts) go to the serve preprocessor."""
    from .serving import PredictionEndpoint

    s = settings
    deployer = s.deployer
    if not deployer:
        deployer = "serving" if s.registry and config_mod.cluster_configured(s) else "local"
    if deployer not in ("serving", "inferenceservice", "local"):
        raise ConfigError(f"the {deployer} deployer does not serve models",
                          hint="use --deployer serving, inferenceservice or local")
    dkw: dict[str, Any] = {"mutators": tuple(config_mod._mutators(s))}
    builder, bkw, target = s.builder or "append", {}, None
    if deployer == "local":
        from .deployers.local import resolve_mode

        _, engine = resolve_mode("container", s.docker_host)
        dkw["docker_host"] = engine
        if not s.registry:
            # No registry: build into the engine that will run it.
            builder, bkw = "docker", {"push": False, "docker_host": engine}
            target = "localhost/"  # completed below, once the endpoint knows its name
    else:
        if not s.registry:
            raise ConfigError(f"the {deployer} deployer needs a registry the cluster can pull from",
                              hint="pass --registry HOST[:PORT]/PATH, or serve locally with --deployer local")
        for key in ("namespace", "kubeconfig", "context"):
            if s[key]:
                dkw[key] = s[key]
        if replicas:
            dkw["replicas"] = replicas
    if builder == "docker":
        bkw.setdefault("docker_host", s.docker_host)
    if s.image_name and s.registry:
        target = s.registry.rstrip("/") + "/" + config_mod._repo(s.image_name)
    reqs = settings_mod.requirements_list(s) or None
    ep = PredictionEndpoint(model, name=name, base_image=s.base_image or config_mod.default_base_image(),
                            registry=s.registry, target=target, deployer=deployer, builder=builder,
                            builder_options=bkw, requirements=reqs, files=list(files) if files else None,
                            storage_uri=storage_uri,
                            timeout=float(s.timeout or 600), out=out, settings=s, **dkw)
    if target == "localhost/":
        ep.target = target + config_mod._repo(s.image_name or f"fairing-{ep.name}")
    return ep


def __getattr__(name: str):
    if name == "PredictionEndpoint":
        from .serving import PredictionEndpoint

        return PredictionEndpoint
    raise AttributeError(f"module 'fairing.api' has no attribute {name!r}")
