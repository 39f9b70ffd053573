"""Kubeflow Trainer v2, JobSet and Kueue for the test control plane (tests/rig/kube.py): real
controllers built once from the Go module proxy (cached under ~/.cache/fairing like the training
operator), their CRDs and the `torch-distributed` ClusterTrainingRuntime read from the same module
sources, plus a small Kueue setup (one ResourceFlavor, a ClusterQueue with a 1-CPU quota, a
LocalQueue in the test namespace).

    ensure_built()              # the three binaries (slow the first time; `./scripts/kube-rig build`)
    tr = trainer_rig(cp)        # idempotent: CRDs, controllers, runtime, queues; returns a handle

Webhooks: Trainer's, JobSet's and Kueue's admission webhooks for TrainJobs, the runtimes and
JobSets are registered with the API server, served on 127.0.0.1 with the rig's certificates (see
WEBHOOKS). Kueue's Job/Pod webhooks and JobSet's pod webhooks would sit in front of every Job and
pod on the shared API server, so they stay off; fairing creates queued workloads suspended itself,
as a client must without Kueue's webhook.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .gobuild import go_build as _build
from .state import RigError, cache_dir

TRAINER = ("github.com/kubeflow/trainer/v2", "v2.3.0")
JOBSET = ("sigs.k8s.io/jobset", "v0.12.0")
KUEUE = ("sigs.k8s.io/kueue", "v0.17.0")


def ensure_trainer_binary() -> Path:
    module, version = TRAINER
    return _build("trainer-controller-manager", module, version, f"{module}/cmd/trainer-controller-manager",
                  install=True)


def ensure_jobset_binary() -> Path:
    module, version = JOBSET
    # `go install sigs.k8s.io/jobset@v0.12.0` is refused (the proxy denies the version list).
    return _build("jobset", module, version, module, install=False)


def ensure_kueue_binary() -> Path:
    module, version = KUEUE
    return _build("kueue", module, version, f"{module}/cmd/kueue", install=False)


def ensure_built() -> list[Path]:
    """Sequentially: the machine has few cores, and parallel Go builds only thrash."""
    return [ensure_trainer_binary(), ensure_jobset_binary(), ensure_kueue_binary()]


# --- CRDs and objects ------------------------------------------------------------------------------
def _yaml_docs(path: Path) -> list[dict]:
    import yaml

    if not path.exists():
        raise RigError(f"expected file {path} is missing from its module source")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def crd_manifests() -> list[dict]:
    from .kube import module_source

    trainer = module_source(*TRAINER) / "manifests/base/crds"
    jobset = module_source(*JOBSET) / "config/components/crd/bases"
    kueue = module_source(*KUEUE) / "config/components/crd/bases"
    files = [trainer / f"trainer.kubeflow.org_{p}.yaml" for p in ("trainjobs", "trainingruntimes",
                                                                    "clustertrainingruntimes")]
    files.append(jobset / "jobset.x-k8s.io_jobsets.yaml")
    # The bases carry no conversion webhook: every served version is read as stored (v1beta2).
    files += sorted(kueue.glob("kueue.x-k8s.io_*.yaml"))  # all of them: Kueue indexes MultiKueue kinds at start
    return [d for f in files for d in _yaml_docs(f) if d.get("kind") == "CustomResourceDefinition"]


def runtime_manifests() -> list[dict]:
    """The upstream `torch-distributed` ClusterTrainingRuntime, as shipped."""
    from .kube import module_source

    return _yaml_docs(module_source(*TRAINER) / "manifests/base/runtimes/torch_distributed.yaml")


FLAVOR, CLUSTER_QUEUE, LOCAL_QUEUE = "fairing-flavor", "fairing-cq", "fairing-queue"
QUEUE_CPU = "1"  # one 1-CPU workload at a time: the second one waits for quota


def queue_manifests(namespace: str) -> list[dict]:
    api = "kueue.x-k8s.io/v1beta2"
    return [
        {"apiVersion": api, "kind": "ResourceFlavor", "metadata": {"name": FLAVOR}},
        {"apiVersion": api, "kind": "ClusterQueue", "metadata": {"name": CLUSTER_QUEUE},
         "spec": {"namespaceSelector": {}, "resourceGroups": [{
             "coveredResources": ["cpu", "memory"],
             "flavors": [{"name": FLAVOR, "resources": [{"name": "cpu", "nominalQuota": QUEUE_CPU},
                                                        {"name": "memory", "nominalQuota": "64Gi"}]}]}]}},
        {"apiVersion": api, "kind": "LocalQueue", "metadata": {"name": LOCAL_QUEUE, "namespace": namespace},
         "spec": {"clusterQueue": CLUSTER_QUEUE}},
    ]


# What the test ServiceAccount may do on top of tests/rig/kube.py's Role (a fairing user running
# TrainJobs on a Kueue-managed cluster): create TrainJobs, read runtimes, queues and workloads.
EXTRA_ROLE_RULES = [
    {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"],
     "verbs": ["create", "get", "list", "watch", "delete", "patch", "update"]},
    {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainingruntimes"], "verbs": ["get", "list"]},
    {"apiGroups": ["jobset.x-k8s.io"], "resources": ["jobsets"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["localqueues", "workloads"], "verbs": ["get", "list", "watch"]},
]
EXTRA_CLUSTER_RULES = [
    {"apiGroups": ["trainer.kubeflow.org"], "resources": ["clustertrainingruntimes"], "verbs": ["get", "list"]},
]


def grant_sa(kube, namespace: str) -> None:
    """What the namespace's least-privilege ServiceAccount needs for TrainJobs and queues."""
    from .kube import SA_NAME

    name = f"{SA_NAME}-trainer"
    subjects = [{"kind": "ServiceAccount", "name": SA_NAME, "namespace": namespace}]
    rbac = "rbac.authorization.k8s.io/v1"
    kube.apply({"apiVersion": rbac, "kind": "Role", "metadata": {"name": name, "namespace": namespace},
                "rules": EXTRA_ROLE_RULES}, field_manager="fairing-rig")
    kube.apply({"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": name, "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": subjects}, field_manager="fairing-rig")
    kube.apply({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": name}, "rules": EXTRA_CLUSTER_RULES},
               field_manager="fairing-rig")
    kube.apply({"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": f"{name}-{namespace}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": subjects}, field_manager="fairing-rig")


# --- services --------------------------------------------------------------------------------------
# metrics, health probes, webhook server of each controller (the rig's ports are 10xxx/18080-19443).
TRAINER_PORTS = (18082, 18083, 19444)
JOBSET_PORTS = (18084, 18085, 19445)
KUEUE_PORTS = (18086, 18087, 19446)


def _state_dir() -> Path:
    from .kube import kube_dir

    d = kube_dir() / "trainer"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _serving_certs(pki, certdir: Path) -> Path:
    """The webhook servers insist on a certificate even though no webhook configuration points
    at them: give them the rig's (apiserver.crt is issued for 127.0.0.1 by the rig CA)."""
    certdir.mkdir(parents=True, exist_ok=True)
    for src, dst in ((pki.apiserver_crt, "tls.crt"), (pki.apiserver_key, "tls.key")):
        raw = Path(src).read_bytes()
        f = certdir / dst
        if not f.exists() or f.read_bytes() != raw:
            f.write_bytes(raw)
            f.chmod(0o600)
    return certdir


def _write_config(name: str, doc: dict) -> Path:
    import yaml

    f = _state_dir() / f"{name}.yaml"
    text = yaml.safe_dump(doc, sort_keys=False)
    if not f.exists() or f.read_text() != text:
        f.write_text(text)
    return f


def _trainer_svc(kubeconfig: Path) -> "Service":
    from .state import Service

    metrics, probes, webhook = TRAINER_PORTS
    cfg = _write_config("trainer-config", {
        "apiVersion": "config.trainer.kubeflow.org/v1alpha1", "kind": "Configuration",
        "webhook": {"port": webhook, "host": "127.0.0.1"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics}", "secureServing": False},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{probes}"},
        "certManagement": {"enable": False}})
    # Its webhook server reads $TMPDIR/k8s-webhook-server/serving-certs (not configurable).
    env = dict(os.environ, TMPDIR=str(_state_dir() / "trainer-tmp"))
    return Service("kube/trainer-controller", [
        str(cache_dir() / "trainer-controller-manager" / TRAINER[1] / "trainer-controller-manager"),
        f"--kubeconfig={kubeconfig}", f"--config={cfg}", "--zap-log-level=info"], env=env)


