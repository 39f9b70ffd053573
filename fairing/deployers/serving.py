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

import contextlib
import copy
import math
import threading
import time
from typing import Any, Iterator, Sequence

from ..context import BuiltImage
from ..errors import ConfigError, DeployError

MANAGED_BY = {"app.kubernetes.io/managed-by": "fairing"}
SERVING_LABEL = "fairing.dev/serving"  # selector label: immutable, so only the name goes in it
KIND_LABEL = "fairing.dev/kind"
IMAGE_ANNOTATION = "fairing.dev/image"
CONTAINER = "main"
PORT_NAME = "http"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
FIELD_MANAGER = "fairing"
POD_CHECK_SECONDS = 5.0

# Pod problems that will not fix themselves: waiting for readiness would only hit the timeout.
_STUCK = {
    "ErrImagePull": "the cluster cannot pull the image {image}",
    "ImagePullBackOff": "the cluster cannot pull the image {image}",
    "InvalidImageName": "the image name {image} is invalid",
    "CrashLoopBackOff": "the model server keeps crashing",
    "CreateContainerConfigError": "the container cannot be created (a Secret/ConfigMap it uses is missing?)",
}
_STUCK_HINTS = {
    "ErrImagePull": "check the registry is reachable from the nodes; for a private registry add an image pull secret",
    "ImagePullBackOff": "check the registry is reachable from the nodes; for a private registry add an image pull secret",
    "InvalidImageName": "report this as a bug: fairing always pins images by digest",
    "CrashLoopBackOff": "handle.logs() shows why it exits",
    "CreateContainerConfigError": "kubectl describe pod shows which reference is missing",
}


def main_container(pod_spec: dict, name: str = CONTAINER) -> dict:
    for c in pod_spec.get("containers", []):
        if c.get("name") == name:
            return c
    raise DeployError(f"the pod template has no container named {name!r}", hint="report this as a bug")


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
    t = copy.deepcopy(dict(image.pod_template))
    for m in mutators:
        out = m(t)
        if out is not None:
            t = out
    spec = t.setdefault("spec", {})
    spec["restartPolicy"] = "Always"  # Deployments accept nothing else
    c = main_container(spec)
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


class ServingDeployer:
    """Options: namespace (else the kubeconfig context's), kubeconfig, context, name (default: the
    model name), replicas (1), mutators, labels, annotations, service_port (80), max_surge ("25%"),
    progress_deadline (600 s), dry_run (render only)."""

    kind = "serving"

    def __init__(self, namespace: str | None = None, *, kubeconfig=None, context: str | None = None,
                 name: str | None = None, replicas: int = 1, mutators: Sequence = (), labels: dict | None = None,
                 annotations: dict | None = None, service_port: int = 80, max_surge: int | str = "25%",
                 progress_deadline: int = 600, dry_run: bool = False, kube=None, cleanup: bool = False,
                 **_ignored: Any):
        from ..kube.client import validate_name

        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.context = context
        self.name = validate_name(name, "endpoint name", dns1035=True) if name else None
        self.replicas = _check_replicas(replicas)
        self.mutators = tuple(mutators)
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.service_port = int(service_port)
        self.max_surge = max_surge
        self.progress_deadline = int(progress_deadline)
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
                return "default"  # rendering needs no cluster
            raise

    # -- manifests ----------------------------------------------------------------------------------
    def render(self, image: BuiltImage) -> list[dict]:
        """[Deployment, Service] as plain dicts; nothing is sent anywhere."""
        template, port, model = serving_pod_template(image, self.name or "model", self.mutators)
        name = self.name or _name_for(model)
        ns = self._namespace()
        selector = {SERVING_LABEL: name}
        labels = {**MANAGED_BY, KIND_LABEL: "serve", "app.kubernetes.io/name": name, **self.labels, **selector}
        template["metadata"]["labels"] = {**template["metadata"]["labels"], **self.labels, **selector}
        c = main_container(template["spec"])
        for key, probe in probes().items():
            c.setdefault(key, probe)  # a mutator may have set its own
        annotations = {**self.annotations, IMAGE_ANNOTATION: image.ref}
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
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
            "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": dict(self.annotations)},
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{"name": PORT_NAME, "port": self.service_port, "targetPort": PORT_NAME, "protocol": "TCP"}],
            },
        }
        return [deployment, service]

    def validate(self, image: BuiltImage) -> list[dict]:
        """Send the manifests as a server-side dry run: the API server validates and defaults them
        (and admission webhooks run) without creating anything. Returns what it answered."""
        return [self.kube.create(m, dry_run=True) for m in self.render(image)]

    # -- deploy -------------------------------------------------------------------------------------
    def deploy(self, image: BuiltImage) -> "ServingHandle":
        if self.dry_run:
            raise ConfigError("deploy() called with dry_run=True", hint="call render() for a dry run")
        deployment, service = self.render(image)
        kube = self.kube
        name, ns = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
        existing = kube.get("v1", "Service", name, ns)
        if existing is not None and (existing["metadata"].get("labels") or {}).get(SERVING_LABEL) != name:
            raise DeployError(f"Service {name!r} in namespace {ns!r} exists and was not created by fairing",
                              hint="pick another name (name=...) or delete that Service")
        applied = [kube.apply(service, ns, field_manager=FIELD_MANAGER)]
        try:
            applied.insert(0, kube.apply(deployment, ns, field_manager=FIELD_MANAGER))
        except BaseException:
            if existing is None:  # nothing half-created: the Service alone is useless
                kube.delete("v1", "Service", name, ns, propagation="Background")
            raise
        return ServingHandle(kube, name, ns, model_name=_model_of(deployment), manifests=applied,
                             generation=applied[0]["metadata"].get("generation"))

    def attach(self, name: str) -> "ServingHandle":
        kube = self.kube
        ns = self._namespace()
        dep = kube.get("apps/v1", "Deployment", name, ns)
        if dep is None:
            raise DeployError(f"no serving Deployment {name!r} in namespace {ns!r}",
                              hint="`fair list` shows what fairing deployed")
        return ServingHandle(kube, name, ns, model_name=_model_of(dep), manifests=[dep])


