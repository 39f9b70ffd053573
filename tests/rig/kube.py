"""A real Kubernetes control plane for the tests: etcd (built from the Go module proxy) + kube-apiserver (RBAC on) +
kube-controller-manager + kube-scheduler + kwok (fake nodes whose pods really go through their
lifecycle by kwok Stages), started once and reused by every later test run.

    cp = control_plane()       # idempotent; flock-protected; reuses healthy processes
    cp.kubeconfig              # admin (system:masters client certificate)
    cp.sa_kubeconfig           # ServiceAccount token bound to a minimal Role in cp.namespace
    cp.namespace, cp.server
    cp.stop(); cp.start()      # the shared API server (affects everyone: prefer private_apiserver())
    with private_apiserver() as api: ...   # a second API server on the same etcd, yours to kill

State, pidfiles and logs live under ~/.cache/fairing/rig/kube/. Binaries come from
scripts/build-k8s (built from the Go module proxy). CRDs (Kubeflow training operator, KServe) and
kwok's stages are read from their real sources fetched with `go mod download`, cached under
~/.cache/fairing/sources/. FAIRING_TEST_KUBECONFIG=<admin kubeconfig of a real cluster> skips all of
this and sets up the namespace, ServiceAccount and Role there instead.

Pod outcomes for failure tests are chosen with the pod label `fairing.test/outcome`:
  fail (exit 1) | oom (OOMKilled) | evicted | imagepull (ImagePullBackOff) | hang (never finishes)
Without the label, pods go Pending -> Running -> Succeeded (Job/TFJob/PyTorchJob pods) or stay
Running and Ready (Deployment pods).
"""
from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import fcntl
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml

from .netutil import node_ip
from .state import RigError, Service, cache_dir, free_port, log_tail, port_open, wait_until

K8S_VERSION = os.environ.get("K8S_VERSION", "v1.34.4")
KWOK_VERSION = os.environ.get("KWOK_VERSION", "v0.8.0")
TRAINING_OPERATOR = ("github.com/kubeflow/training-operator", "v1.8.1")
KSERVE = ("github.com/kserve/kserve", "v0.15.2")
KWOK_MODULE = ("sigs.k8s.io/kwok", KWOK_VERSION)
# Debian's etcd 3.4.23 lacks watch progress notifications (3.4.31+/3.5.13+), so kube-apiserver
# 1.34 refuses streaming watch-lists and kwok's informers stall; build a current etcd instead.
ETCD_VERSION = os.environ.get("FAIRING_ETCD_VERSION", "v3.6.16")

NAMESPACE = "fairing-test"
SA_NAME = "fairing"
OUTCOME_LABEL = "fairing.test/outcome"
NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
NODES = ("kwok-node-0", "kwok-gpu-0")
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}

ETCD_PORT, ETCD_PEER_PORT = 23790, 23800
APISERVER_PORT = 6443
KCM_PORT, SCHEDULER_PORT, KWOK_PORT = 10357, 10359, 10247
# training operator: metrics, health probes, webhook server (no webhook configuration is
# registered, so the API server never calls it; the operator insists on serving it anyway).
OPERATOR_PORTS = (18080, 18081, 19443)
OPERATOR_NAMESPACE = "kubeflow"
SERVICE_CIDR = "10.96.0.0/16"

REPO = Path(__file__).resolve().parents[2]

# What a fairing user needs in their namespace, and nothing more: the least-privilege Role the
# tests run under (the serving deployers need the apps/services/proxy rules).
ROLE_RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"],
     "verbs": ["create", "get", "list", "watch", "delete", "patch", "update"]},
    {"apiGroups": ["kubeflow.org"], "resources": ["tfjobs", "pytorchjobs"],
     "verbs": ["create", "get", "list", "watch", "delete", "patch", "update"]},
    {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
     "verbs": ["create", "get", "list", "watch", "delete", "patch", "update"]},
    {"apiGroups": ["apps"], "resources": ["deployments"],
     "verbs": ["create", "get", "list", "watch", "delete", "patch", "update"]},
    {"apiGroups": [""], "resources": ["services"],
     "verbs": ["create", "get", "list", "watch", "delete", "patch", "update"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "patch", "update", "delete"]},
    {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["services/proxy"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create", "get"]},
]


def kube_dir() -> Path:
    d = cache_dir() / "rig" / "kube"
    d.mkdir(parents=True, exist_ok=True)
    return d


def bin_dir() -> Path:
    return cache_dir() / "k8s" / K8S_VERSION / "bin"


# --- locking: our own flock (the control plane takes ~30 s to start; don't hold the rig lock) ---
_tlock = threading.RLock()


@contextlib.contextmanager
def kube_lock() -> Iterator[None]:
    with _tlock:
        fd = os.open(kube_dir() / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


# --- binaries and sources --------------------------------------------------------------------------
def ensure_binaries() -> Path:
    need = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kwok"]
    if not all((bin_dir() / b).exists() for b in need):
        log = kube_dir() / "build.log"
        with open(log, "ab") as f:
            proc = subprocess.run([str(REPO / "scripts" / "build-k8s")], stdout=f, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, K8S_VERSION=K8S_VERSION, KWOK_VERSION=KWOK_VERSION))
        if proc.returncode != 0:
            raise RigError(f"scripts/build-k8s failed (exit {proc.returncode})\n{log_tail(log)}")
    return bin_dir()


def ensure_training_operator() -> Path:
    """The Kubeflow training operator (TFJob/PyTorchJob controller), built once from the Go module
    proxy (its go.mod has no replace directives, so `go install` works)."""
    module, version = TRAINING_OPERATOR
    out = cache_dir() / "training-operator" / version / "training-operator"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log = kube_dir() / "build-training-operator.log"
    with tempfile.TemporaryDirectory() as gobin, open(log, "ab") as f:
        try:
            rc = subprocess.run(["go", "install", "-trimpath", "-ldflags=-s -w",
                                 f"{module}/cmd/training-operator.v1@{version}"], cwd=gobin, stdout=f,
                                stderr=subprocess.STDOUT, timeout=1800,
                                env=dict(os.environ, GOBIN=gobin, CGO_ENABLED="0")).returncode
        except FileNotFoundError:
            raise RigError("`go` is not installed; the rig builds the training operator with it") from None
        if rc != 0:
            raise RigError(f"building the training operator {version} failed\n{log_tail(log)}")
        shutil.copy2(Path(gobin) / "training-operator.v1", str(out) + ".tmp")
    os.replace(str(out) + ".tmp", out)
    return out


def ensure_etcd() -> Path:
    """etcd from the Go module proxy. `go install` refuses go.etcd.io/etcd/server/v3 (it has replace
    directives), so, as for Kubernetes, build it as a dependency of a throwaway module."""
    out = cache_dir() / "etcd" / ETCD_VERSION / "etcd"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log = kube_dir() / "build-etcd.log"
    with tempfile.TemporaryDirectory() as tmp, open(log, "ab") as f:
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
        steps = [["go", "mod", "init", "fairing.local/etcdbuild"],
                 ["go", "get", f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}"],
                 ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(out) + ".tmp", "go.etcd.io/etcd/server/v3"]]
        for argv in steps:
            try:
                rc = subprocess.run(argv, cwd=tmp, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=1800).returncode
            except FileNotFoundError:
                raise RigError("`go` is not installed; the rig builds etcd with it") from None
            if rc != 0:
                raise RigError(f"building etcd {ETCD_VERSION} failed at `{' '.join(argv[:3])}`\n{log_tail(log)}")
    os.replace(str(out) + ".tmp", out)
    return out


