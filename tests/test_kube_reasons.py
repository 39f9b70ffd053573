"""The diagnosis table, walked entry by entry with objects shaped exactly as the API server returns
them (the integration tests in test_deploy_job.py make the real control plane produce them)."""
import re

import pytest

from fairing.kube.reasons import REASONS, diagnose_job, diagnose_pod

IMAGE = "127.0.0.1:5000/team/train@sha256:" + "1" * 64


def _pod(status, *, name="train-x1", containers=None, resources=None):
    containers = containers or [{"name": "main", "image": IMAGE, **({"resources": resources} if resources else {})}]
    return {"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": containers}, "status": status}


def _waiting(reason, message=""):
    return _pod({"phase": "Pending", "containerStatuses": [
        {"name": "main", "image": IMAGE, "ready": False, "restartCount": 0,
         "state": {"waiting": {"reason": reason, "message": message}}}]})


def _terminated(reason, code, **kw):
    return _pod({"phase": "Failed", "containerStatuses": [
        {"name": "main", "image": IMAGE, "ready": False, "restartCount": 0,
         "state": {"terminated": {"reason": reason, "exitCode": code}}}]}, **kw)


def _not_saved(message):
    return _pod({"phase": "Failed", "containerStatuses": [
        {"name": "main", "image": IMAGE, "ready": False, "restartCount": 0,
         "state": {"terminated": {"reason": "Error", "exitCode": 3, "message": message}}}]})


def _unschedulable(message):
    return _pod({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]})


def _job(reason, message, **spec):
    return {"metadata": {"name": "train-x"}, "spec": {"backoffLimit": 0, **spec},
            "status": {"failed": 1, "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": reason, "message": message},
                {"type": "Failed", "status": "True", "reason": reason, "message": message}]}}


POD_SAMPLES = {
    "ImagePullBackOff": (_waiting("ImagePullBackOff", f'Back-off pulling image "{IMAGE}"'), [IMAGE, "pull secret"]),
    "ErrImagePull": (_waiting("ErrImagePull", "401 Unauthorized"), [IMAGE, "401 Unauthorized"]),
    "InvalidImageName": (_waiting("InvalidImageName", "couldn't parse image name"), ["invalid"]),
    "CreateContainerConfigError": (_waiting("CreateContainerConfigError", 'secret "wandb" not found'),
                                   ['secret "wandb" not found']),
    "CrashLoopBackOff": (_pod({"phase": "Running", "containerStatuses": [
        {"name": "main", "image": IMAGE, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"reason": "Error", "exitCode": 2}}}]}), ["exit code 2"]),
    "OOMKilled": (_terminated("OOMKilled", 137, resources={"limits": {"memory": "64Mi"}}), ["memory", "64Mi"]),
    "Error": (_terminated("Error", 3), ["exited with code 3"]),
    "OutputsNotSaved": (_not_saved("outputs not saved: 10.0.0.1:5000 answered 503 to the upload of sha256:ab"),
                        ["outputs not saved: 10.0.0.1:5000 answered 503", "exit code 3"]),
    "Unschedulable": (_unschedulable("0/2 nodes are available: 2 Insufficient cpu."), ["Insufficient cpu"]),
    "InsufficientGPU": (_unschedulable("0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) had "
                                       "untolerated taint {nvidia.com/gpu: present}."), ["nvidia.com/gpu"]),
    "Evicted": (_pod({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
                ["low on resource: memory"]),
}
JOB_SAMPLES = {
    "DeadlineExceeded": (_job("DeadlineExceeded", "Job was active longer than specified deadline",
                              activeDeadlineSeconds=30), ["activeDeadlineSeconds (30s)"]),
    "BackoffLimitExceeded": (_job("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
                             ["backoffLimit=0"]),
}


def test_every_reason_has_a_sample():
    assert set(REASONS) == set(POD_SAMPLES) | set(JOB_SAMPLES)


@pytest.mark.parametrize("key", sorted(POD_SAMPLES))
def test_pod_reason(key):
    pod, words = POD_SAMPLES[key]
    d = diagnose_pod(pod, "main")
    assert d is not None and d.reason == key
    assert "train-x1" in d.message or key in ("InvalidImageName",)
    for w in words:
        assert w in d.message + " " + d.hint
    assert not re.search(r"\{[a-z_]+[!}]", d.message) and " ? " not in d.message and d.hint  # all filled in


@pytest.mark.parametrize("key", sorted(JOB_SAMPLES))
def test_job_reason(key):
    job, words = JOB_SAMPLES[key]
    d = diagnose_job(job, [])
    assert d.reason == key and d.fatal
    for w in words:
        assert w in d.message
    assert "train-x" in d.message and d.hint


def test_pod_cause_beats_backoff_limit():
    """The job says BackoffLimitExceeded; the user needs to hear that the pod ran out of memory."""
    job, _ = JOB_SAMPLES["BackoffLimitExceeded"]
    pod, _ = POD_SAMPLES["OOMKilled"]
    d = diagnose_job(job, [pod])
    assert d.reason == "OOMKilled"
    assert "BackoffLimitExceeded" in d.message and "64Mi" in d.message


def test_sidecar_state_does_not_hide_the_workload():
    """A crashing sidecar listed first must not be reported instead of the main container."""
    pod = _pod({"phase": "Failed", "containerStatuses": [
        {"name": "proxy", "image": "envoy", "state": {"terminated": {"reason": "Error", "exitCode": 9}}},
        {"name": "main", "image": IMAGE, "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]},
        containers=[{"name": "proxy", "image": "envoy"}, {"name": "main", "image": IMAGE}])
    assert diagnose_pod(pod, "main").reason == "OOMKilled"


def test_healthy_objects_have_no_diagnosis():
    running = _pod({"phase": "Running", "containerStatuses": [
        {"name": "main", "image": IMAGE, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]})
    assert diagnose_pod(running) is None
    assert diagnose_pod(_waiting("ContainerCreating")) is None
    assert diagnose_job({"metadata": {"name": "j"}, "status": {"active": 1}}, [running]) is None
