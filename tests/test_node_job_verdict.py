"""A Job's outcome read from the pod already being watched (the container's terminated state)
rather than from the Job's Complete/Failed condition, which the job controller writes later; and
the case where the two differ: a Job that will retry is not finished when an attempt fails.

Real pods on the rig's real node (kubelet + containerd); the attempts share a hostPath directory
(the node is this machine), so the script knows which attempt it is."""
from __future__ import annotations

import os
import textwrap
import uuid

import pytest

import fairing
from fairing.deployers import pod
from fairing.errors import DeployError
from fairing.kube.client import Kube

ATTEMPTS = """
    import os, sys
    flag = "/attempts/first-failed"
    if os.path.exists(flag):
        print("second attempt succeeds", flush=True)
    else:
        open(flag, "w").close()
        print("first attempt fails", flush=True)
        sys.exit(3)
"""
ALWAYS_FAILS = """
    import sys
    print("this attempt fails", flush=True)
    sys.exit(3)
"""


def submit(on_node, tmp_path, script: str, name: str, backoff_limit: int):
    shared = tmp_path / "attempts"
    shared.mkdir()
    os.chmod(shared, 0o777)  # the container's user writes the flag
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(script))
    job = fairing.TrainJob(tmp_path / f"{name}.py", registry=on_node.registry, base_image=on_node.base,
                           kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace, name=name,
                           deployer="job", progress=False,
                           deployer_options={"backoff_limit": backoff_limit, "mutators": [
                               *on_node.mutators(),
                               pod.volume({"hostPath": {"path": str(shared), "type": "Directory"}}, "/attempts",
                                          name="attempts")]})
    return job.submit()


def attempts(on_node, name: str) -> list[str]:
    """How each of the Job's pods ended, by its container's terminated state (oldest first)."""
    kube = Kube(on_node.admin_kubeconfig, namespace=on_node.namespace)
    pods = kube.list("v1", "Pod", on_node.namespace, label_selector=f"job-name={name}")["items"]
    out = []
    for p in sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"]):
        term = [(cs.get("state") or {}).get("terminated") for cs in (p.get("status") or {}).get("containerStatuses") or []]
        out.append("running" if not term or None in term else f"exit {term[0].get('exitCode')}")
    return out


def test_a_job_that_will_retry_is_not_failed_after_its_first_attempt(on_node, tmp_path):
    name = f"node-retry-{uuid.uuid4().hex[:6]}"
    h = submit(on_node, tmp_path, ATTEMPTS, name, backoff_limit=1)
    try:
        lines = list(h.logs(follow=True, prefix=False))
        # The log follows the retry: the first pod's failure did not end the stream.
        assert "first attempt fails" in lines and "second attempt succeeds" in lines, lines
        assert h.wait(timeout=300) == "Succeeded"
        assert attempts(on_node, name) == ["exit 3", "exit 0"]
        assert h.status() == "Succeeded"
    finally:
        h.delete()


def test_a_job_that_fails_every_attempt_is_failed_once_its_retries_are_used(on_node, tmp_path):
    name = f"node-retry-fail-{uuid.uuid4().hex[:6]}"
    h = submit(on_node, tmp_path, ALWAYS_FAILS, name, backoff_limit=1)
    try:
        with pytest.raises(DeployError) as e:
            h.wait(timeout=300)
        assert "exited with code 3" in str(e.value), str(e.value)
        # Reported Failed only after the retry had failed too, not after the first attempt.
        assert attempts(on_node, name) == ["exit 3", "exit 3"]
        assert h.status() == "Failed"
    finally:
        h.delete()


def test_a_job_without_retries_is_over_when_its_container_exits(on_node, tmp_path):
    name = f"node-once-{uuid.uuid4().hex[:6]}"
    h = submit(on_node, tmp_path, ALWAYS_FAILS, name, backoff_limit=0)
    try:
        with pytest.raises(DeployError) as e:
            h.wait(timeout=300)
        assert "exited with code 3" in str(e.value), str(e.value)
        assert attempts(on_node, name) == ["exit 3"]
        assert h.status() == "Failed"
    finally:
        h.delete()
