"""A Job's output through the attach subresource, before the kubelet serves its log.

The kubelet serves a container's log only once its relist (every second) has seen the container
running, so a one-line script's output waits up to a second for it. Its attach handler asks the
runtime directly: a session opens as soon as the container runs. A Job its client follows gets
`stdin: true, stdinOnce: true` and FAIRING_ATTACH_WAIT (deployers/k8s/job.py); its outputs shim
waits (briefly) for "go" on stdin before starting the command (image_runtime/outputs.py
wait_for_go), so the session opened before "go" sees every line.

The websocket (subprotocol v4.channel.k8s.io: the first byte of each message is its channel, 0
stdin, 1 stdout, 2 stderr, 3 the final status) goes with fairing's own client (fairing.kube.plain:
token or client certificate); a kubeconfig that needs the official loader does not attach (its
Jobs get no attach wait), nor does an account without `create pods/attach` (asked once with a
SelfSubjectAccessReview, remembered for a while). A path that refuses the websocket although RBAC
allows it (a proxy or node that answers the upgrade with an error) is remembered the same way
(`remember_refused`), in this process and in a small file under $FAIRING_CACHE (each `fair`
command is a new process): the next Jobs there get no attach wait to pay."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from .client import Kube

log = logging.getLogger(__name__)

# How long the shim waits for "go" when its client will attach (seconds). A run nobody attaches
# to (the client died, the node refuses the session) starts that much later; an attach opens
# within ~0.1 s of the container's start.
ATTACH_WAIT = 3
SUBPROTOCOL = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, STATUS = 0, 1, 2, 3
# An account's answer is kept this long (a Role granted or revoked is seen at the next check).
ALLOWED_TTL = 300.0
_allowed: dict[tuple, tuple[float, bool]] = {}
_allowed_lock = threading.Lock()


class NotYet(Exception):
    """The session did not open: the container is not running yet (or the node is slow). `status`:
    the handshake's HTTP answer, None when the connection itself failed."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Refused(Exception):
    """The session will not open: no permission, or no client that can speak it."""


def can_attach(kube: Kube) -> bool:
    """This client can open an attach websocket itself (fairing.kube.plain's transport)."""
    return getattr(kube, "transport", None) is not None


def describe(e: BaseException) -> str:
    """An exception as one short line for a debug log: its type and message, with anything shaped
    like a credential (a bearer token, an Authorization header) blanked."""
    from ..messages import one_line

    text = one_line(f"{type(e).__name__}: {e}")
    text = re.sub(r"(?i)\b(bearer|basic)\s+[^\s,;'\"]+", r"\1 <redacted>", text)
    text = re.sub(r"(?i)\b(authorization|token|password)(['\"]?\s*[:=]\s*['\"]?)(?!bearer |basic )[^\s,;'\"]+",
                  r"\1\2<redacted>", text)
    return text[:300]


def _key(kube: Kube, namespace: str) -> tuple:
    return (kube.server, kube.source, namespace)


def _refusals() -> Path:
    from ..settings import cache_dir

    return cache_dir() / "attach-refused.json"


def _digest(key: tuple) -> str:
    # The file names no server, kubeconfig or namespace: a digest of the three is enough to match.
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]


