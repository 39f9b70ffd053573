"""The registry client against the rig's real registries: plain HTTP, TLS + basic auth, Bearer
tokens, index resolution, both manifest formats, mounts, chunked uploads, digest checks, retries."""
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from fairing.errors import BuildError
from fairing.oci.image import DOCKER_LAYER, DOCKER_MANIFEST, OCI_LAYER, OCI_MANIFEST
from fairing.oci.registry import RegistryClient

REPO = "fairing/python"


def _repo(prefix="oci") -> str:
    return f"test/{prefix}-{uuid.uuid4().hex[:10]}"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def no_ambient_creds(tmp_path, monkeypatch):
    """Only credentials a test writes are found (not the machine's ~/.docker or auth.json)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def docker_config(tmp_path: Path, monkeypatch, host: str, username: str, password: str) -> Path:
    d = tmp_path / "docker-config"
    d.mkdir(exist_ok=True)
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    (d / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    return d


# --- reading ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("tag,media_type,layer_type", [("3.11", DOCKER_MANIFEST, DOCKER_LAYER), ("3.11-oci", OCI_MANIFEST, OCI_LAYER)])
def test_resolve_both_manifest_formats(registry, base_image, tag, media_type, layer_type):
    c = RegistryClient(registry.host)
    manifest, digest, config = c.resolve(REPO, tag, "linux/amd64")
    assert manifest["mediaType"] == media_type
    assert {x["mediaType"] for x in manifest["layers"]} == {layer_type}
    cfg = json.loads(config)
    assert cfg["config"]["Labels"]["org.fairing.python"] == "3.11"
    assert len(cfg["rootfs"]["diff_ids"]) == len(manifest["layers"])
    assert digest == base_image.digests.get(f"{registry.host}/{REPO}:{tag}", digest)
    assert c.base_url == f"http://{registry.host}"  # plain HTTP on loopback works without options


@pytest.mark.parametrize("tag", ["3.11-multi", "3.11-list"])
def test_index_resolution_by_platform(registry, base_image, tag):
    c = RegistryClient(registry.host)
    _, amd_digest, amd_cfg = c.resolve(REPO, tag, "linux/amd64")
    _, arm_digest, arm_cfg = c.resolve(REPO, tag, "linux/arm64")
    assert json.loads(amd_cfg)["architecture"] == "amd64"
    assert json.loads(arm_cfg)["architecture"] == "arm64"
    assert amd_digest != arm_digest
    with pytest.raises(BuildError, match="no image for platform linux/s390x") as e:
        c.resolve(REPO, tag, "linux/s390x")
    assert "linux/amd64" in e.value.hint


def test_a_tag_pinned_in_this_process_is_known_without_asking_again(registry, base_image):
    """What a run record takes as the base's digest: the one the build pinned the tag to."""
    from fairing.oci.registry import client_for, pinned

    digest = client_for(registry.host).pin(REPO, "3.11-oci")
    assert digest == RegistryClient(registry.host).manifest_digest(REPO, "3.11-oci")
    assert pinned(registry.host, REPO, "3.11-oci") == digest
    assert pinned(registry.host, REPO, "no-such-tag") is None
    assert pinned("127.0.0.1:1", REPO, "3.11-oci") is None  # another registry's pins are not this one's


def test_missing_image_is_a_clear_error(registry, base_image):
    with pytest.raises(BuildError, match="not found") as e:
        RegistryClient(registry.host).resolve(REPO, "no-such-tag", "linux/amd64")
    assert e.value.hint


def test_unreachable_registry_is_a_clear_error():
    c = RegistryClient("127.0.0.1:1", retries=1, backoff=0.01)
    with pytest.raises(BuildError, match="cannot connect to registry 127.0.0.1:1"):
        c.get_manifest("x/y", "latest")


