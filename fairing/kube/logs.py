"""Logs of every pod of a workload, each line prefixed with its replica ("[worker-1] ...").

`pod_logs` prints what is there now; `follow_logs` streams each replica as its container starts
and ends when the workload is finished and every stream has drained. When a node cannot serve logs
(its kubelet is unreachable, or the container never started) the line says so instead of failing
the whole command.
"""
from __future__ import annotations

import datetime
import logging
import re
import threading
import time
from typing import Callable, Iterable, Iterator

from ..context import exit_line
from ..errors import DeployError
from .client import Kube, abort_response
from .errors import Forbidden, Unreachable
from .reasons import container_statuses
from .wait import Mux, Stream

log = logging.getLogger(__name__)

# After the workload finished, how long replica log streams may take to drain before they are
# cut (a kubelet ends them when the container exits; a node that does not is not waited for).
DRAIN_SECONDS = 5.0
# How long an attach session may stay open after the pods watch shows its container terminated
# before it is cut and the log reads the rest. The runtime closes the container's output when it
# exits, so a live session has given its last bytes and its status within milliseconds of the
# exit, while the API shows the container terminated only after the kubelet's next relist (up to
# ~1 s later): a session still open 2 s after that has stalled (a proxy or a half-dead TCP path
# holding the connection with no close and no RST). The margin leaves a session still draining a
# burst on a loaded machine its time; cutting one early costs a re-read of the log, never a line.
ATTACH_GRACE = 2.0
# After the log path took a pod over from an attach session that had not opened, the tries made
# with the container shown running: a session that opens then is closed at once (the shim goes on
# instead of waiting out FAIRING_ATTACH_WAIT); when none opens, the path refuses attach for this
# server, account and namespace (a proxy or node answering the upgrade with an error) and the
# next Jobs there get no attach wait (attach.remember_refused). A few, 50 ms apart: one dropped
# connection does not decide it.
LATE_TRIES = 3


class LogsUnavailable(DeployError):
    pass


