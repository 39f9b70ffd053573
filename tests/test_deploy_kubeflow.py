"""TFJob and PyTorchJob on the real API server with the real Kubeflow training operator (built from
its module source by the rig) and its CRDs: the operator creates the replica pods, kwok runs them,
the operator marks the job Succeeded or Failed."""
import pytest

from fairing.deployers import pod
from fairing.deployers.k8s.kubeflow import PyTorchJobDeployer
from fairing.deployers.k8s.kubeflow import TFJobDeployer
from fairing.errors import DeployError
from tests.rig.kube import GPU_TAINT, NODES, OUTCOME_LABEL, fake_image, require_simulation, serve_logs

REPLICA_TYPE = "training.kubeflow.org/replica-type"


@pytest.fixture
def simulated(kube):
    """Needs kwok (outcome labels, served logs, node names) or a killable API server."""
    require_simulation(kube)


def _limits(container):
    return (container.get("resources") or {}).get("limits") or {}


def test_tfjob_chief_ps_workers(simulated, kube, admin, cleanup):
    image = fake_image("tfjob")
    d = TFJobDeployer(kubeconfig=kube.sa_kubeconfig, chief=1, ps=1, workers=2, gpus=1,
                      mutators=[pod.toleration(GPU_TAINT["key"]), pod.memory("1Gi"), pod.gpu(1)])
    h = d.deploy(image)
    cleanup(h)
    assert h.wait(timeout=120) == "Succeeded"

    tf = admin.get("kubeflow.org/v1", "TFJob", h.name)
    assert tf["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "fairing"
    specs = tf["spec"]["tfReplicaSpecs"]
    assert {k: v["replicas"] for k, v in specs.items()} == {"Chief": 1, "PS": 1, "Worker": 2}
    for rtype, spec in specs.items():
        (c,) = spec["template"]["spec"]["containers"]
        assert c["name"] == "tensorflow" and c["image"] == image.ref
        assert _limits(c).get("nvidia.com/gpu") == (None if rtype == "PS" else "1"), rtype
        assert _limits(c)["memory"] == "1Gi"

    pods = h.pods()
    by_type = sorted((p["metadata"]["labels"][REPLICA_TYPE], p["status"]["phase"], p["spec"]["nodeName"]) for p in pods)
    assert [t for t, _, _ in by_type] == ["chief", "ps", "worker", "worker"]
    # The TFJob succeeds when its chief does; the others may still be finishing (kept: cleanPodPolicy None).
    assert by_type[0][1] == "Succeeded" and {ph for _, ph, _ in by_type} <= {"Running", "Succeeded"}
    # Only replicas with a GPU limit land on the (tainted) GPU node.
    assert {n for t, _, n in by_type if t != "ps"} == {NODES[1]}

    # Logs from every replica, prefixed with its role and index.
    for p in pods:
        labels = p["metadata"]["labels"]
        serve_logs(admin, kube.namespace, p["metadata"]["name"],
                   f"{labels[REPLICA_TYPE]} {labels['training.kubeflow.org/replica-index']} done")
    assert sorted(h.logs()) == ["[chief-0] chief 0 done", "[ps-0] ps 0 done",
                                "[worker-0] worker 0 done", "[worker-1] worker 1 done"]

    h.delete()
    assert admin.get("kubeflow.org/v1", "TFJob", h.name) is None
    assert admin.list("v1", "Pod", kube.namespace, label_selector=h.pod_selector)["items"] == []
    assert admin.list("v1", "Service", kube.namespace, label_selector=f"training.kubeflow.org/job-name={h.name}")["items"] == []


def test_pytorchjob_master_workers(kube, admin, cleanup):
    image = fake_image("pytorchjob")
    d = PyTorchJobDeployer(kubeconfig=kube.sa_kubeconfig, master=1, workers=2)
    h = d.deploy(image)
    cleanup(h)
    assert h.wait(timeout=120) == "Succeeded"
    pt = admin.get("kubeflow.org/v1", "PyTorchJob", h.name)
    specs = pt["spec"]["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in specs.items()} == {"Master": 1, "Worker": 2}
    for spec in specs.values():
        assert [c["name"] for c in spec["template"]["spec"]["containers"]] == ["pytorch"]
        assert spec["template"]["spec"]["containers"][0]["image"] == image.ref
    pods = {p["metadata"]["labels"][REPLICA_TYPE]: p for p in h.pods()}
    assert pods["master"]["status"]["phase"] == "Succeeded"
    # The operator injects the rendezvous environment into the container we named "pytorch".
    env = {e["name"] for e in pods["master"]["spec"]["containers"][0]["env"]}
    assert {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"} <= env
    h.delete()
    assert admin.get("kubeflow.org/v1", "PyTorchJob", h.name) is None
    assert admin.list("v1", "Pod", kube.namespace, label_selector=h.pod_selector)["items"] == []


def test_tfjob_failure_reason(simulated, kube, cleanup):
    d = TFJobDeployer(kubeconfig=kube.sa_kubeconfig, workers=1, labels={OUTCOME_LABEL: "oom"},
                      mutators=[pod.memory("128Mi")])
    h = d.deploy(fake_image("tfjob-oom"))
    cleanup(h)
    with pytest.raises(DeployError) as e:
        h.wait(timeout=120)
    assert "out of memory (limit 128Mi)" in e.value.message and "'tensorflow'" in e.value.message
    assert h.status() == "Failed"


def test_tfjob_image_pull_failure(simulated, kube, cleanup):
    image = fake_image("tfjob-pull")
    h = TFJobDeployer(kubeconfig=kube.sa_kubeconfig, workers=2, labels={OUTCOME_LABEL: "imagepull"}).deploy(image)
    cleanup(h)
    with pytest.raises(DeployError, match=f"cannot pull image {image.ref}"):
        h.wait(timeout=120)