def module_source(module: str, version: str) -> Path:
    """The source tree of a Go module at a version, via the Go module proxy (cached by Go)."""
    marker = cache_dir() / "sources" / f"{module.replace('/', '_')}@{version}.dir"
    if marker.exists() and Path(marker.read_text().strip()).is_dir():
        return Path(marker.read_text().strip())
    with tempfile.TemporaryDirectory() as tmp:  # outside any module, so go doesn't touch a go.mod
        try:
            proc = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=tmp,
                                  capture_output=True, timeout=600)
        except FileNotFoundError:
            raise RigError("`go` is not installed; it fetches CRDs and kwok stages from the Go module proxy") from None
    info = json.loads(proc.stdout or b"{}")
    if proc.returncode != 0 or "Dir" not in info:
        raise RigError(f"go mod download {module}@{version} failed: {info.get('Error') or proc.stderr.decode()[-500:]}")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(info["Dir"])
    return Path(info["Dir"])


def yaml_docs(path: Path, source: str = "the module source") -> list[dict]:
    """The documents of a YAML file fetched with a module's source (Katib's, KServe's, kwok's...);
    a file the pinned version lacks is one clear error."""
    if not path.exists():
        raise RigError(f"expected file {path} is missing from {source}")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def crd_manifests() -> list[dict]:
    training = module_source(*TRAINING_OPERATOR)
    kserve = module_source(*KSERVE)
    kwok = module_source(*KWOK_MODULE)
    files = [
        training / "manifests/base/crds/kubeflow.org_tfjobs.yaml",
        training / "manifests/base/crds/kubeflow.org_pytorchjobs.yaml",
        kserve / "config/crd/full/serving.kserve.io_inferenceservices.yaml",
        kwok / "kustomize/crd/bases/kwok.x-k8s.io_logs.yaml",
        kwok / "kustomize/crd/bases/kwok.x-k8s.io_clusterlogs.yaml",
    ]
    docs = []
    for f in files:
        if not f.exists():
            raise RigError(f"expected CRD file {f} is missing from its module source")
        docs += [d for d in yaml_docs(f) if d.get("kind") == "CustomResourceDefinition"]
    return docs


# --- kwok stages -----------------------------------------------------------------------------------
_NOT_OUTCOME = lambda *vals: {"key": f'.metadata.labels["{OUTCOME_LABEL}"]', "operator": "NotIn",  # noqa: E731
                              "values": list(vals)}
_OUTCOME = lambda *vals: {"key": f'.metadata.labels["{OUTCOME_LABEL}"]', "operator": "In",  # noqa: E731
                          "values": list(vals)}


def _terminated_stage(name: str, outcome: str, *, reason: str, exit_code: int, pod_reason: str | None = None,
                      message: str = "") -> dict:
    pod_reason_yaml = f"reason: {pod_reason}\nmessage: {json.dumps(message)}\n" if pod_reason else ""
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {"matchExpressions": [
                {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                _OUTCOME(outcome)]},
            "delay": {"durationMilliseconds": 300, "jitterDurationMilliseconds": 200},
            "next": {"statusTemplate": (
                "{{ $now := Now }}\n"
                "conditions:\n"
                "- lastTransitionTime: {{ $now | Quote }}\n  status: \"False\"\n  type: Ready\n"
                "- lastTransitionTime: {{ $now | Quote }}\n  status: \"False\"\n  type: ContainersReady\n"
                "containerStatuses:\n"
                "{{ range .spec.containers }}\n"
                "- image: {{ .image | Quote }}\n  name: {{ .name | Quote }}\n  ready: false\n"
                "  restartCount: 0\n  started: false\n  state:\n    terminated:\n"
                f"      exitCode: {exit_code}\n      reason: {reason}\n"
                "      startedAt: {{ $now | Quote }}\n      finishedAt: {{ $now | Quote }}\n"
                "{{ end }}\n"
                f"{pod_reason_yaml}"
                "phase: Failed\n")},
        },
    }


