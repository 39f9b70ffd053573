"""Waiting by watch: the workload object and its pods are watched together (no sleep loops), with a
timeout, surviving API server restarts (each watch resumes from its last resourceVersion).

A failure is explained as it happens: an image that cannot be pulled stops the wait at once with
the reason (waiting longer won't help); an Unschedulable pod is reported if the wait times out.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..errors import DeployError, WaitTimeout
from .client import Kube
from .errors import NotFound
from .reasons import Diagnosis, diagnose_pod

# Pod problems that end a wait immediately, even while the owner object still looks active.
IMMEDIATE = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError"}


@dataclass
class Stream:
    """One watch feeding a Mux."""
    key: str
    api_version: str
    kind: str
    name: str | None = None
    label_selector: str | None = None
    resource_version: str | None = None  # start after this version (no initial list)


@dataclass
class Mux:
    """Several resumable watches merged into one queue, each on its own daemon thread."""
    kube: Kube
    namespace: str
    streams: list[Stream]
    _q: queue.Queue = field(default_factory=queue.Queue)
    _watches: list = field(default_factory=list)
    _threads: list = field(default_factory=list)

    def __enter__(self) -> "Mux":
        for s in self.streams:
            w = self.kube.watch(s.api_version, s.kind, self.namespace, name=s.name, label_selector=s.label_selector,
                                resource_version=s.resource_version)
            t = threading.Thread(target=self._pump, args=(s.key, w), daemon=True, name=f"fairing-watch-{s.key}")
            self._watches.append(w)
            self._threads.append(t)
            t.start()
        return self

    def _pump(self, key: str, w) -> None:
        try:
            for etype, obj in w:
                self._q.put((key, etype, obj))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
            self._q.put((key, "EXCEPTION", e))

    def put(self, item) -> None:
        self._q.put(item)

    def events(self, deadline: float | Callable[[], float | None] | None) -> Iterator[tuple[str, str, object]]:
        """(key, type, object) until the deadline (a monotonic time, or a callable giving the
        current one); ("", "TIMEOUT", None) once it passes."""
        while True:
            d = deadline() if callable(deadline) else deadline
            remaining = None if d is None else d - time.monotonic()
            if remaining is not None and remaining <= 0:
                yield "", "TIMEOUT", None
                return
            try:
                item = self._q.get(timeout=remaining)
            except queue.Empty:
                continue
            if item[1] == "EXCEPTION":
                raise item[2]
            yield item

    def __exit__(self, *exc) -> None:
        for w in self._watches:
            w.stop()
        for t in self._threads:
            t.join(timeout=2)


@dataclass
class Outcome:
    status: str
    obj: dict | None
    pods: dict[str, dict]
    diagnosis: Diagnosis | None = None


def wait_for(kube: Kube, namespace: str, *, api_version: str, kind: str, name: str, pod_selector: str | None,
             state: Callable[[dict], str], terminal: tuple[str, ...] = ("Succeeded", "Failed"),
             timeout: float | None = None, container: str | None = None,
             verdict: Callable[[dict, list[dict]], str | None] | None = None) -> Outcome:
    """Watch `kind/name` and the pods matching `pod_selector` until `state(obj)` is terminal, or
    until `verdict(obj, pods)` (the kind's reading of its pods, e.g. a Job's one container that
    exited and will not be retried) says how it ended: the pods' status arrives on the watch
    already open, often seconds before the owner's controller writes its condition.
    Raises WaitTimeout (with the latest pod diagnosis) or DeployError (pod problem that won't heal,
    or the object was deleted)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    obj = kube.get(api_version, kind, name, namespace)
    if obj is None:
        raise NotFound(f"{kind} {name} not found in namespace {namespace!r}",
                       hint="check the name and namespace (fair list)")
    if state(obj) in terminal:
        return Outcome(state(obj), obj, {}, None)
    pods: dict[str, dict] = {}
    if verdict is not None and pod_selector:
        listed = kube.list("v1", "Pod", namespace, label_selector=pod_selector).get("items", [])
        pods = {p["metadata"]["name"]: p for p in listed}
        if (v := verdict(obj, listed)) in terminal:
            return Outcome(v, obj, pods, None)
    # Watch from the version just read: nothing between the read and the watch can be missed
    # (a fresh list instead could come back without the object and never see it change).
    streams = [Stream("owner", api_version, kind, name=name,
                      resource_version=obj["metadata"].get("resourceVersion"))]
    if pod_selector:
        streams.append(Stream("pods", "v1", "Pod", label_selector=pod_selector))
    last: Diagnosis | None = None
    seen_owner = False
    with Mux(kube, namespace, streams) as mux:
        for key, etype, ev in mux.events(deadline):
            if etype == "TIMEOUT":
                st = state(obj) if obj else "NotFound"
                detail = f": {last.message}" if last else ""
                raise WaitTimeout(f"{kind} {name} did not finish within {timeout:g}s (status {st}){detail}",
                                  hint=last.hint if last else "wait longer (timeout=...), or look at the pods: "
                                  f"kubectl describe pods -n {namespace} -l {pod_selector}")
            if key == "owner":
                if etype == "DELETED":
                    raise DeployError(f"{kind} {name} was deleted while waiting for it",
                                      hint="someone (or a TTL) deleted it; run it again")
                obj, seen_owner = ev, True
                st = state(obj)
                if st in terminal:
                    return Outcome(st, obj, pods, last)
            elif key == "pods":
                pname = (ev.get("metadata") or {}).get("name")
                if etype == "DELETED":
                    pods.pop(pname, None)
                    continue
                pods[pname] = ev
                if verdict is not None and (v := verdict(obj, list(pods.values()))) in terminal:
                    return Outcome(v, obj, pods, last)
                d = diagnose_pod(ev, container)
                if d:
                    last = d
                    if d.reason in IMMEDIATE:
                        raise DeployError(d.message, hint=d.hint)
    raise DeployError(f"{kind} {name} not found" if not seen_owner else f"stopped waiting for {kind} {name}")
