"""OCI registries for tests: Debian's `docker-registry` (CNCF distribution 2.8).

Shared, long-lived instances (started once, reused by every test session):
- plain:  http://127.0.0.1:5000                               no auth
- secure: https://127.0.0.1:5443  (rig CA)                    htpasswd (bcrypt) basic auth
- token:  http://127.0.0.1:5446   + token server :5445         Bearer tokens (ES256 JWT)
`start_registry()` makes private instances (child processes) for fault tests that stop/restart a
registry or need a clean store.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import netutil
from .certs import ensure_certs
from .state import (RigError, Service, free_port, log_tail, rig_dir, rig_lock, run,
                    service_env, wait_until)

REGISTRY_BIN = "/usr/bin/docker-registry"
PLAIN_PORT, SECURE_PORT, TOKEN_SERVER_PORT, TOKEN_PORT = 5000, 5443, 5445, 5446
TOKEN_SERVICE = "fairing-rig-registry"
TOKEN_ISSUER = "fairing-rig-token-server"
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Registry:
    host: str
    url: str


@dataclass(frozen=True)
class SecureRegistry(Registry):
    username: str
    password: str = field(repr=False)
    ca_file: str


@dataclass(frozen=True)
class TokenRegistry(Registry):
    username: str
    password: str = field(repr=False)
    realm: str
    service: str
    # A second identity that may only pull, for "push denied" tests.
    reader_username: str
    reader_password: str = field(repr=False)


# --- configuration -------------------------------------------------------------------------------
def credentials() -> dict:
    """Per-machine random passwords, created once (0600); nothing hard-coded to leak or reuse."""
    path = rig_dir() / "credentials.json"
    with rig_lock():
        if path.exists():
            return json.loads(path.read_text())
        creds = {
            "secret": secrets.token_hex(16),
            "secure": {"username": "fairing", "password": secrets.token_urlsafe(18)},
            "token": {"username": "fairing", "password": secrets.token_urlsafe(18)},
            "token_reader": {"username": "reader", "password": secrets.token_urlsafe(18)},
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds, f)
        return creds


def write_htpasswd(path: Path, username: str, password: str) -> None:
    # -i reads the password from stdin: never on a command line where `ps` would show it.
    run(["htpasswd", "-B", "-i", "-c", str(path), username], input=password.encode(),
        what="rig: htpasswd file")


def registry_config(data_dir: Path, port: int, *, secret: str, tls: tuple[Path, Path] | None = None,
                    htpasswd: Path | None = None, token: dict | None = None, bind: str = "127.0.0.1") -> dict:
    http: dict = {"addr": f"{bind}:{port}", "secret": secret,
                  "headers": {"X-Content-Type-Options": ["nosniff"]}}
    if tls:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config = {
        "version": 0.1,
        # warn: per-request "response completed" lines would double the log; the access log stays.
        "log": {"level": "warn", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(data_dir)},
                    "delete": {"enabled": True},
                    "cache": {"blobdescriptor": "inmemory"},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "http": http,
    }
    if htpasswd:
        config["auth"] = {"htpasswd": {"realm": "fairing-rig", "path": str(htpasswd)}}
    elif token:
        config["auth"] = {"token": token}
    return config


def _write_config(path: Path, config: dict) -> bool:
    """Write if changed; True when the file changed (a running instance must restart)."""
    text = yaml.safe_dump(config, sort_keys=True)
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    path.chmod(0o600)
    return True


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- health --------------------------------------------------------------------------------------
def _is_registry(url: str, expect: int, ca_file: str | None = None, bearer: bool = False,
                 timeout: float = 3) -> bool:
    r = netutil.request(url + "/v2/", ca_file=ca_file, timeout=timeout)
    if r.status != expect or r.headers.get("docker-distribution-api-version") != "registry/2.0":
        return False
    return not bearer or r.headers.get("www-authenticate", "").startswith("Bearer ")


# --- shared instances ----------------------------------------------------------------------------
def _service(name: str, config: Path) -> Service:
    return Service(f"registry-{name}", [REGISTRY_BIN, "serve", str(config)])


def _instance_dir(name: str) -> Path:
    d = rig_dir() / f"registry-{name}"
    (d / "data").mkdir(parents=True, exist_ok=True)
    return d


def _ensure(name: str, port: int, config: dict, healthy) -> None:
    d = _instance_dir(name)
    svc = _service(name, d / "config.yml")
    if _write_config(d / "config.yml", config):
        svc.stop()
    if not Path(REGISTRY_BIN).exists():
        raise RigError(f"{REGISTRY_BIN} is missing: install the docker-registry package "
                       "(./scripts/setup does)")
    svc.ensure(healthy, port=port)


def ensure_plain() -> Registry:
    with rig_lock():
        creds = credentials()
        d = _instance_dir("plain")
        url = f"http://127.0.0.1:{PLAIN_PORT}"
        # On every address (from main): pods keep their outputs in it at NODE_IP:5000.
        _ensure("plain", PLAIN_PORT, registry_config(d / "data", PLAIN_PORT, secret=creds["secret"], bind="0.0.0.0"),
                lambda: _is_registry(url, 200))
    return Registry(host=f"127.0.0.1:{PLAIN_PORT}", url=url)


def ensure_secure() -> SecureRegistry:
    with rig_lock():
        creds, certs = credentials(), ensure_certs()
        d = _instance_dir("secure")
        user = creds["secure"]
        htpasswd = d / "htpasswd"
        stamp = d / "htpasswd.for"
        # Regenerate only when the credentials changed (bcrypt output is salted, so compare inputs).
        want = _digest(f"{user['username']}:{user['password']}")
        if not htpasswd.exists() or not stamp.exists() or stamp.read_text() != want:
            write_htpasswd(htpasswd, user["username"], user["password"])
            stamp.write_text(want)
            _service("secure", d / "config.yml").stop()
        url = f"https://127.0.0.1:{SECURE_PORT}"
        config = registry_config(d / "data", SECURE_PORT, secret=creds["secret"],
                                 tls=(certs.server_cert, certs.server_key), htpasswd=htpasswd)
        _ensure("secure", SECURE_PORT, config,
                lambda: _is_registry(url, 401, ca_file=str(certs.ca_cert)))
    return SecureRegistry(host=f"127.0.0.1:{SECURE_PORT}", url=url, username=user["username"],
                          password=user["password"], ca_file=str(certs.ca_cert))


def _token_server_config(certs) -> Path:
    creds = credentials()
    config = {
        "port": TOKEN_SERVER_PORT, "issuer": TOKEN_ISSUER, "service": TOKEN_SERVICE,
        "key": str(certs.token_key), "cert": str(certs.token_cert),
        "users": {
            creds["token"]["username"]: {"password": creds["token"]["password"],
                                         "actions": ["pull", "push", "delete", "*"]},
            creds["token_reader"]["username"]: {"password": creds["token_reader"]["password"],
                                                "actions": ["pull"]},
        },
    }
    path = rig_dir() / "tokenserver.json"
    text = json.dumps(config, indent=1, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return path


def ensure_token() -> TokenRegistry:
    with rig_lock():
        creds, certs = credentials(), ensure_certs()
        realm = f"http://127.0.0.1:{TOKEN_SERVER_PORT}/token"
        config_path = _token_server_config(certs)
        # Run with this interpreter from the repo root so `tests.rig` imports without installing.
        tokens = Service("tokenserver", [sys.executable, "-m", "tests.rig.tokenserver",
                                         str(config_path)], cwd=_REPO_ROOT)
        stamp = rig_dir() / "tokenserver.stamp"
        code_id = _digest(Path(__file__).with_name("tokenserver.py").read_text() +
                          config_path.read_text())
        if stamp.exists() and stamp.read_text() != code_id:
            tokens.stop()  # code or users changed since it started
        tokens.ensure(lambda: netutil.request(f"http://127.0.0.1:{TOKEN_SERVER_PORT}/healthz",
                                              timeout=3).status == 200, port=TOKEN_SERVER_PORT)
        stamp.write_text(code_id)
        d = _instance_dir("token")
        url = f"http://127.0.0.1:{TOKEN_PORT}"
        config = registry_config(d / "data", TOKEN_PORT, secret=creds["secret"], token={
            "realm": realm, "service": TOKEN_SERVICE, "issuer": TOKEN_ISSUER,
            "rootcertbundle": str(certs.ca_cert)})
        _ensure("token", TOKEN_PORT, config, lambda: _is_registry(url, 401, bearer=True))
    return TokenRegistry(host=f"127.0.0.1:{TOKEN_PORT}", url=url,
                         username=creds["token"]["username"], password=creds["token"]["password"],
                         realm=realm, service=TOKEN_SERVICE,
                         reader_username=creds["token_reader"]["username"],
                         reader_password=creds["token_reader"]["password"])


def stop_shared() -> list[str]:
    stopped = []
    with rig_lock():
        for name in ("plain", "secure", "token"):
            if _service(name, _instance_dir(name) / "config.yml").stop():
                stopped.append(f"registry-{name}")
        if Service("tokenserver", [sys.executable]).stop():
            stopped.append("tokenserver")
    return stopped


# --- private instances for fault tests ---------------------------------------------------------
class RegistryProcess:
    """A registry owned by one test: same port and storage across stop()/start()."""

    def __init__(self, root: Path, port: int, tls: bool, auth: bool):
        self.root = root
        self.port = port
        self.tls = tls
        self.auth = auth
        self.host = f"127.0.0.1:{port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self.data_dir = root / "data"
        self.log = root / "registry.log"
        self.username: str | None = None
        self.password: str | None = None
        self.ca_file: str | None = None
        self._proc: subprocess.Popen | None = None
        self._write_config()

    def _write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        tls = htpasswd = None
        if self.tls:
            certs = ensure_certs()
            tls = (certs.server_cert, certs.server_key)
            self.ca_file = str(certs.ca_cert)
        if self.auth:
            self.username, self.password = "tester", secrets.token_urlsafe(12)
            htpasswd = self.root / "htpasswd"
            write_htpasswd(htpasswd, self.username, self.password)
        config = registry_config(self.data_dir, self.port, secret=secrets.token_hex(8), tls=tls,
                                 htpasswd=htpasswd)
        (self.root / "config.yml").write_text(yaml.safe_dump(config))

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "RegistryProcess":
        if self.running:
            return self
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.root / "config.yml")],
                                          stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=service_env())
        expect = 401 if self.auth else 200
        wait_until(lambda: _is_registry(self.url, expect, ca_file=self.ca_file, timeout=0.5),
                   timeout=20,
                   what=f"private registry on {self.host}", log=self.log,
                   alive=lambda: self.running)
        return self

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def log_tail(self, lines: int = 25) -> str:
        return log_tail(self.log, lines)

    def __enter__(self) -> "RegistryProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RegistryProcess({self.url}, running={self.running})"


def start_registry(tmp_path, port: int | None = None, tls: bool = False,
                   auth: bool = False) -> RegistryProcess:
    """Start a private registry under `tmp_path` (child of this process; stopped at exit)."""
    handle = RegistryProcess(Path(tmp_path) / f"registry-{port or 'auto'}-{secrets.token_hex(3)}",
                             port or free_port(), tls, auth)
    handle.start()
    atexit.register(handle.stop)
    return handle