def stage_documents() -> list[dict]:
    """kwok's own stages (from its module source), made quick, plus fairing's failure stages."""
    src = module_source(*KWOK_MODULE) / "kustomize" / "stage"
    docs = yaml_docs(src / "node" / "fast" / "node-initialize.yaml")
    docs += yaml_docs(src / "node" / "heartbeat-with-lease" / "node-heartbeat-with-lease.yaml")
    general = src / "pod" / "general"
    for f in ["pod-create.yaml", "pod-init-container-running.yaml", "pod-init-container-completed.yaml",
              "pod-ready.yaml", "pod-complete.yaml", "pod-delete.yaml"]:
        for d in yaml_docs(general / f):
            spec = d["spec"]
            # Seconds per step is realistic but slow for tests; keep the annotation overrides.
            if d["metadata"]["name"] == "pod-delete":
                # kwok spreads deletions up to the grace period (30 s); a kubelet is quicker.
                spec["delay"] = {"durationMilliseconds": 200}
            elif "delay" in spec:
                spec["delay"]["durationMilliseconds"] = 200
                spec["delay"]["jitterDurationMilliseconds"] = 300
            exprs = spec["selector"]["matchExpressions"]
            if d["metadata"]["name"] == "pod-ready":
                exprs.append(_NOT_OUTCOME("imagepull"))
            if d["metadata"]["name"] == "pod-complete":
                exprs.append(_NOT_OUTCOME("fail", "oom", "evicted", "hang"))
                for e in exprs:  # training-operator pods are owned by their TFJob/PyTorchJob
                    if e["key"] == ".metadata.ownerReferences.[].kind":
                        e["values"] = ["Job", "TFJob", "PyTorchJob"]
            docs.append(d)
    docs.append(_terminated_stage("fairing-pod-fail", "fail", reason="Error", exit_code=1))
    docs.append(_terminated_stage("fairing-pod-oom", "oom", reason="OOMKilled", exit_code=137))
    docs.append(_terminated_stage(
        "fairing-pod-evicted", "evicted", reason="ContainerStatusUnknown", exit_code=137, pod_reason="Evicted",
        message="The node was low on resource: memory. Threshold quantity: 100Mi, available: 52Mi."))
    docs.append({
        "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": "fairing-pod-imagepull"},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {"matchExpressions": [
                {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
                {"key": ".status.podIP", "operator": "Exists"},
                {"key": ".status.containerStatuses.[].state.waiting.reason", "operator": "NotIn",
                 "values": ["ImagePullBackOff"]},
                _OUTCOME("imagepull")]},
            "delay": {"durationMilliseconds": 300},
            "next": {"statusTemplate": (
                "containerStatuses:\n"
                "{{ range .spec.containers }}\n"
                "- image: {{ .image | Quote }}\n  name: {{ .name | Quote }}\n  ready: false\n"
                "  restartCount: 0\n  started: false\n  state:\n    waiting:\n"
                "      reason: ImagePullBackOff\n"
                "      message: {{ printf \"Back-off pulling image %q: ErrImagePull: failed to pull and unpack "
                "image: failed to resolve reference: pull access denied, authorization failed: 401 "
                "Unauthorized\" .image | Quote }}\n"
                "{{ end }}\n")},
        },
    })
    return docs


# --- PKI (python `cryptography`) -------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    dir: Path

    def __getattr__(self, name: str) -> Path:  # ca_crt -> dir/ca.crt
        stem, _, ext = name.rpartition("_")
        return self.dir / f"{stem.replace('_', '-')}.{ext}"


def _key_pem(k) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                           serialization.NoEncryption())


def _write_key(pem: bytes, path: Path) -> None:
    path.write_bytes(pem)
    path.chmod(0o600)


KUBERNETES_DNS = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                  "kubernetes.default.svc.cluster.local")


