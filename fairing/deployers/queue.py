"""Kueue: submit a training workload to a LocalQueue, and read back what Kueue decided.

    enqueue(manifest, "team-queue", path)   # the queue-name label, and created suspended
    check_queue(kube, "team", "team-queue") # an error naming the LocalQueues that do exist
    state(obj, "Pending", path)             # "Queued" while Kueue holds it, "Admitted" once released
    describe(kube, "team", obj, path)       # "queued in team-queue (waiting for quota): <Kueue's message>"

`path` is where the workload's kind keeps its suspend flag: the deployer's `queue_suspend` fact
(fairing.deployers.base.Deployer), e.g. ("spec", "runPolicy") for a TFJob.

Kueue admits a workload by un-suspending it. Its admission webhook would suspend a labelled Job on
creation, but fairing creates the workload suspended itself, so a cluster without that webhook
(or a race with it) never starts a queued workload early.
"""
from __future__ import annotations

import datetime
import re

from ..errors import ConfigError

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # on the Workload Kueue makes for a job
KUEUE_API = "kueue.x-k8s.io/v1beta2"
_LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def validate_queue(name: str) -> str:
    if not isinstance(name, str) or len(name) > 63 or not _LABEL_VALUE.match(name):
        raise ConfigError(f"invalid queue name {name!r}",
                          hint="a LocalQueue name: lowercase letters, digits and '-', at most 63 characters")
    return name


def _dig(obj: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        obj = obj.setdefault(key, {})
    return obj


def enqueue(manifest: dict, queue: str, path: tuple[str, ...]) -> dict:
    """Label `manifest` for `queue` and create it suspended (in place; returns it). A CronJob's
    Jobs are what Kueue admits, so the label and the suspend go into its job template."""
    kind = manifest["kind"]
    if kind == "CronJob":
        tpl = manifest["spec"]["jobTemplate"]
        tpl.setdefault("metadata", {}).setdefault("labels", {})[QUEUE_LABEL] = queue
    manifest["metadata"].setdefault("labels", {})[QUEUE_LABEL] = queue
    _dig(manifest, path)["suspend"] = True
    return manifest


def queue_of(obj: dict | None) -> str | None:
    return (((obj or {}).get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)


def suspended(obj: dict, path: tuple[str, ...] | None) -> bool:
    if path is None or obj.get("kind") == "CronJob":
        return False  # a CronJob is never queued itself; its Jobs are
    spec = obj
    for key in path:
        spec = spec.get(key) or {}
    return bool(spec.get("suspend"))


def state(obj: dict | None, base: str, path: tuple[str, ...] | None) -> str:
    """The handle's word for a queued workload: "Queued" while Kueue keeps it suspended,
    "Admitted" once released but before anything runs; otherwise `base` unchanged."""
    if not obj or base in ("Succeeded", "Failed") or not queue_of(obj):
        return base
    if suspended(obj, path):
        return "Queued"
    return "Admitted" if base in ("Pending", "Suspended") else base


def workload(kube, namespace: str, obj: dict) -> dict | None:
    """The Kueue Workload standing for `obj` (found by the owner's UID label), or None."""
    uid = (obj.get("metadata") or {}).get("uid")
    if not uid:
        return None
    items = kube.list(KUEUE_API, "Workload", namespace, label_selector=f"{JOB_UID_LABEL}={uid}").get("items", [])
    return max(items, key=lambda w: w["metadata"].get("creationTimestamp", ""), default=None)


def _cond(wl: dict | None, ctype: str) -> dict | None:
    return next((c for c in ((wl or {}).get("status") or {}).get("conditions") or [] if c.get("type") == ctype), None)


def describe(kube, namespace: str, obj: dict | None, path: tuple[str, ...] | None) -> str | None:
    """One sentence on where a queued workload stands, with Kueue's own message; None when it is
    not in a queue or has finished."""
    q = queue_of(obj)
    if not q or state(obj, "Pending", path) not in ("Queued", "Admitted"):
        return None
    from ..errors import FairingError

    try:
        wl = workload(kube, namespace, obj)
    except FairingError as e:  # e.g. no right to read Workloads: still say which queue it is in
        return f"queued in {q} (Kueue's Workload is not readable: {e.message})"
    if suspended(obj, path):
        if wl is None:
            return f"queued in {q} (waiting for Kueue to create its Workload)"
        reserved = _cond(wl, "QuotaReserved")
        msg = (reserved or {}).get("message") or "no decision yet"
        if reserved and reserved.get("status") == "True":
            return f"queued in {q} (quota reserved, waiting for admission checks): {msg}"
        return f"queued in {q} (waiting for quota): {msg}"
    cq = (((wl or {}).get("status") or {}).get("admission") or {}).get("clusterQueue")
    return f"admitted by {q}" + (f" (ClusterQueue {cq})" if cq else "")


def _time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def queued_seconds(kube, namespace: str, obj: dict, since: datetime.datetime,
                   path: tuple[str, ...] | None) -> float | None:
    """How long, since `since`, the workload waited in its queue (None: not queued)."""
    if not queue_of(obj):
        return None
    from ..errors import FairingError

    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        wl = workload(kube, namespace, obj)
    except FairingError:
        wl = None
    created = _time(((wl or obj).get("metadata") or {}).get("creationTimestamp")) or since
    admitted = _time((_cond(wl, "QuotaReserved") or {}).get("lastTransitionTime")) \
        if (_cond(wl, "QuotaReserved") or {}).get("status") == "True" and not suspended(obj, path) else None
    start = max(created, since)
    end = admitted or now
    return max(0.0, (end - start).total_seconds())


def check_queue(kube, namespace: str, queue: str) -> None:
    """Raise ConfigError when LocalQueue `queue` does not exist in `namespace`, naming the ones
    that do (or saying that Kueue is not installed)."""
    if kube.get(KUEUE_API, "LocalQueue", queue, namespace) is not None:
        return
    names = sorted(i["metadata"]["name"] for i in kube.list(KUEUE_API, "LocalQueue", namespace).get("items", []))
    raise ConfigError(f"Kueue LocalQueue {queue!r} does not exist in namespace {namespace!r}",
                      hint=f"LocalQueues in {namespace}: {', '.join(names)}" if names else
                      f"namespace {namespace} has no LocalQueues; ask a cluster admin for one, or drop --queue")


__all__ = ["QUEUE_LABEL", "validate_queue", "enqueue", "queue_of", "suspended", "state",
           "workload", "describe", "queued_seconds", "check_queue"]
