"""Registry credentials and the auth challenge dance (anonymous, Basic, Bearer token).

Credentials come from, in order: $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json (the explicit
choices), then ${XDG_RUNTIME_DIR}/containers/auth.json, ~/.config/containers/auth.json and
~/.docker/config.json. Docker's `credHelpers` and `credsStore` run `docker-credential-<name> get`.

Secrets never appear in logs, reprs or exception messages: errors name the file or helper a
credential came from, never its value."""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import BuildError
from .errors import Unauthorized, Unreachable
from .reference import DOCKER_HUB, is_loopback

log = logging.getLogger(__name__)

_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str = field(repr=False)
    password: str = field(repr=False)  # or a registry token when identity_token is set
    identity_token: str | None = field(default=None, repr=False)
    source: str = ""  # where they came from, for messages ("~/.docker/config.json", "helper pass")

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


@dataclass
class Lookup:
    """The result of looking for credentials: maybe some, plus notes for error hints."""

    credentials: Credentials | None = None
    notes: list[str] = field(default_factory=list)


# --- where credentials live ----------------------------------------------------------------------
def auth_files() -> list[Path]:
    files: list[Path] = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("DOCKER_CONFIG"):
        files.append(Path(os.environ["DOCKER_CONFIG"]) / "config.json")
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    home = Path.home()
    files.append(home / ".config" / "containers" / "auth.json")
    if not os.environ.get("DOCKER_CONFIG"):
        files.append(home / ".docker" / "config.json")
    seen, out = set(), []
    for f in files:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out


def credentials_fingerprint() -> tuple:
    """What the local credentials depend on (the files' paths, sizes and mtimes): a cached client
    is reused only while this stays the same, so a new `docker login` is seen at once."""
    out = []
    for f in auth_files():
        try:
            st = f.stat()
            out.append((str(f), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(f), None, None))
    return tuple(out)


def _norm_key(key: str) -> str:
    """`https://host:5000/v2/` -> `host:5000`; `host/ns/repo` stays (containers auth.json)."""
    k = re.sub(r"^[a-z]+://", "", key.strip()).rstrip("/")
    k = re.sub(r"/v[12]$", "", k)
    return k


def _candidates(registry: str, repository: str | None) -> list[str]:
    """Keys to try, most specific first: host/ns/repo, host/ns, host (plus Docker Hub aliases)."""
    hosts = [DOCKER_HUB, "index.docker.io", "registry-1.docker.io"] if registry == DOCKER_HUB else [registry]
    out = []
    for host in hosts:
        if repository:
            parts = repository.split("/")
            out += [f"{host}/{'/'.join(parts[:i])}" for i in range(len(parts), 0, -1)]
    return out + hosts


