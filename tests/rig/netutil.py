"""Minimal registry HTTP for the rig's own health checks (stdlib only, so the rig never depends
on the code it is testing). Handles Basic and the Bearer challenge/token dance."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def _ssl_context(ca_file: str | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def request(url: str, *, method: str = "GET", headers: dict | None = None, data: bytes | None = None,
            ca_file: str | None = None, timeout: float = 10) -> Response:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_ssl_context(ca_file)) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def parse_challenge(value: str) -> tuple[str, dict]:
    scheme, _, rest = value.partition(" ")
    params = {}
    for part in _split_params(rest):
        k, _, v = part.partition("=")
        params[k.strip()] = v.strip().strip('"')
    return scheme.lower(), params


def _split_params(s: str) -> list[str]:
    out, cur, quoted = [], "", False
    for ch in s:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


def fetch_token(challenge: dict, username: str | None, password: str | None,
                ca_file: str | None = None) -> str:
    query = {"service": challenge.get("service", "")}
    if challenge.get("scope"):
        query["scope"] = challenge["scope"]
    headers = {"Authorization": basic(username, password)} if username else {}
    r = request(challenge["realm"] + "?" + urllib.parse.urlencode(query), headers=headers,
                ca_file=ca_file)
    if r.status != 200:
        raise PermissionError(f"token server answered {r.status}")
    body = r.json()
    return body.get("token") or body["access_token"]


def registry_request(url: str, *, method: str = "GET", headers: dict | None = None,
                     data: bytes | None = None, username: str | None = None,
                     password: str | None = None, ca_file: str | None = None) -> Response:
    """One request, retried once with whatever auth the registry's 401 challenge asks for."""
    headers = dict(headers or {})
    r = request(url, method=method, headers=headers, data=data, ca_file=ca_file)
    if r.status != 401 or username is None:
        return r
    scheme, params = parse_challenge(r.headers.get("www-authenticate", ""))
    if scheme == "basic":
        headers["Authorization"] = basic(username, password)
    elif scheme == "bearer":
        headers["Authorization"] = "Bearer " + fetch_token(params, username, password, ca_file)
    else:
        return r
    return request(url, method=method, headers=headers, data=data, ca_file=ca_file)


def node_ip() -> str:
    """This machine's own IPv4 address (not loopback): the real node's InternalIP, where pods
    reach the API server and cluster DNS. $FAIRING_NODE_IP overrides; otherwise the address of the
    default route's interface, else the first global address. Nothing is sent to find it."""
    import os

    override = os.environ.get("FAIRING_NODE_IP")
    return override or _node_ip_cached()


def _global_addrs() -> list[tuple[str, str]]:
    import subprocess

    out = subprocess.run(["ip", "-j", "-4", "addr", "show", "scope", "global"], capture_output=True,
                         text=True, check=False).stdout or "[]"
    return [(i["ifname"], a["local"]) for i in json.loads(out) for a in i.get("addr_info", [])
            if a.get("family") == "inet"]


_NODE_IP: list[str] = []


def _node_ip_cached() -> str:
    import subprocess

    if _NODE_IP:
        return _NODE_IP[0]
    routes = json.loads(subprocess.run(["ip", "-j", "-4", "route", "show", "default"], capture_output=True,
                                       text=True, check=False).stdout or "[]")
    addrs = _global_addrs()
    dev = routes[0].get("dev") if routes else None
    # Bridges of container engines (and our own pod bridge) are not the machine's address.
    skip = ("cni", "podman", "docker", "fairing", "veth", "virbr")
    pick = [a for i, a in addrs if i == dev] or [a for i, a in addrs if not i.startswith(skip)]
    if not pick:
        raise OSError("no non-loopback IPv4 address on this machine; set FAIRING_NODE_IP")
    _NODE_IP.append(pick[0])
    return pick[0]