def issue_leaf(pki: Pki, name: str, cn: str, *, orgs=(), server: bool = False, ips=(), dns=()) -> None:
    """A key + certificate signed by the cluster CA: pki.dir/<name>.key and <name>.crt."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    ca = x509.load_pem_x509_certificate(pki.ca_crt.read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] + [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    b = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca.subject)
         .public_key(k.public_key()).serial_number(x509.random_serial_number()).not_valid_before(now)
         .not_valid_after(now + datetime.timedelta(days=3650))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage(
             [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server
             else [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)]
            + [x509.DNSName(n) for n in dns]), critical=False)
    _write_key(_key_pem(k), pki.dir / f"{name}.key")
    crt = pki.dir / f"{name}.crt"
    crt.with_suffix(".tmp").write_bytes(b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    os.replace(crt.with_suffix(".tmp"), crt)


def cert_ips(path: Path) -> set[str]:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return set()
    return {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def ensure_pki() -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    pki = Pki(kube_dir() / "pki")
    pki.dir.mkdir(mode=0o700, exist_ok=True)
    if (pki.dir / "complete").exists():
        return pki

    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fairing-test-kube-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    _write_key(_key_pem(ca_key), pki.ca_key)
    pki.ca_crt.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    issue_leaf(pki, "apiserver", "kube-apiserver", server=True, ips=("127.0.0.1", "10.96.0.1"), dns=KUBERNETES_DNS)
    issue_leaf(pki, "admin", "fairing-admin", orgs=("system:masters",))
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(_key_pem(sa), pki.sa_key)
    pki.sa_pub.write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    (pki.dir / "complete").write_text("ok\n")
    return pki


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, ca: Path, *, user: str, cert: Path | None = None,
                     key: Path | None = None, token: str | None = None, namespace: str | None = None) -> Path:
    u: dict = {}
    if cert:
        u = {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}
    if token:
        u = {"token": token}
    ctx = {"cluster": "fairing-test", "user": user}
    if namespace:
        ctx["namespace"] = namespace
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": user,
           "clusters": [{"name": "fairing-test", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
           "users": [{"name": user, "user": u}],
           "contexts": [{"name": user, "context": ctx}]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc))
    tmp.chmod(0o600)
    os.replace(tmp, path)
    return path


# --- services --------------------------------------------------------------------------------------
def _svc(name: str, argv: list[str]) -> Service:
    return Service(f"kube/{name}", argv)


def https_ok(url: str, pki: Pki | None = None, *, verify: bool = True) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki.ca_crt)) if (pki and verify) else ssl._create_unverified_context()
    if pki:
        ctx.load_cert_chain(str(pki.admin_crt), str(pki.admin_key))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def ensure_service(svc: Service, healthy, *, port: int | None, timeout: float) -> None:
    """Service.ensure, but a running process started with other arguments (the rig changed) is
    restarted, and an etcd data dir from an incompatible etcd is not reused."""
    argv_file = svc.pidfile.with_suffix(".argv")
    want = json.dumps(svc.argv)
    if svc.alive() and (not argv_file.exists() or argv_file.read_text() != want):
        svc.stop()
    if not svc.alive():  # a process we just stopped may still be letting go of its port
        deadline = time.monotonic() + 10
        while port is not None and port_open(port) and time.monotonic() < deadline:
            time.sleep(0.1)
    svc.ensure(healthy, port=port, timeout=timeout)
    argv_file.write_text(want)


def http_ok(url: str) -> bool:
    """A plain-HTTP health endpoint answers 200 (the rig's daemons' readiness checks)."""
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


def _etcd(pki: Pki) -> Service:
    data = kube_dir() / "etcd-data"
    return _svc("etcd", [
        str(cache_dir() / "etcd" / ETCD_VERSION / "etcd"), "--name=fairing", f"--data-dir={data}",
        f"--listen-client-urls=http://127.0.0.1:{ETCD_PORT}", f"--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}",
        f"--listen-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}",
        f"--initial-cluster=fairing=http://127.0.0.1:{ETCD_PEER_PORT}",
        "--auto-compaction-retention=1", "--quota-backend-bytes=4294967296",
        "--max-request-bytes=10485760", "--log-level=warn", "--logger=zap"])


def _apiserver_argv(pki: Pki, port: int, *, address: str = "127.0.0.1", cert: str = "apiserver",
                    reconciler: str = "lease") -> list[str]:
    return [
        str(bin_dir() / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
        f"--bind-address={address}", f"--advertise-address={address}", f"--secure-port={port}",
        f"--tls-cert-file={pki.dir / (cert + '.crt')}", f"--tls-private-key-file={pki.dir / (cert + '.key')}",
        f"--client-ca-file={pki.ca_crt}", f"--requestheader-client-ca-file={pki.ca_crt}",
        f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--authorization-mode=Node,RBAC",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Logs are proxied to kwok's kubelet endpoint on the fake node's InternalIP.
        f"--kubelet-client-certificate={pki.admin_crt}", f"--kubelet-client-key={pki.admin_key}",
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=true", "--enable-priority-and-fairness=false",
        f"--endpoint-reconciler-type={reconciler}", "--v=1",
    ]


def _apiserver(pki: Pki, port: int = APISERVER_PORT, name: str = "apiserver") -> Service:
    return _svc(name, _apiserver_argv(pki, port))


def pod_facing_apiserver(pki: Pki) -> Service:
    """A second API server (an HA pair on the same etcd) on this machine's own address, where pods
    can reach it: it advertises that address, so it is the `kubernetes` Service's endpoint. The
    shared one stays on loopback, unchanged. Its certificate names the address and the Service IP."""
    # The rig writes the `kubernetes` endpoint itself (tests/rig/node.py): no reconciler here.
    return _svc("apiserver-node", _apiserver_argv(pki, APISERVER_PORT, address=node_ip(), cert="apiserver-node",
                                                  reconciler="none"))


def ensure_pod_facing_cert(pki: Pki) -> None:
    ip = node_ip()
    if not {ip, "10.96.0.1"} <= cert_ips(pki.apiserver_node_crt):
        issue_leaf(pki, "apiserver-node", "kube-apiserver", server=True, ips=(ip, "10.96.0.1", "127.0.0.1"),
                   dns=KUBERNETES_DNS)


def _kcm(pki: Pki, kubeconfig: Path) -> Service:
    return _svc("controller-manager", [
        str(bin_dir() / "kube-controller-manager"), f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1", f"--secure-port={KCM_PORT}",
        f"--service-account-private-key-file={pki.sa_key}", f"--root-ca-file={pki.ca_crt}",
        f"--cluster-signing-cert-file={pki.ca_crt}", f"--cluster-signing-key-file={pki.ca_key}",
        "--use-service-account-credentials=true", "--controllers=*", "--leader-elect=false",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Pods of a vanished node are evicted after this long (kwok heartbeats keep nodes alive).
        "--node-monitor-grace-period=60s", "--v=1"])


def _scheduler(kubeconfig: Path) -> Service:
    return _svc("scheduler", [
        str(bin_dir() / "kube-scheduler"), f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1", f"--secure-port={SCHEDULER_PORT}", "--leader-elect=false", "--v=1"])


def _kwok(pki: Pki, kubeconfig: Path) -> Service:
    config = kube_dir() / "kwok.yaml"
    return _svc("kwok", [
        str(bin_dir() / "kwok"), f"--kubeconfig={kubeconfig}", f"--config={config}",
        "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={'='.join(NODE_ANNOTATION)}",
        "--node-ip=127.0.0.1", f"--node-port={KWOK_PORT}", f"--server-address=127.0.0.1:{KWOK_PORT}",
        f"--tls-cert-file={pki.apiserver_crt}", f"--tls-private-key-file={pki.apiserver_key}",
        "--node-lease-duration-seconds=40", "--enable-crds=Logs,ClusterLogs", "--cidr=10.0.0.1/16"])


def _operator(kubeconfig: Path) -> Service:
    metrics, probes, webhook = OPERATOR_PORTS
    return Service("kube/training-operator", [
        str(cache_dir() / "training-operator" / TRAINING_OPERATOR[1] / "training-operator"),
        f"--kubeconfig={kubeconfig}", "--enable-scheme=tfjob", "--enable-scheme=pytorchjob",
        f"--metrics-bind-address=127.0.0.1:{metrics}", f"--health-probe-bind-address=127.0.0.1:{probes}",
        f"--webhook-server-port={webhook}", "--zap-log-level=info"],
        env=dict(os.environ, MY_POD_NAMESPACE=OPERATOR_NAMESPACE))


def restart_operator() -> None:
    """Restart the training operator (it reads some configuration files once per process)."""
    admin = kube_dir() / "admin.kubeconfig"
    svc = _operator(admin)
    if svc.alive():
        svc.stop()
        ensure_service(svc, lambda: http_ok(f"http://127.0.0.1:{OPERATOR_PORTS[1]}/readyz"),
                       port=OPERATOR_PORTS[1], timeout=120)


OPERATOR_CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")  # hard-coded in the operator


def _sync_operator_certs(kube) -> bool:
    """In a cluster the kubelet mounts the operator's certificate Secret at its cert dir and the
    operator waits for the files; here the rig plays the kubelet's part."""
    secret = kube.get("v1", "Secret", "training-operator-webhook-cert", OPERATOR_NAMESPACE) or {}
    data = secret.get("data") or {}
    if not data.get("tls.crt"):
        return False
    OPERATOR_CERT_DIR.mkdir(parents=True, exist_ok=True)
    # The key before the certificate, each renamed into place whole: the operator watches the
    # files and must never read a half-written one.
    for key, value in sorted(data.items(), key=lambda kv: not kv[0].endswith(".key")):
        f = OPERATOR_CERT_DIR / key
        raw = base64.b64decode(value)
        if not f.exists() or f.read_bytes() != raw:
            tmp = f.with_name(f".{key}.tmp")
            tmp.write_bytes(raw)
            tmp.chmod(0o600)
            os.replace(tmp, f)
    return True