def test_a_loopback_registry_is_asked_over_plain_http_first(registry, secure_registry, no_ambient_creds):
    """The first bytes a fresh client sends to a plain-HTTP loopback registry are an HTTP request,
    not a TLS hello (no TLS setup before the first push); a TLS registry on loopback still works."""
    import socket

    first: list[bytes] = []
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        for _ in range(2):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(4096)
                first.append(data)
                if data.startswith(b"GET "):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert RegistryClient(f"127.0.0.1:{port}", retries=0).base_url == f"http://127.0.0.1:{port}"
    finally:
        srv.close()
    assert len(first) == 1 and first[0].startswith(b"GET /v2/ HTTP/1.1"), first
    c = RegistryClient(secure_registry.host, ca_file=secure_registry.ca_file)
    assert c.base_url == f"https://{secure_registry.host}"


# --- writing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunked", [False, True])
def test_upload_head_and_fetch_blob(registry, chunked):
    c = RegistryClient(registry.host, chunk_threshold=1000 if chunked else 1 << 30, chunk_size=4096)
    repo = _repo()
    data = os.urandom(10_000 + 123)
    d = _digest(data)
    assert not c.blob_exists(repo, d)
    c.upload(repo, d, len(data), lambda: __import__("io").BytesIO(data))
    assert c.blob_exists(repo, d)
    assert c.get_blob(repo, d) == data


def test_cross_repository_mount(registry, base_image):
    c = RegistryClient(registry.host)
    manifest, _, _ = c.resolve(REPO, "3.11", "linux/amd64")
    layer = manifest["layers"][0]["digest"]
    repo = _repo("mount")
    assert c.mount(repo, layer, REPO) is None  # 201: mounted, no bytes sent
    assert c.blob_exists(repo, layer)
    # mounting something the source repo does not have falls back to an upload session (202)
    data = os.urandom(64)
    location = c.mount(repo, _digest(data), REPO)
    assert location and "/blobs/uploads/" in location
    c.upload(repo, _digest(data), len(data), lambda: data, location)
    assert c.blob_exists(repo, _digest(data))


def test_manifest_put_content_type_and_digest(registry, base_image):
    c = RegistryClient(registry.host)
    raw, media_type, digest = c.get_manifest(REPO, "3.11-oci")
    repo = _repo("manifest")
    for d in [json.loads(raw)["config"]] + json.loads(raw)["layers"]:
        assert c.mount(repo, d["digest"], REPO) is None
    assert c.put_manifest(repo, "v1", raw, media_type) == digest
    r = requests.get(f"{registry.url}/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert r.headers["Content-Type"] == OCI_MANIFEST and r.headers["Docker-Content-Digest"] == digest


def test_manifest_push_with_missing_blob_is_refused(registry):
    c = RegistryClient(registry.host)
    repo = _repo("incomplete")
    cfg = b"{}"
    c.upload(repo, _digest(cfg), len(cfg), lambda: cfg)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": _digest(cfg)},
                           "layers": [{"mediaType": OCI_LAYER, "size": 5, "digest": _digest(b"never")}]}).encode()
    with pytest.raises(BuildError, match="MANIFEST_BLOB_UNKNOWN|blob unknown"):
        c.put_manifest(repo, "v1", manifest, OCI_MANIFEST)
    assert c.manifest_digest(repo, "v1") is None


# --- TLS and basic auth -------------------------------------------------------------------------------
def test_tls_basic_auth_with_docker_config(secure_registry, base_image, no_ambient_creds, monkeypatch):
    docker_config(no_ambient_creds, monkeypatch, secure_registry.host, secure_registry.username, secure_registry.password)
    c = RegistryClient(secure_registry.host, ca_file=secure_registry.ca_file)
    manifest, _, _ = c.resolve(REPO, "3.11", "linux/amd64")
    assert c.base_url == f"https://{secure_registry.host}"
    repo = _repo("secure")
    data = os.urandom(100)
    c.upload(repo, _digest(data), len(data), lambda: data)
    assert c.get_blob(repo, _digest(data)) == data


def test_tls_with_ca_bundle_from_environment(secure_registry, base_image, no_ambient_creds, monkeypatch):
    docker_config(no_ambient_creds, monkeypatch, secure_registry.host, secure_registry.username, secure_registry.password)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", secure_registry.ca_file)
    RegistryClient(secure_registry.host).resolve(REPO, "3.11", "linux/amd64")


