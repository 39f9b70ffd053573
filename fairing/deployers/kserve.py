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
from typing import Any, Iterator, Sequence

from ..context import BuiltImage
from ..errors import ConfigError, DeployError
from .serving import (
    CONTAINER, FIELD_MANAGER, IMAGE_ANNOTATION, KIND_LABEL, MANAGED_BY, _check_replicas, _conditions,
    _wait_gone, bounded_watch, main_container, pod_problem, probes, serving_pod_template,
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


class InferenceServiceDeployer:
    """Options: namespace, kubeconfig, context, name, replicas (minReplicas, 1), max_replicas,
    mutators, labels, annotations, deployment_mode ("RawDeployment"), model_format + storage_uri
    (+ protocol_version, runtime) for a KServe runtime instead of a fairing image, dry_run."""

    kind = "inferenceservice"

    def __init__(self, namespace: str | None = None, *, kubeconfig=None, context: str | None = None,
                 name: str | None = None, replicas: int = 1, max_replicas: int | None = None,
                 mutators: Sequence = (), labels: dict | None = None, annotations: dict | None = None,
                 deployment_mode: str | None = "RawDeployment", model_format: str | None = None,
                 model_format_version: str | None = None, storage_uri: str | None = None,
                 protocol_version: str | None = None, runtime: str | None = None, max_surge: int | str = "25%",
                 dry_run: bool = False, kube=None, cleanup: bool = False, **_ignored: Any):
        from ..kube.client import validate_name

        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.context = context
        # KServe derives "<name>-predictor" Services/Deployments from it: keep room for the suffix.
        self.name = validate_name(name, "InferenceService name", dns1035=True, max_len=45) if name else None
        self.replicas = _check_replicas(replicas)
        if max_replicas is not None and (_check_replicas(max_replicas) < self.replicas or max_replicas == 0):
            raise ConfigError(f"max_replicas={max_replicas} is below replicas={replicas}",
                              hint="max_replicas must be at least replicas (and at least 1)")
        self.max_replicas = max_replicas
        self.mutators = tuple(mutators)
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
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
        self.model_format = model_format
        self.model_format_version = model_format_version
        self.storage_uri = storage_uri
        self.protocol_version = protocol_version
        self.runtime = runtime
        self.max_surge = max_surge
        self.dry_run = dry_run
        self._kube = kube

    @property
    def kube(self):
        if self._kube is None:
            from ..kube.client import Kube

            self._kube = Kube(self.kubeconfig, self.context, self.namespace)
        return self._kube

    def _namespace(self) -> str:
        if self.namespace:
            return self.namespace
        try:
            return self.kube.namespace
        except ConfigError:
            if self.dry_run:
                return "default"
            raise

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

    def render(self, image: BuiltImage | None = None) -> list[dict]:
        ns = self._namespace()
        annotations = dict(self.annotations)
        if self.deployment_mode:
            annotations[MODE_ANNOTATION] = self.deployment_mode
        if self.model_format:
            name = self.name or _required_name()
            template = {"metadata": {"labels": {**MANAGED_BY, KIND_LABEL: "serve"}},
                        "spec": {"containers": [{"name": CONTAINER}]}}
            for m in self.mutators:  # resources/env/volumes land on "main", then move to `model`
                out = m(template)
                if out is not None:
                    template = out
            main = main_container(template["spec"])
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
        return [{
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
            "spec": {"predictor": predictor},
        }]

    def validate(self, image: BuiltImage | None = None) -> list[dict]:
        """Server-side dry run: the API server checks the object against the KServe CRD schema."""
        return [self.kube.create(m, dry_run=True) for m in self.render(image)]

    def deploy(self, image: BuiltImage | None = None) -> "InferenceServiceHandle":
        if self.dry_run:
            raise ConfigError("deploy() called with dry_run=True", hint="call render() for a dry run")
        (isvc,) = self.render(image)
        kube = self.kube
        name, ns = isvc["metadata"]["name"], isvc["metadata"]["namespace"]
        existing = kube.get(API_VERSION, KIND, name, ns)
        if existing is not None and (existing["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") != "fairing":
            raise DeployError(f"InferenceService {name!r} in namespace {ns!r} exists and was not created by fairing",
                              hint="pick another name (name=...) or delete it first")
        applied = kube.apply(isvc, ns, field_manager=FIELD_MANAGER)
        return InferenceServiceHandle(kube, name, ns, model_name=_model_of(isvc), manifests=[applied])

    def attach(self, name: str) -> "InferenceServiceHandle":
        ns = self._namespace()
        obj = self.kube.get(API_VERSION, KIND, name, ns)
        if obj is None:
            raise DeployError(f"no InferenceService {name!r} in namespace {ns!r}", hint="`fair list` shows what fairing deployed")
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


class InferenceServiceHandle:
    """status/wait follow the InferenceService's Ready condition (set by the KServe controller)."""

    kind = "inferenceservice"
    cleanup_on_failure = True

    def __init__(self, kube, name: str, namespace: str, *, model_name: str, manifests: list[dict]):
        self.kube = kube
        self.name = name
        self.namespace = namespace
        self.model_name = model_name
        self._manifests = manifests

    def _get(self) -> dict | None:
        return self.kube.get(API_VERSION, KIND, self.name, self.namespace)

    @staticmethod
    def _summary(obj: dict | None) -> str:
        if obj is None:
            return "Deleted"
        conds = _conditions(obj)
        ready = conds.get("Ready") or {}
        if ready.get("status") == "True" and (obj.get("status") or {}).get("observedGeneration", 0) >= obj["metadata"].get("generation", 0):
            return "Ready"
        failed = (obj.get("status") or {}).get("modelStatus", {}).get("transitionStatus") == "BlockedByFailedLoad"
        return "Failed" if failed else "Pending"

    def status(self) -> str:
        return self._summary(self._get())

    def wait(self, timeout: float | None = 600) -> str:
        obj = None
        with bounded_watch(self.kube, API_VERSION, KIND, self.namespace, self.name, timeout) as watch:
            for etype, obj in watch:
                if etype == "DELETED":
                    raise DeployError(f"InferenceService {self.name} was deleted while waiting for it", hint="deploy it again")
                state = self._summary(obj)
                if state == "Ready":
                    return "Ready"
                if state == "Failed":
                    raise DeployError(f"InferenceService {self.name} failed: {self._why(obj)}",
                                      hint="handle.logs() shows the predictor's output")
        obj = self._get()
        if self._summary(obj) == "Ready":
            return "Ready"
        for pod in self._pods():
            problem = pod_problem(pod)
            if problem:
                raise DeployError(problem[0], hint=problem[1])
        if not (obj or {}).get("status"):
            raise DeployError(f"InferenceService {self.name} is not ready after {timeout:g}s: no KServe controller has reported any status",
                              hint="is the KServe controller running? (kubectl get pods -n kserve)")
        raise DeployError(f"InferenceService {self.name} is not ready after {timeout:g}s: {self._why(obj)}",
                          hint="kubectl describe inferenceservice " + self.name + " shows the conditions")

    @staticmethod
    def _why(obj: dict | None) -> str:
        conds = _conditions(obj or {})
        bad = [f"{t}: {c.get('reason') or ''} {c.get('message') or ''}".strip()
               for t, c in conds.items() if c.get("status") != "True"]
        return "; ".join(bad) or "not ready"

    def _pods(self) -> list[dict]:
        sel = f"serving.kserve.io/inferenceservice={self.name}"
        return self.kube.list("v1", "Pod", self.namespace, label_selector=sel).get("items", [])

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
        return self.client(protocol).predict(data, **kw)

    def logs(self, follow: bool = False) -> Iterator[str]:
        pods = sorted(self._pods(), key=lambda p: p["metadata"]["name"])
        several = len(pods) > 1
        for pod in pods:
            pname = pod["metadata"]["name"]
            names = [c["name"] for c in pod["spec"]["containers"]]
            container = KSERVE_CONTAINER if KSERVE_CONTAINER in names else names[0]
            try:
                resp = self.kube.pod_log(pname, self.namespace, container=container, follow=follow and not several)
            except DeployError as e:
                yield f"[{pname}] (no logs: {e.message})"
                continue
            try:
                buf = b""
                for chunk in resp.stream(amt=65536, decode_content=True):
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        yield (f"[{pname}] " if several else "") + line.decode(errors="replace")
                if buf:
                    yield (f"[{pname}] " if several else "") + buf.decode(errors="replace")
            finally:
                resp.release_conn()

    def result(self) -> Any:
        raise ConfigError("a served model has no return value", hint="call predict(data), or read logs()")

    def delete(self, wait: bool = True, timeout: float = 120) -> None:
        gone = not self.kube.delete(API_VERSION, KIND, self.name, self.namespace, propagation="Foreground")
        if wait and not gone:
            _wait_gone(self.kube, API_VERSION, KIND, self.name, self.namespace, timeout)

    def manifests(self) -> list[dict]:
        return list(self._manifests)