# --- bootstrap objects -----------------------------------------------------------------------------
def _node(name: str, gpus: int) -> dict:
    cap = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "500Gi",
           "nvidia.com/gpu": str(gpus), "amd.com/gpu": "0"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {NODE_ANNOTATION[0]: NODE_ANNOTATION[1],
                                                   "node.alpha.kubernetes.io/ttl": "0"},
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64", "type": "kwok",
                                **({"fairing.test/gpu": "nvidia"} if gpus else {})}},
        "spec": {"taints": [GPU_TAINT] if gpus else []},
        "status": {"capacity": cap, "allocatable": cap},
    }


def wait_established(kube, names: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for n in names:
        while True:
            crd = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", n) or {}
            conds = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
            if conds.get("Established") == "True":
                break
            if time.monotonic() > deadline:
                raise RigError(f"CRD {n} not Established after {timeout:.0f}s")
            time.sleep(0.2)


def install_crds(kube) -> None:
    docs = crd_manifests()
    for d in docs:
        kube.apply(d, field_manager="fairing-rig")
    wait_established(kube, [d["metadata"]["name"] for d in docs])


def setup_namespace(kube, namespace: str = NAMESPACE) -> str:
    """Namespace + ServiceAccount + minimal Role; returns a long-lived token for the SA."""
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}, field_manager="fairing-rig")
    meta = {"name": SA_NAME, "namespace": namespace}
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}, field_manager="fairing-rig")
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
                "rules": ROLE_RULES}, field_manager="fairing-rig")
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SA_NAME},
                "subjects": [{"kind": "ServiceAccount", "name": SA_NAME, "namespace": namespace}]},
               field_manager="fairing-rig")
    kube.apply({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": f"{SA_NAME}-token", "namespace": namespace,
                             "annotations": {"kubernetes.io/service-account.name": SA_NAME}}},
               field_manager="fairing-rig")
    deadline = time.monotonic() + 60
    while True:  # the token controller (kube-controller-manager) fills the Secret in
        s = kube.get("v1", "Secret", f"{SA_NAME}-token", namespace) or {}
        tok = (s.get("data") or {}).get("token")
        if tok:
            return base64.b64decode(tok).decode()
        if time.monotonic() > deadline:
            raise RigError(f"ServiceAccount token for {namespace}/{SA_NAME} never appeared "
                           "(is kube-controller-manager running?)")
        time.sleep(0.2)


