"""A private Python package index for tests: PEP 503 simple pages and wheel files over HTTPS, with
a CA of its own (not the rig's), as a company's PyPI mirror behind a corporate CA would be.

Stdlib only (http.server + ssl), started per test on a free loopback port; it records the paths it
served so a test can tell that the index, not a cache, answered.
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import io
import ssl
import subprocess
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


def make_ca_and_server_cert(d: Path, cn: str) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key): a fresh CA and a certificate for 127.0.0.1 it signs."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = d / "ca.key", d / "ca.crt"
    key, csr, crt, ext = d / "server.key", d / "server.csr", d / "server.crt", d / "server.ext"

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-sha256", "-days", "30",
            "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", str(ca_key), "-out", str(ca_crt))
    openssl("req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", str(key), "-subj", "/CN=127.0.0.1",
            "-out", str(csr))
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "30", "-sha256", "-extfile", str(ext), "-out", str(crt))
    return ca_crt, crt, key


def make_wheel(out: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A pure-Python wheel (py3-none-any) holding `files`, with a valid RECORD."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = out / f"{dist}-py3-none-any.whl"
    entries = dict(files)
    entries[f"{dist}.dist-info/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    entries[f"{dist}.dist-info/WHEEL"] = "Wheel-Version: 1.0\nGenerator: fairing-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for rel, text in entries.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    entries[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for rel, text in entries.items():
            z.writestr(rel, text)
    return path


@dataclass
class Index:
    url: str          # https://127.0.0.1:PORT/simple
    ca_file: Path     # the CA that signs the server's certificate (and nothing else)
    served: list[str] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()


def serve(root: Path, wheels: list[Path]) -> Index:
    """Serve `wheels` as a PEP 503 index over TLS on a free port; stop() when done."""
    ca, crt, key = make_ca_and_server_cert(root / "pki", "fairing test private index CA")
    pages: dict[str, bytes] = {}
    files = {f"/files/{w.name}": w.read_bytes() for w in wheels}
    projects: dict[str, list[Path]] = {}
    for w in wheels:
        projects.setdefault(w.name.split("-")[0].replace("_", "-").lower(), []).append(w)
    pages["/simple/"] = ("<html><body>" + "".join(f'<a href="/simple/{p}/">{p}</a>' for p in projects)
                         + "</body></html>").encode()
    for p, ws in projects.items():
        links = "".join(f'<a href="/files/{w.name}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">{w.name}</a>'
                        for w in ws)
        pages[f"/simple/{p}/"] = f"<html><body>{links}</body></html>".encode()
    index = Index("", ca)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            path = self.path.split("?")[0].split("#")[0]
            if not path.endswith("/") and path + "/" in pages:
                path += "/"
            body = pages.get(path) or files.get(path)
            index.served.append(path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if path in pages else "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(crt), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    index.url = f"https://127.0.0.1:{server.server_address[1]}/simple"
    index._server = server
    return index