def _jobset_svc(kubeconfig: Path) -> "Service":
    from .state import Service

    metrics, probes, webhook = JOBSET_PORTS
    cfg = _write_config("jobset-config", {
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1", "kind": "Configuration",
        "webhook": {"port": webhook, "host": "127.0.0.1", "certDir": str(_state_dir() / "jobset-certs")},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics}"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{probes}"},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False}})
    return Service("kube/jobset-controller", [
        str(cache_dir() / "jobset" / JOBSET[1] / "jobset"), f"--kubeconfig={kubeconfig}", f"--config={cfg}",
        "--zap-log-level=info"])


KUEUE_METRICS_CERTS = Path("/etc/kueue/metrics/certs")  # hard-coded in Kueue without cert management


def _kueue_svc(kubeconfig: Path) -> "Service":
    from .state import Service

    metrics, probes, webhook = KUEUE_PORTS
    cfg = _write_config("kueue-config", {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "health": {"healthProbeBindAddress": f"127.0.0.1:{probes}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics}"},
        "webhook": {"port": webhook, "host": "127.0.0.1", "certDir": str(_state_dir() / "kueue-certs")},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "integrations": {"frameworks": ["batch/job", "kubeflow.org/pytorchjob", "kubeflow.org/tfjob",
                                        "trainer.kubeflow.org/trainjob"]}})
    return Service("kube/kueue-controller", [
        str(cache_dir() / "kueue" / KUEUE[1] / "kueue"), f"--kubeconfig={kubeconfig}", f"--config={cfg}",
        # The visibility API is an aggregated API server of its own; nothing here uses it.
        "--feature-gates=VisibilityOnDemand=false", "--zap-log-level=2"],
        env=dict(os.environ, POD_NAMESPACE="kueue-system"))