def _wait_nodes_ready(kube, names, timeout=60) -> None:
    deadline = time.monotonic() + timeout
    for n in names:
        while True:
            node = kube.get("v1", "Node", n) or {}
            conds = {c["type"]: c["status"] for c in (node.get("status") or {}).get("conditions") or []}
            if conds.get("Ready") == "True":
                break
            if time.monotonic() > deadline:
                raise RigError(f"kwok node {n} not Ready after {timeout}s\n{log_tail(kube_dir() / 'kwok.log')}")
            time.sleep(0.2)


def _wait_default_sa(kube, namespace: str, timeout=60) -> None:
    deadline = time.monotonic() + timeout
    while kube.get("v1", "ServiceAccount", "default", namespace) is None:
        if time.monotonic() > deadline:
            raise RigError(f"no default ServiceAccount in {namespace} (serviceaccount controller not running?)")
        time.sleep(0.2)


# --- the handle ------------------------------------------------------------------------------------
@dataclass
class ControlPlane:
    kubeconfig: Path
    sa_kubeconfig: Path
    namespace: str
    server: str
    external: bool = False
    pki: Pki | None = None
    _apiserver: Service | None = field(default=None, repr=False)

    def kube(self, *, admin: bool = True, namespace: str | None = None):
        from fairing.kube.client import Kube

        return Kube(self.kubeconfig if admin else self.sa_kubeconfig, namespace=namespace or self.namespace)

    def stop(self) -> None:
        """Stop the shared API server (etcd, controllers and kwok keep running)."""
        if self.external:
            raise RigError("cannot stop the API server of an external cluster (FAIRING_TEST_KUBECONFIG)")
        self._apiserver.stop()

    def start(self) -> None:
        if self.external:
            return
        self._apiserver.ensure(lambda: https_ok(f"{self.server}/readyz", self.pki),
                               port=int(self.server.rsplit(':', 1)[1]), timeout=120)

    def healthy(self) -> bool:
        return https_ok(f"{self.server}/readyz", self.pki) if self.pki else True


def _external(kubeconfig: str) -> ControlPlane:
    from fairing.kube.client import Kube

    kube = Kube(kubeconfig)
    install_crds_if_possible = os.environ.get("FAIRING_TEST_INSTALL_CRDS", "1") != "0"
    if install_crds_if_possible:
        install_crds(kube)
    token = setup_namespace(kube)
    d = kube_dir() / "external"
    d.mkdir(exist_ok=True)
    ca = d / "ca.crt"
    cfg = kube.configuration
    if cfg.ssl_ca_cert:
        ca.write_bytes(Path(cfg.ssl_ca_cert).read_bytes())
    sa = write_kubeconfig(d / "sa.kubeconfig", kube.server, ca, user=f"{SA_NAME}-sa", token=token,
                          namespace=NAMESPACE)
    return ControlPlane(Path(kubeconfig), sa, NAMESPACE, kube.server, external=True)


_cached: ControlPlane | None = None


def control_plane() -> ControlPlane:
    """Start (or reuse) the whole control plane and return its handle."""
    global _cached
    ext = os.environ.get("FAIRING_TEST_KUBECONFIG")
    if ext:
        if _cached is None or not _cached.external:
            _cached = _external(ext)
        return _cached
    if _cached is not None and _cached.healthy() and all(s.alive() for s in _services(_cached.pki)):
        return _cached
    with kube_lock():
        _cached = _reuse() or _ensure()
        drop_dead_webhooks(_cached.kube())
    return _cached


def drop_dead_webhooks(kube) -> list[str]:
    """Delete the admission webhook configurations that point at a port of this host nothing
    listens on. The rig registers its host-run webhook servers (KServe's manager, Katib's
    controller, the placement webhook) by URL; etcd's data outlives those processes (a reboot, a
    CI machine that keeps FAIRING_CACHE), and a dead `failurePolicy: Fail` webhook refuses every
    object it covers, so an InferenceService dry run fails long before the KServe tests would
    start the manager again. Each rig re-registers its own when it finds them missing."""
    import urllib.parse

    dropped = []
    for plural in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        base = f"/apis/admissionregistration.k8s.io/v1/{plural}"
        for item in kube.request("GET", base).get("items", []):
            for hook in item.get("webhooks", []):
                url = urllib.parse.urlsplit(hook.get("clientConfig", {}).get("url") or "")
                if url.hostname == "127.0.0.1" and url.port and not port_open(url.port):
                    kube.request("DELETE", f"{base}/{item['metadata']['name']}")
                    dropped.append(item["metadata"]["name"])
                    break
    return dropped


def _fingerprint() -> str:
    """Changes when the rig's code or versions change (then bootstrap runs again)."""
    import hashlib

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"{K8S_VERSION} {KWOK_VERSION} {ETCD_VERSION} {TRAINING_OPERATOR} {KSERVE}".encode())
    return h.hexdigest()[:16]


