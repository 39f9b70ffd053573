"""kubeflow.org/v1 PyTorchJob (Kubeflow training operator): Master / Worker replicas.

    PyTorchJobDeployer(namespace="team", master=1, workers=3, gpus=1).deploy(image)

The container is named "pytorch", as the operator requires; every replica gets `gpus`."""
from __future__ import annotations

from .kubeflow import KUBEFLOW_OPTIONS, KubeflowDeployer


class PyTorchJobDeployer(KubeflowDeployer):
    kind = "PyTorchJob"
    deployer_name = "pytorchjob"
    container_name = "pytorch"
    replica_field = "pytorchReplicaSpecs"
    replica_types = (("Master", "master", 1, True), ("Worker", "workers", 0, True))
    result_replicas = ("master",)
    kind_options = KUBEFLOW_OPTIONS + ("master", "workers")
