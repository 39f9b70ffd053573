"""kubeflow.org/v1 TFJob and PyTorchJob (Kubeflow training operator): replica specs, a runPolicy,
conditions for status, and a fixed container name per framework.

    TFJobDeployer(namespace="team", chief=1, ps=1, workers=2, gpus=1).deploy(image)
    PyTorchJobDeployer(namespace="team", master=1, workers=3, gpus=1).deploy(image)

TFJob: GPUs go to the chief and workers only; parameter servers never get a GPU limit (even one
added by a pod.gpu() mutator); the container is named "tensorflow". PyTorchJob: every replica gets
`gpus`; the container is named "pytorch". Both names are what the operator requires."""
from __future__ import annotations

import copy

from ...errors import ConfigError
from .. import pod as podlib
from .. import labels as L
from ..base import nonneg_int
from .base import KubeDeployer

KUBEFLOW_OPTIONS = ("gpus", "gpu_vendor", "clean_pod_policy", "backoff_limit", "ttl_seconds_after_finished",
                    "active_deadline_seconds", "restart_policy")


def kubeflow_state(obj: dict) -> str:
    conds = {c.get("type"): c.get("status") for c in (obj.get("status") or {}).get("conditions") or []}
    if conds.get("Succeeded") == "True":
        return "Succeeded"
    if conds.get("Failed") == "True":
        return "Failed"
    if conds.get("Running") == "True" or conds.get("Restarting") == "True":
        return "Running"
    return "Pending"


class KubeflowDeployer(KubeDeployer):
    queue_suspend = ("spec", "runPolicy")
    api_version = "kubeflow.org/v1"
    # Pod and Service names are <name>-<replica>-<index>, and must stay DNS-1035 labels (<= 63).
    name_max = 48
    name_dns1035 = True
    replica_field = ""            # "tfReplicaSpecs"
    replica_types: tuple = ()     # (("Chief", option, default, gets_gpu), ...)
    result_replicas: tuple = ()   # which replica's log carries the result, in order of preference

    def configure(self, **opts) -> None:
        total = 0
        for rtype, opt, default, _ in self.replica_types:
            n = nonneg_int(opts.get(opt, default), opt)
            total += n
        if total == 0:
            raise ConfigError(f"a {self.kind} needs at least one replica",
                              hint=", ".join(f"{opt}=1" for _, opt, _, _ in self.replica_types))
        gpus = nonneg_int(opts.get("gpus", 0), "gpus")
        if gpus:
            podlib.gpu(gpus, opts.get("gpu_vendor", "nvidia"))  # validates the vendor now
        if opts.get("clean_pod_policy") not in (None, "None", "Running", "All"):
            raise ConfigError(f"invalid clean_pod_policy {opts['clean_pod_policy']!r}",
                              hint="use 'None' (keep pods and logs), 'Running' or 'All'")
        if opts.get("restart_policy") not in (None, "Never", "OnFailure", "ExitCode"):
            raise ConfigError(f"invalid restart_policy {opts['restart_policy']!r}", hint="use Never, OnFailure or ExitCode")
        nonneg_int(opts.get("backoff_limit"), "backoff_limit")
        nonneg_int(opts.get("ttl_seconds_after_finished"), "ttl_seconds_after_finished")
        nonneg_int(opts.get("active_deadline_seconds"), "active_deadline_seconds", minimum=1)

    def _replica_template(self, template: dict, gets_gpu: bool) -> dict:
        tpl = copy.deepcopy(template)
        gpus = self.options.get("gpus", 0)
        if gets_gpu and gpus:
            tpl = podlib.gpu(gpus, self.options.get("gpu_vendor", "nvidia"))(tpl)
        elif not gets_gpu:
            # e.g. TensorFlow parameter servers only hold variables: a GPU there is wasted.
            tpl = podlib.strip_gpus(tpl, podlib.MAIN)
        # The operator finds the framework container by this exact name.
        podlib.find_container(tpl, podlib.MAIN)["name"] = self.container_name
        tpl["spec"].pop("restartPolicy", None)
        return tpl

    def build(self, name, namespace, meta, template) -> dict:
        replicas = {}
        for rtype, opt, default, gets_gpu in self.replica_types:
            n = self.options.get(opt, default)
            if n:
                replicas[rtype] = {"replicas": n, "restartPolicy": self.options.get("restart_policy", "Never"),
                                   "template": self._replica_template(template, gets_gpu)}
        run_policy = {"cleanPodPolicy": self.options.get("clean_pod_policy", "None")}
        for opt, field in (("backoff_limit", "backoffLimit"), ("ttl_seconds_after_finished", "ttlSecondsAfterFinished"),
                           ("active_deadline_seconds", "activeDeadlineSeconds")):
            if self.options.get(opt) is not None:
                run_policy[field] = self.options[opt]
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta,
                "spec": {"runPolicy": run_policy, self.replica_field: replicas}}

    def templates_of(self, manifest: dict) -> list[dict]:
        # Mutator prepare hooks look for the "main" container; give them the pre-rename view.
        out = []
        for spec in manifest["spec"][self.replica_field].values():
            tpl = copy.deepcopy(spec["template"])
            podlib.find_container(tpl, self.container_name)["name"] = podlib.MAIN
            out.append(tpl)
        return out[:1]

    state = staticmethod(kubeflow_state)

    def replicas(self, obj: dict) -> int:
        return sum(r.get("replicas", 1) for r in ((obj.get("spec") or {}).get(self.replica_field) or {}).values())

    def result_pod(self, pods: list[dict]) -> dict | None:
        def key(p):
            labels = (p.get("metadata") or {}).get("labels") or {}
            return labels.get("training.kubeflow.org/replica-type", "").lower(), \
                labels.get("training.kubeflow.org/replica-index", "")
        by = {key(p): p for p in pods}
        for rtype in self.result_replicas:
            if (rtype, "0") in by:
                return by[(rtype, "0")]
        return super().result_pod(pods)

    def pod_selector(self, name: str, run_id: str | None) -> str:
        return f"{L.RUN_ID}={run_id}" if run_id else f"training.kubeflow.org/job-name={name}"


class TFJobDeployer(KubeflowDeployer):
    kind = "TFJob"
    deployer_name = "tfjob"
    container_name = "tensorflow"
    replica_field = "tfReplicaSpecs"
    replica_types = (("Chief", "chief", 0, True), ("PS", "ps", 0, False), ("Worker", "workers", 1, True))
    result_replicas = ("chief", "worker")
    kind_options = KUBEFLOW_OPTIONS + ("chief", "ps", "workers")


class PyTorchJobDeployer(KubeflowDeployer):
    kind = "PyTorchJob"
    deployer_name = "pytorchjob"
    container_name = "pytorch"
    replica_field = "pytorchReplicaSpecs"
    replica_types = (("Master", "master", 1, True), ("Worker", "workers", 0, True))
    result_replicas = ("master",)
    kind_options = KUBEFLOW_OPTIONS + ("master", "workers")