def run_helper(name: str, server: str, *, timeout: float = 30) -> Credentials | None:
    """`docker-credential-<name> get`; None when it has nothing for `server`."""
    exe = f"docker-credential-{name}"
    try:
        p = subprocess.run([exe, "get"], input=server.encode(), capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise LookupError(f"credential helper {exe} is not installed") from None
    except subprocess.TimeoutExpired:
        raise LookupError(f"credential helper {exe} did not answer within {timeout:.0f}s") from None
    if p.returncode != 0:
        out = (p.stdout + p.stderr).decode(errors="replace").lower()
        if "not found" in out or "no credentials" in out:
            return None
        # The helper's own output could echo a secret; report only the exit code.
        raise LookupError(f"credential helper {exe} failed (exit code {p.returncode})")
    try:
        data = json.loads(p.stdout)
        user, secret = data.get("Username", ""), data.get("Secret", "")
    except (ValueError, AttributeError):
        raise LookupError(f"credential helper {exe} printed something that is not JSON") from None
    if not secret:
        return None
    if user == "<token>":  # Docker's convention for an identity (refresh) token
        return Credentials("", "", identity_token=secret, source=f"credential helper {exe}")
    return Credentials(user, secret, source=f"credential helper {exe}")


def _from_entry(entry: dict, source: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("identitytoken"):
        return Credentials("", "", identity_token=entry["identitytoken"], source=source)
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise LookupError(f"the `auth` value in {source} is not valid base64 of user:password") from None
        return Credentials(user, password, source=source)
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"], source=source)
    return None


def find_credentials(registry: str, repository: str | None = None, *, helper: Callable = run_helper) -> Lookup:
    """Credentials for `registry` (as in a Reference, e.g. "docker.io", "127.0.0.1:5443")."""
    result = Lookup()
    keys = _candidates(registry, repository)
    server = "https://index.docker.io/v1/" if registry == DOCKER_HUB else registry
    for path in auth_files():
        try:
            cfg = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            result.notes.append(f"could not read {path}: {type(e).__name__}")
            continue
        if not isinstance(cfg, dict):
            continue
        try:
            helpers = cfg.get("credHelpers") or {}
            for key in keys:
                if key in helpers:
                    creds = helper(helpers[key], server)
                    if creds:
                        result.credentials = creds
                        return result
            auths = {_norm_key(k): v for k, v in (cfg.get("auths") or {}).items()}
            if registry == DOCKER_HUB:
                for alias in _HUB_KEYS:
                    if _norm_key(alias) in auths:
                        auths.setdefault(DOCKER_HUB, auths[_norm_key(alias)])
            if cfg.get("credsStore"):
                creds = helper(cfg["credsStore"], server)
                if creds:
                    result.credentials = creds
                    return result
            for key in keys:
                creds = _from_entry(auths.get(key), str(path))
                if creds:
                    result.credentials = creds
                    return result
        except LookupError as e:
            log.warning("%s", e)
            result.notes.append(str(e))
    return result


# --- credentials in Docker's formats (the one place that writes them) ------------------------------
def config_json(registry: str, creds: Credentials) -> bytes:
    """A Docker config.json holding only `creds`, for `registry`: what kaniko reads from
    /kaniko/.docker and what a kubernetes.io/dockerconfigjson pull secret holds."""
    if creds.identity_token:
        entry = {"identitytoken": creds.identity_token}
    else:
        entry = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    return json.dumps({"auths": {registry: entry}}, sort_keys=True).encode()


def engine_auth(registry: str, creds: Credentials) -> dict:
    """`creds` as the Engine API's X-Registry-Auth value (Docker and Podman read these keys)."""
    if creds.identity_token:
        return {"identitytoken": creds.identity_token, "serveraddress": registry}
    return {"username": creds.username, "password": creds.password, "serveraddress": registry}


# --- challenges and tokens -----------------------------------------------------------------------
_PARAM_RE = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="https://auth",service="reg",scope="repository:a:pull"` ->
    ("bearer", {"realm": ..., "service": ..., "scope": ...}). Commas inside quotes are kept."""
    header = (header or "").strip()
    scheme, _, rest = header.partition(" ")
    params = {}
    for m in _PARAM_RE.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return scheme.lower(), params


def may_send_credentials(url: str) -> bool:
    """Credentials (Basic or Bearer) go only over HTTPS, or plain HTTP to a loopback host."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return u.scheme == "https" or (u.scheme == "http" and is_loopback(u.netloc))


class TokenAuth:
    """Per-registry state: the challenge from /v2/, credentials (looked up lazily) and a cache of
    Bearer tokens per scope set."""

    def __init__(self, registry: str, repository: str | None, session, *, lookup: Callable[[], Lookup] | None = None):
        self.registry = registry
        self.session = session
        self.verify = None  # CA bundle for an HTTPS realm (set by the registry client)
        self._lookup_fn = lookup or (lambda: find_credentials(registry, repository))
        self._lookup: Lookup | None = None
        self.scheme: str | None = None  # None (anonymous), "basic" or "bearer"
        self.params: dict[str, str] = {}
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._lock = threading.Lock()

    @property
    def lookup(self) -> Lookup:
        if self._lookup is None:
            self._lookup = self._lookup_fn()
        return self._lookup

    @property
    def credentials(self) -> Credentials | None:
        return self.lookup.credentials

    def set_challenge(self, header: str | None) -> None:
        if not header:
            return
        scheme, params = parse_challenge(header)
        if scheme in ("basic", "bearer"):
            with self._lock:
                if scheme != self.scheme or params.get("realm") != self.params.get("realm"):
                    self._tokens.clear()
                self.scheme, self.params = scheme, params

    def invalidate(self, scopes: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop(scopes, None)

    def header(self, scopes: tuple[str, ...], url: str) -> str | None:
        """The Authorization value for a request to `url` needing `scopes`, or None."""
        if self.scheme is None or not may_send_credentials(url):
            return None
        if self.scheme == "basic":
            creds = self.credentials
            return creds.basic_header() if creds and not creds.identity_token else None
        with self._lock:
            cached = self._tokens.get(scopes)
            if cached and cached[1] > time.monotonic():
                return f"Bearer {cached[0]}"
        token, ttl = self._fetch_token(scopes)
        with self._lock:
            self._tokens[scopes] = (token, time.monotonic() + max(ttl - 10, 5))
        return f"Bearer {token}"

    def _fetch_token(self, scopes: tuple[str, ...]) -> tuple[str, float]:
        import requests

        realm = self.params.get("realm")
        if not realm:
            raise BuildError(f"registry {self.registry} asked for a Bearer token but named no realm", hint="check the registry's auth configuration")
        creds = self.credentials
        send_creds = creds is not None and may_send_credentials(realm)
        if creds is not None and not send_creds:
            log.warning("not sending credentials for %s to plain-HTTP token realm %s", self.registry, realm)
        service = self.params.get("service")
        try:
            if send_creds and creds.identity_token:
                data = {"grant_type": "refresh_token", "refresh_token": creds.identity_token, "client_id": "fairing", "scope": " ".join(scopes)}
                if service:
                    data["service"] = service
                r = self.session.post(realm, data=data, timeout=30, verify=self.verify)
            else:
                params = [("scope", s) for s in scopes]
                if service:
                    params.insert(0, ("service", service))
                if send_creds:
                    params.append(("account", creds.username))
                headers = {"Authorization": creds.basic_header()} if send_creds else {}
                r = self.session.get(realm, params=params, headers=headers, timeout=30, verify=self.verify)
        except requests.RequestException as e:
            raise Unreachable(f"cannot reach the token server of {self.registry} ({_host_of(realm)}): {type(e).__name__}", hint="check the network and the registry's auth realm") from None
        if r.status_code in (401, 403):
            raise Unauthorized(
                f"the token server of {self.registry} refused {'the credentials from ' + creds.source if send_creds else 'anonymous access'} (HTTP {r.status_code})",
                hint=self.login_hint(),
            )
        if r.status_code != 200:
            raise BuildError(f"the token server of {self.registry} answered HTTP {r.status_code}", hint="retry later; check the registry's auth service")
        try:
            body = r.json()
            token = body.get("token") or body.get("access_token")
            ttl = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError):
            raise BuildError(f"the token server of {self.registry} sent a response that is not JSON", hint="check the registry's auth realm") from None
        if not token:
            raise BuildError(f"the token server of {self.registry} sent no token", hint="check the registry's auth service")
        return token, ttl

    def login_hint(self) -> str:
        notes = "; ".join(self.lookup.notes)
        hint = f"run `podman login {self.registry}` or `docker login {self.registry}` (or set DOCKER_CONFIG / REGISTRY_AUTH_FILE)"
        return f"{hint}; {notes}" if notes else hint


def _host_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc
