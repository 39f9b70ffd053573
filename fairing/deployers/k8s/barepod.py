"""`pod` deployer: one bare v1 Pod, no controller. For a quick one-off run where a Job's retries
and history are not wanted; the pod is the whole workload (restartPolicy Never).

    PodDeployer(namespace="team", active_deadline_seconds=600, mutators=[pod.cpu("1")]).deploy(image)

Adding it took this file and one row in fairing/stages.py: the base (deployers/k8s/base.py) does the
options, labels, mutators, prepare hooks, watching, logs, result and delete."""
from __future__ import annotations

from .. import labels as L
from ..base import nonneg_int
from .base import KubeDeployer


def pod_state(obj: dict | None) -> str:
    """The pod's phase in the words every handle uses."""
    if obj is None:
        return "Deleted"
    phase = (obj.get("status") or {}).get("phase") or "Pending"
    return phase if phase in ("Pending", "Running", "Succeeded", "Failed") else "Pending"


class PodDeployer(KubeDeployer):
    api_version = "v1"
    kind = "Pod"
    deployer_name = "pod"
    kind_options = ("active_deadline_seconds",)
    # Every Job's pods are fairing-labelled too: a bare Pod is one this deployer made.
    list_selector = f"{L.MANAGED_SELECTOR},{L.DEPLOYER}=pod"
    state = staticmethod(pod_state)

    def configure(self, active_deadline_seconds=None) -> None:
        nonneg_int(active_deadline_seconds, "active_deadline_seconds", minimum=1)

    def build(self, name, namespace, meta, template) -> dict:
        spec = dict(template.get("spec") or {})
        spec["restartPolicy"] = "Never"
        if self.options.get("active_deadline_seconds") is not None:
            spec["activeDeadlineSeconds"] = self.options["active_deadline_seconds"]
        labels = {**(template.get("metadata") or {}).get("labels", {}), **meta["labels"]}
        annotations = {**((template.get("metadata") or {}).get("annotations") or {}), **meta["annotations"]}
        return {"apiVersion": self.api_version, "kind": self.kind,
                "metadata": {**meta, "labels": labels, "annotations": annotations}, "spec": spec}

    def templates_of(self, manifest: dict) -> list[dict]:
        # The pod is its own template: hooks see (and may edit) its metadata and spec in place.
        return [manifest]

    def pod_selector(self, name: str, run_id: str | None) -> str:
        return f"{L.RUN_ID}={run_id}" if run_id else f"{L.DEPLOYER}=pod"
