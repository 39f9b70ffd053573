"""The common kubeconfig, read and spoken to without the `kubernetes` package.

Importing the official client costs ~0.15-0.25 s on every `fair` command that talks to a cluster
(`fair list`: 0.37 s with it, 0.22 s without), and most kubeconfigs need none of it: a server, its CA, and a bearer token or a client certificate.
`load` reads exactly that case (one file, the chosen context, those keys and nothing else) and
`Transport` sends requests with urllib3, which the official client uses too, so the responses and
errors are the same objects. Anything else (exec plugins, auth-providers, basic auth, tokenFile,
proxies, impersonation, several files in KUBECONFIG, no CA: the official client then trusts
certifi's bundle) gives None, and fairing.kube.client uses the official loader, whose behaviour
those need."""
from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HTTPStatusError

_CLUSTER_KEYS = {"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify",
                 "extensions"}
_USER_KEYS = {"token", "client-certificate", "client-certificate-data", "client-key", "client-key-data",
              "extensions"}


@dataclass(frozen=True)
class Plain:
    """What a plain kubeconfig context says (PEM bytes, already read)."""
    server: str
    namespace: str | None
    context: str
    ca: bytes | None
    verify: bool
    token: str | None = field(repr=False)  # secrets: never in a repr or a log line
    cert: bytes | None = field(repr=False)
    key: bytes | None = field(repr=False)


def _named(items: Any, name: str | None, what: str) -> dict | None:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name and isinstance(item.get(what), dict):
            return item[what]
    return None


def _pem(section: dict, key: str, base: Path) -> bytes | None:
    if section.get(key + "-data"):
        return base64.b64decode(section[key + "-data"])
    if section.get(key):
        return (base / os.path.expanduser(section[key])).read_bytes()  # relative to the kubeconfig's folder
    return None


def load(path: str, context: str | None) -> Plain | None:
    """The plain case of one kubeconfig file, or None (see the module docstring)."""
    if os.pathsep in path:
        return None
    try:
        import yaml

        file = Path(path).expanduser()
        doc = yaml.safe_load(file.read_text())
        name = context or doc.get("current-context")
        ctx = _named(doc.get("contexts"), name, "context")
        if ctx is None:
            return None
        cluster = _named(doc.get("clusters"), ctx.get("cluster"), "cluster")
        user = _named(doc.get("users"), ctx.get("user"), "user") if ctx.get("user") else {}
        if cluster is None or user is None or set(cluster) - _CLUSTER_KEYS or set(user) - _USER_KEYS \
                or set(ctx) - {"cluster", "user", "namespace", "extensions"}:
            return None
        server = str(cluster.get("server") or "").rstrip("/")
        verify = not cluster.get("insecure-skip-tls-verify")
        ca = _pem(cluster, "certificate-authority", file.parent)
        if not server.startswith(("https://", "http://")) or (server.startswith("https://") and verify and not ca):
            return None
        cert, key = _pem(user, "client-certificate", file.parent), _pem(user, "client-key", file.parent)
        if bool(cert) != bool(key):
            return None
        return Plain(server, ctx.get("namespace"), name, ca, verify, user.get("token"), cert, key)
    except Exception:  # noqa: BLE001 - anything unexpected: the official loader says what is wrong
        return None


class Transport:
    """One urllib3 pool for every request of a Kube (keep-alive connections are reused)."""

    def __init__(self, plain: Plain, *, retries: int = 0):
        import ssl

        import urllib3

        self.server = plain.server
        self.headers = {"Authorization": f"Bearer {plain.token}"} if plain.token else {}
        self.ssl_context = None  # also the attach websocket's (fairing.kube.attach)
        kw: dict[str, Any] = {}
        if plain.server.startswith("https://"):
            ctx = ssl.create_default_context(cadata=plain.ca.decode() if plain.ca else None)
            if not plain.verify:
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                kw["cert_reqs"], kw["assert_hostname"] = "CERT_NONE", False
            if plain.cert:
                _load_cert_chain(ctx, plain.cert, plain.key)
            kw["ssl_context"] = self.ssl_context = ctx
        # As many connections as the official client keeps (5 per core): watches, log streams and
        # requests of one wait run side by side.
        self.pool = urllib3.PoolManager(num_pools=4, maxsize=(os.cpu_count() or 1) * 5, retries=retries, **kw)

    def send(self, method: str, path: str, *, query: list, headers: dict, body: Any,
             timeout: tuple[float, float]):
        """The unread urllib3 response of a 2xx answer; HTTPStatusError otherwise."""
        import json
        from urllib.parse import urlencode

        import urllib3

        url = self.server + path + (f"?{urlencode(query)}" if query else "")
        data = body if body is None or isinstance(body, (bytes, str)) else json.dumps(body)
        resp = self.pool.request(method, url, body=data, headers={**headers, **self.headers},
                                 timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                                 preload_content=False, redirect=False)
        if not 200 <= resp.status <= 299:
            payload = resp.read()
            resp.release_conn()
            raise HTTPStatusError(resp.status, resp.reason, payload)
        return resp


def _load_cert_chain(ctx, cert: bytes, key: bytes) -> None:
    """ssl loads a client certificate only from files: private ones, removed once loaded (the
    official client leaves its copies in /tmp until the process exits)."""
    with tempfile.TemporaryDirectory(prefix="fairing-kube-") as d:
        paths = []
        for name, data in (("cert.pem", cert), ("key.pem", key)):
            p = os.path.join(d, name)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            paths.append(p)
        ctx.load_cert_chain(*paths)
