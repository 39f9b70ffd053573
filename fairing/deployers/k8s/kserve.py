"""`inferenceservice` deployer: a KServe serving.kserve.io/v1beta1 InferenceService.

Three shapes:
- custom predictor (default): fairing's serving image as the predictor's `kserve-container`, with
  the same probes, env and pod mutators as the `serving` deployer;
- modelcar (`modelcar="oci://registry/repo@sha256:..."`, made by PredictionEndpoint from
  `model_ref`, see fairing/models/modelcar.py): KServe's runtime path. The model's files are an OCI
  image (/models) that KServe mounts at /mnt/models by its modelcar sidecar (`storageUri: oci://`,
  no storage initializer, no copy); the runtime is a ServingRuntime fairing makes per endpoint, named
  like it and owned by it, whose container is fairing's serving image (the user's code; no public
  runtime image is needed). So the code image and the model image are pinned by digest each;
- model format: KServe's own runtime for a saved model (`model_format="sklearn"`,
  `storage_uri="gs://..."|"pvc://..."|"https://..."|"oci://..."`): no image is built at all.

Defaults to KServe's RawDeployment mode (a plain Deployment + Service, no Knative/Istio needed),
which is also what makes predict() through the API server's service proxy possible
(`<name>-predictor:80`); pass deployment_mode="Serverless" for Knative."""
from __future__ import annotations

import copy
from typing import Any

from ...context import BuiltImage
from ...errors import ConfigError, DeployError
from .. import labels as L
from .. import pod as podlib
from ..base import Deployer, check_replicas
from .base import KubeAccess, check_pinned
from .deployment import (
    CONTAINER, ServedModelHandle, conditions, endpoint_name, model_of, probes, serving_pod_template,
)

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
KSERVE_CONTAINER = "kserve-container"  # KServe requires this name for a custom predictor container
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MODES = ("RawDeployment", "Serverless", "ModelMesh")
# Pod-level fields the predictor spec takes inline (it embeds a PodSpec).
POD_FIELDS = ("volumes", "nodeSelector", "tolerations", "affinity", "serviceAccountName", "imagePullSecrets",
              "initContainers", "securityContext", "priorityClassName", "runtimeClassName",
              "terminationGracePeriodSeconds", "topologySpreadConstraints", "schedulerName", "hostAliases",
              "dnsConfig", "dnsPolicy")
RUNTIME_API_VERSION = "serving.kserve.io/v1alpha1"
RUNTIME_KIND = "ServingRuntime"
# The model format fairing's own ServingRuntimes declare; the predictor asks for it by name.
FAIRING_FORMAT = "fairing"
MODELCAR_DIR = "/mnt/models"  # where KServe links the modelcar's /models into the runtime container
MODELCAR_PLACEHOLDER = "oci://<modelcar: the model's files, pushed at deploy>"
MODEL_FORMATS = ("sklearn", "xgboost", "lightgbm", "tensorflow", "pytorch", "onnx", "triton", "pmml",
                 "paddle", "huggingface", "mlflow")


