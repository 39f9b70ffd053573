"""KServe v0.15.2 on the test control plane: its CRDs and its real controller manager, built from
KServe's own module source (github.com/kserve/kserve via the Go module proxy, cached under
~/.cache/fairing like Katib's binaries):

    ensure_built()        # the kserve-manager binary (`python -m tests.rig.kserve build`; slow once)
    k = kserve_rig(cp)    # idempotent: everything below; returns a handle (.namespace, .kubeconfig)

Where each piece runs, and why:
- The manager (cmd/manager: InferenceService, TrainedModel and InferenceGraph controllers, and
  the webhook server) runs on the host, like the training operator: in RawDeployment mode it only
  talks to the API server (it makes Deployments, Services and HPAs and reads their status; it
  never dials a pod), so it needs no cluster DNS. Its identity is a client certificate of the rig
  CA bound to KServe's own ClusterRole (config/rbac/role.yaml).
- `inferenceservice-config` is KServe's ConfigMap as shipped (config/configmap) with four changes:
  RawDeployment by default (no Knative), no Istio VirtualService and no Ingress (none runs here),
  `enableModelcar` on (shipped on too; asserted), and smaller default container resources (1 CPU
  and 2 GiB per predictor do not fit the real node of a 2-core machine).
- Its admission webhooks (KServe's configurations as shipped: the InferenceService defaulter and
  validator, the pod mutator that injects modelcars, the runtime validators) are registered by URL,
  https://127.0.0.1:WEBHOOK_PORT, with a serving certificate of the rig CA. controller-runtime
  reads that certificate from $TMPDIR/k8s-webhook-server/serving-certs (the manager has no flag for
  it), so the manager runs with TMPDIR in the rig's state dir.
- Predictor pods run on the real node (the tests' pod mutators put them there), in the real-node
  namespace, whose ServiceAccount may also create ServingRuntimes (fairing's modelcar form makes
  one per endpoint: see fairing/deployers/k8s/kserve.py).

Not here: Knative (Serverless mode), Istio, the KServe runtimes' public images (nothing public can
be pulled; fairing's own model server image is the runtime), the storage initializer image, the
LocalModel controllers.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import time
from pathlib import Path

from .state import RigError, Service, cache_dir, log_tail

KSERVE = ("github.com/kserve/kserve", "v0.15.2")
BINARIES = {"kserve-manager": "cmd/manager"}
KSERVE_SYSTEM = "kserve"               # KServe's namespace (POD_NAMESPACE): its ConfigMap lives there
WEBHOOK_PORT, HEALTHZ_PORT = 19450, 18091
CONTROLLER_USER = "kserve-controller"  # CN of the manager's client certificate
WEBHOOK_NAMES = ("inferenceservice.serving.kserve.io", "trainedmodel.serving.kserve.io",
                 "inferencegraph.serving.kserve.io", "clusterservingruntime.serving.kserve.io",
                 "servingruntime.serving.kserve.io", "localmodelcache.serving.kserve.io")
# What the real-node tests' ServiceAccount may do on top of tests/rig/kube.py's Role (which already
# covers InferenceServices): fairing's modelcar form creates a ServingRuntime per endpoint.
EXTRA_ROLE_RULES = [
    {"apiGroups": ["serving.kserve.io"], "resources": ["servingruntimes"],
     "verbs": ["create", "get", "list", "watch", "delete", "patch", "update"]},
    {"apiGroups": ["serving.kserve.io"], "resources": ["clusterservingruntimes"], "verbs": ["get", "list"]},
]


# --- build -----------------------------------------------------------------------------------------
def binary(name: str = "kserve-manager") -> Path:
    return cache_dir() / name / KSERVE[1] / name


def ensure_built() -> list[Path]:
    """KServe's go.mod has no replace directives, but the proxy hides the module's version list
    (`go install pkg@v0.15.2` fails with 403 on @v/list), so `go build` runs inside the module's
    own source tree, against its own go.sum."""
    from .gobuild import go_build

    module, version = KSERVE
    return [go_build(name, module, version, f"{module}/{pkg}", install="source") for name, pkg in BINARIES.items()]


# --- manifests from the module source --------------------------------------------------------------
def _module() -> Path:
    from .kube import module_source

    return module_source(*KSERVE)


def _yaml_docs(path: Path) -> list[dict]:
    from .kube import yaml_docs

    return yaml_docs(path, "KServe's module source")


def crd_manifests() -> list[dict]:
    return [d for f in sorted((_module() / "config/crd/full").glob("serving.kserve.io_*.yaml"))
            for d in _yaml_docs(f) if d.get("kind") == "CustomResourceDefinition"]


def ensure_crds(kube) -> list[str]:
    from .kube import wait_established

    docs = crd_manifests()
    for d in docs:
        kube.apply(d, field_manager="fairing-rig")
    names = [d["metadata"]["name"] for d in docs]
    wait_established(kube, names)
    return names


def isvc_config() -> dict:
    """KServe's inferenceservice-config ConfigMap, changed only where the rig must (module docstring)."""
    (cm,) = [d for d in _yaml_docs(_module() / "config/configmap/inferenceservice.yaml") if d.get("kind") == "ConfigMap"]
    data = dict(cm["data"])
    data.pop("_example", None)
    deploy = json.loads(data["deploy"])
    deploy["defaultDeploymentMode"] = "RawDeployment"
    ingress = json.loads(data["ingress"])
    ingress.update(disableIstioVirtualHost=True, disableIngressCreation=True)
    storage = json.loads(data["storageInitializer"])
    storage["enableModelcar"] = True
    isvc = json.loads(data["inferenceService"])
    isvc["resource"] = {"cpuRequest": "50m", "cpuLimit": "1", "memoryRequest": "64Mi", "memoryLimit": "1Gi"}
    data.update(deploy=json.dumps(deploy), ingress=json.dumps(ingress), storageInitializer=json.dumps(storage),
                inferenceService=json.dumps(isvc))
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "inferenceservice-config", "namespace": KSERVE_SYSTEM}, "data": data}


