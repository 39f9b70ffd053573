"""`serving` deployer: the model server as an apps/v1 Deployment + a ClusterIP Service, and what
the cluster serving deployers share (the pod template, probes, the readiness wait, the handle).

- Replicas, a RollingUpdate that never drops below the wanted replicas (maxUnavailable 0), and
  readiness/liveness probes on the model server's /v2/health/ready and /v2/health/live, so a pod
  only gets traffic once load() finished and is restarted only if the server itself hangs.
- Resources, env, volumes, node selectors... come from the shared pod mutators (deployers/pod.py),
  applied to the builder's pod template, always on the container named "main".
- Objects are applied server-side: deploying again under the same name rolls the Deployment to the
  new image instead of failing, and the Service stays put.
- predict() goes through the API server's service proxy, so it works wherever kubectl works;
  status reads every replica's /metrics through the pod proxy (telemetry.scrape).
- Pods carry the prometheus.io/scrape, port and path annotations, so a Prometheus with the
  README's scrape config finds every replica.
"""
from __future__ import annotations

import copy
import re
import threading
import time
from typing import Any, Iterator, Sequence

from ...context import BuiltImage, ServeSpec
from ...errors import ConfigError, DeployError
from ...kube.reasons import NEVER_STARTS
from .. import labels as L
from .. import pod as podlib
from ..base import Deployer, Handle, check_port, check_replicas, serve_spec
from ..template import template_of
from .base import KubeAccess, check_pinned, wait_gone

CONTAINER = podlib.MAIN
PORT_NAME = "http"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
# Pod diagnoses (kube/reasons.py) that end a serving wait at once. Evictions are not among them:
# the Deployment replaces an evicted pod by itself.
FATAL_FOR_SERVING = NEVER_STARTS | {"CrashLoopBackOff", "OOMKilled"}


def serving_pod_template(image: BuiltImage, mutators: Sequence = ()) -> tuple[dict, ServeSpec]:
    """The builder's pod template made fit for a long-running server: mutators applied, restart
    policy Always, the model server's port named, FAIRING_RUNTIME set."""
    spec = serve_spec(image)
    template = template_of(image)
    if not template:
        raise ConfigError("the image has no pod template", hint="report this as a bug in the builder")
    t = podlib.apply(template, mutators)
    t.setdefault("spec", {})["restartPolicy"] = "Always"  # Deployments accept nothing else
    c = podlib.find_container(t, CONTAINER)
    if not any(e.get("name") == "FAIRING_RUNTIME" for e in c.get("env") or []):
        c.setdefault("env", []).append({"name": "FAIRING_RUNTIME", "value": "1"})
    ports = [p for p in c.get("ports") or [] if p.get("containerPort") != spec.port]
    c["ports"] = [{"name": PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}, *ports]
    meta = t.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **L.MANAGED, L.KIND: "serve"}
    # Where Prometheus scrapes each replica's /metrics; annotations a mutator set win (scrape: "false").
    meta["annotations"] = {**L.scrape_annotations(spec.port), **(meta.get("annotations") or {})}
    return t, spec


def probes(port: int | str = PORT_NAME) -> dict:
    """Readiness: load() has finished (the server answers 503 until then, and after a failed load).
    Liveness: the server process answers at all; generous, so a busy model is not killed."""
    return {
        "readinessProbe": {"httpGet": {"path": READY_PATH, "port": port}, "periodSeconds": 5,
                           "timeoutSeconds": 2, "failureThreshold": 3, "successThreshold": 1},
        "livenessProbe": {"httpGet": {"path": LIVE_PATH, "port": port}, "initialDelaySeconds": 10,
                          "periodSeconds": 15, "timeoutSeconds": 5, "failureThreshold": 4},
    }


def endpoint_name(model: str, what: str = "endpoint name", max_len: int = 63) -> str:
    from ...kube.client import validate_name

    return validate_name(model, what, dns1035=True, max_len=max_len)


def model_of(obj: dict) -> str:
    """The model an endpoint object serves (label set at render), else the object's name."""
    return (obj["metadata"].get("labels") or {}).get(L.MODEL) or obj["metadata"]["name"]


