"""Katib v0.19.0 on the test control plane: its CRDs (Experiment, Suggestion, Trial) and its real
components, built from Katib's own module source (github.com/kubeflow/katib via the Go module
proxy, cached under ~/.cache/fairing like Trainer's controllers):

    ensure_built()        # katib-controller, db-manager, the goptuna suggestion, the file metrics
                          # collector (`python -m tests.rig.katib build`; slow once)
    k = katib_rig(cp)     # idempotent: everything below; returns a handle (.namespace, .kubeconfig)

Where each piece runs, and why:
- PostgreSQL (Debian's `postgresql` binaries) is the rig's own cluster, not the distro service:
  initdb'd into /run/fairing/katib-postgres (the `postgres` user cannot enter /root), on
  127.0.0.1:15432, run as `postgres` with setpriv.
- katib-db-manager runs on the host, on the node's address (NODE_IP:16789). Pods reach it as
  Katib expects, `katib-db-manager.kubeflow:6789`: a selector-less Service whose EndpointSlice
  points at the host.
- katib-controller runs as a pod on the real node (image: the static binary, pushed to the rig
  registry) with hostNetwork + ClusterFirstWithHostNet: it dials suggestion Services and the
  db-manager by cluster DNS name, which the host cannot resolve. It runs as Katib's own
  ServiceAccount and ClusterRole (from Katib's manifests), reads its KatibConfig from the
  `katib-config` ConfigMap and its webhook certificate (issued by the rig CA) from the
  `katib-webhook-cert` Secret. Its admission webhooks (Katib's own configurations, as shipped) are
  registered by URL, https://127.0.0.1:WEBHOOK_PORT, with the rig CA.
- Suggestions (the goptuna service: random, tpe, cmaes, sobol) and trials run as pods on the real
  node. Katib's config cannot give the suggestion Deployments it makes a toleration, so the rig
  registers its own small mutating admission webhook (stdlib Python on 127.0.0.1:PLACEMENT_PORT,
  rig-CA certificate) that adds the real node's node selector and toleration to every pod created
  in namespaces labelled PLACEMENT_LABEL, only the katib namespace. (The API server's
  PodNodeSelector/PodTolerationRestriction plugins would do the same, but enabling them means
  restarting the shared API servers with other flags than every other checkout of the rig uses.)
  Only that namespace is labelled for Katib's metrics-collector injection too.
- The StdOut metrics collector is Katib's file-metricscollector image, injected by Katib's pod
  webhook next to each trial's main container; it reports to the db-manager, whose observations
  the controller copies into each Trial's status.

Not here: the Katib UI, the hyperopt/optuna/skopt suggestion images (Python images that pull
packages at build time), early stopping, and any trial kind but batch Jobs.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .state import RigError, Service, cache_dir, log_tail, run_dir

KATIB = ("github.com/kubeflow/katib", "v0.19.0")
CRD_FILES = ("experiment.yaml", "suggestion.yaml", "trial.yaml")

KATIB_SYSTEM = "kubeflow"             # Katib's core namespace (KATIB_CORE_NAMESPACE)
NAMESPACE = "fairing-katib"           # where the tests run Experiments
POSTGRES_PORT = 15432
DB_MANAGER_PORT = 16789               # on the host; the Service says 6789, as Katib expects
DB_MANAGER_SERVICE_PORT = 6789
WEBHOOK_PORT, HEALTHZ_PORT = 19447, 18089
PLACEMENT_PORT = 19448
PLACEMENT_LABEL = ("fairing.dev/pods-on-real-node", "true")
DB_PASSWORD = "katib-rig"             # loopback only, throwaway data
ALGORITHMS = ("random", "tpe", "cmaes", "sobol")  # what goptuna serves (pkg/suggestion/v1beta1/goptuna)

# name -> package in Katib's module
BINARIES = {
    "katib-controller": "cmd/katib-controller/v1beta1",
    "katib-db-manager": "cmd/db-manager/v1beta1",
    "katib-goptuna": "cmd/suggestion/goptuna/v1beta1",
    "katib-file-metricscollector": "cmd/metricscollector/v1beta1/file-metricscollector",
}
IMAGES = ("katib-controller", "katib-goptuna", "katib-file-metricscollector")  # db-manager runs on the host
# Katib's Python optuna suggestion service (what Katib ships for grid), built by fairing itself.
OPTUNA_ALGORITHMS = ("grid",)
OPTUNA_DIR = "cmd/suggestion/optuna/v1beta1"


# --- CRDs ------------------------------------------------------------------------------------------
def _module() -> Path:
    from .kube import module_source

    return module_source(*KATIB)


def _yaml_docs(path: Path) -> list[dict]:
    from .kube import yaml_docs

    return yaml_docs(path, "Katib's module source")


def crd_manifests() -> list[dict]:
    src = _module() / "manifests" / "v1beta1" / "components" / "crd"
    return [d for name in CRD_FILES for d in _yaml_docs(src / name) if d.get("kind") == "CustomResourceDefinition"]


def ensure_crds(kube) -> list[str]:
    """Apply Katib's CRDs (idempotent) and wait until they are served; returns their names."""
    from .kube import wait_established

    docs = crd_manifests()
    for d in docs:
        kube.apply(d, field_manager="fairing-rig")
    names = [d["metadata"]["name"] for d in docs]
    wait_established(kube, names)
    return names