def cluster_role() -> dict:
    (role,) = [d for d in _yaml_docs(_module() / "config/rbac/role.yaml") if d.get("kind") == "ClusterRole"]
    return role


def webhook_configurations(ca_crt: Path) -> list[dict]:
    """KServe's webhook configurations as shipped (config/webhook/manifests.yaml), pointed at the
    manager by URL with the rig CA instead of through its Service."""
    ca = base64.b64encode(Path(ca_crt).read_bytes()).decode()
    docs = copy.deepcopy(_yaml_docs(_module() / "config/webhook/manifests.yaml"))
    for d in docs:
        d["metadata"].pop("creationTimestamp", None)
        for h in d["webhooks"]:
            path = h["clientConfig"]["service"]["path"]
            h["clientConfig"] = {"url": f"https://127.0.0.1:{WEBHOOK_PORT}{path}", "caBundle": ca}
            h.setdefault("timeoutSeconds", 10)
            # KServe's manifests say v1beta1; the manager (controller-runtime) answers v1 too.
            h["admissionReviewVersions"] = ["v1", "v1beta1"]
    names = {d["metadata"]["name"] for d in docs}
    if not names <= set(WEBHOOK_NAMES):
        raise RigError(f"KServe's webhook manifests name {sorted(names - set(WEBHOOK_NAMES))}: add them to WEBHOOK_NAMES")
    return docs


# --- the manager on the host -----------------------------------------------------------------------
def _state_dir() -> Path:
    from .kube import kube_dir

    d = kube_dir() / "kserve"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _certs(cp) -> tuple[Path, Path]:
    """The webhook serving certificate (127.0.0.1), where controller-runtime looks for it, and the
    manager's client kubeconfig (user kserve-controller)."""
    from .kube import cert_ips, issue_leaf, write_kubeconfig

    pki = cp.pki
    crt = pki.dir / "kserve-webhook.crt"
    if "127.0.0.1" not in cert_ips(crt):
        issue_leaf(pki, "kserve-webhook", "kserve-webhook", server=True, ips=("127.0.0.1",),
                   dns=("kserve-webhook-server-service.kserve.svc",))
    certdir = _state_dir() / "tmp" / "k8s-webhook-server" / "serving-certs"
    certdir.mkdir(parents=True, exist_ok=True)
    for src, dst in ((crt, "tls.crt"), (pki.dir / "kserve-webhook.key", "tls.key")):
        if not (certdir / dst).exists() or (certdir / dst).read_bytes() != src.read_bytes():
            (certdir / dst).write_bytes(src.read_bytes())
            (certdir / dst).chmod(0o600)
    if not (pki.dir / "kserve-controller.crt").exists():
        issue_leaf(pki, "kserve-controller", CONTROLLER_USER)
    cfg = write_kubeconfig(_state_dir() / "controller.kubeconfig", cp.server, pki.ca_crt, user=CONTROLLER_USER,
                           cert=pki.dir / "kserve-controller.crt", key=pki.dir / "kserve-controller.key")
    return certdir, cfg


def _manager_svc(cfg: Path | None = None) -> Service:
    from .state import service_env

    env = dict(service_env(), KUBECONFIG=str(cfg or _state_dir() / "controller.kubeconfig"),
               POD_NAMESPACE=KSERVE_SYSTEM, TMPDIR=str(_state_dir() / "tmp"))
    return Service("kube/kserve-manager", [
        str(binary()), f"--webhook-port={WEBHOOK_PORT}", f"--health-probe-addr=127.0.0.1:{HEALTHZ_PORT}",
        "--metrics-addr=0", "--leader-elect=false"], env=env)


def _manager_ready() -> bool:
    from .kube import http_ok

    return http_ok(f"http://127.0.0.1:{HEALTHZ_PORT}/readyz")


