"""A small real HTTP proxy that sits in front of a real registry and throttles it.

The first `failures` requests (any method and path, or those `match` selects) are answered by the proxy itself with 429 or
503 (alternating, starting with `statuses[0]`) and a `Retry-After` header; every other request is
forwarded byte for byte to the upstream registry, keeping the client's Host header so the
registry's Location headers point back through the proxy. Every request is recorded with its
arrival time (`retry_after` may be a callable, evaluated per answer, e.g. for an HTTP-date), so a test can check the client waited as long as it was told to.

This is a real network part, not a mock: the builder talks HTTP to it exactly as it would to a
registry behind a rate-limiting load balancer (a real registry cannot be made to throttle on demand).
"""
from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "content-length"}


@dataclass(frozen=True)
class Hit:
    at: float  # time.monotonic() when the request line arrived
    method: str
    path: str
    status: int
    injected: bool
    auth: str = ""  # a short hash of the Authorization header ("" without one): never the secret itself


class ThrottlingProxy:
    def __init__(self, upstream_url: str, *, failures: int, retry_after: str = "1",
                 statuses: tuple[int, ...] = (429, 503), match=None):
        self.upstream = urlsplit(upstream_url).netloc
        self.failures = failures
        # (method, path) -> bool: which requests may be throttled (default: any).
        self.match = match or (lambda method, path: True)
        self.retry_after = retry_after
        self.statuses = statuses
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean; self.hits is the log
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                at = time.monotonic()
                body = self._body()
                auth = self.headers.get("Authorization") or ""
                auth = hashlib.sha256(auth.encode()).hexdigest()[:12] if auth else ""
                with proxy._lock:
                    n = sum(1 for h in proxy.hits if h.injected)
                    inject = n < proxy.failures and proxy.match(self.command, self.path)
                    status = proxy.statuses[n % len(proxy.statuses)] if inject else 0
                    if inject:
                        proxy.hits.append(Hit(at, self.command, self.path, status, True))
                if inject:
                    code = "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE"
                    payload = json.dumps({"errors": [{"code": code, "message": "slow down"}]}).encode()
                    self.send_response(status)
                    ra = proxy.retry_after
                    self.send_header("Retry-After", ra() if callable(ra) else ra)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST", "PATCH") else None,
                                 headers=headers)
                    resp = conn.getresponse()
                    data = resp.read() if self.command != "HEAD" else b""
                    with proxy._lock:  # recorded before the client sees the answer
                        proxy.hits.append(Hit(at, self.command, self.path, resp.status, False, auth))
                    self.send_response(resp.status, resp.reason)
                    length = resp.getheader("Content-Length")
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP_BY_HOP:
                            self.send_header(k, v)
                    # HEAD keeps the upstream length (a blob's size); otherwise the bytes we hold.
                    self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(data)))
                    self.end_headers()
                    if data:
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="throttling-proxy", daemon=True)
        self._thread.start()

    @property
    def injected(self) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.injected]

    def waits_after_throttling(self) -> list[float]:
        """For each throttled answer, how long until the next request arrived (the client's wait;
        meaningful when the client sends one request at a time)."""
        with self._lock:
            hits = sorted(self.hits, key=lambda h: h.at)
        out = []
        for i, h in enumerate(hits):
            if h.injected and i + 1 < len(hits):
                out.append(hits[i + 1].at - h.at)
        return out

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "ThrottlingProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