def test_ca_file_wins_over_an_environment_bundle(secure_registry, base_image, no_ambient_creds, monkeypatch):
    # requests would otherwise let $REQUESTS_CA_BUNDLE (often the system bundle) override it
    docker_config(no_ambient_creds, monkeypatch, secure_registry.host, secure_registry.username, secure_registry.password)
    import certifi

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    RegistryClient(secure_registry.host, ca_file=secure_registry.ca_file).resolve(REPO, "3.11", "linux/amd64")


def test_untrusted_certificate_is_a_clear_error(secure_registry, no_ambient_creds):
    with pytest.raises(BuildError, match="TLS certificate .* not trusted") as e:
        RegistryClient(secure_registry.host).get_manifest(REPO, "3.11")
    assert "ca_file" in e.value.hint


def test_missing_or_wrong_credentials_are_clear_and_secret_free(secure_registry, base_image, no_ambient_creds, monkeypatch):
    c = RegistryClient(secure_registry.host, ca_file=secure_registry.ca_file)
    with pytest.raises(BuildError, match="HTTP 401") as e:
        c.get_manifest(REPO, "3.11")
    assert "login" in e.value.hint
    docker_config(no_ambient_creds, monkeypatch, secure_registry.host, secure_registry.username, "wrong-password-x1")
    c = RegistryClient(secure_registry.host, ca_file=secure_registry.ca_file)
    with pytest.raises(BuildError, match="HTTP 401") as e:
        c.get_manifest(REPO, "3.11")
    assert "wrong-password-x1" not in str(e.value) + str(e.value.hint)


# --- Bearer tokens ----------------------------------------------------------------------------------
def test_token_auth_pull_and_push(token_registry, base_image, no_ambient_creds, monkeypatch):
    docker_config(no_ambient_creds, monkeypatch, token_registry.host, token_registry.username, token_registry.password)
    c = RegistryClient(token_registry.host)
    manifest, _, _ = c.resolve(REPO, "3.11", "linux/amd64")
    assert c.auth.scheme == "bearer"
    repo = _repo("token")
    assert c.mount(repo, manifest["layers"][0]["digest"], REPO) is None  # token covers both repos
    data = os.urandom(100)
    c.upload(repo, _digest(data), len(data), lambda: data)
    assert c.blob_exists(repo, _digest(data))


def test_token_auth_refreshes_an_expired_token(token_registry, base_image, no_ambient_creds, monkeypatch):
    docker_config(no_ambient_creds, monkeypatch, token_registry.host, token_registry.username, token_registry.password)
    c = RegistryClient(token_registry.host)
    c.get_manifest(REPO, "3.11")
    scopes = (f"repository:{REPO}:pull",)
    c.auth._tokens[scopes] = ("not-a-valid-token", time.monotonic() + 600)  # what a revoked/expired token looks like
    c.get_manifest(REPO, "3.11")  # 401 -> fresh token -> success
    assert c.auth._tokens[scopes][0] != "not-a-valid-token"


def test_pull_only_identity_cannot_push(token_registry, base_image, no_ambient_creds, monkeypatch):
    docker_config(no_ambient_creds, monkeypatch, token_registry.host, token_registry.reader_username, token_registry.reader_password)
    c = RegistryClient(token_registry.host)
    c.get_manifest(REPO, "3.11")  # pulling is allowed
    data = os.urandom(10)
    with pytest.raises(BuildError, match="HTTP 401|HTTP 403") as e:
        c.upload(_repo("denied"), _digest(data), len(data), lambda: data)
    assert token_registry.reader_password not in str(e.value) + str(e.value.hint)


# --- integrity and retries --------------------------------------------------------------------------
def test_corrupt_blob_in_registry_storage_is_detected(registry_factory):
    reg = registry_factory()
    c = RegistryClient(reg.host)
    repo = _repo("corrupt")
    data = os.urandom(4096)
    d = _digest(data)
    c.upload(repo, d, len(data), lambda: data)
    # Flip bytes in the registry's own storage: it will serve them as they are.
    blob = next(reg.data_dir.rglob(f"blobs/sha256/{d[7:9]}/{d[7:]}/data"))
    blob.write_bytes(b"X" * 4096)
    with pytest.raises(BuildError, match="does not match its digest"):
        c.get_blob(repo, d)