def register_kinds() -> None:
    """Kinds only the rig creates, so the product's resource table does not list them."""
    from fairing.kube.client import Resource, register

    for kind, plural in (("MutatingWebhookConfiguration", "mutatingwebhookconfigurations"),
                         ("ValidatingWebhookConfiguration", "validatingwebhookconfigurations")):
        register(Resource("admissionregistration.k8s.io/v1", kind, plural, False))
    register(Resource("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False))
    register(Resource("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False))


class KServeRig:
    """What the KServe tests need: .namespace (the real node's), .kubeconfig (its least-privilege
    ServiceAccount, which may also create ServingRuntimes), .admin_kubeconfig, .controller_log()."""

    def __init__(self, cp, node):
        self.cp = cp
        self.namespace = node.namespace
        self.kubeconfig = node.sa_kubeconfig
        self.admin_kubeconfig = cp.kubeconfig

    @staticmethod
    def controller_log(lines: int = 40) -> str:
        return log_tail(_manager_svc().log, lines) if _manager_svc().log.exists() else ""


_ready: KServeRig | None = None


def _fingerprint(cp) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"{KSERVE} {cp.server} {binary().stat().st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def kserve_rig(cp) -> KServeRig:
    """Everything KServe needs, started or reused; idempotent, under the control plane's lock."""
    global _ready
    if cp.external:
        raise RigError("the KServe rig runs on the local control plane (unset FAIRING_TEST_KUBECONFIG)")
    from . import kube as k
    from .node import real_node

    node = real_node()  # predictors run there; also re-checks the API servers
    if _ready is not None and _ready.cp is cp and _healthy(cp):
        return _ready
    ensure_built()
    register_kinds()
    marker = _state_dir() / "bootstrapped"
    fp = _fingerprint(cp)
    with k.kube_lock():
        kube = cp.kube()
        if not (marker.exists() and marker.read_text() == fp and _healthy(cp)):
            _bootstrap(cp, kube)
            marker.write_text(fp)
        _namespace_role(kube, node.namespace)
    _ready = KServeRig(cp, node)
    return _ready


def _namespace_role(kube, namespace: str) -> None:
    from . import kube as k

    name, rbac = f"{k.SA_NAME}-kserve", "rbac.authorization.k8s.io/v1"
    kube.apply({"apiVersion": rbac, "kind": "Role", "metadata": {"name": name, "namespace": namespace},
                "rules": EXTRA_ROLE_RULES}, field_manager="fairing-rig")
    kube.apply({"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": name, "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": k.SA_NAME, "namespace": namespace}]},
               field_manager="fairing-rig")


def _bootstrap(cp, kube) -> None:
    from . import kube as k

    ensure_crds(kube)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KSERVE_SYSTEM}},
               field_manager="fairing-rig")
    kube.apply(isvc_config(), KSERVE_SYSTEM, field_manager="fairing-rig")
    role = cluster_role()
    kube.apply(role, field_manager="fairing-rig")
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "kserve-manager-rolebinding"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": role["metadata"]["name"]},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CONTROLLER_USER}]},
               field_manager="fairing-rig")
    _, cfg = _certs(cp)
    # A changed ConfigMap is read at start only: restart the manager when the rig's config changed.
    svc = _manager_svc(cfg)
    if svc.alive():
        svc.stop(timeout=20)
    k.ensure_service(svc, _manager_ready, port=HEALTHZ_PORT, timeout=120)
    for d in webhook_configurations(cp.pki.ca_crt):
        kube.apply(d, field_manager="fairing-rig")


def _healthy(cp) -> bool:
    if not _manager_svc().alive() or not _manager_ready():
        return False
    try:
        kube = cp.kube()
        return all(kube.get("admissionregistration.k8s.io/v1", kind, "inferenceservice.serving.kserve.io") is not None
                   for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"))
    except Exception:  # noqa: BLE001 - API server restarting: bootstrap again
        return False


def status() -> str:
    svc = _manager_svc()
    return (f"{'kserve-manager':24} {'running pid ' + str(svc.pid()) if svc.alive() else 'stopped'}"
            f" {'ready' if _manager_ready() else 'not ready'}  log {svc.log}")


def stop_all() -> list[str]:
    """Unregister the webhooks first (with nothing behind them they would refuse every
    InferenceService, and every pod of one), then stop the manager. Stdlib calls only: teardown
    must not depend on the product under test."""
    from .kube import Pki, kube_dir
    from .node import _api

    pki = Pki(kube_dir() / "pki")
    for name in WEBHOOK_NAMES:
        for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
            with contextlib.suppress(Exception):
                _api(pki, "DELETE", f"/apis/admissionregistration.k8s.io/v1/{kind}/{name}")
    (_state_dir() / "bootstrapped").unlink(missing_ok=True)
    return ["kserve-manager"] if _manager_svc().stop(timeout=20) else []


if __name__ == "__main__":  # python -m tests.rig.kserve [build|start|status|stop]
    import sys

    cmd = sys.argv[1] if len(sys.argv) > 1 else "start"
    if cmd == "build":
        started = time.monotonic()
        print(*ensure_built(), sep="\n")
        crd_manifests()
        print(f"kserve build: {time.monotonic() - started:.0f} s", file=sys.stderr)
    elif cmd == "status":
        print(status())
    elif cmd == "stop":
        print(*stop_all(), sep="\n")
    else:
        from .kube import control_plane

        print(kserve_rig(control_plane()).namespace)
        print(status())