def _reuse() -> ControlPlane | None:
    """The running control plane, if it was bootstrapped by this rig version and is healthy."""
    d = kube_dir()
    try:
        state = json.loads((d / "state.json").read_text())
    except (OSError, ValueError):
        return None
    pki = Pki(d / "pki")
    server = state.get("server", "")
    if state.get("fingerprint") != _fingerprint() or not (d / "sa.kubeconfig").exists():
        return None
    services = _services(pki)
    if not all(s.alive() for s in services) or not https_ok(f"{server}/readyz", pki):
        return None
    return ControlPlane(d / "admin.kubeconfig", d / "sa.kubeconfig", state["namespace"], server, pki=pki,
                        _apiserver=services[1])


def _services(pki: Pki) -> list[Service]:
    admin = kube_dir() / "admin.kubeconfig"
    return [_etcd(pki), _apiserver(pki), _kcm(pki, admin), _scheduler(admin), _kwok(pki, admin), _operator(admin)]


def _ensure() -> ControlPlane:
    from fairing.kube.client import Kube

    ensure_binaries()
    ensure_etcd()
    ensure_training_operator()
    pki = ensure_pki()
    d = kube_dir()
    server = f"https://127.0.0.1:{APISERVER_PORT}"
    admin = write_kubeconfig(d / "admin.kubeconfig", server, pki.ca_crt, user="fairing-admin",
                             cert=pki.admin_crt, key=pki.admin_key, namespace=NAMESPACE)
    etcd, api, kcm, sched, kwok, operator = _services(pki)
    version_file = d / "etcd-data.version"
    if (d / "etcd-data").exists() and (not version_file.exists() or version_file.read_text() != ETCD_VERSION):
        # Data written by another etcd generation (e.g. Debian's 3.4) can't be opened by this one;
        # it only ever holds throwaway test objects.
        for svc in (operator, kwok, sched, kcm, api, etcd):
            svc.stop()
        shutil.rmtree(d / "etcd-data")
    ensure_service(etcd, lambda: http_ok(f"http://127.0.0.1:{ETCD_PORT}/health"), port=ETCD_PORT, timeout=60)
    version_file.write_text(ETCD_VERSION)
    ensure_service(api, lambda: https_ok(f"{server}/readyz", pki), port=APISERVER_PORT, timeout=120)
    kube = Kube(admin, namespace=NAMESPACE)
    install_crds(kube)
    ensure_service(kcm, lambda: https_ok(f"https://127.0.0.1:{KCM_PORT}/healthz", verify=False),
                port=KCM_PORT, timeout=90)
    ensure_service(sched, lambda: https_ok(f"https://127.0.0.1:{SCHEDULER_PORT}/healthz", verify=False),
                port=SCHEDULER_PORT, timeout=90)
    config = d / "kwok.yaml"
    text = yaml.safe_dump_all(stage_documents(), sort_keys=False)
    if not config.exists() or config.read_text() != text:
        config.write_text(text)
        kwok.stop()  # new stages: restart kwok to load them
    ensure_service(kwok, lambda: http_ok(f"http://127.0.0.1:{KWOK_PORT}/healthz"), port=KWOK_PORT, timeout=60)
    for name, gpus in zip(NODES, (0, 4)):
        kube.apply(_node(name, gpus), field_manager="fairing-rig")
    # The operator keeps its webhook certificates in this Secret (it updates, never creates it).
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
               field_manager="fairing-rig")
    if kube.get("v1", "Secret", "training-operator-webhook-cert", OPERATOR_NAMESPACE) is None:
        kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": "training-operator-webhook-cert", "namespace": OPERATOR_NAMESPACE}})
    if not operator.alive():
        # Files left in /tmp by an earlier cluster (not under FAIRING_CACHE, so emptying the cache
        # keeps them) are another CA's pair: the operator would start on them and exit with "tls:
        # private key does not match public key" while the sync below replaces them one by one.
        # Started with none, it waits for this cluster's pair.
        shutil.rmtree(OPERATOR_CERT_DIR, ignore_errors=True)
    ensure_service(operator, lambda: _sync_operator_certs(kube) and http_ok(f"http://127.0.0.1:{OPERATOR_PORTS[1]}/readyz"),
                port=OPERATOR_PORTS[1], timeout=120)
    token = setup_namespace(kube)
    sa = write_kubeconfig(d / "sa.kubeconfig", server, pki.ca_crt, user=f"{SA_NAME}-sa", token=token,
                          namespace=NAMESPACE)
    _wait_nodes_ready(kube, NODES)
    _wait_default_sa(kube, NAMESPACE)
    (d / "state.json").write_text(json.dumps({"server": server, "namespace": NAMESPACE, "k8s": K8S_VERSION,
                                              "kwok": KWOK_VERSION, "fingerprint": _fingerprint()}, indent=1))
    return ControlPlane(admin, sa, NAMESPACE, server, pki=pki, _apiserver=api)


# --- a private API server for fault tests ----------------------------------------------------------
@dataclass
class PrivateApiServer:
    """A second kube-apiserver on the shared etcd (an HA pair, as in production). Stopping it
    breaks nobody else's tests."""
    kubeconfig: Path
    sa_kubeconfig: Path
    namespace: str
    server: str
    service: Service
    pki: Pki

    def stop(self) -> None:
        self.service.stop()

    def start(self) -> None:
        self.service.ensure(lambda: https_ok(f"{self.server}/readyz", self.pki), timeout=120)

    def healthy(self) -> bool:
        return https_ok(f"{self.server}/readyz", self.pki)


