"""`inferenceservice` deployer: a KServe serving.kserve.io/v1beta1 InferenceService.

Two shapes:
- custom predictor (default): fairing's serving image as the predictor's `kserve-container`, with
  the same probes, env and pod mutators as the `serving` deployer;
- model format: KServe's own runtime for a saved model (`model_format="sklearn"`,
  `storage_uri="gs://..."|"pvc://..."|"https://..."`): no image is built at all.

Defaults to KServe's RawDeployment mode (a plain Deployment + Service, no Knative/Istio needed),
which is also what makes predict() through the API server's service proxy possible
(`<name>-predictor:80`); pass deployment_mode="Serverless" for Knative."""
from __future__ import annotations

import copy
from typing import Any, Iterator

from ..context import BuiltImage
from ..errors import ConfigError, DeployError
from . import pod as podlib
from .base import KubeAccess, _check_pinned
from .serving import (
    COMMON_OPTIONS, CONTAINER, FIELD_MANAGER, IMAGE_ANNOTATION, KIND_LABEL, MANAGED_BY, _check_replicas, _conditions,
    check_options, main_container, probes, serving_pod_template, wait_gone, wait_ready,
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
MODEL_FORMATS = ("sklearn", "xgboost", "lightgbm", "tensorflow", "pytorch", "onnx", "triton", "pmml",
                 "paddle", "huggingface", "mlflow")


class InferenceServiceDeployer(KubeAccess):
    """Options: namespace, kubeconfig, context, name, replicas (minReplicas, 1), max_replicas,
    mutators, labels, annotations, deployment_mode ("RawDeployment"), model_format + storage_uri
    (+ protocol_version, runtime) for a KServe runtime instead of a fairing image, dry_run."""

    kind = "inferenceservice"

    options = COMMON_OPTIONS + ("replicas", "max_replicas", "deployment_mode", "model_format", "model_format_version",
                                "storage_uri", "protocol_version", "runtime", "max_surge")

    def __init__(self, namespace: str | None = None, **options: Any):
        from ..kube.client import validate_name

        check_options(self.kind, options, self.options)
        o = options.get
        if namespace is not None:
            validate_name(namespace, "namespace")
        self.namespace = namespace
        self.kubeconfig = o("kubeconfig")
        self.context = o("context")
        # KServe derives "<name>-predictor" Services/Deployments from it: keep room for the suffix.
        self.name = validate_name(o("name"), "InferenceService name", dns1035=True, max_len=45) if o("name") else None
        self.replicas = _check_replicas(o("replicas", 1))
        max_replicas = o("max_replicas")
        if max_replicas is not None and (_check_replicas(max_replicas) < self.replicas or max_replicas == 0):
            raise ConfigError(f"max_replicas={max_replicas} is below replicas={self.replicas}",
                              hint="max_replicas must be at least replicas (and at least 1)")
        self.max_replicas = max_replicas
        self.mutators = tuple(o("mutators") or ())
        for m in self.mutators:
            if not callable(m):
                raise ConfigError(f"pod option {m!r} is not callable", hint="use the functions in fairing.deployers.pod")
        self.labels = dict(o("labels") or {})
        self.annotations = dict(o("annotations") or {})
        deployment_mode = o("deployment_mode", "RawDeployment")
        if deployment_mode is not None and deployment_mode not in MODES:
            raise ConfigError(f"unknown KServe deployment mode {deployment_mode!r}", hint=f"use one of {', '.join(MODES)}")
        self.deployment_mode = deployment_mode
        model_format, storage_uri, protocol_version = o("model_format"), o("storage_uri"), o("protocol_version")
        if model_format is not None and not storage_uri:
            raise ConfigError(f"model_format={model_format!r} needs storage_uri",
                              hint="pass storage_uri='gs://...', 's3://...', 'pvc://...' or 'https://...' where the saved model is")
        if storage_uri and model_format is None:
            raise ConfigError("storage_uri on the inferenceservice deployer needs model_format (a KServe runtime)",
                              hint="for your own model class, give storage_uri to PredictionEndpoint/the serve "
                                   "preprocessor instead: the model server fetches it at start")
        if protocol_version is not None and protocol_version not in ("v1", "v2", "grpc-v2"):
            raise ConfigError(f"unknown protocol_version {protocol_version!r}", hint="use v1, v2 or grpc-v2")
        self.model_format = model_format
        self.model_format_version = o("model_format_version")
        self.storage_uri = storage_uri
        self.protocol_version = protocol_version
        self.runtime = o("runtime")
        self.max_surge = o("max_surge", "25%")
        self.dry_run = bool(o("dry_run", False))
        self._kube = o("kube")

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
            template = {"metadata": {"labels": {**MANAGED_BY, KIND_LABEL: "serve"}},
                        "spec": {"containers": [{"name": CONTAINER}]}}
            # Resources/env/volumes land on "main", then move to `model`.
            template = podlib.apply(template, self.mutators)
            main = main_container(template)
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
        else:
            if image is None:
                raise ConfigError("the inferenceservice deployer needs an image, or model_format + storage_uri",
                                  hint="build the serving image first (PredictionEndpoint does), or pass model_format='sklearn', storage_uri=...")
            _check_pinned(image)
            template, port, model_name = serving_pod_template(image, self.name or "model", self.mutators)
            from .serving import _name_for

            name = self.name or _name_for(model_name)
            annotations[IMAGE_ANNOTATION] = image.ref
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
        labels = {**MANAGED_BY, KIND_LABEL: "serve", "app.kubernetes.io/name": name, **self.labels}
        meta = {"name": name, "labels": labels, "annotations": annotations}
        if ns:
            meta["namespace"] = ns
        return [{"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": {"predictor": predictor}}]

    def validate(self, image: BuiltImage | None = None) -> list[dict]:
        """Server-side dry run: the API server checks the object against the KServe CRD schema."""
        ns = self.target_namespace()
        return [self.kube.create(m, ns, dry_run=True) for m in self.render(image, offline=False)]

    def deploy(self, image: BuiltImage | None = None) -> "InferenceServiceHandle":
        (isvc,) = self.render(image, offline=False)
        kube = self.kube
        name, ns = isvc["metadata"]["name"], isvc["metadata"]["namespace"]
        if self.dry_run:
            answered = kube.create(isvc, ns, dry_run=True)
            return InferenceServiceHandle(kube, name, ns, model_name=_model_of(isvc), manifests=[answered], dry_run=True)
        existing = kube.get(API_VERSION, KIND, name, ns)
        if existing is not None and (existing["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") != "fairing":
            raise DeployError(f"InferenceService {name!r} in namespace {ns!r} exists and was not created by fairing",
                              hint="pick another name (name=...) or delete it first")
        pod_view = {"metadata": {}, "spec": {"containers": [
            {**c, "name": CONTAINER if c.get("name") == KSERVE_CONTAINER else c.get("name")}
            for c in isvc["spec"]["predictor"].get("containers") or []]}}
        for m in self.mutators:  # e.g. image_pull_secret() creates its Secret now, never at render
            prepare = getattr(m, "prepare", None)
            if prepare is not None:
                prepare(kube, ns, pod_view)
        applied = kube.apply(isvc, ns, field_manager=FIELD_MANAGER)
        return InferenceServiceHandle(kube, name, ns, model_name=_model_of(isvc), manifests=[applied])

    def attach(self, name: str) -> "InferenceServiceHandle":
        ns = self.target_namespace()
        obj = self.kube.get(API_VERSION, KIND, name, ns)
        if obj is None:
            from ..kube.client import NotFound

            raise NotFound(f"no InferenceService {name!r} in namespace {ns!r}", hint="`fair list` shows what fairing deployed")
        return InferenceServiceHandle(self.kube, name, ns, model_name=_model_of(obj), manifests=[obj])


def _required_name():
    raise ConfigError("an InferenceService from model_format needs a name", hint="pass name='iris'")


def _model_of(isvc: dict) -> str:
    predictor = isvc["spec"]["predictor"]
    for c in predictor.get("containers") or []:
        if c.get("name") == KSERVE_CONTAINER:
            env = {e.get("name"): e.get("value") for e in c.get("env") or []}
            return env.get("MODEL_NAME") or isvc["metadata"]["name"]
    return isvc["metadata"]["name"]  # KServe runtimes serve the model under the InferenceService name


def isvc_state(obj: dict | None) -> str:
    if obj is None:
        return "Deleted"
    st = obj.get("status") or {}
    ready = _conditions(obj).get("Ready") or {}
    if ready.get("status") == "True" and st.get("observedGeneration", 0) >= obj["metadata"].get("generation", 0):
        return "Ready"
    if (st.get("modelStatus") or {}).get("transitionStatus") == "BlockedByFailedLoad":
        return "Failed"
    return "Pending"


class _IsvcState:
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
    conds = _conditions(obj or {})
    bad = [f"{t}: {c.get('reason') or ''} {c.get('message') or ''}".strip()
           for t, c in conds.items() if c.get("status") != "True"]
    return "; ".join(bad) or "not ready"


class InferenceServiceHandle:
    """status/wait follow the InferenceService's Ready condition (set by the KServe controller)."""

    kind = "inferenceservice"
    cleanup_on_failure = True

    def __init__(self, kube, name: str, namespace: str, *, model_name: str, manifests: list[dict],
                 dry_run: bool = False):
        self.kube = kube
        self.name = name
        self.namespace = namespace
        self.model_name = model_name
        self._manifests = manifests
        self.dry_run = dry_run
        self.pod_selector = f"serving.kserve.io/inferenceservice={name}"

    def _no_dry(self, what: str) -> None:
        if self.dry_run:
            raise DeployError(f"InferenceService {self.name} was a dry run; there is nothing to {what}",
                              hint="deploy without dry_run=True")

    def _get(self) -> dict | None:
        return self.kube.get(API_VERSION, KIND, self.name, self.namespace)

    def status(self) -> str:
        return "DryRun" if self.dry_run else isvc_state(self._get())

    def wait(self, timeout: float | None = 600) -> str:
        self._no_dry("wait for")
        wait_ready(self.kube, self.namespace, api_version=API_VERSION, kind=KIND, name=self.name,
                   pod_selector=self.pod_selector, state=_IsvcState(), timeout=timeout,
                   container=KSERVE_CONTAINER, what=f"InferenceService {self.name}")
        return "Ready"

    def pods(self) -> list[dict]:
        return self.kube.list("v1", "Pod", self.namespace, label_selector=self.pod_selector).get("items", [])

    @property
    def url(self) -> str:
        return self.transport().base_url

    @property
    def external_url(self) -> str | None:
        """The URL KServe reports (an ingress host), when it has reported one."""
        return ((self._get() or {}).get("status") or {}).get("url")

    def transport(self, timeout: float = 60.0):
        from ..serving import ServiceProxyTransport

        return ServiceProxyTransport(self.kube, self.namespace, f"{self.name}-predictor", 80, timeout=timeout)

    def client(self, protocol: str = "v1", timeout: float = 60.0):
        from ..serving import ModelClient

        return ModelClient(self.transport(timeout), self.model_name, protocol=protocol)

    def predict(self, data: Any, protocol: str = "v1", **kw) -> Any:
        self._no_dry("predict with")
        return self.client(protocol).predict(data, **kw)

    @staticmethod
    def _container(pod: dict) -> str:
        names = [c["name"] for c in pod["spec"]["containers"]]
        return KSERVE_CONTAINER if KSERVE_CONTAINER in names else names[0]

    def logs(self, follow: bool = False, *, prefix: bool = True) -> Iterator[str]:
        from ..kube.logs import follow_logs, pod_logs

        self._no_dry("show logs of")
        if follow:
            return follow_logs(self.kube, self.namespace, api_version=API_VERSION, kind=KIND, name=self.name,
                               pod_selector=self.pod_selector, container=self._container, state=isvc_state,
                               terminal=(), prefix=prefix)
        return pod_logs(self.kube, self.namespace, self.pods(), self._container, prefix=prefix)

    def result(self) -> Any:
        raise ConfigError("a served model has no return value", hint="call predict(data), or read logs()")

    def delete(self, wait: bool = True, timeout: float = 120) -> None:
        self._no_dry("delete")
        existed = self.kube.delete(API_VERSION, KIND, self.name, self.namespace, propagation="Foreground")
        if wait and existed:
            wait_gone(self.kube, API_VERSION, KIND, self.name, self.namespace, timeout)

    def manifests(self) -> list[dict]:
        return copy.deepcopy(self._manifests)