# --- builds and images -----------------------------------------------------------------------------
def binary(name: str) -> Path:
    return cache_dir() / name / KATIB[1] / name


def ensure_built() -> list[Path]:
    """Katib's go.mod has no replace directives: `go install <pkg>@v0.19.0` builds each main
    against Katib's own go.sum. Sequential (few cores); each binary has its own build lock."""
    from .gobuild import go_build

    module, version = KATIB
    return [go_build(name, module, version, f"{module}/{pkg}", install=True) for name, pkg in BINARIES.items()]


def _image_ref(reg, name: str) -> str:
    """host/fairing-rig/<name>@sha256:…, pushed once per binary (the digest is remembered next to
    the binary and re-checked against the registry, whose data may have been wiped)."""
    from . import netutil
    from .images import push_scratch_image

    exe = binary(name)
    st = exe.stat()
    key = f"{st.st_size}:{st.st_mtime_ns}"
    memo = exe.with_name(exe.name + ".image.json")
    repo = f"fairing-rig/{name}"
    with contextlib.suppress(OSError, ValueError):
        m = json.loads(memo.read_text())
        if m["key"] == key and netutil.request(f"{reg.url}/v2/{repo}/manifests/{m['digest']}", method="HEAD",
                                               headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
                                               ).status == 200:
            return f"{reg.host}/{repo}@{m['digest']}"
    digest = push_scratch_image(reg.url, repo, KATIB[1], {name: (exe.read_bytes(), 0o755)}, [f"/{name}"])
    memo.write_text(json.dumps({"key": key, "digest": digest}))
    return f"{reg.host}/{repo}@{digest}"


def optuna_image(reg) -> str:
    """Katib's optuna suggestion service, laid out as its Dockerfile does (pkg/ and the service's
    main.py under /opt/katib, its requirements.txt installed), built and pushed by fairing's own
    append builder on the rig's base image. Rebuilding is a no-op once the layers are cached."""
    from fairing.builders.append import AppendBuilder
    from fairing.context import BuildContext

    from .base import PYTHON, ensure_base_image

    base = ensure_base_image(reg).docker  # a few HEAD requests when it is there
    src = _module()
    files: dict = {str(p.relative_to(src)): p.read_bytes() for p in sorted((src / "pkg").rglob("*.py"))}
    files[f"{OPTUNA_DIR}/main.py"] = (src / OPTUNA_DIR / "main.py").read_bytes()
    reqs = tuple(r.strip() for r in (src / OPTUNA_DIR / "requirements.txt").read_text().splitlines()
                 if r.strip() and not r.startswith("#"))
    ctx = BuildContext(files=files, entrypoint=("python3", f"{OPTUNA_DIR}/main.py"), requirements=reqs,
                       workdir="/opt/katib", kind="katib-optuna", python=PYTHON,
                       env={"PYTHONPATH": "/opt/katib:/opt/katib/pkg/apis/manager/v1beta1/python:"
                                          "/opt/katib/pkg/apis/manager/health/python"})
    built = AppendBuilder(base, progress=lambda _m: None).build(
        ctx, f"{reg.host}/fairing-rig/katib-optuna:{KATIB[1]}")
    return built.ref


