"""Diagnosis as data: one table from a pod/job condition to a sentence and a hint.

`diagnose_pod(pod)` and `diagnose_job(job, pods)` read objects exactly as the API server returns
them (plain dicts) and return a `Diagnosis` or None. Tests walk REASONS with real-shaped objects and
the integration tests make the real control plane produce each one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Reason:
    sentence: str  # str.format template; fields: pod container image message exit_code name limit ...
    hint: str
    fatal: bool  # True: waiting longer will not help, stop now


@dataclass(frozen=True)
class Diagnosis:
    reason: str
    message: str
    hint: str
    fatal: bool

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})"


_PULL_HINT = ("check that {image} was pushed and the name is right; if the registry needs credentials, "
              "give the pod an image pull secret: mutators=[fairing.deployers.pod.image_pull_secret()] "
              "creates one from your local registry login (or kubectl create secret docker-registry NAME "
              "--docker-server=REGISTRY ... and image_pull_secret('NAME'))")

# A terminal user has no handle: the hint names the command, with the workload's name filled in.
_LOGS = "see the logs: fair logs {workload} (in Python: handle.logs())"
# Labels the controllers put on a workload's pods, naming the object `fair logs` takes.
_OWNER_LABELS = ("jobset.sigs.k8s.io/jobset-name", "training.kubeflow.org/job-name",
                 "batch.kubernetes.io/job-name", "job-name", "app.kubernetes.io/name")

REASONS: dict[str, Reason] = {
    "ImagePullBackOff": Reason("cannot pull image {image} for container {container!r} of pod {pod}: {message}",
                               _PULL_HINT, True),
    "ErrImagePull": Reason("cannot pull image {image} for container {container!r} of pod {pod}: {message}",
                           _PULL_HINT, True),
    "InvalidImageName": Reason("image name {image} of container {container!r} is invalid: {message}",
                               "use a full reference such as registry/repo@sha256:...", True),
    "CreateContainerConfigError": Reason(
        "pod {pod} cannot start container {container!r}: {message}",
        "create the Secret/ConfigMap it references, or fix the name in env_from_secret/volumes", True),
    "CrashLoopBackOff": Reason("container {container!r} of pod {pod} keeps crashing (exit code {exit_code})",
                               _LOGS, True),
    "OOMKilled": Reason("container {container!r} of pod {pod} was killed for running out of memory "
                        "(limit {limit})",
                        "raise the memory limit, e.g. mutators=[pod.memory('8Gi')] or --memory 8Gi, "
                        "or make the program use less memory", True),
    "Error": Reason("container {container!r} of pod {pod} exited with code {exit_code}",
                    _LOGS, True),
    # The outputs shim (image_runtime/outputs.py) could not keep the run's files: its own words,
    # from the container's termination message, are the reason.
    "OutputsNotSaved": Reason("{message} (pod {pod}, exit code {exit_code})",
                              "check that pods can reach the outputs store and that its credentials may write; "
                              "fair logs {workload} shows each attempt", True),
    "Unschedulable": Reason("pod {pod} cannot be scheduled: {message}",
                            "lower the cpu/memory requests or check node_selector/tolerations; "
                            "kubectl describe nodes shows what is free", False),
    "InsufficientGPU": Reason("pod {pod} cannot be scheduled: no node has {resource} free ({message})",
                              "ask for fewer GPUs, add GPU nodes, or add the toleration your GPU nodes need "
                              "(mutators=[pod.toleration('nvidia.com/gpu')])", False),
    "Evicted": Reason("pod {pod} was evicted by its node: {message}",
                      "the node ran short of resources; set requests close to real usage "
                      "(pod.memory/pod.cpu) so the pod is placed where it fits", True),
    "DeadlineExceeded": Reason("job {name} ran longer than its activeDeadlineSeconds ({limit}s) and was stopped",
                               "raise active_deadline_seconds, or make the job finish sooner", True),
    "BackoffLimitExceeded": Reason("job {name} failed: its pods failed {failed} time(s), reaching "
                                   "backoffLimit={limit}",
                                   _LOGS + "; raise backoff_limit to retry more often", True),
}

# Waiting states a container never leaves by itself (the image, its name or its config is wrong):
# a wait that is not the Job's own (serving, Katib trials) stops on them at once.
NEVER_STARTS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError"})

_GPU = re.compile(r"Insufficient ([a-z0-9.-]+/gpu)")


def _diag(key: str, **fields) -> Diagnosis:
    r = REASONS[key]
    fields = {k: ("?" if v is None else v) for k, v in fields.items()}
    fields.setdefault("message", "")
    text = r.sentence.format_map(_Default(fields)).rstrip(": ").strip()
    return Diagnosis(key, text, r.hint.format_map(_Default(fields)), r.fatal)


class _Default(dict):
    def __missing__(self, key):
        return "?"


def _containers(pod: dict) -> dict[str, dict]:
    spec = pod.get("spec") or {}
    return {c["name"]: c for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])}


def container_statuses(pod: dict) -> list[dict]:
    """The statuses of a pod's init and main containers (names are unique across both)."""
    st = pod.get("status") or {}
    return (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])