def _name_for(model: str) -> str:
    from ..kube.client import validate_name

    return validate_name(model, "endpoint name", dns1035=True)


def _model_of(deployment: dict) -> str:
    c = main_container(deployment["spec"]["template"]["spec"])
    env = {e.get("name"): e.get("value") for e in c.get("env") or []}
    return env.get("MODEL_NAME") or deployment["metadata"]["name"]


@contextlib.contextmanager
def bounded_watch(kube, api_version: str, kind: str, namespace: str, name: str, timeout: float | None,
                  resource_version: str | None = None):
    """A watch on one object that ends by itself after `timeout` seconds: the API server closes the
    stream (timeoutSeconds) and a timer stops the reconnect loop, so a quiet object never keeps the
    caller past its deadline."""
    kw: dict[str, Any] = {"name": name, "resource_version": resource_version}
    if timeout is not None:
        kw["server_timeout"] = max(1, math.ceil(timeout))
    watch = kube.watch(api_version, kind, namespace, **kw)
    timer = None
    if timeout is not None:
        timer = threading.Timer(max(0.0, timeout), watch.stop)
        timer.daemon = True
        timer.start()
    try:
        yield watch
    finally:
        if timer is not None:
            timer.cancel()
        watch.stop()


def _conditions(obj: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def pod_problem(pod: dict) -> tuple[str, str] | None:
    """(message, hint) when a pod is stuck in a way waiting won't fix."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in _STUCK:
            msg = _STUCK[reason].format(image=cs.get("image", "?"))
            detail = (waiting.get("message") or "").strip()
            return f"{msg} ({reason}{': ' + detail[:200] if detail else ''})", _STUCK_HINTS[reason]
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            return (f"pod {pod['metadata']['name']} cannot be scheduled: {cond.get('message', '')[:200]}",
                    "lower the resource requests, or check node selectors/tolerations")
    return None


class ServingHandle:
    """A model served by a Deployment + Service. status/wait by watch; url through the API server."""

    kind = "serving"
    cleanup_on_failure = True

    def __init__(self, kube, name: str, namespace: str, *, model_name: str, manifests: list[dict],
                 generation: int | None = None, service_port: int | str = PORT_NAME):
        self.kube = kube
        self.name = name
        self.namespace = namespace
        self.model_name = model_name
        self._manifests = manifests
        self.generation = generation
        self.service_port = service_port

    # -- state --------------------------------------------------------------------------------------
    def _deployment(self) -> dict | None:
        return self.kube.get("apps/v1", "Deployment", self.name, self.namespace)

    def _pods(self) -> list[dict]:
        return self.kube.list("v1", "Pod", self.namespace, label_selector=f"{SERVING_LABEL}={self.name}").get("items", [])

    def _summary(self, dep: dict | None) -> str:
        if dep is None:
            return "Deleted"
        spec, st = dep.get("spec") or {}, dep.get("status") or {}
        conds = _conditions(dep)
        want = spec.get("replicas", 1)
        gen = dep["metadata"].get("generation", 0)
        if (conds.get("Progressing") or {}).get("reason") == "ProgressDeadlineExceeded":
            return "Failed"
        if st.get("observedGeneration", 0) < gen:
            return "Pending"
        updated, ready, total = st.get("updatedReplicas", 0), st.get("readyReplicas", 0), st.get("replicas", 0)
        if want == 0:
            return "Ready" if total == 0 else "Pending"
        if updated >= want and ready >= want and total == updated and (conds.get("Available") or {}).get("status") == "True":
            return "Ready"
        return "Pending"

    def status(self) -> str:
        """Pending (rolling out / loading), Ready, Failed (progress deadline exceeded or a stuck
        pod), Deleted."""
        state = self._summary(self._deployment())
        if state == "Pending" and any(pod_problem(p) for p in self._pods()):
            return "Failed"
        return state

    def wait(self, timeout: float | None = 600) -> str:
        """Until every replica runs the newest template and is ready (readiness = the model loaded).
        Follows the Deployment by watch; raises DeployError on a rollout that cannot finish."""
        deadline = None if timeout is None else time.monotonic() + timeout
        dep, rv = None, None
        while True:
            # Watch in short stretches: between them look at the pods, whose trouble (image pull,
            # crash loop, unschedulable) the Deployment only reports at its progress deadline.
            left = None if deadline is None else deadline - time.monotonic()
            stretch = POD_CHECK_SECONDS if left is None else max(0.0, min(left, POD_CHECK_SECONDS))
            with bounded_watch(self.kube, "apps/v1", "Deployment", self.namespace, self.name, stretch,
                               resource_version=rv) as watch:
                for etype, obj in watch:
                    if etype == "DELETED":
                        raise DeployError(f"Deployment {self.name} was deleted while waiting for it",
                                          hint="deploy it again")
                    dep = obj
                    state = self._summary(dep)
                    if state == "Ready":
                        return "Ready"
                    if state == "Failed":
                        raise self._failure(dep)
                rv = watch.resource_version
            self._raise_pod_problem()
            if deadline is not None and time.monotonic() >= deadline:
                break
        if self._summary(self._deployment()) == "Ready":
            return "Ready"
        raise DeployError(
            f"endpoint {self.name} is not ready after {timeout:g}s ({self._progress(dep)})",
            hint="a slow load() needs a bigger timeout; handle.logs() shows the model server's output")

    def _progress(self, dep: dict | None) -> str:
        if not dep:
            return "no Deployment"
        st = dep.get("status") or {}
        return f"{st.get('readyReplicas', 0)}/{dep['spec'].get('replicas', 1)} replicas ready"

    def _raise_pod_problem(self) -> None:
        for pod in self._pods():
            problem = pod_problem(pod)
            if problem:
                raise DeployError(problem[0], hint=problem[1])

    def _failure(self, dep: dict) -> DeployError:
        self._raise_pod_problem()
        cond = _conditions(dep).get("Progressing") or {}
        return DeployError(f"endpoint {self.name} did not roll out: {cond.get('message', 'progress deadline exceeded')}",
                           hint="a replica never became ready: handle.logs() shows whether load() failed")

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
        return self.client(protocol).predict(data, **kw)

    # -- the rest of the Handle ---------------------------------------------------------------------
    def logs(self, follow: bool = False) -> Iterator[str]:
        """Each replica's model-server output, prefixed with the pod name when there are several."""
        pods = sorted(self._pods(), key=lambda p: p["metadata"]["name"])
        several = len(pods) > 1
        for pod in pods:
            pname = pod["metadata"]["name"]
            try:
                resp = self.kube.pod_log(pname, self.namespace, container=CONTAINER, follow=follow and not several)
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
        """Delete the Deployment (foreground: its ReplicaSets and pods go first) and the Service.
        With wait, return once the Deployment is gone."""
        self.kube.delete("v1", "Service", self.name, self.namespace, propagation="Background")
        gone = not self.kube.delete("apps/v1", "Deployment", self.name, self.namespace, propagation="Foreground")
        if wait and not gone:
            _wait_gone(self.kube, "apps/v1", "Deployment", self.name, self.namespace, timeout)

    def manifests(self) -> list[dict]:
        return list(self._manifests)


def _wait_gone(kube, api_version: str, kind: str, name: str, namespace: str, timeout: float) -> None:
    with bounded_watch(kube, api_version, kind, namespace, name, timeout) as watch:
        if kube.get(api_version, kind, name, namespace) is None:
            return
        for etype, _ in watch:
            if etype == "DELETED":
                return
    if kube.get(api_version, kind, name, namespace) is not None:
        raise DeployError(f"{kind} {name} is still being deleted after {timeout:g}s",
                          hint="a finalizer may be stuck: kubectl get " + kind.lower() + f" {name} -o yaml")