def ensure_images(reg) -> dict[str, str]:
    ensure_built()
    images = {name: _image_ref(reg, name) for name in IMAGES}
    images["katib-optuna"] = optuna_image(reg)
    return images


# --- host services: PostgreSQL and the db-manager --------------------------------------------------
def _state_dir() -> Path:
    from .kube import kube_dir

    d = kube_dir() / "katib"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _pg_dir() -> Path:
    """Under /run/fairing: the `postgres` user must be able to reach it (not so under /root)."""
    return run_dir() / "katib-postgres"


def _pg_bin(tool: str) -> Path:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / tool).exists():
            return d / tool
    raise RigError("PostgreSQL is not installed (Debian package `postgresql`; ./scripts/setup installs it)")


def _as_postgres(argv: list[str]) -> list[str]:
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", "--", *argv]


def _postgres_svc() -> Service:
    d = _pg_dir()
    return Service("kube/katib-postgres", _as_postgres([
        str(_pg_bin("postgres")), "-D", str(d / "data"), "-p", str(POSTGRES_PORT), "-h", "127.0.0.1",
        "-k", str(d), "-c", "fsync=off", "-c", "max_connections=40"]), cwd=d)


def _initdb() -> None:
    """A fresh cluster owned by `postgres`, superuser `katib` with a password (scram over TCP)."""
    d = _pg_dir()
    if (d / "data" / "PG_VERSION").exists():
        return
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    pw = d / "pwfile"
    pw.write_text(DB_PASSWORD + "\n")
    subprocess.run(["chown", "-R", "postgres:postgres", str(d)], check=True)
    d.chmod(0o700)
    log = _state_dir() / "initdb.log"
    with open(log, "wb") as f:
        rc = subprocess.run(_as_postgres([str(_pg_bin("initdb")), "-D", str(d / "data"), "-U", "katib",
                                          f"--pwfile={pw}", "--auth-local=trust", "--auth-host=scram-sha-256",
                                          "--encoding=UTF8", "--locale=C"]),
                            cwd=d, stdout=f, stderr=subprocess.STDOUT, timeout=300).returncode
    pw.unlink()
    if rc != 0:
        shutil.rmtree(d / "data", ignore_errors=True)
        raise RigError(f"initdb failed\n{log_tail(log)}")


def _pg_ready() -> bool:
    return subprocess.run([str(_pg_bin("pg_isready")), "-q", "-h", "127.0.0.1", "-p", str(POSTGRES_PORT)],
                          timeout=10).returncode == 0


def _db_manager_svc() -> Service:
    from .netutil import node_ip

    env = dict(os.environ, DB_NAME="postgres", DB_USER="katib", DB_PASSWORD=DB_PASSWORD,
               KATIB_POSTGRESQL_DB_HOST="127.0.0.1", KATIB_POSTGRESQL_DB_PORT=str(POSTGRES_PORT),
               KATIB_POSTGRESQL_DB_DATABASE="postgres")
    return Service("kube/katib-db-manager", [str(binary("katib-db-manager")),
                                             f"--listen-address={node_ip()}:{DB_MANAGER_PORT}"], env=env)


# The placement webhook: what PodNodeSelector + PodTolerationRestriction do for an annotated
# namespace, as an admission webhook (stdlib only; it runs from the rig's state dir, so it outlives
# the checkout that started it). argv: port cert key node-selector-json toleration-json
PLACEMENT_SERVER = r'''import base64, json, ssl, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
selector, toleration = json.loads(sys.argv[4]), json.loads(sys.argv[5])


def patch(pod):
    spec, ops = pod.get("spec") or {}, []
    if not spec.get("nodeSelector"):
        ops.append({"op": "add", "path": "/spec/nodeSelector", "value": selector})
    else:
        for k, v in selector.items():
            ops.append({"op": "add", "path": "/spec/nodeSelector/" + k.replace("~", "~0").replace("/", "~1"),
                        "value": v})
    tols = spec.get("tolerations")
    if not tols:
        ops.append({"op": "add", "path": "/spec/tolerations", "value": [toleration]})
    elif toleration not in tols:
        ops.append({"op": "add", "path": "/spec/tolerations/-", "value": toleration})
    return ops


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        req = review["request"]
        resp = {"uid": req["uid"], "allowed": True}
        ops = patch(req.get("object") or {})
        if ops:
            resp.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(ops).encode()).decode())
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s\n" % (fmt % args))


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
'''