def container_state(pod: dict, name: str) -> dict:
    """One container's state as the kubelet last reported it ({"running": ...}, {"terminated":
    ...}, ...); {} before it reports that container."""
    return next((cs.get("state") or {} for cs in container_statuses(pod) if cs.get("name") == name), {})


def diagnose_pod(pod: dict, container: str | None = None) -> Diagnosis | None:
    """Why this pod is not progressing or failed; None if nothing is wrong (yet).
    With `container`, that container's state is preferred (sidecars are not the workload)."""
    name = (pod.get("metadata") or {}).get("name", "?")
    labels = (pod.get("metadata") or {}).get("labels") or {}
    workload = next((labels[k] for k in _OWNER_LABELS if labels.get(k)), "NAME")
    status = pod.get("status") or {}
    specs = _containers(pod)
    if status.get("reason") == "Evicted":
        return _diag("Evicted", pod=name, message=status.get("message", ""))
    statuses = container_statuses(pod)
    if container:
        statuses.sort(key=lambda s: s.get("name") != container)
    for cs in statuses:
        cname = cs.get("name")
        image = cs.get("image") or (specs.get(cname) or {}).get("image")
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        w = waiting.get("reason")
        if w in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError"):
            return _diag(w, pod=name, container=cname, image=image, message=_short(waiting.get("message", "")))
        if w == "CrashLoopBackOff":
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if last.get("reason") == "OOMKilled":
                return _oom(name, cname, specs)
            return _diag(w, pod=name, container=cname, exit_code=last.get("exitCode"), workload=workload)
        term = state.get("terminated") or {}
        if term.get("reason") == "OOMKilled":
            return _oom(name, cname, specs)
        if term and term.get("exitCode", 0) != 0 and status.get("phase") == "Failed":
            if (term.get("message") or "").startswith("outputs not saved:"):
                return _diag("OutputsNotSaved", pod=name, container=cname, exit_code=term.get("exitCode"),
                             workload=workload, message=_short(term["message"].strip()))
            return _diag("Error", pod=name, container=cname, exit_code=term.get("exitCode"), workload=workload)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            msg = cond.get("message", "")
            m = _GPU.search(msg)
            if m:
                return _diag("InsufficientGPU", pod=name, resource=m.group(1), message=msg)
            return _diag("Unschedulable", pod=name, message=msg)
    return None


def _oom(pod: str, container: str, specs: dict) -> Diagnosis:
    limit = (((specs.get(container) or {}).get("resources") or {}).get("limits") or {}).get("memory", "none set")
    return _diag("OOMKilled", pod=pod, container=container, limit=limit)


def _short(msg: str, n: int = 300) -> str:
    """At most n characters. The runtime's cause comes last ("failed to pull ... X: failed to
    resolve X: ... 401 Unauthorized"), so a long message keeps its start and its end."""
    msg = " ".join(msg.split())
    if len(msg) <= n:
        return msg
    head = n // 3
    return msg[:head] + " ... " + msg[-(n - head - 5):]


def job_failed_condition(obj: dict) -> dict | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            return c
    return None


def diagnose_job(job: dict, pods: Iterable[dict] = (), container: str | None = None) -> Diagnosis | None:
    """Why a batch/v1 Job (or a Kubeflow job, which uses the same condition shape) failed.
    A pod-level cause (OOMKilled, image pull, eviction) is more useful than "BackoffLimitExceeded",
    so it wins, with the job-level reason kept in the message."""
    cond = job_failed_condition(job)
    if cond is None:
        return None
    name = (job.get("metadata") or {}).get("name", "?")
    spec = job.get("spec") or {}
    run_policy = spec.get("runPolicy") or {}
    reason = cond.get("reason", "")
    pod_diag = None
    for p in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""), reverse=True):
        pod_diag = diagnose_pod(p, container)
        if pod_diag:
            break
    if reason == "DeadlineExceeded" or "deadline" in cond.get("message", "").lower() and reason != "BackoffLimitExceeded":
        d = _diag("DeadlineExceeded", name=name,
                  limit=spec.get("activeDeadlineSeconds", run_policy.get("activeDeadlineSeconds")))
    elif reason == "BackoffLimitExceeded":
        d = _diag("BackoffLimitExceeded", name=name, workload=name, failed=(job.get("status") or {}).get("failed"),
                  limit=spec.get("backoffLimit", run_policy.get("backoffLimit", 6)))
    else:
        d = Diagnosis(reason or "Failed", f"job {name} failed: {cond.get('message') or reason}".rstrip(": "),
                      _LOGS.format(workload=name), True)
    if pod_diag and d.reason != "DeadlineExceeded":
        return Diagnosis(pod_diag.reason, f"job {name} failed ({reason or 'Failed'}): {pod_diag.message}",
                         pod_diag.hint, True)
    return d