@contextlib.contextmanager
def private_apiserver(port: int | None = None) -> Iterator[PrivateApiServer]:
    """Yours alone: a free port each time, since other sessions may run the same tests at once."""
    cp = control_plane()
    port = port or free_port()
    if cp.external:
        raise RigError("a private API server needs the local control plane (unset FAIRING_TEST_KUBECONFIG)")
    pki = cp.pki
    server = f"https://127.0.0.1:{port}"
    # No endpoint reconciler: a private server must not put its own port in the `kubernetes` Service.
    svc = _svc(f"apiserver-{port}", _apiserver_argv(pki, port, reconciler="none"))
    d = kube_dir()
    admin = write_kubeconfig(d / f"admin-{port}.kubeconfig", server, pki.ca_crt, user="fairing-admin",
                             cert=pki.admin_crt, key=pki.admin_key, namespace=cp.namespace)
    token = yaml.safe_load(cp.sa_kubeconfig.read_text())["users"][0]["user"]["token"]
    sa = write_kubeconfig(d / f"sa-{port}.kubeconfig", server, pki.ca_crt, user=f"{SA_NAME}-sa", token=token,
                          namespace=cp.namespace)
    handle = PrivateApiServer(admin, sa, cp.namespace, server, svc, pki)
    with kube_lock():
        if port_open(port) and not svc.alive():
            raise RigError(f"port {port} is taken by a process the rig did not start")
        handle.start()
    try:
        yield handle
    finally:
        svc.stop()
        for f in (admin, sa, svc.pidfile.with_suffix(".argv")):
            f.unlink(missing_ok=True)
        svc.log.unlink(missing_ok=True)


# --- helpers for tests ----------------------------------------------------------------------------
def require_simulation(cp: ControlPlane, what: str = "kwok's simulated pod outcomes") -> None:
    """Skip (with the reason printed) a test that needs the local simulated control plane."""
    if cp.external:
        import pytest

        pytest.skip(f"needs {what}; FAIRING_TEST_KUBECONFIG points at a real cluster")


def fake_image(name: str = "train", registry: str = "127.0.0.1:5000"):
    """A BuiltImage pinned by a real-looking digest. kwok never pulls, so the deployer tests need
    no builder; the digest is the sha256 of the name so each test's image is distinct.
    On a real cluster (FAIRING_TEST_KUBECONFIG) set FAIRING_TEST_IMAGE to a pullable
    registry/repo@sha256:... whose default command exits 0."""
    import hashlib

    from fairing.context import BuiltImage

    real = os.environ.get("FAIRING_TEST_IMAGE") if os.environ.get("FAIRING_TEST_KUBECONFIG") else None
    if real:
        return BuiltImage(ref=real, digest=real.rsplit("@", 1)[-1])
    digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    return BuiltImage(ref=f"{registry}/fairing/{name}@{digest}", digest=digest, tag="latest")


def serve_logs(kube, namespace: str, pod: str, text: str, containers: list[str] | None = None) -> Path:
    """Make kwok serve `text` as the log of `pod` (the API server proxies pods/log to kwok's kubelet
    endpoint, which reads a CRI-format file named by a kwok Logs object)."""
    d = kube_dir() / "pod-logs"
    d.mkdir(exist_ok=True)
    path = d / f"{namespace}_{pod}.log"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    path.write_text("".join(f"{now} stdout F {line}\n" for line in text.splitlines()))
    log: dict = {"logsFile": str(path)}
    if containers:
        log["containers"] = containers
    from fairing.kube.client import Resource, register

    register(Resource("kwok.x-k8s.io/v1alpha1", "Logs", "logs"))  # a kwok CRD; the product never uses it
    kube.apply({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
                "metadata": {"name": pod, "namespace": namespace}, "spec": {"logs": [log]}},
               namespace, field_manager="fairing-rig")
    return path


def status() -> str:
    """One line per service, for scripts/kube-rig status."""
    pki = Pki(kube_dir() / "pki")
    lines = []
    for s in _services(pki):
        lines.append(f"{s.name:24} {'running pid ' + str(s.pid()) if s.alive() else 'stopped'}  log {s.log}")
    return "\n".join(lines)


def stop_all() -> None:
    pki = Pki(kube_dir() / "pki")
    with kube_lock():
        for s in reversed(_services(pki)):
            s.stop()


__all__ = ["control_plane", "private_apiserver", "fake_image", "serve_logs", "require_simulation", "ControlPlane", "PrivateApiServer", "OUTCOME_LABEL",
           "NAMESPACE", "NODES", "GPU_TAINT", "stop_all", "status"]

if __name__ == "__main__":  # python -m tests.rig.kube [start|build|status|stop]
    import sys

    cmd = sys.argv[1] if len(sys.argv) > 1 else "start"
    if cmd == "build":  # everything slow, ahead of pytest (whose per-test timeout covers fixtures)
        from .node import ensure_builds as node_builds

        with kube_lock():
            print(ensure_binaries(), ensure_etcd(), ensure_training_operator(), sep="\n")
            crd_manifests()
            stage_documents()
            node_builds()  # kubelet/kube-proxy come with the binaries; CoreDNS and pause here
    elif cmd == "stop":
        from .node import stop_node

        stop_node()
        stop_all()
    elif cmd == "status":
        from .node import status as node_status

        print(status())
        print(node_status())
    else:
        cp = control_plane()
        print(f"server {cp.server}\nkubeconfig {cp.kubeconfig}\nsa_kubeconfig {cp.sa_kubeconfig}\n"
              f"namespace {cp.namespace}")
