"""`serving` deployer: the model server as an apps/v1 Deployment + a ClusterIP Service.

- Replicas, a RollingUpdate that never drops below the wanted replicas (maxUnavailable 0), and
  readiness/liveness probes on the model server's /v2/health/ready and /v2/health/live, so a pod
  only gets traffic once load() finished and is restarted only if the server itself hangs.
- Resources, env, volumes, node selectors... come from the shared pod mutators (deployers/pod.py),
  applied to the builder's pod template, always on the container named "main".
- Objects are applied server-side: deploying again under the same name rolls the Deployment to the
  new image instead of failing, and the Service stays put.
- predict() goes through the API server's service proxy, so it works wherever kubectl works.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Iterator, Sequence

from ..context import BuiltImage
from ..errors import ConfigError, DeployError
from . import pod as podlib
from .base import KubeAccess, _check_pinned

MANAGED_BY = {"app.kubernetes.io/managed-by": "fairing"}
SERVING_LABEL = "fairing.dev/serving"  # selector label: immutable, so only the name goes in it
KIND_LABEL = "fairing.dev/kind"
IMAGE_ANNOTATION = "fairing.dev/image"
CONTAINER = podlib.MAIN
PORT_NAME = "http"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
FIELD_MANAGER = "fairing"
# Options every cluster deployer takes (so a profile can switch deployers freely).
COMMON_OPTIONS = ("namespace", "kubeconfig", "context", "name", "mutators", "labels", "annotations", "cleanup",
                  "dry_run", "kube")
# Pod diagnoses (kube/reasons.py) that end a serving wait at once. Evictions are not among them:
# the Deployment replaces an evicted pod by itself.
FATAL_FOR_SERVING = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError",
                     "CrashLoopBackOff", "OOMKilled"}


def check_options(deployer: str, options: dict, allowed: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''} for the {deployer} deployer: {', '.join(unknown)}",
                          hint=f"options: {', '.join(sorted(set(allowed) - {'kube'}))}")


def main_container(pod_template: dict, name: str = CONTAINER) -> dict:
    return podlib.find_container(pod_template, name)


def serving_pod_template(image: BuiltImage, name: str, mutators: Sequence = ()) -> tuple[dict, int, str]:
    """The builder's pod template made fit for a long-running server: mutators applied, restart
    policy Always, the model server's port named, FAIRING_RUNTIME set. Returns (template, container
    port, model name)."""
    ctx = image.context
    if ctx is None or ctx.kind != "serve":
        raise ConfigError("the serving deployers need an image built from a serving context",
                          hint="build it with the serve preprocessor (PredictionEndpoint does)")
    if not image.pod_template:
        raise ConfigError("the image has no pod template", hint="report this as a bug in the builder")
    t = podlib.apply(image.pod_template, mutators)
    spec = t.setdefault("spec", {})
    spec["restartPolicy"] = "Always"  # Deployments accept nothing else
    c = main_container(t)
    env = {e.get("name"): e for e in c.get("env") or []}
    port = int((env.get("PORT") or {}).get("value") or ctx.env.get("PORT") or 8080)
    model = (env.get("MODEL_NAME") or {}).get("value") or ctx.env.get("MODEL_NAME") or name
    if "FAIRING_RUNTIME" not in env:
        c.setdefault("env", []).append({"name": "FAIRING_RUNTIME", "value": "1"})
    ports = [p for p in c.get("ports") or [] if p.get("containerPort") != port]
    c["ports"] = [{"name": PORT_NAME, "containerPort": port, "protocol": "TCP"}, *ports]
    meta = t.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **MANAGED_BY, KIND_LABEL: "serve"}
    return t, port, model


def probes(port: int | str = PORT_NAME) -> dict:
    """Readiness: load() has finished (the server answers 503 until then, and after a failed load).
    Liveness: the server process answers at all; generous, so a busy model is not killed."""
    return {
        "readinessProbe": {"httpGet": {"path": READY_PATH, "port": port}, "periodSeconds": 5,
                           "timeoutSeconds": 2, "failureThreshold": 3, "successThreshold": 1},
        "livenessProbe": {"httpGet": {"path": LIVE_PATH, "port": port}, "initialDelaySeconds": 10,
                          "periodSeconds": 15, "timeoutSeconds": 5, "failureThreshold": 4},
    }


def _check_replicas(replicas: Any) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise ConfigError(f"replicas must be a whole number >= 0, got {replicas!r}", hint="e.g. replicas=2")
    return replicas


class ServingDeployer(KubeAccess):
    """Options: namespace (else the kubeconfig context's), kubeconfig, context, name (default: the
    model name), replicas (1), mutators, labels, annotations, service_port (80), max_surge ("25%"),
    progress_deadline (600 s), dry_run (deploy() does a server-side dry run)."""

    kind = "serving"
    options = COMMON_OPTIONS + ("replicas", "service_port", "max_surge", "progress_deadline")

    def __init__(self, namespace: str | None = None, **options: Any):
        from ..kube.client import validate_name

        check_options(self.kind, options, self.options)
        o = options.get
        if namespace is not None:
            validate_name(namespace, "namespace")
        self.namespace = namespace
        self.kubeconfig = o("kubeconfig")
        self.context = o("context")
        self.name = validate_name(o("name"), "endpoint name", dns1035=True) if o("name") else None
        self.replicas = _check_replicas(o("replicas", 1))
        self.mutators = tuple(o("mutators") or ())
        for m in self.mutators:
            if not callable(m):
                raise ConfigError(f"pod option {m!r} is not callable", hint="use the functions in fairing.deployers.pod")
        self.labels = dict(o("labels") or {})
        self.annotations = dict(o("annotations") or {})
        self.service_port = _port(o("service_port", 80))
        self.max_surge = o("max_surge", "25%")
        self.progress_deadline = _check_replicas(o("progress_deadline", 600))
        self.dry_run = bool(o("dry_run", False))
        self._kube = o("kube")

    # -- manifests ----------------------------------------------------------------------------------
    def render(self, image: BuiltImage, *, offline: bool = True) -> list[dict]:
        """[Deployment, Service] as plain dicts; no API calls (the namespace comes from the
        kubeconfig file when there is one)."""
        template, port, model = serving_pod_template(image, self.name or "model", self.mutators)
        name = self.name or _name_for(model)
        ns = self.target_namespace(offline=offline)
        selector = {SERVING_LABEL: name}
        labels = {**MANAGED_BY, KIND_LABEL: "serve", "app.kubernetes.io/name": name, **self.labels, **selector}
        template["metadata"]["labels"] = {**template["metadata"]["labels"], **self.labels, **selector}
        c = main_container(template)
        for key, probe in probes().items():
            c.setdefault(key, probe)  # a mutator may have set its own
        annotations = {**self.annotations, IMAGE_ANNOTATION: image.ref}
        meta = {"name": name, "labels": labels, "annotations": annotations}
        svc_meta = {"name": name, "labels": labels, "annotations": dict(self.annotations)}
        if ns:
            meta["namespace"] = svc_meta["namespace"] = ns
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": selector},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": self.max_surge, "maxUnavailable": 0}},
                "progressDeadlineSeconds": self.progress_deadline,
                "revisionHistoryLimit": 3,
                "template": template,
            },
        }
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": svc_meta,
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{"name": PORT_NAME, "port": self.service_port, "targetPort": PORT_NAME, "protocol": "TCP"}],
            },
        }
        return [deployment, service]

    def validate(self, image: BuiltImage) -> list[dict]:
        """Send the manifests as a server-side dry run: the API server validates and defaults them
        (admission included) without creating anything. Returns what it answered."""
        _check_pinned(image)
        ns = self.target_namespace()
        return [self.kube.create(m, ns, dry_run=True) for m in self.render(image, offline=False)]

    # -- deploy -------------------------------------------------------------------------------------
    def deploy(self, image: BuiltImage) -> "ServingHandle":
        _check_pinned(image)
        deployment, service = self.render(image, offline=False)
        kube = self.kube
        name, ns = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
        if self.dry_run:
            answered = [kube.create(m, ns, dry_run=True) for m in (deployment, service)]
            return ServingHandle(kube, name, ns, model_name=_model_of(deployment), manifests=answered, dry_run=True)
        existing = kube.get("v1", "Service", name, ns)
        if existing is not None and (existing["metadata"].get("labels") or {}).get(SERVING_LABEL) != name:
            raise DeployError(f"Service {name!r} in namespace {ns!r} exists and was not created by fairing",
                              hint="pick another name (name=...) or delete that Service")
        for m in self.mutators:  # e.g. image_pull_secret() creates its Secret now, never at render
            prepare = getattr(m, "prepare", None)
            if prepare is not None:
                prepare(kube, ns, deployment["spec"]["template"])
        applied = [kube.apply(service, ns, field_manager=FIELD_MANAGER)]
        try:
            applied.insert(0, kube.apply(deployment, ns, field_manager=FIELD_MANAGER))
        except BaseException:
            if existing is None:  # nothing half-created: the Service alone is useless
                kube.delete("v1", "Service", name, ns, propagation="Background")
            raise
        return ServingHandle(kube, name, ns, model_name=_model_of(deployment), manifests=applied)

    def attach(self, name: str) -> "ServingHandle":
        kube = self.kube
        ns = self.target_namespace()
        dep = kube.get("apps/v1", "Deployment", name, ns)
        if dep is None:
            from ..kube.client import NotFound

            raise NotFound(f"no serving Deployment {name!r} in namespace {ns!r}",
                           hint="`fair list` shows what fairing deployed")
        return ServingHandle(kube, name, ns, model_name=_model_of(dep), manifests=[dep])


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"invalid port {value!r}", hint="use a number from 1 to 65535, e.g. 80")
    return value


def _name_for(model: str) -> str:
    from ..kube.client import validate_name

    return validate_name(model, "endpoint name", dns1035=True)


def _model_of(deployment: dict) -> str:
    c = main_container(deployment["spec"]["template"])
    env = {e.get("name"): e.get("value") for e in c.get("env") or []}
    return env.get("MODEL_NAME") or deployment["metadata"]["name"]


def _conditions(obj: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def deployment_state(dep: dict | None) -> str:
    """Ready when every wanted replica runs the newest template and is ready; Failed when the
    rollout passed its progress deadline; else Pending."""
    if dep is None:
        return "Deleted"
    spec, st = dep.get("spec") or {}, dep.get("status") or {}
    conds = _conditions(dep)
    want = spec.get("replicas", 1)
    if (conds.get("Progressing") or {}).get("reason") == "ProgressDeadlineExceeded":
        return "Failed"
    if st.get("observedGeneration", 0) < dep["metadata"].get("generation", 0):
        return "Pending"
    updated, ready, total = st.get("updatedReplicas", 0), st.get("readyReplicas", 0), st.get("replicas", 0)
    if want == 0:
        return "Ready" if total == 0 else "Pending"
    if updated >= want and ready >= want and total == updated and (conds.get("Available") or {}).get("status") == "True":
        return "Ready"
    return "Pending"


def wait_ready(kube, namespace: str, *, api_version: str, kind: str, name: str, pod_selector: str,
               state, timeout: float | None, container: str, what: str) -> dict:
    """Watch the object and its pods together (kube.wait's Mux) until state(obj) is Ready.
    A pod problem that won't heal stops the wait at once with the reason; a timeout names the
    last pod problem seen, if any. Returns the ready object."""
    from ..kube.reasons import diagnose_pod
    from ..kube.wait import Mux, Stream, WaitTimeout

    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    obj = None
    streams = [Stream("owner", api_version, kind, name=name), Stream("pods", "v1", "Pod", label_selector=pod_selector)]
    with Mux(kube, namespace, streams) as mux:
        for key, etype, ev in mux.events(deadline):
            if etype == "TIMEOUT":
                detail = f"; {last.message}" if last else ""
                raise WaitTimeout(f"{what} is not ready after {timeout:g}s ({state.progress(obj)}{detail})",
                                  hint=last.hint if last else state.hint)
            if key == "owner":
                if etype == "DELETED":
                    raise DeployError(f"{what} was deleted while waiting for it", hint="deploy it again")
                obj = ev
                st = state(obj)
                if st == "Ready":
                    return obj
                if st == "Failed":
                    raise DeployError(f"{what} failed: {state.why(obj)}" + (f"; {last.message}" if last else ""),
                                      hint=last.hint if last else state.hint)
            elif key == "pods" and etype != "DELETED" and not (ev.get("metadata") or {}).get("deletionTimestamp"):
                d = diagnose_pod(ev, container)
                if d:
                    last = d
                    if d.reason in FATAL_FOR_SERVING:
                        raise DeployError(d.message, hint=d.hint)
    raise DeployError(f"stopped waiting for {what}")  # pragma: no cover - events() ends with TIMEOUT


class _DeploymentState:
    """deployment_state plus the words wait_ready needs."""

    hint = "a slow load() needs a bigger timeout; handle.logs() shows the model server's output"

    def __call__(self, obj):
        return deployment_state(obj)

    @staticmethod
    def progress(dep: dict | None) -> str:
        if not dep:
            return "no Deployment"
        st = dep.get("status") or {}
        return f"{st.get('readyReplicas', 0)}/{dep['spec'].get('replicas', 1)} replicas ready"

    @staticmethod
    def why(dep: dict) -> str:
        return (_conditions(dep).get("Progressing") or {}).get("message") or "progress deadline exceeded"


def wait_gone(kube, api_version: str, kind: str, name: str, namespace: str, timeout: float) -> None:
    from ..kube.wait import Mux, Stream, WaitTimeout

    deadline = time.monotonic() + timeout
    with Mux(kube, namespace, [Stream("owner", api_version, kind, name=name)]) as mux:
        if kube.get(api_version, kind, name, namespace) is None:
            return
        for _key, etype, _obj in mux.events(deadline):
            if etype == "DELETED":
                return
            if etype == "TIMEOUT":
                raise WaitTimeout(f"{kind} {name} still exists {timeout:g}s after deletion",
                                  hint=f"a finalizer may be blocking it: kubectl get {kind.lower()} {name} -o yaml")


class ServingHandle:
    """A model served by a Deployment + Service. status/wait by watch; url through the API server."""

    kind = "serving"
    cleanup_on_failure = True

    def __init__(self, kube, name: str, namespace: str, *, model_name: str, manifests: list[dict],
                 service_port: int | str = PORT_NAME, dry_run: bool = False):
        self.kube = kube
        self.name = name
        self.namespace = namespace
        self.model_name = model_name
        self._manifests = manifests
        self.service_port = service_port
        self.dry_run = dry_run
        self.pod_selector = f"{SERVING_LABEL}={name}"

    def _no_dry(self, what: str) -> None:
        if self.dry_run:
            raise DeployError(f"endpoint {self.name} was a dry run; there is nothing to {what}",
                              hint="deploy without dry_run=True")

    def _deployment(self) -> dict | None:
        return self.kube.get("apps/v1", "Deployment", self.name, self.namespace)

    def pods(self) -> list[dict]:
        return self.kube.list("v1", "Pod", self.namespace, label_selector=self.pod_selector).get("items", [])

    def status(self) -> str:
        """Pending (rolling out / loading), Ready, Failed (progress deadline exceeded, or a pod
        stuck in a way that won't heal), Deleted; DryRun for a dry run."""
        from ..kube.reasons import diagnose_pod

        if self.dry_run:
            return "DryRun"
        state = deployment_state(self._deployment())
        if state == "Pending":
            for p in self.pods():
                d = diagnose_pod(p, CONTAINER)
                if d and d.reason in FATAL_FOR_SERVING:
                    return "Failed"
        return state

    def wait(self, timeout: float | None = 600) -> str:
        """Until every replica runs the newest template and is ready (readiness = the model loaded).
        Raises DeployError when a rollout cannot finish, WaitTimeout after `timeout` seconds."""
        self._no_dry("wait for")
        wait_ready(self.kube, self.namespace, api_version="apps/v1", kind="Deployment", name=self.name,
                   pod_selector=self.pod_selector, state=_DeploymentState(), timeout=timeout,
                   container=CONTAINER, what=f"endpoint {self.name}")
        return "Ready"

    # -- talking to the model -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.transport().base_url

    def transport(self, timeout: float = 60.0):
        from ..serving import ServiceProxyTransport

        return ServiceProxyTransport(self.kube, self.namespace, self.name, self.service_port, timeout=timeout)

    def client(self, protocol: str = "v1", timeout: float = 60.0):
        from ..serving import ModelClient

        return ModelClient(self.transport(timeout), self.model_name, protocol=protocol)

    def predict(self, data: Any, protocol: str = "v1", **kw) -> Any:
        self._no_dry("predict with")
        return self.client(protocol).predict(data, **kw)

    # -- the rest of the Handle ---------------------------------------------------------------------
    def logs(self, follow: bool = False, *, prefix: bool = True) -> Iterator[str]:
        """Every replica's model-server output, prefixed with the pod; with follow, new replicas
        join as they start, until the endpoint is deleted."""
        from ..kube.logs import follow_logs, pod_logs

        self._no_dry("show logs of")
        if follow:
            return follow_logs(self.kube, self.namespace, api_version="apps/v1", kind="Deployment", name=self.name,
                               pod_selector=self.pod_selector, container=CONTAINER, state=deployment_state,
                               terminal=(), prefix=prefix)
        return pod_logs(self.kube, self.namespace, self.pods(), CONTAINER, prefix=prefix)

    def result(self) -> Any:
        raise ConfigError("a served model has no return value", hint="call predict(data), or read logs()")

    def delete(self, wait: bool = True, timeout: float = 120) -> None:
        """Delete the Deployment (foreground: its ReplicaSets and pods go first) and the Service.
        With wait, return once the Deployment is gone."""
        self._no_dry("delete")
        self.kube.delete("v1", "Service", self.name, self.namespace, propagation="Background")
        existed = self.kube.delete("apps/v1", "Deployment", self.name, self.namespace, propagation="Foreground")
        if wait and existed:
            wait_gone(self.kube, "apps/v1", "Deployment", self.name, self.namespace, timeout)

    def manifests(self) -> list[dict]:
        return copy.deepcopy(self._manifests)