def conditions(obj: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def deployment_state(dep: dict | None) -> str:
    """Ready when every wanted replica runs the newest template and is ready; Failed when the
    rollout passed its progress deadline; else Pending."""
    if dep is None:
        return "Deleted"
    spec, st = dep.get("spec") or {}, dep.get("status") or {}
    conds = conditions(dep)
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
    from ...kube.reasons import diagnose_pod
    from ...kube.wait import Mux, Stream, WaitTimeout

    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    obj = None
    unready: set[str] = set()  # running pods whose server is not ready yet
    streams = [Stream("owner", api_version, kind, name=name), Stream("pods", "v1", "Pod", label_selector=pod_selector)]
    with Mux(kube, namespace, streams) as mux, _Ticker(mux, LOAD_CHECK_SECONDS):
        for key, etype, ev in mux.events(deadline):
            if etype == "TICK":
                # The model server stays up after a failed load() (not ready, 503 with the error),
                # so no pod state ends the wait: its log says so, and the wait stops at once.
                for pod in sorted(unready):
                    failed = load_failure(kube, namespace, pod, container)
                    if failed:
                        raise DeployError(f"{what} failed: {failed}",
                                          hint="fix load() (the traceback is in the model server's log: handle.logs())")
                continue
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
                pname = ev["metadata"]["name"]
                if _running_unready(ev, container):
                    unready.add(pname)
                else:
                    unready.discard(pname)
                d = diagnose_pod(ev, container)
                if d:
                    last = d
                    if d.reason in FATAL_FOR_SERVING:
                        raise DeployError(d.message, hint=d.hint)
    raise DeployError(f"stopped waiting for {what}")  # pragma: no cover - events() ends with TIMEOUT


LOAD_CHECK_SECONDS = 3.0
# What fairing's model server logs when load() raises (fairing/image_runtime/model_server.py).
_LOAD_FAILED = re.compile(r"(model '[^']*' failed to load: .*)$")


class _Ticker:
    """Puts a ("", "TICK", None) event into a Mux every `seconds` while the block runs."""

    def __init__(self, mux, seconds: float) -> None:
        self.mux, self.seconds, self.stop = mux, seconds, threading.Event()

    def __enter__(self) -> "_Ticker":
        def tick() -> None:
            while not self.stop.wait(self.seconds):
                self.mux.put(("", "TICK", None))

        threading.Thread(target=tick, daemon=True, name="fairing-serving-tick").start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()


def _running_unready(pod: dict, container: str) -> bool:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            return bool((cs.get("state") or {}).get("running")) and not cs.get("ready")
    return False


def load_failure(kube, namespace: str, pod: str, container: str) -> str | None:
    """The model server's "model 'x' failed to load: ..." line from the pod's log, if it logged one."""
    from ...kube.logs import read_log

    try:
        for line in read_log(kube, pod, namespace, container):
            m = _LOAD_FAILED.search(line)
            if m:
                return m.group(1).strip()
    except Exception:  # noqa: BLE001 - no log yet, or not allowed to read it: the wait goes on as before
        return None
    return None


class DeploymentState:
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
        return (conditions(dep).get("Progressing") or {}).get("message") or "progress deadline exceeded"


class ServedModelHandle(Handle):
    """A model served on the cluster (Deployment+Service, or an InferenceService): status/wait by
    watch, logs of every replica, url and predict() through the API server's service proxy.
    A subclass names its object, its pods, its container, its Service and how its state reads."""

    api_version = ""
    kind = ""
    container = CONTAINER
    state_class: Any = None  # a callable class with .progress/.why/.hint (what wait_ready needs)

    def __init__(self, kube, name: str, namespace: str, *, model_name: str, manifests: list[dict],
                 dry_run: bool = False):
        super().__init__(name, namespace, dry_run=dry_run)
        self.kube, self.model_name, self._manifests = kube, model_name, manifests

    # -- what a subclass says -----------------------------------------------------------------------
    @property
    def pod_selector(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def service(self) -> tuple[str, int | str]:  # pragma: no cover - interface
        """(Service name, port) the model server is reached at."""
        raise NotImplementedError

    def pod_container(self, pod: dict) -> str:
        return self.container

    def state_of(self, obj: dict | None) -> str:
        return self.state_class()(obj)

    # -- the verbs ----------------------------------------------------------------------------------
    def get(self) -> dict | None:
        return self.kube.get(self.api_version, self.kind, self.name, self.namespace)

    def pods(self) -> list[dict]:
        return self.kube.list("v1", "Pod", self.namespace, label_selector=self.pod_selector).get("items", [])

    def status(self) -> str:
        return "DryRun" if self.dry_run else self.state_of(self.get())

    def wait(self, timeout: float | None = 600) -> str:
        """Until the model answers ready on every replica. Raises DeployError when a rollout cannot
        finish, WaitTimeout after `timeout` seconds."""
        self._no_dry("wait for")
        wait_ready(self.kube, self.namespace, api_version=self.api_version, kind=self.kind, name=self.name,
                   pod_selector=self.pod_selector, state=self.state_class(), timeout=timeout,
                   container=self.container, what=f"{self.what} {self.name}")
        return "Ready"

    @property
    def url(self) -> str:
        return self.transport().base_url

    def transport(self, timeout: float = 60.0):
        from ...model_client import ServiceProxyTransport

        service, port = self.service()
        return ServiceProxyTransport(self.kube, self.namespace, service, port, timeout=timeout)

    def client(self, protocol: str = "v1", timeout: float = 60.0):
        from ...model_client import ModelClient

        return ModelClient(self.transport(timeout), self.model_name, protocol=protocol)

    def predict(self, data: Any, protocol: str = "v1", **kw) -> Any:
        self._no_dry("predict with")
        return self.client(protocol).predict(data, **kw)

    def replica_metrics(self, timeout: float = 10.0) -> list[dict] | None:
        """Every replica's /metrics text, read pod by pod through the API server's pod proxy:
        [{"pod", "ready", "metrics" (text or None), "error" (why not, or None)}], pods by name.
        None when the kubeconfig may not use pods/proxy (the caller falls back to the Service)."""
        from ...model_client import PodProxyTransport

        out = []
        for pod in sorted(self.pods(), key=lambda p: p["metadata"]["name"]):
            meta, st = pod["metadata"], pod.get("status") or {}
            if meta.get("deletionTimestamp") or st.get("phase") != "Running":
                continue  # nothing to read yet, or going away
            name = meta["name"]
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
            port, path = _metrics_address(pod, self.pod_container(pod))
            row = {"pod": name, "ready": ready, "metrics": None, "error": None}
            try:
                code, body = PodProxyTransport(self.kube, self.namespace, name, port, timeout=timeout).request("GET", path)
            except Exception as exc:  # noqa: BLE001 - one unreachable replica must not hide the others
                row["error"] = str(exc).splitlines()[0][:200]
                out.append(row)
                continue
            if code == 403 and _api_forbidden(body):
                return None  # the API server's refusal, not the model server's answer
            if code == 200:
                row["metrics"] = body.decode("utf-8", "replace")
            else:
                row["error"] = f"/metrics answered {code}"
            out.append(row)
        return out

    def logs(self, follow: bool = False, *, prefix: bool = True) -> Iterator[str]:
        """Every replica's model-server output, prefixed with the pod; with follow, new replicas
        join as they start, until the endpoint is deleted."""
        from ...kube.logs import follow_logs, pod_logs

        self._no_dry("show logs of")
        if follow:
            return follow_logs(self.kube, self.namespace, api_version=self.api_version, kind=self.kind, name=self.name,
                               pod_selector=self.pod_selector, container=self.pod_container, state=self.state_class(),
                               terminal=(), prefix=prefix)
        return pod_logs(self.kube, self.namespace, self.pods(), self.pod_container, prefix=prefix)

    def result(self) -> Any:
        raise ConfigError("a served model has no return value", hint="call predict(data), or read logs()")

    def delete_others(self) -> None:
        """Objects besides the main one to delete first (the serving Service)."""

    def delete(self, wait: bool = True, timeout: float = 120) -> None:
        """Delete (foreground: ReplicaSets and pods go first); with wait, return once it is gone."""
        self._no_dry("delete")
        self.delete_others()
        existed = self.kube.delete(self.api_version, self.kind, self.name, self.namespace, propagation="Foreground")
        if wait and existed:
            wait_gone(self.kube, self.api_version, self.kind, self.name, self.namespace, timeout)

    def manifests(self) -> list[dict]:
        return copy.deepcopy(self._manifests)


def _api_forbidden(body: bytes) -> bool:
    """Whether a 403 is the API server's RBAC refusal (a Status object with reason Forbidden)."""
    import json

    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("kind") == "Status" and doc.get("reason") == "Forbidden"


def _metrics_address(pod: dict, container: str) -> tuple[int | str, str]:
    """(port, path) of a pod's /metrics: its prometheus.io annotations (set at render), else the
    container's http port."""
    ann = pod["metadata"].get("annotations") or {}
    if ann.get(L.SCRAPE_PORT):
        return ann[L.SCRAPE_PORT], ann.get(L.SCRAPE_PATH) or L.METRICS_PATH
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == container:
            ports = c.get("ports") or []
            named = [p for p in ports if p.get("name") == PORT_NAME] or ports
            if named:
                return named[0]["containerPort"], L.METRICS_PATH
    return ServeSpec.port, L.METRICS_PATH  # the model server's default


class ServingHandle(ServedModelHandle):
    """A model served by a Deployment + Service."""

    what = "endpoint"
    api_version = "apps/v1"
    kind = "Deployment"
    state_class = DeploymentState

    def __init__(self, *args, service_port: int | str = PORT_NAME, **kw):
        super().__init__(*args, **kw)
        self.service_port = service_port

    @property
    def pod_selector(self) -> str:
        return f"{L.SERVING}={self.name}"

    def service(self) -> tuple[str, int | str]:
        return self.name, self.service_port

    def state_of(self, obj: dict | None) -> str:
        """Pending (rolling out / loading), Ready, Failed (progress deadline exceeded, or a pod
        stuck in a way that won't heal), Deleted."""
        from ...kube.reasons import diagnose_pod

        state = deployment_state(obj)
        if state == "Pending" and obj is not None:
            for p in self.pods():
                d = diagnose_pod(p, CONTAINER)
                if d and d.reason in FATAL_FOR_SERVING:
                    return "Failed"
        return state

    def delete_others(self) -> None:
        self.kube.delete("v1", "Service", self.name, self.namespace, propagation="Background")


class ServingDeployer(KubeAccess, Deployer):
    """Options: namespace (else the kubeconfig context's), kubeconfig, context, name (default: the
    model name), replicas (1), mutators, labels, annotations, service_port (80), max_surge ("25%"),
    progress_deadline (600 s), dry_run (deploy() does a server-side dry run)."""

    deployer_name = "serving"
    serves = True
    api_version = "apps/v1"
    kind = "Deployment"
    kind_options = ("replicas", "service_port", "max_surge", "progress_deadline")
    state = staticmethod(deployment_state)

    def check_name(self, name: str) -> str:
        return endpoint_name(name)

    def configure(self, replicas=1, service_port=80, max_surge="25%", progress_deadline=600) -> None:
        self.replicas = check_replicas(replicas)
        self.service_port = check_port(service_port)
        self.max_surge = max_surge
        self.progress_deadline = check_replicas(progress_deadline)

    # -- manifests ----------------------------------------------------------------------------------
    def render(self, image: BuiltImage, *, offline: bool = True) -> list[dict]:
        """[Deployment, Service] as plain dicts; no API calls (the namespace comes from the
        kubeconfig file when there is one)."""
        template, spec = serving_pod_template(image, self.mutators)
        name = self.name or endpoint_name(spec.model_name)
        ns = self.target_namespace(offline=offline)
        selector = {L.SERVING: name}
        labels = {**L.MANAGED, L.KIND: "serve", L.APP_NAME: name, L.MODEL: spec.model_name, **self.labels,
                  **selector}
        template["metadata"]["labels"] = {**template["metadata"]["labels"], **self.labels, **selector}
        c = podlib.find_container(template, CONTAINER)
        for key, probe in probes().items():
            c.setdefault(key, probe)  # a mutator may have set its own
        annotations = {**self.annotations, L.IMAGE_ANNOTATION: image.ref}
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
        check_pinned(image)
        ns = self.target_namespace()
        return [self.kube.create(m, ns, dry_run=True) for m in self.render(image, offline=False)]

    def handle(self, name: str, ns: str, manifests: list[dict], *, dry_run: bool = False) -> ServingHandle:
        return ServingHandle(self.kube, name, ns, model_name=model_of(manifests[0]), manifests=manifests,
                             dry_run=dry_run)

    # -- deploy -------------------------------------------------------------------------------------
    def deploy(self, image: BuiltImage) -> ServingHandle:
        check_pinned(image)
        deployment, service = self.render(image, offline=False)
        kube = self.kube
        name, ns = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
        if self.dry_run:
            return self.handle(name, ns, [kube.create(m, ns, dry_run=True) for m in (deployment, service)],
                               dry_run=True)
        existing = kube.get("v1", "Service", name, ns)
        if existing is not None and (existing["metadata"].get("labels") or {}).get(L.SERVING) != name:
            raise DeployError(f"Service {name!r} in namespace {ns!r} exists and was not created by fairing",
                              hint="pick another name (name=...) or delete that Service")
        self.prepare(kube, ns, [deployment["spec"]["template"]])
        applied = [kube.apply(service, ns, field_manager=L.FIELD_MANAGER)]
        try:
            applied.insert(0, kube.apply(deployment, ns, field_manager=L.FIELD_MANAGER))
        except BaseException:
            if existing is None:  # nothing half-created: the Service alone is useless
                kube.delete("v1", "Service", name, ns, propagation="Background")
            self.discard(kube, ns)
            raise
        self.created(kube, ns, applied[0])  # a following server's store Secret goes with the Deployment
        return self.handle(name, ns, applied)

    def attach(self, name: str) -> ServingHandle:
        ns = self.target_namespace()
        dep = self.kube.get("apps/v1", "Deployment", name, ns)
        if dep is None:
            from ...kube.client import NotFound

            raise NotFound(f"no serving Deployment {name!r} in namespace {ns!r}",
                           hint="`fair list` shows what fairing deployed")
        return self.handle(name, ns, [dep])