# The admission webhooks the API server calls, by URL on 127.0.0.1 with the rig's CA: Trainer's
# (TrainJob defaulting and validation, runtime validation), JobSet's (JobSet defaulting: Indexed
# completion, restart policy, DNS hostnames; validation) and Kueue's for TrainJobs (its defaulting
# adds the runtime patch Kueue later fills with the admitted flavor; without it Kueue never
# releases a TrainJob). Only for these kinds: JobSet's pod webhooks and Kueue's Job/Pod webhooks
# would sit in front of every pod and Job on the shared API server, so they stay unregistered
# (fairing creates queued workloads suspended itself).
WEBHOOKS = [
    # (owner, mutating, port, path, group, version, resources, operations)
    ("trainer", True, TRAINER_PORTS[2], "/mutate-trainer-kubeflow-org-v1alpha1-trainjob", "trainer.kubeflow.org",
     "v1alpha1", ["trainjobs"], ["CREATE", "UPDATE"]),
    ("trainer", False, TRAINER_PORTS[2], "/validate-trainer-kubeflow-org-v1alpha1-trainjob", "trainer.kubeflow.org",
     "v1alpha1", ["trainjobs"], ["CREATE", "UPDATE"]),
    ("trainer", False, TRAINER_PORTS[2], "/validate-trainer-kubeflow-org-v1alpha1-clustertrainingruntime",
     "trainer.kubeflow.org", "v1alpha1", ["clustertrainingruntimes"], ["CREATE", "UPDATE"]),
    ("trainer", False, TRAINER_PORTS[2], "/validate-trainer-kubeflow-org-v1alpha1-trainingruntime",
     "trainer.kubeflow.org", "v1alpha1", ["trainingruntimes"], ["CREATE", "UPDATE"]),
    ("jobset", True, JOBSET_PORTS[2], "/mutate-jobset-x-k8s-io-v1alpha2-jobset", "jobset.x-k8s.io", "v1alpha2",
     ["jobsets"], ["CREATE"]),
    ("jobset", False, JOBSET_PORTS[2], "/validate-jobset-x-k8s-io-v1alpha2-jobset", "jobset.x-k8s.io", "v1alpha2",
     ["jobsets"], ["CREATE", "UPDATE"]),
    ("kueue", True, KUEUE_PORTS[2], "/mutate-trainer-kubeflow-org-v1alpha1-trainjob", "trainer.kubeflow.org",
     "v1alpha1", ["trainjobs"], ["CREATE"]),
    ("kueue", False, KUEUE_PORTS[2], "/validate-trainer-kubeflow-org-v1alpha1-trainjob", "trainer.kubeflow.org",
     "v1alpha1", ["trainjobs"], ["CREATE", "UPDATE"]),
]


def webhook_configurations(ca_crt: Path) -> list[dict]:
    import base64

    ca = base64.b64encode(Path(ca_crt).read_bytes()).decode()
    out = []
    for mutating in (True, False):
        hooks = []
        for owner, m, port, path, group, version, resources, ops in WEBHOOKS:
            if m != mutating:
                continue
            hooks.append({"name": f"{resources[0]}.{owner}.fairing-rig.local",
                          "clientConfig": {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca},
                          "rules": [{"apiGroups": [group], "apiVersions": [version], "operations": ops,
                                     "resources": resources}],
                          "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
                          "timeoutSeconds": 10})
        kind = "MutatingWebhookConfiguration" if mutating else "ValidatingWebhookConfiguration"
        out.append({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                    "metadata": {"name": "fairing-rig-trainer-jobset-kueue"}, "webhooks": hooks})
    return out


def services(kubeconfig: Path) -> list:
    return [_jobset_svc(kubeconfig), _trainer_svc(kubeconfig), _kueue_svc(kubeconfig)]



class TrainerRig:
    """What the Trainer/Kueue tests need to know."""

    runtime = "torch-distributed"
    local_queue = LOCAL_QUEUE
    cluster_queue = CLUSTER_QUEUE
    queue_cpu = QUEUE_CPU

    def __init__(self, cp):
        self.cp = cp
        self.namespace = cp.namespace


