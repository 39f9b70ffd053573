"""The real node's daemons restarted under running workloads, as an operator (or a crash) would:
the workload carries on and fairing reports the true outcome."""
from __future__ import annotations

import textwrap
import time
import uuid

import fairing
from fairing.serving import PredictionEndpoint
from fairing.kube.client import Kube


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def wait_running(on_node, selector: str, timeout: float = 240) -> dict:
    kube = Kube(on_node.admin_kubeconfig, namespace=on_node.namespace)
    deadline = time.monotonic() + timeout
    while True:
        pods = kube.list("v1", "Pod", on_node.namespace, label_selector=selector)["items"]
        if pods and pods[0]["status"].get("phase") == "Running":
            return pods[0]
        assert time.monotonic() < deadline, f"no running pod for {selector}: {pods}"
        time.sleep(0.3)


def test_kubelet_restart_while_a_job_runs(on_node, tmp_path):
    from tests.rig.node import restart

    if on_node.node.external:
        import pytest

        pytest.skip("restarts the rig's own kubelet; a user's cluster is not ours to restart")
    (tmp_path / "long.py").write_text(textwrap.dedent("""
        import time
        for i in range(20):
            print("step", i, flush=True)
            time.sleep(1)
        print("finished all steps", flush=True)
    """))
    name = uid("node-kubelet")
    job = fairing.TrainJob(tmp_path / "long.py", registry=on_node.registry, base_image=on_node.base,
                           kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace, name=name,
                           deployer="job", progress=False, deployer_options={"mutators": on_node.mutators()})
    h = job.submit()
    try:
        pod = wait_running(on_node, f"job-name={name}")
        restart("kubelet")
        assert h.wait(timeout=300) == "Succeeded"
        text = h.log_text()
        assert "finished all steps" in text
        # The same container ran through the restart: not killed and started again.
        kube = Kube(on_node.admin_kubeconfig, namespace=on_node.namespace)
        after = kube.get("v1", "Pod", pod["metadata"]["name"], on_node.namespace)
        assert after["status"]["containerStatuses"][0]["restartCount"] == 0
        assert text.count("step 0\n") == 1
    finally:
        h.delete()


class Adder:
    def predict(self, rows):
        return [sum(r) for r in rows]


def test_containerd_restart_while_serving(on_node):
    from tests.rig.node import restart

    if on_node.node.external:
        import pytest

        pytest.skip("restarts the rig's own containerd; a user's cluster is not ours to restart")
    name = uid("node-ctrd")
    ep = PredictionEndpoint(Adder, name=name, base_image=on_node.base, registry=on_node.registry,
                            deployer="serving", kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace,
                            mutators=on_node.mutators(), timeout=300, out=lambda s: None)
    ep.create()
    try:
        assert ep.predict([[1, 2, 3]]) == [6]
        restart("containerd")
        deadline = time.monotonic() + 120
        while True:
            try:
                if ep.status() == "Ready" and ep.predict([[4, 5]]) == [9]:
                    break
            except fairing.FairingError:
                pass
            assert time.monotonic() < deadline, "the endpoint did not answer again after containerd restarted"
            time.sleep(1)
    finally:
        ep.delete()
