"""kubeflow.org/v1 TFJob (Kubeflow training operator): Chief / PS / Worker replicas.

    TFJobDeployer(namespace="team", chief=1, ps=1, workers=2, gpus=1).deploy(image)

GPUs go to the chief and workers only; parameter servers never get a GPU limit (even one added by a
pod.gpu() mutator). The container is named "tensorflow", as the operator requires."""
from __future__ import annotations

from .kubeflow import KUBEFLOW_OPTIONS, KubeflowDeployer


class TFJobDeployer(KubeflowDeployer):
    kind = "TFJob"
    deployer_name = "tfjob"
    container_name = "tensorflow"
    replica_field = "tfReplicaSpecs"
    replica_types = (("Chief", "chief", 0, True), ("PS", "ps", 0, False), ("Worker", "workers", 1, True))
    result_replicas = ("chief", "worker")
    kind_options = KUBEFLOW_OPTIONS + ("chief", "ps", "workers")
