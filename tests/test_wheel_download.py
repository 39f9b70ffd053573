"""The wheel downloader against a real HTTP server that drops connections or answers 503 before it
serves the file: a cold build retries (dozens of wheels, one hiccup must not fail it); a 404 and
a wrong sha256 fail at once with a clear error."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading

import pytest

from fairing.builders.deps.resolve import Wheel
from fairing.builders.deps.wheels import download
from fairing.errors import BuildError
from fairing.oci.cache import Cache

BODY = b"PK\x03\x04 not really a wheel, but bytes with a known sha256" * 1000


def serve(plan: list[str]):
    """An HTTP server answering each GET by the next word of `plan`: "drop" (close the socket
    mid-response), "503", "404" or "ok"."""
    calls: list[str] = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            what = plan[len(calls)] if len(calls) < len(plan) else "ok"
            calls.append(what)
            if what == "drop":
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY[:100])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if what in ("503", "404"):
                self.send_response(int(what))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, calls


def wheel(url: str, body: bytes = BODY) -> Wheel:
    return Wheel("demo", "1.0", "demo-1.0-py3-none-any.whl", url, hashlib.sha256(body).hexdigest(), len(body))


def test_a_dropped_connection_and_a_503_are_retried(tmp_path):
    srv, calls = serve(["drop", "503", "ok"])
    try:
        w = wheel(f"http://127.0.0.1:{srv.server_port}/demo.whl")
        got = download([w], Cache(tmp_path / "cache"))
    finally:
        srv.shutdown()
    assert calls == ["drop", "503", "ok"]
    assert got[w.sha256].read_bytes() == BODY  # the partial first attempt left nothing behind


def test_a_404_fails_at_once_and_a_persistent_failure_says_how_often_it_tried(tmp_path):
    srv, calls = serve(["404"])
    try:
        with pytest.raises(BuildError, match=r"downloading demo-1.0-py3-none-any.whl failed: HTTP 404"):
            download([wheel(f"http://127.0.0.1:{srv.server_port}/demo.whl")], Cache(tmp_path / "a"))
        assert calls == ["404"]
    finally:
        srv.shutdown()
    srv, calls = serve(["drop"] * 10)
    try:
        with pytest.raises(BuildError, match=r"failed \(\w+, 4 tries\)"):
            download([wheel(f"http://127.0.0.1:{srv.server_port}/demo.whl")], Cache(tmp_path / "b"))
        assert calls == ["drop"] * 4
    finally:
        srv.shutdown()
    assert not list((tmp_path / "b").rglob("*.whl"))  # nothing half-written stays in the cache