class InferenceServiceDeployer(KubeAccess, Deployer):
    """Options: namespace, kubeconfig, context, name, replicas (minReplicas, 1), max_replicas,
    mutators, labels, annotations, deployment_mode ("RawDeployment"), model_format + storage_uri
    (+ protocol_version, runtime) for a KServe runtime instead of a fairing image, modelcar (the
    model's files as an oci:// image, served by fairing's image as a ServingRuntime), dry_run."""

    deployer_name = "inferenceservice"
    aliases = ("kserve",)
    serves = True
    api_version = API_VERSION
    kind = KIND
    kind_options = ("replicas", "max_replicas", "deployment_mode", "model_format", "model_format_version",
                    "storage_uri", "protocol_version", "runtime", "max_surge", "modelcar")

    @staticmethod
    def state(obj: dict | None) -> str:
        return isvc_state(obj)

    def check_name(self, name: str) -> str:
        # KServe derives "<name>-predictor" Services/Deployments from it: keep room for the suffix.
        return endpoint_name(name, "InferenceService name", max_len=45)

    def configure(self, replicas=1, max_replicas=None, deployment_mode="RawDeployment", model_format=None,
                  model_format_version=None, storage_uri=None, protocol_version=None, runtime=None,
                  max_surge="25%", modelcar=None) -> None:
        self.replicas = check_replicas(replicas)
        if max_replicas is not None and (check_replicas(max_replicas) < self.replicas or max_replicas == 0):
            raise ConfigError(f"max_replicas={max_replicas} is below replicas={self.replicas}",
                              hint="max_replicas must be at least replicas (and at least 1)")
        self.max_replicas = max_replicas
        if deployment_mode is not None and deployment_mode not in MODES:
            raise ConfigError(f"unknown KServe deployment mode {deployment_mode!r}", hint=f"use one of {', '.join(MODES)}")
        self.deployment_mode = deployment_mode
        if model_format is not None and not storage_uri:
            raise ConfigError(f"model_format={model_format!r} needs storage_uri",
                              hint="pass storage_uri='gs://...', 's3://...', 'pvc://...' or 'https://...' where the saved model is")
        if storage_uri and model_format is None:
            raise ConfigError("storage_uri on the inferenceservice deployer needs model_format (a KServe runtime)",
                              hint="for your own model class, give storage_uri to PredictionEndpoint/the serve "
                                   "preprocessor instead: the model server fetches it at start")
        if protocol_version is not None and protocol_version not in ("v1", "v2", "grpc-v2"):
            raise ConfigError(f"unknown protocol_version {protocol_version!r}", hint="use v1, v2 or grpc-v2")
        self.model_format, self.model_format_version = model_format, model_format_version
        self.storage_uri, self.protocol_version, self.runtime = storage_uri, protocol_version, runtime
        self.max_surge = max_surge
        # True: "the endpoint's model, as a modelcar" (PredictionEndpoint builds it and passes its
        # oci:// reference before deploying); a string: that reference.
        if modelcar not in (None, False, True) and not (isinstance(modelcar, str) and modelcar.startswith("oci://")):
            raise ConfigError(f"modelcar={modelcar!r} is not an oci:// image reference",
                              hint="pass modelcar=True with model_ref='iris@champion' (fairing builds it), or 'oci://registry/repo@sha256:...'")
        if modelcar and model_format:
            raise ConfigError("modelcar and model_format are two ways to serve a model: give one",
                              hint="KServe's own runtimes take an oci:// modelcar as storage_uri='oci://...' with model_format")
        self.modelcar = modelcar or None

    def preflight(self) -> None:
        """KServe is installed: it serves InferenceServices and ServingRuntimes (a cluster with only
        the InferenceService CRD and no KServe has no ServingRuntime API). Run before anything is
        built or pushed, so a missing KServe leaves nothing behind."""
        from ...kube.client import CRDNotInstalled, resource_for

        kube = self.kube
        for api_version, kind in ((API_VERSION, KIND), (RUNTIME_API_VERSION, RUNTIME_KIND)):
            res = resource_for(api_version, kind)
            if not kube.group_version_served(res):
                raise CRDNotInstalled(f"KServe is not installed on {kube.server}: it serves no {kind} API ({api_version})",
                                      hint=res.install_hint)

    # -- manifests ----------------------------------------------------------------------------------
    def _predictor_from_template(self, template: dict) -> dict:
        spec = template.get("spec") or {}
        predictor: dict[str, Any] = {k: copy.deepcopy(spec[k]) for k in POD_FIELDS if k in spec}
        labels = {k: v for k, v in ((template.get("metadata") or {}).get("labels") or {}).items()}
        if labels:
            predictor["labels"] = labels
        pod_annotations = (template.get("metadata") or {}).get("annotations")
        if pod_annotations:
            predictor["annotations"] = dict(pod_annotations)
        predictor["minReplicas"] = self.replicas
        if self.max_replicas is not None:
            predictor["maxReplicas"] = self.max_replicas
        if self.deployment_mode in (None, "RawDeployment"):
            predictor["deploymentStrategy"] = {"type": "RollingUpdate",
                                               "rollingUpdate": {"maxSurge": self.max_surge, "maxUnavailable": 0}}
        return predictor

    def render(self, image: BuiltImage | None = None, *, offline: bool = True) -> list[dict]:
        """The InferenceService as a plain dict; no API calls."""
        ns = self.target_namespace(offline=offline)
        annotations = dict(self.annotations)
        if self.deployment_mode:
            annotations[MODE_ANNOTATION] = self.deployment_mode
        if self.model_format:
            name = self.name or _required_name()
            template = {"metadata": {"labels": {**L.MANAGED, L.KIND: "serve"}},
                        "spec": {"containers": [{"name": CONTAINER}]}}
            # Resources/env/volumes land on "main", then move to `model`.
            template = podlib.apply(template, self.mutators)
            main = podlib.find_container(template, CONTAINER)
            predictor = self._predictor_from_template(template)
            model: dict[str, Any] = {"modelFormat": {"name": self.model_format}, "storageUri": self.storage_uri}
            if self.model_format_version:
                model["modelFormat"]["version"] = self.model_format_version
            if self.protocol_version:
                model["protocolVersion"] = self.protocol_version
            if self.runtime:
                model["runtime"] = self.runtime
            for key in ("resources", "env", "envFrom", "volumeMounts"):
                if main.get(key):
                    model[key] = main[key]
            predictor["model"] = model
        elif self.modelcar:
            if image is None:
                raise ConfigError("a modelcar InferenceService needs fairing's serving image (its runtime)",
                                  hint="PredictionEndpoint(..., deployer='inferenceservice', model_ref=..., modelcar=True) builds both")
            check_pinned(image)
            template, spec = serving_pod_template(image, self.mutators)
            model_name = spec.model_name
            name = self.name or endpoint_name(model_name, "InferenceService name", max_len=45)
            annotations[L.IMAGE_ANNOTATION] = image.ref
            predictor = self._predictor_from_template(template)
            main = podlib.find_container(template, CONTAINER)
            uri = self.modelcar if isinstance(self.modelcar, str) else MODELCAR_PLACEHOLDER
            model = {"modelFormat": {"name": FAIRING_FORMAT}, "runtime": name, "storageUri": uri}
            if main.get("resources"):
                model["resources"] = main["resources"]
            predictor["model"] = model
            runtime = self._runtime(name, ns, main, spec.port)
        else:
            if image is None:
                raise ConfigError("the inferenceservice deployer needs an image, or model_format + storage_uri",
                                  hint="build the serving image first (PredictionEndpoint does), or pass model_format='sklearn', storage_uri=...")
            check_pinned(image)
            template, spec = serving_pod_template(image, self.mutators)
            port, model_name = spec.port, spec.model_name
            name = self.name or endpoint_name(model_name, "InferenceService name", max_len=45)
            annotations[L.IMAGE_ANNOTATION] = image.ref
            predictor = self._predictor_from_template(template)
            containers = []
            for c in template["spec"]["containers"]:
                c = copy.deepcopy(c)
                if c.get("name") == CONTAINER:
                    c["name"] = KSERVE_CONTAINER
                    # KServe names the port itself in RawDeployment; keep a plain containerPort.
                    c["ports"] = [{"containerPort": port, "protocol": "TCP"}]
                    for key, probe in probes(port).items():
                        c.setdefault(key, probe)
                containers.append(c)
            predictor["containers"] = containers
        labels = {**L.MANAGED, L.KIND: "serve", L.APP_NAME: name, **self.labels}
        if not self.model_format:
            labels[L.MODEL] = model_name
        meta = {"name": name, "labels": labels, "annotations": annotations}
        if ns:
            meta["namespace"] = ns
        isvc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": {"predictor": predictor}}
        return [isvc, runtime] if self.modelcar and not self.model_format else [isvc]

    def _runtime(self, name: str, ns: str | None, main: dict, port: int) -> dict:
        """The endpoint's own ServingRuntime: fairing's serving image reading the modelcar's files
        from /mnt/models (load(model_dir) gets that path). One per endpoint, because the image holds
        the user's code; owned by the InferenceService once it exists, so it goes with it."""
        c = copy.deepcopy(main)
        c["name"] = KSERVE_CONTAINER
        c["env"] = [e for e in c.get("env") or [] if e.get("name") != "FAIRING_MODEL_DIR"] + \
            [{"name": "FAIRING_MODEL_DIR", "value": MODELCAR_DIR}]
        c["ports"] = [{"containerPort": port, "protocol": "TCP"}]
        c.pop("resources", None)  # the predictor's model spec carries them (KServe merges the two)
        for key, probe in probes(port).items():
            c.setdefault(key, probe)
        meta = {"name": name, "labels": {**L.MANAGED, L.KIND: "serve", L.APP_NAME: name, **self.labels}}
        if ns:
            meta["namespace"] = ns
        return {"apiVersion": RUNTIME_API_VERSION, "kind": RUNTIME_KIND, "metadata": meta,
                "spec": {"supportedModelFormats": [{"name": FAIRING_FORMAT, "version": "1", "autoSelect": False}],
                         "protocolVersions": ["v1", "v2"], "containers": [c]}}

    def validate(self, image: BuiltImage | None = None) -> list[dict]:
        """Server-side dry run: the API server checks the object against the KServe CRD schema."""
        ns = self.target_namespace()
        return [self.kube.create(m, ns, dry_run=True) for m in self.render(image, offline=False)]

    def handle(self, name: str, ns: str, manifests: list[dict], *, dry_run: bool = False) -> "InferenceServiceHandle":
        return InferenceServiceHandle(self.kube, name, ns, model_name=model_of(manifests[0]), manifests=manifests,
                                      dry_run=dry_run)

    def deploy(self, image: BuiltImage | None = None) -> "InferenceServiceHandle":
        isvc, *runtime = self.render(image, offline=False)
        if self.modelcar is True:
            raise ConfigError("modelcar=True needs the modelcar built first",
                              hint="PredictionEndpoint(..., model_ref='iris@champion', modelcar=True) builds and passes it")
        kube = self.kube
        name, ns = isvc["metadata"]["name"], isvc["metadata"]["namespace"]
        if self.dry_run:
            return self.handle(name, ns, [kube.create(m, ns, dry_run=True) for m in (isvc, *runtime)], dry_run=True)
        existing = kube.get(API_VERSION, KIND, name, ns)
        if existing is not None and not L.is_managed(existing["metadata"].get("labels")):
            raise DeployError(f"InferenceService {name!r} in namespace {ns!r} exists and was not created by fairing",
                              hint="pick another name (name=...) or delete it first")
        existing_rt = kube.get(RUNTIME_API_VERSION, RUNTIME_KIND, name, ns) if runtime else None
        if existing_rt is not None and not L.is_managed(existing_rt["metadata"].get("labels")):
            raise DeployError(f"ServingRuntime {name!r} in namespace {ns!r} exists and was not created by fairing",
                              hint="pick another name (name=...) or delete it first")
        pod_view = {"metadata": {}, "spec": {"containers": [
            {**c, "name": CONTAINER if c.get("name") == KSERVE_CONTAINER else c.get("name")}
            for c in isvc["spec"]["predictor"].get("containers") or []]}}
        if runtime:
            pod_view["spec"]["containers"] = [{**c, "name": CONTAINER} for c in runtime[0]["spec"]["containers"]]
        self.prepare(kube, ns, [pod_view])
        if not runtime:
            try:
                applied = kube.apply(isvc, ns, field_manager=L.FIELD_MANAGER)
            except BaseException:
                self.discard(kube, ns)
                raise
            self.created(kube, ns, applied)  # a following server's store Secret goes with the InferenceService
            return self.handle(name, ns, [applied])
        # The runtime first (the controller resolves it when it sees the InferenceService), then the
        # InferenceService, then the runtime is made the InferenceService's (garbage-collected with it).
        rt = runtime[0]
        kube.apply(rt, ns, field_manager=L.FIELD_MANAGER)
        try:
            applied = kube.apply(isvc, ns, field_manager=L.FIELD_MANAGER)
        except BaseException:
            if existing_rt is None:
                kube.delete(RUNTIME_API_VERSION, RUNTIME_KIND, name, ns, propagation="Background")
            self.discard(kube, ns)
            raise
        rt["metadata"]["ownerReferences"] = [{"apiVersion": API_VERSION, "kind": KIND, "name": name,
                                              "uid": applied["metadata"]["uid"]}]
        kube.apply(rt, ns, field_manager=L.FIELD_MANAGER)
        self.created(kube, ns, applied)
        return self.handle(name, ns, [applied])

    def attach(self, name: str) -> "InferenceServiceHandle":
        ns = self.target_namespace()
        obj = self.kube.get(API_VERSION, KIND, name, ns)
        if obj is None:
            from ...kube.client import NotFound

            raise NotFound(f"no InferenceService {name!r} in namespace {ns!r}", hint="`fair list` shows what fairing deployed")
        return self.handle(name, ns, [obj])


