"""fairing and the Kubeflow SDK in one environment, against one cluster: a TrainJob that fairing
built and submitted is one the SDK's TrainerClient lists, reports Complete and reads the logs of.

The main test environment runs the newest kubernetes client, which the SDK's pin (<36) excludes;
tests/test_install.py runs this file in a clean venv holding fairing-ml, kfp 2.17.3, kubeflow 0.5.0
and mlflow, where it cannot be skipped."""
from __future__ import annotations

import uuid

import pytest

pytest.importorskip("kubeflow.trainer", reason="the Kubeflow SDK is not installed here; tests/test_install.py "
                                                "runs this file in a venv beside kfp 2.17.3 and kubeflow 0.5.0")

import fairing  # noqa: E402
from fairing.kube.client import Kube  # noqa: E402


def greet(n):
    print(f"hello from a fairing TrainJob, n={n}", flush=True)
    return n * 2


def test_trainer_client_lists_and_reads_a_trainjob_fairing_submitted(trainer, on_node):
    if on_node.node.external:
        pytest.skip("the rig's Trainer controllers run against the rig's own control plane")
    from kubeflow.common.types import KubernetesBackendConfig
    from kubeflow.trainer import TrainerClient

    from tests.rig.trainer import grant_sa

    grant_sa(Kube(on_node.admin_kubeconfig, namespace=on_node.namespace), on_node.namespace)
    name = f"sdk-{uuid.uuid4().hex[:6]}"
    job = fairing.TrainJob(greet, args=(21,), deployer="trainjob", nodes=1, name=name,
                           registry=on_node.registry, base_image=on_node.base, kubeconfig=str(on_node.kubeconfig),
                           namespace=on_node.namespace, progress=False,
                           deployer_options={"mutators": on_node.mutators()})
    h = job.submit()
    try:
        assert h.wait(timeout=600) == "Succeeded"
        assert h.result() == 42
        # The SDK as a platform user runs it (it reads the ClusterTrainingRuntime the job names).
        client = TrainerClient(KubernetesBackendConfig(namespace=on_node.namespace,
                                                       config_file=str(on_node.admin_kubeconfig)))
        jobs = {j.name: j for j in client.list_jobs()}
        assert name in jobs, sorted(jobs)
        assert jobs[name].status == "Complete", jobs[name]
        logs = "".join(client.get_job_logs(name))
        assert "hello from a fairing TrainJob, n=21" in logs, logs
    finally:
        h.delete()