def replica_name(pod: dict) -> str:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    rtype = labels.get("training.kubeflow.org/replica-type")
    if rtype is not None:
        return f"{rtype.lower()}-{labels.get('training.kubeflow.org/replica-index', '?')}"
    idx = labels.get("batch.kubernetes.io/job-completion-index") or \
        (meta.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index")
    rjob = labels.get("jobset.sigs.k8s.io/replicatedjob-name")  # a JobSet (Kubeflow TrainJob): node-0, node-1
    if rjob is not None and idx is not None:
        jidx = labels.get("jobset.sigs.k8s.io/job-index", "0")
        return f"{rjob}-{idx}" if jidx == "0" else f"{rjob}-{jidx}-{idx}"
    if idx is not None:
        return f"index-{idx}"
    return meta.get("name", "?")


def _state(pod: dict, container: str) -> dict | None:
    """`container`'s state ({"running": ...}, {"terminated": ...}, ...), or None before it has a status."""
    for cs in container_statuses(pod):
        if cs.get("name") == container:
            return cs.get("state") or {}
    return None


def _started(pod: dict, container: str) -> bool:
    state = _state(pod, container)
    if state is not None:
        return "running" in state or "terminated" in state
    return (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")


def _ended(pod: dict, container: str) -> bool:
    """The pod's status shows `container` terminated (its log file is then complete)."""
    return "terminated" in (_state(pod, container) or {})


_STAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:Z|([+-])(\d\d):(\d\d)) ")


def _stamped(line: str) -> tuple[tuple[int, int] | None, str]:
    """((epoch seconds, nanoseconds), text) of a line read with timestamps=true; (None, line) when
    it has no time in front."""
    m = _STAMP.match(line)
    if not m:
        return None, line
    y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
    seconds = int(datetime.datetime(y, mo, d, h, mi, sec, tzinfo=datetime.timezone.utc).timestamp())
    if m.group(8):  # the runtime wrote local time with its offset
        seconds -= (1 if m.group(8) == "+" else -1) * (int(m.group(9)) * 3600 + int(m.group(10)) * 60)
    return (seconds, int((m.group(7) or "").ljust(9, "0"))), line[m.end():]


def _since_time(seconds: int) -> str:
    """The API's sinceTime (whole seconds, UTC) at or before `seconds`."""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finished(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _unavailable(e: DeployError, pod: str, container: str) -> LogsUnavailable:
    msg = e.message
    low = msg.lower()
    if "waiting to start" in low or "containercreating" in low or "podinitializing" in low:
        hint = "the container has not started yet; follow the logs (logs(follow=True) / fair logs -f) to wait for it"
    elif "no logs found" in low or "connection refused" in low or "dial tcp" in low or "no such host" in low \
            or "10250" in low or "502" in low:
        hint = "the node's kubelet does not serve container logs here (e.g. a simulated kwok node); " \
               "kubectl logs would fail the same way"
    else:
        hint = f"try kubectl logs {pod} -c {container}"
    reason = msg.split(": ", 1)[-1] if "answered" in msg else msg
    return LogsUnavailable(f"logs of pod {pod} (container {container}) are not available: {reason}", hint=hint)


def read_log(kube: Kube, pod: str, namespace: str, container: str, *, follow: bool = False,
             stop: threading.Event | None = None, on_open: Callable | None = None,
             timestamps: bool = False, since_time: str | None = None, exit_lines: bool = False,
             tail_lines: int | None = None) -> Iterator[str]:
    """Lines of one container's log (`timestamps`: each starts with the runtime's RFC 3339 time
    and a space). Once `stop` is set, a line still incomplete is dropped. The outputs shim's exit
    line (fairing.context.exit_line) is left out unless `exit_lines`. Raises LogsUnavailable
    with the reason."""
    if not exit_lines:
        lines = read_log(kube, pod, namespace, container, follow=follow, stop=stop, on_open=on_open,
                         timestamps=timestamps, since_time=since_time, exit_lines=True, tail_lines=tail_lines)
        for ln in lines:
            said = exit_line(_stamped(ln)[1] if timestamps else ln)
            if said is None:
                yield ln
            elif said[2]:
                yield ln[:len(ln) - len(_stamped(ln)[1]) if timestamps else 0] + said[2]
        return
    try:
        resp = kube.pod_log(pod, namespace, container=container, follow=follow, timestamps=timestamps,
                            since_time=since_time, **({"tail_lines": tail_lines} if tail_lines else {}))
    except (Unreachable, Forbidden):
        raise  # the API server itself is the problem, not this pod's log
    except DeployError as e:
        raise _unavailable(e, pod, container) from None
    if on_open is not None:
        on_open(resp)
    buf = b""
    try:
        for chunk in resp.stream(amt=None, decode_content=True):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield line.decode("utf-8", "replace")
            if stop is not None and stop.is_set():
                return
        if buf and not (stop is not None and stop.is_set()):  # a cut stream's last line may be a part
            yield buf.decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - a dropped follow stream ends that replica's log
        if buf and not (stop is not None and stop.is_set()):
            yield buf.decode("utf-8", "replace")
    finally:
        resp.close() if follow else resp.release_conn()


def pod_logs(kube: Kube, namespace: str, pods: Iterable[dict], container: str | Callable[[dict], str], *,
             prefix: bool = True) -> Iterator[str]:
    """Everything logged so far by each pod, replica by replica."""
    pods = sorted(pods, key=lambda p: (replica_name(p), (p.get("metadata") or {}).get("creationTimestamp", "")))
    names = [replica_name(p) for p in pods]
    dup = {n for n in names if names.count(n) > 1}
    for p, r in zip(pods, names):
        pname = p["metadata"]["name"]
        label = pname if r in dup else r
        cname = container(p) if callable(container) else container
        pre = f"[{label}] " if prefix else ""
        try:
            for line in read_log(kube, pname, namespace, cname):
                yield pre + line
        except LogsUnavailable as e:
            yield f"{pre}({e.message}; {e.hint})"


def follow_logs(kube: Kube, namespace: str, *, api_version: str, kind: str, name: str, pod_selector: str,
                container: str | Callable[[dict], str], state: Callable[[dict], str],
                terminal: tuple[str, ...] = ("Succeeded", "Failed"), prefix: bool = True,
                timeout: float | None = None,
                verdict: Callable[[dict, list[dict]], str | None] | None = None,
                created: dict | None = None, exit_mark: str | None = None,
                on_exit: Callable[[str, int], None] | None = None, attach: bool = False) -> Iterator[str]:
    """Stream the logs of all replicas as they start, until the workload is finished: its state
    is terminal, or `verdict(obj, pods)` says its pods have ended it (see kube.wait.wait_for), or
    (`exit_mark`, a Job's nonce) the outputs shim's exit line with code 0 came: `on_exit(pod,
    code)` is told, and the stream ends without waiting for the kubelet to report the exit.
    `created`: the workload as this process's create returned it; its pods are all younger, so
    both watches start at its resourceVersion instead of listing first. `attach` (a Job whose shim
    waits for its client, see fairing.kube.attach): each pod's output is read through an attach
    session from the moment it is bound to a node, before the kubelet serves its log; the log
    takes over, skipping what the session gave, if the session does not open before the pod
    shows the container running, or breaks before the exit line."""
    deadline = None if timeout is None else time.monotonic() + timeout
    since = ((created or {}).get("metadata") or {}).get("resourceVersion")
    streams = [Stream("owner", api_version, kind, name=name, resource_version=since),
               Stream("pods", "v1", "Pod", label_selector=pod_selector, resource_version=since)]
    stop = threading.Event()
    active: set[str] = set()
    started: set[str] = set()
    responses: dict[str, object] = {}
    finished_owner = False
    owner: dict | None = created if since else None
    pods: dict[str, dict] = {}
    drain_until: list[float] = []
    threads = []

    def current_deadline() -> float | None:
        ds = [d for d in (deadline, *drain_until) if d is not None]
        return min(ds) if ds else None

    halts: dict[str, threading.Event] = {}  # per replica: its follow stream is to be cut
    # Per pod with an attach session tried: "trying", "attached", "log" (the log path has it),
    # "log-pending" (the session broke: the log's turn once it serves), "abandoned" (never ran);
    # skips: how many lines a broken session gave (the log path starts after them).
    modes: dict[str, str] = {}
    skips: dict[str, int] = {}
    graces: dict[str, threading.Timer] = {}  # per attached pod shown terminated: cuts a stalled session
    lock = threading.Lock()

    with Mux(kube, namespace, streams) as mux:
        def opened(pname: str, resp) -> None:
            responses[pname] = resp
            if halts[pname].is_set():  # cut before it opened
                abort_response(resp)

        def late_tries(pname: str, cname: str) -> None:
            """The log path took `pname` over before a session opened: the last tries, with the
            container shown running (see LATE_TRIES). Only a real refusal is remembered: none of
            the tries opened, each failed in the handshake (an answer other than 101, 401 or 403)
            or the connection, and the pod still ran after them; not a pod that ended meanwhile,
            nor a follow that ended."""
            from . import attach as attachlib

            def running() -> bool:
                pod = pods.get(pname)
                return pod is not None and _started(pod, cname) and not _ended(pod, cname) \
                    and not finished_owner and not stop.is_set()

            why = None
            for _ in range(LATE_TRIES):
                if not running():
                    return
                try:
                    attachlib.open_session(kube, namespace, pname, cname).close()
                    return  # it opens after all (a race with the relist): the close lets the shim go on
                except attachlib.NotYet as e:
                    why = e
                except attachlib.Refused:
                    return  # RBAC's answer changed: the access review says so next time
                stop.wait(0.05)
            if running():
                log.debug("attach: no session to running pod %s in %d tries (%s): the next Jobs in %s "
                          "get no attach wait for a while", pname, LATE_TRIES, attachlib.describe(why), namespace)
                attachlib.remember_refused(kube, namespace)

        def attach_pump(pname: str, label: str, cname: str) -> None:
            """The pod's output through an attach session (see fairing.kube.attach): tried every
            50 ms from the pod's binding until it opens or the log path took the pod over."""
            from . import attach as attachlib

            pre = f"[{label}] " if prefix else ""
            given, said_exit, ws = 0, False, None
            tries = 0
            try:
                while not stop.is_set() and modes.get(pname) == "trying":
                    try:
                        ws = attachlib.open_session(kube, namespace, pname, cname)
                    except attachlib.NotYet:
                        tries += 1
                        # A long pull: slower tries after the first seconds (the shim waits anyway).
                        stop.wait(0.05 if tries < 100 else 0.25)
                        continue
                    except attachlib.Refused:
                        break
                    with lock:
                        if modes.get(pname) != "trying":
                            ws.close()  # the log path has the pod: the closed session lets the shim go on
                            return
                        modes[pname] = "attached"
                        responses[pname] = ws
                    break
                if ws is None and modes.get(pname) == "log":
                    late_tries(pname, cname)
                if ws is None or modes.get(pname) != "attached":
                    return
                attachlib.send_go(ws)
                for _ch, text in attachlib.lines(ws):
                    if (said := exit_line(text)) is not None:
                        if said[2]:
                            mux.put(("log", "LINE", pre + said[2]))
                        said_exit = True
                        if exit_mark is not None and said[0] == exit_mark:
                            mux.put(("exit", str(said[1]), pname))
                        continue
                    given += 1
                    mux.put(("log", "LINE", pre + text))
            except Exception as e:  # noqa: BLE001 - a broken session: the log path reads the rest
                log.debug("attach: the session to pod %s ended after %d lines, the log reads the rest: %s",
                          pname, given, attachlib.describe(e))
            finally:
                if ws is not None:
                    try:
                        ws.close(timeout=0.2)
                    except Exception:  # noqa: BLE001
                        pass
                with lock:
                    mine = modes.get(pname) in ("trying", "attached")
                if said_exit or stop.is_set():
                    mux.put(("logend", "END", pname))
                elif mine:  # refused, or broken before the exit line
                    mux.put(("attachend", str(given), pname))

        def pump(pname: str, label: str, cname: str) -> None:
            pre = f"[{label}] " if prefix else ""
            halt = halts[pname]
            skip = skips.pop(pname, 0)  # lines an attach session gave already
            # The newest line's time, how many lines had that very time, how many lines in all.
            last, dups, received = None, 0, 0
            try:
                for line in read_log(kube, pname, namespace, cname, follow=True, stop=halt, timestamps=True,
                                     on_open=lambda r: opened(pname, r), exit_lines=True):
                    stamp, text = _stamped(line)
                    last, dups = (stamp, dups + 1) if stamp == last else (stamp, 1)
                    received += 1
                    if (said := exit_line(text)) is not None:
                        if said[2]:
                            mux.put(("log", "LINE", pre + said[2]))
                        if exit_mark is not None and said[0] == exit_mark:
                            mux.put(("exit", str(said[1]), pname))
                        continue
                    if skip > 0:
                        skip -= 1
                        continue
                    mux.put(("log", "LINE", pre + text))
                if halt.is_set() and not stop.is_set():
                    # The container ended: its log file is complete, but the kubelet closes a follow
                    # stream only at its next check (up to 1 s after the last write). The lines
                    # after the last one received are read at once instead: from that line's
                    # second on, skipping what came already (all of it, counted, when a server
                    # gave no times).
                    since = None if last is None else _since_time(last[0])
                    for line in read_log(kube, pname, namespace, cname, timestamps=True, since_time=since, stop=stop,
                                         exit_lines=True):
                        stamp, text = _stamped(line)
                        if last is None and received > 0:
                            received -= 1
                            continue
                        if last is not None and stamp is not None and (stamp < last or (stamp == last and dups > 0)):
                            dups -= stamp == last
                            continue
                        said = exit_line(text)
                        if said is None and skip > 0:
                            skip -= 1
                            continue
                        if said is None or said[2]:
                            mux.put(("log", "LINE", pre + (text if said is None else said[2])))
            except LogsUnavailable as e:
                mux.put(("log", "LINE", f"{pre}({e.message}; {e.hint})"))
            except DeployError as e:
                mux.put(("log", "LINE", f"{pre}(log stream ended: {e.message})"))
            finally:
                mux.put(("logend", "END", pname))

        def ungrace(pname: str) -> None:
            timer = graces.get(pname)
            if timer is not None:
                timer.cancel()

        def abandon(pname: str) -> None:
            """Stop trying a session to a pod that will not run (gone, or the workload is over):
            it has nothing to drain."""
            with lock:
                if modes.get(pname) != "trying":
                    return
                modes[pname] = "abandoned"
            active.discard(pname)

        def finish() -> None:
            nonlocal finished_owner
            finished_owner = True
            drain_until.append(time.monotonic() + DRAIN_SECONDS)
            for pname in list(modes):
                abandon(pname)

        def start(pod: dict) -> None:
            pname = pod["metadata"]["name"]
            cname = container(pod) if callable(container) else container
            if pname in started:
                return
            if attach and pname not in modes and (pod.get("spec") or {}).get("nodeName") \
                    and not _started(pod, cname) and not finished_owner:
                # Bound to a node, not shown running yet: the session opens as soon as it runs.
                modes[pname] = "trying"
                active.add(pname)
                halts[pname] = threading.Event()
                t = threading.Thread(target=attach_pump, args=(pname, replica_name(pod), cname), daemon=True)
                threads.append(t)
                t.start()
                return
            if not _started(pod, cname):
                return
            with lock:
                if modes.get(pname) == "attached":
                    return  # the session has it
                modes[pname] = "log"
            started.add(pname)
            active.add(pname)
            halts[pname] = halts.get(pname) or threading.Event()
            t = threading.Thread(target=pump, args=(pname, replica_name(pod), cname), daemon=True)
            threads.append(t)
            t.start()

        try:
            for key, etype, ev in mux.events(current_deadline):
                if etype == "TIMEOUT":
                    return
                if key == "log":
                    yield ev
                    continue
                if key == "exit":
                    # The shim's last line: the command ended with this code and its outputs are
                    # kept (see image_runtime/outputs.py say_exit). Code 0 ends a Job that one pod
                    # decides; any other code waits for the Job's verdict (a retry may follow).
                    if etype == "0" and not finished_owner:
                        if on_exit is not None:
                            on_exit(ev, 0)
                        finish()
                        halts[ev].set()  # its pump reads what is left at once (see pump)
                        if modes.get(ev) != "attached":
                            # An attach session is not cut: it ends with the shim's exit, a few
                            # ms on, and a stderr line written just before the exit line may
                            # come after it (stdout and stderr are copied side by side).
                            abort_response(responses.get(ev))
                    continue
                if key == "attachend":
                    # No session, or it broke before the exit line: the log path reads the rest
                    # (after the lines the session gave), once the pod shows the container ran.
                    ungrace(ev)
                    with lock:
                        modes[ev] = "log-pending"
                    skips[ev] = int(etype)
                    if ev in pods:
                        if _ended(pods[ev], container(pods[ev]) if callable(container) else container):
                            halts[ev].set()  # its log is complete: its pump reads it at once (see pump)
                        start(pods[ev])
                    continue
                if key == "logend":
                    ungrace(ev)
                    active.discard(ev)
                elif key == "owner":
                    owner = ev
                    if not finished_owner and (etype == "DELETED" or state(ev) in terminal):
                        finish()
                        # Watches are not ordered with each other: pick up pods we haven't seen.
                        for p in kube.list("v1", "Pod", namespace, label_selector=pod_selector).get("items", []):
                            start(p)
                    elif not finished_owner and verdict is not None and pods \
                            and verdict(ev, list(pods.values())) in terminal:
                        finish()
                elif key == "pods":
                    pname = (ev.get("metadata") or {}).get("name")
                    if etype == "DELETED":
                        pods.pop(pname, None)
                        abandon(pname)
                    else:
                        pods[pname] = ev
                        start(ev)
                        ended = _ended(ev, container(ev) if callable(container) else container)
                        if pname in active and modes.get(pname) != "attached" and ended:
                            halts[pname].set()  # its pump reads the rest at once (see pump)
                            abort_response(responses.get(pname))
                        elif ended and pname in active and modes.get(pname) == "attached" and pname not in graces:
                            # A session normally ends with its container; one that has not within
                            # ATTACH_GRACE stalled: cut, it ends in "attachend" and the log reads on.
                            graces[pname] = threading.Timer(ATTACH_GRACE, abort_response, (responses.get(pname),))
                            graces[pname].daemon = True
                            graces[pname].start()
                        # Every pod of the workload is on this watch: its verdict needs no list.
                        if not finished_owner and verdict is not None and owner is not None \
                                and verdict(owner, list(pods.values())) in terminal:
                            finish()
                if finished_owner and not active:
                    return
        finally:
            stop.set()
            for timer in list(graces.values()):
                timer.cancel()
            for halt in list(halts.values()):
                halt.set()
            for resp in list(responses.values()):
                abort_response(resp)