def _required_name():
    raise ConfigError("an InferenceService from model_format needs a name", hint="pass name='iris'")


def isvc_state(obj: dict | None) -> str:
    if obj is None:
        return "Deleted"
    st = obj.get("status") or {}
    ready = conditions(obj).get("Ready") or {}
    if ready.get("status") == "True" and st.get("observedGeneration", 0) >= obj["metadata"].get("generation", 0):
        return "Ready"
    if (st.get("modelStatus") or {}).get("transitionStatus") == "BlockedByFailedLoad":
        return "Failed"
    return "Pending"


class IsvcState:
    """isvc_state plus the words wait_ready needs; says so when no controller ever answered."""

    hint = "kubectl describe inferenceservice NAME shows the conditions"

    def __call__(self, obj):
        if obj is not None and not obj.get("status"):
            self.hint = "is the KServe controller running? (kubectl get pods -n kserve)"
        return isvc_state(obj)

    @staticmethod
    def progress(obj: dict | None) -> str:
        if obj is not None and not obj.get("status"):
            return "no KServe controller has reported any status"
        return _why(obj)

    @staticmethod
    def why(obj: dict | None) -> str:
        failed = ((obj or {}).get("status") or {}).get("modelStatus", {}).get("lastFailureInfo") or {}
        return failed.get("message") or _why(obj)


def _why(obj: dict | None) -> str:
    conds = conditions(obj or {})
    bad = [f"{t}: {c.get('reason') or ''} {c.get('message') or ''}".strip()
           for t, c in conds.items() if c.get("status") != "True"]
    return "; ".join(bad) or "not ready"


class InferenceServiceHandle(ServedModelHandle):
    """status/wait follow the InferenceService's Ready condition (set by the KServe controller)."""

    what = "InferenceService"
    api_version = API_VERSION
    kind = KIND
    container = KSERVE_CONTAINER
    state_class = IsvcState

    @property
    def pod_selector(self) -> str:
        return f"serving.kserve.io/inferenceservice={self.name}"

    def service(self) -> tuple[str, int]:
        return f"{self.name}-predictor", 80

    @property
    def external_url(self) -> str | None:
        """The URL KServe reports (an ingress host), when it has reported one."""
        return ((self.get() or {}).get("status") or {}).get("url")

    def pod_container(self, pod: dict) -> str:
        names = [c["name"] for c in pod["spec"]["containers"]]
        return KSERVE_CONTAINER if KSERVE_CONTAINER in names else names[0]
