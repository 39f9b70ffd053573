"""The `pod` deployer: one bare Pod, no controller. Rendered without a cluster, then on the rig's
API server through kwok: what it stores, that `fair list`/`fair status` find it through the
deployer's own kind and state (and never take a Job's pods for bare Pods), and that delete leaves
nothing. The cluster test runs as the admin: the rig's least-privilege Role grants no pod create,
since every other kind has a controller make its pods."""
from __future__ import annotations

import time

import pytest

from fairing import stages, workloads
from fairing.deployers import pod
from fairing.deployers.k8s.job import JobDeployer
from fairing.deployers.k8s.barepod import PodDeployer
from fairing.errors import ConfigError, DeployError
from fairing.kube.client import Kube
from tests.rig.kube import fake_image


def test_pod_is_one_registry_row_and_renders_without_a_cluster():
    assert stages.load("deployer", "pod") is PodDeployer
    image = fake_image("bare-render")
    [m] = PodDeployer("team", name="one-off", active_deadline_seconds=60, mutators=[pod.memory("1Gi")]).render(image)
    assert (m["apiVersion"], m["kind"], m["metadata"]["name"], m["metadata"]["namespace"]) == ("v1", "Pod", "one-off", "team")
    labels = m["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "fairing" and labels["fairing.dev/deployer"] == "pod"
    assert m["spec"]["restartPolicy"] == "Never" and m["spec"]["activeDeadlineSeconds"] == 60
    main = next(c for c in m["spec"]["containers"] if c["name"] == "main")
    assert main["image"] == image.ref and main["resources"]["limits"]["memory"] == "1Gi"
    with pytest.raises(ConfigError, match="unknown option for the pod deployer: backoff_limit"):
        PodDeployer(backoff_limit=1)


def _until(check, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_pod_runs_is_listed_and_found_by_its_deployer_and_deleted(kube):
    admin = Kube(kube.kubeconfig, namespace=kube.namespace)
    settings = {"kubeconfig": str(kube.kubeconfig), "namespace": kube.namespace}
    image = fake_image("bare-pod")
    h = PodDeployer(kubeconfig=kube.kubeconfig, namespace=kube.namespace,
                    mutators=[pod.cpu("250m"), pod.env({"EPOCHS": 3})]).deploy(image)
    job = JobDeployer(kubeconfig=kube.sa_kubeconfig).deploy(fake_image("bare-pod-neighbour"))
    try:
        stored = admin.get("v1", "Pod", h.name)
        assert stored["metadata"]["labels"]["fairing.dev/deployer"] == "pod"
        assert stored["metadata"]["labels"]["fairing.dev/run-id"] == h.run_id
        main = next(c for c in stored["spec"]["containers"] if c["name"] == "main")
        assert main["image"] == image.ref and {"name": "EPOCHS", "value": "3"} in main["env"]
        assert stored["spec"]["restartPolicy"] == "Never"
        # kwok runs the pod (it completes only pods a Job or training job owns, so it stays Running).
        assert _until(lambda: h.status() in ("Running", "Succeeded")), h.status()

        # `fair list`: the deployer says which objects are its own and what their state is.
        job_pods = {p["metadata"]["name"] for p in _until(lambda: admin.list(
            "v1", "Pod", label_selector=f"job-name={job.name}")["items"])}
        rows = workloads.list_workloads(settings)
        mine = [r for r in rows if r["name"] == h.name]
        assert mine == [{"name": h.name, "kind": "Pod", "deployer": "pod", "namespace": kube.namespace,
                         "status": h.status(), "created": stored["metadata"]["creationTimestamp"],
                         "run_id": stored["metadata"]["labels"]["fairing.dev/run-id"]}]
        assert job_pods and not [r for r in rows if r["kind"] == "Pod" and r["name"] in job_pods]
        # `fair status NAME` attaches through the same deployer.
        again = workloads.attach(h.name, settings)
        assert again.kind == "Pod" and again.status() == h.status()
    finally:
        h.delete(timeout=60)
        job.delete(timeout=60)
    assert admin.get("v1", "Pod", h.name) is None
    with pytest.raises(DeployError, match="no workload named"):
        workloads.attach(h.name, settings)