def _placement_svc() -> Service:
    import sys

    from .kube import Pki, kube_dir
    from .node import LABEL, TAINT

    script = _state_dir() / "placement_webhook.py"
    if not script.exists() or script.read_text() != PLACEMENT_SERVER:
        script.write_text(PLACEMENT_SERVER)
    pki = Pki(kube_dir() / "pki")
    tol = {"key": TAINT["key"], "operator": "Equal", "value": TAINT["value"], "effect": TAINT["effect"]}
    return Service("kube/katib-placement-webhook", [
        sys.executable, str(script), str(PLACEMENT_PORT), str(pki.dir / "katib-webhook.crt"),
        str(pki.dir / "katib-webhook.key"), json.dumps({LABEL[0]: LABEL[1]}), json.dumps(tol)])


def _placement_ok(pki) -> bool:
    import ssl
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{PLACEMENT_PORT}/healthz", context=ctx, timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


def placement_webhook(ca_crt: Path) -> dict:
    ca = base64.b64encode(Path(ca_crt).read_bytes()).decode()
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": PLACEMENT_WEBHOOK},
            "webhooks": [{"name": "real-node-pods.fairing-rig.local",
                          "clientConfig": {"url": f"https://127.0.0.1:{PLACEMENT_PORT}/mutate", "caBundle": ca},
                          "namespaceSelector": {"matchLabels": {PLACEMENT_LABEL[0]: PLACEMENT_LABEL[1]}},
                          "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                     "resources": ["pods"]}],
                          "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
                          "timeoutSeconds": 5}]}


PLACEMENT_WEBHOOK = "fairing-rig-real-node-pods"


def _services() -> list[Service]:
    return [_postgres_svc(), _db_manager_svc(), _placement_svc()]


# --- objects ---------------------------------------------------------------------------------------
def _webhook_cert(pki) -> tuple[Path, Path]:
    """A serving certificate of the rig CA for the controller's webhook server (127.0.0.1)."""
    from .kube import cert_ips, issue_leaf

    crt = pki.dir / "katib-webhook.crt"
    if "127.0.0.1" not in cert_ips(crt):
        issue_leaf(pki, "katib-webhook", "katib-controller", server=True, ips=("127.0.0.1",),
                   dns=("katib-controller.kubeflow.svc",))
    return crt, pki.dir / "katib-webhook.key"


def katib_config(images: dict[str, str]) -> dict:
    return {
        "apiVersion": "config.kubeflow.org/v1beta1", "kind": "KatibConfig",
        "init": {
            "certGenerator": {"enable": False},
            "controller": {"webhookPort": WEBHOOK_PORT, "trialResources": ["Job.v1.batch"],
                           "metricsAddr": "0", "healthzAddr": f"{_node_ip()}:{HEALTHZ_PORT}",
                           "enableLeaderElection": False},
        },
        "runtime": {
            "metricsCollectors": [{"kind": k, "image": images["katib-file-metricscollector"]}
                                  for k in ("StdOut", "File")],
            "suggestions": [{"algorithmName": a, "image": images["katib-goptuna"]} for a in ALGORITHMS]
                           + [{"algorithmName": a, "image": images["katib-optuna"]} for a in OPTUNA_ALGORITHMS],
        },
    }


def _node_ip() -> str:
    from .netutil import node_ip

    return node_ip()


def rbac_manifests() -> list[dict]:
    """Katib's own ServiceAccount, ClusterRole and binding for the controller."""
    docs = _yaml_docs(_module() / "manifests/v1beta1/components/controller/rbac.yaml")
    out = []
    for d in docs:
        if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
            if d["kind"] == "ServiceAccount":
                d["metadata"]["namespace"] = KATIB_SYSTEM
            for s in d.get("subjects") or []:
                s["namespace"] = KATIB_SYSTEM
            out.append(d)
    return out


def webhook_configurations(ca_crt: Path) -> list[dict]:
    """Katib's webhook configurations as shipped (manifests/v1beta1/components/webhook), pointed at
    the controller by URL with the rig CA instead of through the katib-controller Service."""
    ca = base64.b64encode(Path(ca_crt).read_bytes()).decode()
    docs = _yaml_docs(_module() / "manifests/v1beta1/components/webhook/webhooks.yaml")
    for d in docs:
        for h in d["webhooks"]:
            path = h["clientConfig"]["service"]["path"]
            h["clientConfig"] = {"url": f"https://127.0.0.1:{WEBHOOK_PORT}{path}", "caBundle": ca}
            h.setdefault("timeoutSeconds", 10)
    return docs


