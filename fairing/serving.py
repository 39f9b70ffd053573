"""Serving for users: `PredictionEndpoint(MyModel, ...).create()`, `.predict(data)`, `.delete()`.
The client it hands out (and its payload helpers) live in fairing.model_client and are
re-exported here, where users have always imported them from."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from .errors import ConfigError, FairingError
from .model_client import (  # noqa: F401 - re-exported
    PROTOCOLS, HttpTransport, ModelClient, PredictionError, ServiceProxyTransport, check_protocol, jsonable,
    v2_outputs, v2_request, v2_tensor,
)

__all__ = ["PredictionEndpoint", "ModelClient", "PredictionError", "HttpTransport", "ServiceProxyTransport",
           "PROTOCOLS", "jsonable", "v2_tensor", "v2_request", "v2_outputs"]

# ----------------------------------------------------------------------------- the one-call API

class PredictionEndpoint:
    """A model behind an HTTP endpoint in one call.

        ep = PredictionEndpoint(IrisModel, base_image="127.0.0.1:5000/fairing/python:3.11",
                                registry="127.0.0.1:5000", deployer="local",
                                requirements=["scikit-learn==1.5.2"], files=["model.joblib"])
        ep.create()                       # build, deploy, wait until ready, print the URL
        ep.predict([[5.1, 3.5, 1.4, 0.2]])
        ep.delete()

    `model` is a class (or instance) with predict(), or "model.py:ClassName". `deployer` is
    "serving" (Deployment + Service), "inferenceservice" (KServe) or "local" (a container through
    the Docker/Podman API); None lets the pipeline choose from `settings` (what `fair deploy` does).
    Extra keyword arguments go to the deployer (namespace, replicas, mutators, kubeconfig, ...).
    `image=` skips the build and deploys an image already built for this model (a BuiltImage).
    Packaging, building and deploying go through fairing.pipeline, like every other workload."""

    def __init__(self, model: Any = None, *, name: str | None = None, base_image: str | None = None,
                 registry: str | None = None, target: str | None = None, deployer: str | None = "serving",
                 builder: str = "append", requirements=None, files=None, storage_uri: str | None = None,
                 protocol: str = "v1", timeout: float = 600.0, builder_options: Mapping | None = None,
                 max_batch_size: int | None = None, max_latency_ms: float | None = None,
                 image=None, out: Callable[[str], None] | None = print, settings=None,
                 progress: bool | None = None, model_ref: str | None = None, **deployer_options):
        from . import pipeline
        from . import stages
        from .preprocessors.serve import check_name, default_name

        # KServe's own runtimes (deployer="inferenceservice", model_format="sklearn") need no image.
        self.model_format = deployer_options.get("model_format")
        if model is None and image is None and not self.model_format:
            raise ConfigError("PredictionEndpoint needs a model", hint="pass the model class or 'model.py:ClassName'")
        if deployer is not None:
            deployer = pipeline.serving_deployer(deployer)
        if self.model_format:
            if deployer != "inferenceservice":
                raise ConfigError(f"model_format works with the inferenceservice deployer, not {deployer!r}",
                                  hint="pass deployer='inferenceservice', or give your own model class instead")
            deployer_options.setdefault("storage_uri", storage_uri)
            storage_uri = None
        if not isinstance(builder, str):
            raise ConfigError(f"builder must be a name, not a {type(builder).__name__}",
                              hint="pass builder='append', 'docker' or 'cluster' (builder_options= for its options)")
        self.model = model
        self.name = check_name(name or (default_name(model) if model is not None else "model"))
        self.settings, self.deployer_name, self.protocol = settings, deployer, check_protocol(protocol)
        self.base_image = base_image or (settings.base_image or pipeline.default_base_image() if settings else None)
        self.registry, self.target, self.builder = registry, target, builder
        self.requirements, self.files, self.storage_uri = requirements, files, storage_uri
        if model_ref is not None and (files or storage_uri):
            raise ConfigError("--model (model_ref=) and --file/--storage-uri both say what goes into the model dir",
                              hint="give one: --model iris@champion (a registered model, run:ID, best:ID), or --file")
        self.model_ref = model_ref
        self.model_files = None  # fairing.models.serve.ModelFiles, once resolved
        from .preprocessors.serve import batching_env

        batching_env(max_batch_size, max_latency_ms)  # checked now, before any build
        self.max_batch_size, self.max_latency_ms = max_batch_size, max_latency_ms
        # modelcar=True (inferenceservice): the model's files go to KServe as an oci:// modelcar image
        # built here before the deploy, not as a layer of the serving image.
        self.modelcar = deployer_options.get("modelcar") is True
        if self.modelcar and model_ref is None:
            raise ConfigError("modelcar=True needs the model to put in it",
                              hint="pass model_ref='iris@champion' (fair deploy --model iris@champion --modelcar)")
        if self.modelcar and deployer != "inferenceservice":
            raise ConfigError(f"a modelcar is served by KServe, not by the {deployer or 'default'} deployer",
                              hint="add deployer='inferenceservice' (--deployer inferenceservice)")
        self.modelcar_image = None  # its BuiltImage, once built
        self.builder_options, self.deployer_options = dict(builder_options or {}), dict(deployer_options)
        self.image, self.timeout, self.progress = image, timeout, progress
        self.out = out or (lambda s: None)
        self.handle = None
        self.run_result = None  # the pipeline's RunResult after create()
        self.run = None  # the run record (fairing.runs) after create()
        if deployer is not None:
            # Made now so a typo in an option fails before any build (constructing talks to nothing).
            stages.load("deployer", deployer)(name=self.name, **self.deployer_options)

    # -- the pipeline -------------------------------------------------------------------------------
    def plan(self):
        """The pipeline's plan for this endpoint: the serve preprocessor, the builder, the deployer."""
        from . import pipeline
        from . import settings as settings_mod
        from .request import Request, Stage

        s = self.settings if self.settings is not None else settings_mod.explicit()
        if self.registry:
            s = s.with_overrides({"registry": self.registry})
        builder_kw = dict(self.builder_options)
        if self.base_image:
            builder_kw["base_image"] = self.base_image
        if self.target:
            builder_kw["target"] = self.target
        builder_name = (s.builder if self.settings is not None else None) or self.builder
        if self.settings is not None and not s.builder and self.builder == "append":
            builder_name = None  # let the plan choose (docker into the engine when there is no registry)
        prepare_kw = {"name": self.name, "files": self.files, "storage_uri": self.storage_uri}
        if self.model_ref is not None:
            m = self.resolve_model()
            prepare_kw["env"] = {"FAIRING_MODEL_REF": m.ref, "FAIRING_MODEL_VERSION": m.resolved,
                                 "FAIRING_MODEL_RUN": m.run or "", "FAIRING_MODEL_DIGEST": m.digest}
        if self.max_batch_size is not None:
            prepare_kw.update(max_batch_size=self.max_batch_size, max_latency_ms=self.max_latency_ms)
        if self.requirements is not None:
            prepare_kw["requirements"] = self.requirements
        # With no deployer name the plan chooses one, and the options still go to it.
        deployer = Stage(self.deployer_name, self.deployer_options) \
            if self.deployer_name or self.deployer_options else None
        p = pipeline.plan(Request(self.model, s, preprocessor=Stage("serve"),
                                  builder=Stage(builder_name, builder_kw) if builder_name or builder_kw else None,
                                  deployer=deployer, prepare=prepare_kw, name=self.name,
                                  prebuilt=self.image is not None))
        if self.model_ref is not None and not self.modelcar:
            import dataclasses

            # A modelcar holds the files instead (KServe mounts it at /mnt/models).
            p = dataclasses.replace(p, prepare_kw={**p.prepare_kw, **self._model_kw(p)})
        if p.on_cluster and self.follows():
            # NAME@ALIAS on a cluster: the server follows the alias (the version above is where it
            # starts); the deploy gives its pod the registry's store.
            import dataclasses

            m = self.model_files
            p = dataclasses.replace(p, prepare_kw={**p.prepare_kw, "follow": (m.ref, m.store)})
        return p

    def _model_kw(self, p) -> dict:
        """How the model's files get into the serving image. The version's registered layer,
        mounted, when the append builder pushes to the registry the version is in: nothing is
        fetched here or uploaded, and the files are at /models (FAIRING_MODEL_DIR, what
        load(model_dir) gets). Else the files, fetched here and checked by digest, go where
        load(model_dir) looks (the working dir), a layer of their own (append builder) not
        counted against the context size cap."""
        from .models.modelcar import MODELS_DIR
        from .models.serve import fetch, layer_for

        m = self.model_files
        if self.image is not None:
            return {}  # built already (or given): nothing is packaged, the files are not needed
        layer = layer_for(m, p.target) if p.builder is not None and p.builder.name == "append" else None
        if layer is not None:
            return {"model_layer": layer, "env": {**p.prepare_kw.get("env", {}), "FAIRING_MODEL_DIR": MODELS_DIR}}
        fetch(m)
        return {"model_files": {f["path"]: str(m.dir / f["path"]) for f in m.files}}

    def follows(self) -> bool:
        """Can the server follow the model's alias? When it is NAME@ALIAS in a registry a pod can
        read (oci:// or s3://; a directory on this machine is not), deployed on a cluster."""
        m = self.resolve_model()
        if m is None or m.alias is None or not m.store:
            return False
        return m.store.startswith(("oci://", "oci+http://", "s3://"))

    def resolve_model(self):
        """The model files `model_ref` names (NAME, NAME:N, NAME@ALIAS, run:ID, best:TUNE_ID);
        resolved once per endpoint, so the plan and the record agree (fetched here only when the
        image cannot mount the version's layer)."""
        if self.model_files is None and self.model_ref is not None:
            from .models.serve import fetch_model

            self.model_files = fetch_model(self.model_ref, download=False)  # fetched when needed
        return self.model_files

    def _progress(self):
        from .progress import Progress

        return Progress(enabled=self.progress)

    def build(self, plan=None, progress=None):
        """Package and build the serving image (with progress); returns the BuiltImage."""
        from . import pipeline

        if self.image is not None or self.model_format:
            return self.image
        self._check_base()
        p = plan or self.plan()
        progress = progress or self._progress()
        self.image = pipeline.build_image(p, progress, preflight=False)
        return self.image

    def _modelcar_step(self, p, progress):
        """The pipeline's before_deploy step that builds and pushes the modelcar and gives its
        oci:// reference to the deployer: after the serving image is built (a failed build
        pushes no modelcar, so no tag is left behind) and after the deployer's preflight
        (KServe installed), before anything is applied. None when there is none to build."""
        from . import pipeline

        if not self.modelcar or self.deployer_options.get("modelcar") is not True or p.settings.dry_run:
            return None

        def step(deployer):
            built = pipeline.build_modelcar(p, self.resolve_model(), progress)
            self.modelcar_image = built
            self.out(f"modelcar {built.ref} ({self.model_files.resolved})")
            deployer.modelcar = self.deployer_options["modelcar"] = f"oci://{built.ref}"
        return step

    def _check_base(self) -> None:
        if not self.base_image and self.builder == "append" and self.registry:
            raise ConfigError("the append builder needs a base image with Python",
                              hint="pass base_image='registry/python:3.11' (an image with python on PATH)")

    def deployer(self):
        from . import pipeline

        return pipeline.make_deployer(self.plan())

    def render(self) -> list[dict]:
        """The manifests `create()` would apply (for dry runs); builds nothing."""
        from . import pipeline

        return pipeline.dry_run(self.plan(), image=self.image)["manifests"]

    # -- the verbs ----------------------------------------------------------------------------------
    def create(self, wait: bool = True, *, keep_on_failure: bool = False) -> "PredictionEndpoint":
        """Build, deploy and (with wait) block until the model answers ready, then print the URL.
        If it never gets ready, the end of the server log is printed and the endpoint is deleted
        (keep_on_failure=True leaves it for debugging)."""
        from . import pipeline

        p, progress = self.plan(), self._progress()
        if self.image is None and not self.model_format:
            self._check_base()
        # The pipeline packages, builds (unless an image was given) and deploys, recording the run.
        self.run_result = pipeline.execute(p, progress, image=self.image, command="deploy",
                                           before_deploy=self._modelcar_step(p, progress))
        self.image, self.handle, self.run = self.run_result.image, self.run_result.handle, self.run_result.run
        run = self.run
        if self.model_files is not None and run is not None:
            labels = self.model_files.labels()
            if self.modelcar_image is not None:
                labels["modelcar"] = self.modelcar_image.ref  # what KServe mounts at /mnt/models
            follow = (p.prepare_kw.get("follow") or (None,))[0]
            if follow:
                labels["follows"] = follow
            run.note(model=labels)
        if wait:
            try:
                self.handle.wait(self.timeout)
            except KeyboardInterrupt:
                # The endpoint being created goes (shielded from a second interrupt), in one line.
                from .runhandle import interrupted

                raise interrupted(self.handle, run, keep=keep_on_failure) from None
            except BaseException as exc:
                if isinstance(exc, FairingError):
                    self._print_log_tail()
                # Don't leave a broken endpoint running behind an exception the caller may not catch.
                if not keep_on_failure:
                    try:
                        self.handle.delete()
                    except Exception:  # noqa: BLE001 - the original error is the one to report
                        pass
                run.fail(exc)
                raise
            run.finish("Ready")
        self.out(f"model {self.name!r} is being served at {self.url}")
        self.out(f"  V1: POST {self.client().predict_url('v1')}")
        self.out(f"  v2: POST {self.client().predict_url('v2')}")
        return self

    def _print_log_tail(self, lines: int = 20) -> None:
        try:
            # Access-log lines (the readiness polls) would push the traceback out of view.
            tail = [line for line in self.handle.logs() if line.strip() and "uvicorn.access" not in line][-lines:]
        except Exception:  # noqa: BLE001 - best effort: no logs is not a second error
            return
        if tail:
            self.out(f"last lines of the model server log ({self.name}):")
            for line in tail:
                self.out("  " + line)

    @property
    def url(self) -> str:
        return self._require_handle().url

    def client(self) -> ModelClient:
        return self._require_handle().client(protocol=self.protocol)

    def predict(self, data: Any, *, protocol: str | None = None, raw: bool = False) -> Any:
        return self.client().predict(data, protocol=protocol or self.protocol, raw=raw)

    def logs(self, follow: bool = False):
        return self._require_handle().logs(follow=follow)

    def status(self) -> str:
        return self._require_handle().status()

    def delete(self) -> None:
        if self.handle is not None:
            self.handle.delete()

    def __repr__(self) -> str:
        from .display import endpoint_facts, text_fields

        return text_fields(*endpoint_facts(self, *self._seen()))

    def _repr_html_(self) -> str:
        from .display import endpoint_html

        return endpoint_html(self, *self._seen())

    def _seen(self) -> tuple:
        """(its /metrics summary or None, its status) for the reprs; never raises."""
        if self.handle is None:
            return None, None
        from .display import live_status
        from .telemetry import scrape

        status = live_status(self.handle)
        return (scrape(self.handle) if status in ("Ready", "Running") else None), status

    def _require_handle(self):
        if self.handle is None:
            raise ConfigError("the endpoint has not been created", hint="call create() first")
        return self.handle