def _read_refusals(path: Path) -> dict[str, float]:
    """{digest: when (wall clock)} of the refusals still within ALLOWED_TTL; {} if none or unreadable."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    now = time.time()
    if not isinstance(doc, dict):
        return {}
    return {k: float(t) for k, t in doc.items() if isinstance(t, (int, float)) and 0 <= now - t < ALLOWED_TTL}


def remember_refused(kube: Kube, namespace: str) -> None:
    """The session to a running container did not open through this server for this account and
    namespace although RBAC allows it (see logs.follow_logs): its Jobs get no attach wait for
    ALLOWED_TTL, as if the review had said no; the review is asked again after that. Kept in this
    process and in $FAIRING_CACHE/attach-refused.json, so the next `fair` commands know it too."""
    key = _key(kube, namespace)
    with _allowed_lock:
        _allowed[key] = (time.monotonic(), False)
    path = _refusals()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {**_read_refusals(path), _digest(key): time.time()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".attach-refused-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, path)  # whole or not at all: a concurrent reader sees the old or the new
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:  # a read-only cache: this process still remembers
        log.debug("attach: could not keep the refusal in %s: %s", path, describe(e))


def _refused_age(key: tuple) -> float | None:
    """Seconds since a process (any) kept this refusal, if within ALLOWED_TTL."""
    when = _read_refusals(_refusals()).get(_digest(key))
    return None if when is None else max(0.0, time.time() - when)


def allowed(kube: Kube, namespace: str) -> bool:
    """May this account attach to pods in `namespace`? False when this client cannot attach at all.
    One SelfSubjectAccessReview (~a round trip), remembered for ALLOWED_TTL per server, account
    and namespace: a Job gets the attach wait only when its client's session will open."""
    if not can_attach(kube):
        return False
    key = _key(kube, namespace)
    now = time.monotonic()
    with _allowed_lock:
        hit = _allowed.get(key)
    if hit is not None and now - hit[0] < ALLOWED_TTL:
        return hit[1]
    age = _refused_age(key)
    if age is not None:  # another process saw this path refuse the session: "no" for the rest of its TTL
        with _allowed_lock:
            _allowed[key] = (now - age, False)
        return False
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"namespace": namespace, "verb": "create", "resource": "pods",
                                              "subresource": "attach"}}}
    try:
        out = kube.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review,
                           timeout=5)
        ok = bool(((out or {}).get("status") or {}).get("allowed"))
    except Exception as e:  # noqa: BLE001 - no answer: no attach (the log path is always there)
        log.debug("attach: the access review in %s gave no answer, so no attach wait: %s", namespace, describe(e))
        ok = False
    with _allowed_lock:
        _allowed[key] = (now, ok)
    return ok


def open_session(kube: Kube, namespace: str, pod: str, container: str, *, timeout: float = 5.0):
    """An open attach websocket (stdin, stdout, stderr) to `container`. NotYet while the runtime
    has no running container; Refused when it never will open for this client."""
    import ssl
    from urllib.parse import quote

    import websocket

    t = getattr(kube, "transport", None)
    if t is None:
        raise Refused("the kubeconfig needs the official client's loader")
    url = (t.server.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
           + f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}/attach"
           + f"?container={quote(container)}&stdin=true&stdout=true&stderr=true")
    sslopt = {"context": t.ssl_context} if t.ssl_context is not None else {}
    if t.ssl_context is not None and t.ssl_context.verify_mode == ssl.CERT_NONE:
        sslopt.update(cert_reqs=ssl.CERT_NONE, check_hostname=False)
    try:
        return websocket.create_connection(url, header=[f"{k}: {v}" for k, v in t.headers.items()],
                                           subprotocols=[SUBPROTOCOL], sslopt=sslopt, timeout=timeout,
                                           enable_multithread=True)
    except websocket.WebSocketBadStatusException as e:
        if e.status_code in (401, 403):
            raise Refused(f"the API server answered {e.status_code}") from None
        raise NotYet(f"the API server answered {e.status_code}", e.status_code) from None
    except (OSError, websocket.WebSocketException) as e:
        raise NotYet(str(e) or type(e).__name__) from None


def send_go(ws) -> None:
    """The shim's word to start the command (see image_runtime/outputs.py wait_for_go)."""
    import websocket

    ws.send(bytes([STDIN]) + b"go\n", opcode=websocket.ABNF.OPCODE_BINARY)


def lines(ws) -> Iterator[tuple[int, str]]:
    """(channel, line) of the session's stdout and stderr as they come, until it closes: each
    complete line once; a last line with no newline only if the session ended cleanly (status
    received). Raises ConnectionError when the stream broke (what came is what was yielded)."""
    import websocket

    ws.settimeout(None)
    bufs = {STDOUT: b"", STDERR: b""}
    while True:
        try:
            op, data = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            raise ConnectionError("the attach session closed without its status") from None
        except (OSError, websocket.WebSocketException) as e:
            raise ConnectionError(f"the attach session broke: {e}") from None
        if op == websocket.ABNF.OPCODE_CLOSE:
            raise ConnectionError("the attach session closed without its status")
        if not data:
            continue
        channel, payload = data[0], data[1:]
        if channel == STATUS:
            for ch in (STDOUT, STDERR):
                if bufs[ch]:
                    yield ch, bufs[ch].decode("utf-8", "replace")
            return
        if channel not in bufs:
            continue
        bufs[channel] += payload
        while b"\n" in bufs[channel]:
            line, bufs[channel] = bufs[channel].split(b"\n", 1)
            yield channel, line.decode("utf-8", "replace")