def _controller_deployment(image: str, config_hash: str) -> dict:
    from .node import LABEL, TAINT

    labels = {"katib.kubeflow.org/component": "controller"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "katib-controller", "namespace": KATIB_SYSTEM, "labels": labels},
        "spec": {
            "replicas": 1, "strategy": {"type": "Recreate"},  # host ports: never two at once
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"fairing.dev/katib-config": config_hash}},
                "spec": {
                    "serviceAccountName": "katib-controller",
                    "hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet",
                    "nodeSelector": {LABEL[0]: LABEL[1]},
                    "tolerations": [{"key": TAINT["key"], "operator": "Equal", "value": TAINT["value"],
                                     "effect": TAINT["effect"]}],
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "katib-controller", "image": image, "imagePullPolicy": "IfNotPresent",
                        "args": ["--katib-config=/katib-config.yaml"],
                        "env": [{"name": "KATIB_CORE_NAMESPACE",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": HEALTHZ_PORT}},
                        "volumeMounts": [
                            {"name": "cert", "mountPath": "/tmp/cert", "readOnly": True},
                            {"name": "katib-config", "mountPath": "/katib-config.yaml",
                             "subPath": "katib-config.yaml", "readOnly": True}],
                    }],
                    "volumes": [{"name": "cert", "secret": {"secretName": "katib-webhook-cert"}},
                                {"name": "katib-config", "configMap": {"name": "katib-config"}}],
                },
            },
        },
    }


def _db_manager_service() -> list[dict]:
    name = "katib-db-manager"
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": KATIB_SYSTEM},
         "spec": {"ports": [{"name": "api", "port": DB_MANAGER_SERVICE_PORT, "targetPort": DB_MANAGER_PORT,
                             "protocol": "TCP"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
         "metadata": {"name": name, "namespace": KATIB_SYSTEM,
                      "labels": {"kubernetes.io/service-name": name,
                                 "endpointslice.kubernetes.io/managed-by": "fairing-rig"}},
         "endpoints": [{"addresses": [_node_ip()], "conditions": {"ready": True}}],
         "ports": [{"name": "api", "port": DB_MANAGER_PORT, "protocol": "TCP"}]},
    ]


# What the test ServiceAccount may do in the katib namespace on top of tests/rig/kube.py's Role.
EXTRA_ROLE_RULES = [
    {"apiGroups": ["kubeflow.org"], "resources": ["experiments", "trials"],
     "verbs": ["create", "get", "list", "watch", "delete", "patch", "update"]},
    {"apiGroups": ["kubeflow.org"], "resources": ["suggestions"], "verbs": ["get", "list", "watch"]},
]


def _namespace(kube, cp) -> Path:
    """The tests' namespace: least-privilege ServiceAccount (+ Experiments), Katib's injection
    label, and every pod placed on the real node by the placement webhook."""
    from . import kube as k

    token = k.setup_namespace(kube, NAMESPACE)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": NAMESPACE, "labels": {"katib.kubeflow.org/metrics-collector-injection": "enabled",
                                      PLACEMENT_LABEL[0]: PLACEMENT_LABEL[1]}}},
        field_manager="fairing-rig-katib")
    name = f"{k.SA_NAME}-katib"
    rbac = "rbac.authorization.k8s.io/v1"
    kube.apply({"apiVersion": rbac, "kind": "Role", "metadata": {"name": name, "namespace": NAMESPACE},
                "rules": EXTRA_ROLE_RULES}, field_manager="fairing-rig")
    kube.apply({"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": name, "namespace": NAMESPACE},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": k.SA_NAME, "namespace": NAMESPACE}]},
               field_manager="fairing-rig")
    return k.write_kubeconfig(_state_dir() / "sa.kubeconfig", cp.server, cp.pki.ca_crt,
                              user=f"{k.SA_NAME}-sa", token=token, namespace=NAMESPACE)


def register_kinds() -> None:
    """Kinds only the rig creates, so the product's resource table does not list them."""
    from fairing.kube.client import Resource, register

    register(Resource("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration",
                      "mutatingwebhookconfigurations", False))
    register(Resource("discovery.k8s.io/v1", "EndpointSlice", "endpointslices"))