_ready: TrainerRig | None = None


def register_kinds() -> None:
    """Kinds only the rig creates, so the product's resource table does not list them."""
    from fairing.kube.client import Resource, register

    register(Resource("kueue.x-k8s.io/v1beta2", "ClusterQueue", "clusterqueues", False))
    register(Resource("kueue.x-k8s.io/v1beta2", "ResourceFlavor", "resourceflavors", False))
    register(Resource("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration",
                      "mutatingwebhookconfigurations", False))


def trainer_rig(cp) -> TrainerRig:
    """Install CRDs, start the three controllers (reused when already running with the same
    arguments), apply the runtime and the queues. Idempotent; takes the control plane's lock."""
    global _ready
    if _ready is not None and _ready.cp is cp and all(s.alive() for s in services(cp.kubeconfig)):
        return _ready
    from . import kube as k

    if cp.external:
        raise RigError("the Trainer/Kueue rig runs on the local control plane (unset FAIRING_TEST_KUBECONFIG)")
    ensure_built()
    register_kinds()
    marker = _state_dir() / "bootstrapped"
    if _bootstrapped(cp, marker):
        _ready = TrainerRig(cp)
        return _ready
    with k.kube_lock():  # noqa: SLF001 - the rig's own lock, shared by its modules
        kube = cp.kube()
        docs = crd_manifests()
        for d in docs:
            kube.apply(d, field_manager="fairing-rig")
        k.wait_established(kube, [d["metadata"]["name"] for d in docs])
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kueue-system"}},
                   field_manager="fairing-rig")
        _serving_certs(cp.pki, _state_dir() / "jobset-certs")
        _serving_certs(cp.pki, _state_dir() / "kueue-certs")
        _serving_certs(cp.pki, _state_dir() / "trainer-tmp" / "k8s-webhook-server" / "serving-certs")
        _serving_certs(cp.pki, KUEUE_METRICS_CERTS)
        jobset, trainer, kueue = services(cp.kubeconfig)
        for svc, ports in ((jobset, JOBSET_PORTS), (trainer, TRAINER_PORTS), (kueue, KUEUE_PORTS)):
            k.ensure_service(svc, lambda p=ports[1]: k.http_ok(f"http://127.0.0.1:{p}/readyz"),  # noqa: SLF001
                          port=ports[1], timeout=120)
        for d in webhook_configurations(cp.pki.ca_crt):
            kube.apply(d, field_manager="fairing-rig")
        for d in runtime_manifests():
            kube.apply(d, field_manager="fairing-rig")
        for d in queue_manifests(cp.namespace):
            kube.apply(d, cp.namespace if d["kind"] == "LocalQueue" else None, field_manager="fairing-rig")
        grant_sa(kube, cp.namespace)
        marker.write_text(_fingerprint(cp))
    _ready = TrainerRig(cp)
    return _ready


def _fingerprint(cp) -> str:
    import hashlib

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"{TRAINER} {JOBSET} {KUEUE} {cp.server} {cp.namespace}".encode())
    return h.hexdigest()[:16]


def _bootstrapped(cp, marker: Path) -> bool:
    """Everything is in place from an earlier session: same rig code, the controllers alive, and
    the last object bootstrap applies still there (the API server's etcd may have been wiped)."""
    try:
        if marker.read_text() != _fingerprint(cp):
            return False
    except OSError:
        return False
    if not all(s.alive() for s in services(cp.kubeconfig)):
        return False
    try:
        return cp.kube().get("kueue.x-k8s.io/v1beta2", "LocalQueue", LOCAL_QUEUE, cp.namespace) is not None
    except Exception:  # noqa: BLE001 - CRD gone, API server restarting: bootstrap again
        return False


def status() -> str:
    from .kube import kube_dir

    lines = []
    for s in services(kube_dir() / "admin.kubeconfig"):
        lines.append(f"{s.name:24} {'running pid ' + str(s.pid()) if s.alive() else 'stopped'}  log {s.log}")
    return "\n".join(lines)


def stop_all() -> None:
    from .kube import kube_dir

    for s in reversed(services(kube_dir() / "admin.kubeconfig")):
        s.stop()


if __name__ == "__main__":  # python -m tests.rig.trainer [build|start|status|stop]
    import sys

    cmd = sys.argv[1] if len(sys.argv) > 1 else "start"
    if cmd == "build":
        print(*ensure_built(), sep="\n")
        crd_manifests()
        runtime_manifests()
    elif cmd == "status":
        print(status())
    elif cmd == "stop":
        stop_all()
    else:
        from .kube import control_plane

        trainer_rig(control_plane())
        print(status())