class _FlakyProxy:
    """A tiny HTTP proxy in front of a real registry that answers the first `failures` requests
    for a path with 503/429 + Retry-After. A fake part on purpose: a real registry cannot be made
    to throttle on demand."""

    def __init__(self, upstream: str, status: int, failures: int, retry_after: str):
        self.hits: list[float] = []
        proxy = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _handle(self):
                if "/manifests/" in self.path and len(proxy.hits) < failures:
                    proxy.hits.append(time.monotonic())
                    self.send_response(status)
                    self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                r = requests.request(self.command, upstream + self.path, data=body or None,
                                     headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(r.content)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.mark.parametrize("status", [503, 429])
def test_retries_honour_retry_after(registry, base_image, status):
    proxy = _FlakyProxy(registry.url, status, failures=2, retry_after="1")
    try:
        c = RegistryClient(proxy.host, backoff=0.01, max_wait=5)
        start = time.monotonic()
        raw, _, _ = c.get_manifest(REPO, "3.11")
        assert json.loads(raw)["schemaVersion"] == 2
        assert len(proxy.hits) == 2
        assert time.monotonic() - start >= 2.0  # waited the server's Retry-After, not our 0.01 s backoff
    finally:
        proxy.close()


def test_retry_after_is_bounded_and_retries_give_up(registry, base_image):
    proxy = _FlakyProxy(registry.url, 503, failures=100, retry_after="3600")
    try:
        c = RegistryClient(proxy.host, retries=2, backoff=0.01, max_wait=0.2)
        start = time.monotonic()
        with pytest.raises(BuildError, match="HTTP 503"):
            c.get_manifest(REPO, "3.11")
        assert time.monotonic() - start < 5  # a one-hour Retry-After is capped
        assert len(proxy.hits) == 3
    finally:
        proxy.close()


# --- plain HTTP to a host that is not loopback -----------------------------------------------------
def _non_loopback_ipv4() -> str | None:
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent; this only picks the outgoing address
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


class _TcpRelay:
    """Plain TCP forwarding from a non-loopback address to a loopback registry, recording what the
    client sends. Network plumbing, not a fake registry: the real registry answers."""

    def __init__(self, listen_ip: str, upstream_port: int):
        import socket

        self.sent = bytearray()
        self.sock = socket.create_server((listen_ip, 0))
        self.host = f"{listen_ip}:{self.sock.getsockname()[1]}"
        self.upstream_port = upstream_port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, record):
        try:
            while data := src.recv(65536):
                if record:
                    self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.sock.close()


@pytest.fixture
def remote_ip():
    ip = _non_loopback_ipv4()
    if not ip:
        pytest.skip("this machine has no non-loopback IPv4 address to test remote plain-HTTP rules with")
    return ip


def test_plain_http_to_a_remote_host_only_when_named_insecure(registry, base_image, remote_ip, no_ambient_creds):
    relay = _TcpRelay(remote_ip, int(registry.host.split(":")[1]))
    try:
        with pytest.raises(BuildError, match=f"cannot connect to registry {relay.host}") as e:
            RegistryClient(relay.host, retries=0).get_manifest(REPO, "3.11")
        assert f"insecure=['{relay.host}']" in e.value.hint
        raw, _, _ = RegistryClient(relay.host, insecure=[relay.host]).get_manifest(REPO, "3.11")
        assert json.loads(raw)["schemaVersion"] == 2
    finally:
        relay.close()


def test_credentials_never_go_over_plain_http_to_a_remote_host(token_registry, base_image, remote_ip, no_ambient_creds, monkeypatch):
    relay = _TcpRelay(remote_ip, int(token_registry.host.split(":")[1]))
    try:
        docker_config(no_ambient_creds, monkeypatch, relay.host, token_registry.username, token_registry.password)
        with pytest.raises(BuildError, match="never sends credentials over plain HTTP") as e:
            RegistryClient(relay.host, insecure=[relay.host]).get_manifest(REPO, "3.11")
        assert "HTTPS" in e.value.hint
        time.sleep(0.1)
        assert b"GET /v2/" in relay.sent  # the client did talk to it...
        assert b"authorization" not in bytes(relay.sent).lower()  # ...but sent no credentials
        assert token_registry.password.encode() not in relay.sent
    finally:
        relay.close()