def pod_log(kube, pod: str, namespace: str, *, container: str | None = None, tail: int = 60) -> str:
    resp = kube.pod_log(pod, namespace, container=container, tail_lines=tail)
    try:
        return resp.data.decode("utf-8", "replace")
    finally:
        resp.release_conn()



def _only_pods_with(kube, config_hash: str) -> bool:
    """True when every controller pod runs `config_hash` and is Ready."""
    pods = kube.list("v1", "Pod", KATIB_SYSTEM, label_selector="katib.kubeflow.org/component=controller").get("items", [])
    return bool(pods) and all(
        (p["metadata"].get("annotations") or {}).get("fairing.dev/katib-config") == config_hash
        and not p["metadata"].get("deletionTimestamp")
        and any(c.get("type") == "Ready" and c.get("status") == "True" for c in (p.get("status") or {}).get("conditions") or [])
        for p in pods)


def _controller_ready() -> bool:
    from .kube import http_ok

    return http_ok(f"http://{_node_ip()}:{HEALTHZ_PORT}/readyz")


class KatibRig:
    """What the Katib tests need: .namespace (labelled for injection, pods on the real node),
    .kubeconfig (that namespace's least-privilege ServiceAccount), .admin_kubeconfig, .algorithms."""

    algorithms = ALGORITHMS

    def __init__(self, cp, sa_kubeconfig: Path):
        self.cp = cp
        self.namespace = NAMESPACE
        self.kubeconfig = sa_kubeconfig
        self.admin_kubeconfig = cp.kubeconfig

    def controller_log(self, tail: int = 60) -> str:
        """The controller pod's log (for failure messages)."""
        return _controller_debug(self.cp.kube(namespace=KATIB_SYSTEM), tail)


_ready: KatibRig | None = None


def _fingerprint(cp, images: dict[str, str]) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"{KATIB} {cp.server} {_node_ip()} {sorted(images.items())}".encode())
    return h.hexdigest()[:16]


def katib_rig(cp) -> KatibRig:
    """Everything Katib needs, started or reused; idempotent, under the control plane's lock."""
    global _ready
    if cp.external:
        raise RigError("the Katib rig runs on the local control plane (unset FAIRING_TEST_KUBECONFIG)")
    from . import kube as k
    from .node import real_node
    from .registry import ensure_plain

    real_node()  # the controller, suggestions and trials run there; also re-checks the API servers
    if _ready is not None and _ready.cp is cp and _healthy(cp):
        return _ready
    images = ensure_images(ensure_plain())
    register_kinds()
    marker = _state_dir() / "bootstrapped"
    fp = _fingerprint(cp, images)
    with k.kube_lock():
        kube = cp.kube()
        if not (marker.exists() and marker.read_text() == fp and _healthy(cp)):
            _bootstrap(cp, kube, images)
            marker.write_text(fp)
        sa = _namespace(kube, cp)
    _ready = KatibRig(cp, sa)
    return _ready


def _bootstrap(cp, kube, images: dict[str, str]) -> None:
    import yaml

    from . import kube as k

    ensure_crds(kube)
    # host services: PostgreSQL, then the db-manager (which creates its table at start)
    _initdb()
    postgres, dbm, _ = _services()
    k.ensure_service(postgres, _pg_ready, port=POSTGRES_PORT, timeout=60)
    from .state import port_open

    k.ensure_service(dbm, lambda: port_open(DB_MANAGER_PORT, _node_ip()), port=None, timeout=60)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KATIB_SYSTEM}},
               field_manager="fairing-rig")
    for d in _db_manager_service():
        kube.apply(d, KATIB_SYSTEM, field_manager="fairing-rig")
    for d in rbac_manifests():
        kube.apply(d, KATIB_SYSTEM if d["kind"] == "ServiceAccount" else None, field_manager="fairing-rig")
    crt, key = _webhook_cert(cp.pki)
    k.ensure_service(_placement_svc(), lambda: _placement_ok(cp.pki), port=PLACEMENT_PORT, timeout=30)
    kube.apply(placement_webhook(cp.pki.ca_crt), field_manager="fairing-rig")
    kube.apply({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": "katib-webhook-cert", "namespace": KATIB_SYSTEM},
                "data": {"tls.crt": base64.b64encode(crt.read_bytes()).decode(),
                         "tls.key": base64.b64encode(key.read_bytes()).decode()}},
               KATIB_SYSTEM, field_manager="fairing-rig")
    config = yaml.safe_dump(katib_config(images), sort_keys=False)
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "katib-config", "namespace": KATIB_SYSTEM},
                "data": {"katib-config.yaml": config}}, KATIB_SYSTEM, field_manager="fairing-rig")
    chash = hashlib.sha256((config + crt.read_text()).encode()).hexdigest()[:12]
    kube.apply(_controller_deployment(images["katib-controller"], chash), KATIB_SYSTEM, field_manager="fairing-rig")
    deadline = time.monotonic() + 180
    # A changed config restarts the controller (Recreate): until the pod with the new config is the
    # only one, the old one may still answer /readyz and then vanish under the first request.
    while not (_controller_ready() and _only_pods_with(kube, chash)):
        if time.monotonic() > deadline:
            raise RigError(f"katib-controller not ready after 180s on the real node\n{_controller_debug(kube)}")
        time.sleep(1)
    for d in webhook_configurations(cp.pki.ca_crt):
        kube.apply(d, field_manager="fairing-rig")


def _controller_debug(kube, tail: int = 30) -> str:
    lines = []
    with contextlib.suppress(Exception):
        for p in kube.list("v1", "Pod", KATIB_SYSTEM,
                           label_selector="katib.kubeflow.org/component=controller").get("items", []):
            st = p.get("status") or {}
            lines.append(f"pod {p['metadata']['name']}: {st.get('phase')} "
                         f"{json.dumps(st.get('containerStatuses') or st.get('conditions'))[:600]}")
            with contextlib.suppress(Exception):
                lines.append(pod_log(kube, p["metadata"]["name"], KATIB_SYSTEM, tail=tail))
    return "\n".join(lines)


def _healthy(cp) -> bool:
    if not all(s.alive() for s in _services()) or not _controller_ready():
        return False
    try:
        kube = cp.kube()
        return kube.get("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration",
                        "katib.kubeflow.org") is not None and \
            kube.get("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration",
                     PLACEMENT_WEBHOOK) is not None and \
            kube.get("discovery.k8s.io/v1", "EndpointSlice", "katib-db-manager", KATIB_SYSTEM) is not None
    except Exception:  # noqa: BLE001 - CRDs gone, API server restarting: bootstrap again
        return False


def status() -> str:
    lines = [f"{s.name:24} {'running pid ' + str(s.pid()) if s.alive() else 'stopped'}  log {s.log}"
             for s in _services()]
    lines.append(f"{'katib-controller (pod)':24} {'ready' if _controller_ready() else 'not ready'}  "
                 f"on the real node, namespace {KATIB_SYSTEM}")
    return "\n".join(lines)


def stop_all() -> list[str]:
    """Unregister the webhooks (with nothing behind them they would refuse every Experiment and
    every pod in the katib namespace), remove the controller, stop the placement webhook, the
    db-manager and PostgreSQL. Stdlib calls only: teardown must not depend on the product under test."""
    from .kube import Pki, kube_dir
    from .node import _api

    pki = Pki(kube_dir() / "pki")
    for path in ("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/katib.kubeflow.org",
                 f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{PLACEMENT_WEBHOOK}",
                 "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/katib.kubeflow.org",
                 f"/apis/apps/v1/namespaces/{KATIB_SYSTEM}/deployments/katib-controller"):
        with contextlib.suppress(Exception):
            _api(pki, "DELETE", path)
    stopped = [s.name.rsplit("/", 1)[-1] for s in reversed(_services()) if s.stop(timeout=20)]
    (_state_dir() / "bootstrapped").unlink(missing_ok=True)
    return stopped


if __name__ == "__main__":  # python -m tests.rig.katib [build|start|status|stop]
    import sys

    cmd = sys.argv[1] if len(sys.argv) > 1 else "start"
    if cmd == "build":
        print(*ensure_built(), sep="\n")
        crd_manifests()
    elif cmd == "status":
        print(status())
    elif cmd == "stop":
        stop_all()
    else:
        from .kube import control_plane

        print(katib_rig(control_plane()).namespace)
        print(status())
