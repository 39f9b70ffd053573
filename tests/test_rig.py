"""The test rig itself: every fixture other tests rely on really works, and its tar handling is safe."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import time
import ssl
import subprocess
import sys
import tarfile
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.rig import netutil
from tests.rig.base import MT_INDEX, MT_LIST, MT_OCI, MT_V2S2
from tests.rig.engine import merge_toml
from tests.rig.registry import start_registry
from tests.rig.state import RigError, Service
from tests.rig.tarball import UnsafeTarError, check_tar, safe_extract, write_tree
from tests.rig.tokenserver import parse_scope

REPO_ROOT = Path(__file__).resolve().parents[1]


def _manifest(url, repo, ref, accept, **auth):
    r = netutil.registry_request(f"{url}/v2/{repo}/manifests/{ref}", headers={"Accept": accept},
                                 **auth)
    assert r.status == 200, r.body[:300]
    return r.headers["content-type"].split(";")[0], r.json(), r.headers["docker-content-digest"]


def _push_blob(url, repo, data, headers=None):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = netutil.request(f"{url}/v2/{repo}/blobs/uploads/", method="POST", data=b"",
                            headers=headers)
    if start.status != 202:
        return start, digest
    loc = start.headers["location"]
    sep = "&" if "?" in loc else "?"
    put = netutil.request(f"{loc}{sep}digest={digest}", method="PUT", data=data,
                          headers={**(headers or {}), "Content-Type": "application/octet-stream"})
    return put, digest


# --- registries ----------------------------------------------------------------------------------
def test_plain_registry_answers_v2_api(registry):
    assert registry.host == "127.0.0.1:5000" and registry.url == "http://127.0.0.1:5000"
    r = netutil.request(registry.url + "/v2/")
    assert r.status == 200
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"


def test_plain_registry_stores_and_deletes_blobs(registry):
    data = b"rig plain registry blob " + str(id(registry)).encode()
    put, digest = _push_blob(registry.url, "rigtest/plain", data)
    assert put.status == 201, put.body
    got = netutil.request(f"{registry.url}/v2/rigtest/plain/blobs/{digest}")
    assert got.status == 200 and got.body == data
    # Storage delete is enabled: tests can clean up after themselves.
    gone = netutil.request(f"{registry.url}/v2/rigtest/plain/blobs/{digest}", method="DELETE")
    assert gone.status == 202


def test_secure_registry_needs_tls_trust_and_credentials(secure_registry):
    reg = secure_registry
    assert reg.host == "127.0.0.1:5443" and reg.url.startswith("https://")
    # Without the rig CA, the TLS handshake itself fails: the certificate really is private.
    with pytest.raises(urllib.error.URLError) as err:
        urllib.request.urlopen(reg.url + "/v2/", timeout=5,
                               context=ssl.create_default_context())
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError)
    anon = netutil.request(reg.url + "/v2/", ca_file=reg.ca_file)
    assert anon.status == 401 and anon.headers["www-authenticate"].startswith("Basic ")
    wrong = netutil.request(reg.url + "/v2/", ca_file=reg.ca_file,
                            headers={"Authorization": netutil.basic(reg.username, "not-it")})
    assert wrong.status == 401
    ok = netutil.request(reg.url + "/v2/", ca_file=reg.ca_file,
                         headers={"Authorization": netutil.basic(reg.username, reg.password)})
    assert ok.status == 200


def test_token_registry_issues_scoped_tokens_and_accepts_a_push(token_registry):
    reg = token_registry
    challenge = netutil.request(reg.url + "/v2/")
    assert challenge.status == 401
    scheme, params = netutil.parse_challenge(challenge.headers["www-authenticate"])
    assert scheme == "bearer" and params["realm"] == reg.realm and params["service"] == reg.service

    scope = {"realm": reg.realm, "service": reg.service,
             "scope": "repository:rigtest/token:pull,push"}
    with pytest.raises(PermissionError):
        netutil.fetch_token(scope, None, None)  # anonymous: no token at all
    with pytest.raises(PermissionError):
        netutil.fetch_token(scope, reg.username, "wrong")
    token = netutil.fetch_token(scope, reg.username, reg.password)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["aud"] == reg.service
    assert claims["access"] == [{"type": "repository", "name": "rigtest/token",
                                 "actions": ["pull", "push"]}]

    put, digest = _push_blob(reg.url, "rigtest/token", b"pushed with a bearer token",
                             {"Authorization": f"Bearer {token}"})
    assert put.status == 201, put.body
    head = netutil.request(f"{reg.url}/v2/rigtest/token/blobs/{digest}", method="HEAD",
                           headers={"Authorization": f"Bearer {token}"})
    assert head.status == 200
    # Without a token the same blob is not readable.
    assert netutil.request(f"{reg.url}/v2/rigtest/token/blobs/{digest}").status == 401


def test_token_registry_pull_only_identity_cannot_push(token_registry):
    reg = token_registry
    token = netutil.fetch_token({"realm": reg.realm, "service": reg.service,
                                 "scope": "repository:rigtest/token:pull,push"},
                                reg.reader_username, reg.reader_password)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["access"][0]["actions"] == ["pull"]
    put, _ = _push_blob(reg.url, "rigtest/token", b"reader tries to push",
                        {"Authorization": f"Bearer {token}"})
    assert put.status in (401, 403)


def test_token_scope_parsing_keeps_names_with_colons():
    assert parse_scope("repository:team/app:pull,push") == {
        "type": "repository", "name": "team/app", "actions": ["pull", "push"]}
    assert parse_scope("repository:localhost:5000/app:pull")["name"] == "localhost:5000/app"
    assert parse_scope("registry:catalog:*")["actions"] == ["*"]
    assert parse_scope("garbage") is None


def test_private_registry_keeps_data_across_stop_and_start(tmp_path):
    reg = start_registry(tmp_path)
    try:
        put, digest = _push_blob(reg.url, "rigtest/private", b"survives a restart")
        assert put.status == 201
        reg.stop()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", reg.port), timeout=2).close()
        reg.start()
        assert netutil.request(f"{reg.url}/v2/rigtest/private/blobs/{digest}").body == \
            b"survives a restart"
    finally:
        reg.stop()


def test_private_registry_with_tls_and_auth(tmp_path):
    with start_registry(tmp_path, tls=True, auth=True) as reg:
        assert reg.url.startswith("https://") and reg.ca_file
        assert netutil.request(reg.url + "/v2/", ca_file=reg.ca_file).status == 401
        ok = netutil.registry_request(reg.url + "/v2/", ca_file=reg.ca_file,
                                      username=reg.username, password=reg.password)
        assert ok.status == 200


def test_private_registry_failure_names_the_cause(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(RigError) as err:
            start_registry(tmp_path, port=busy.getsockname()[1])
    assert "address already in use" in str(err.value)


# --- engine and base image -----------------------------------------------------------------------
def test_engine_runs_python_in_the_base_image(engine, base_image):
    assert engine.docker_host == "unix:///run/fairing/podman.sock"
    client = engine.client()
    out = client.containers.run(base_image.docker, ["python3", "-c", "print(1+1)"], remove=True)
    assert out == b"2\n"
    # The index resolves to its real amd64 entry on this machine.
    out = client.containers.run(base_image.index, ["python3", "-c",
                                                   "import platform; print(platform.python_version())"],
                                remove=True)
    assert out.decode().strip() == base_image.python_version
    assert base_image.python_version.startswith(base_image.python + ".")


def test_an_auto_removed_container_keeps_its_log_and_exit_code_until_read(engine, base_image):
    """What kfp.local's DockerRunner does (auto_remove, then logs, then wait): on Podman 4.3 the
    container was gone before either was read (tests/rig/engine.py, conmon_wrapper)."""
    client = engine.client()
    try:
        c = client.containers.run(base_image.docker, ["python3", "-c", "import sys; print('bye'); sys.exit(3)"],
                                  detach=True, auto_remove=True)
        assert b"".join(c.logs(stream=True)) == b"bye\n"
        assert c.wait()["StatusCode"] == 3
        deadline = time.monotonic() + 60
        while any(x.id == c.id for x in client.containers.list(all=True)):  # removed a little later
            assert time.monotonic() < deadline, "the auto-removed container was never removed"
            time.sleep(0.5)
    finally:
        client.close()


def test_engine_pulls_from_the_tls_registry_with_credentials(engine, base_image, secure_registry):
    client = engine.client()
    image = client.images.pull(base_image.secure, auth_config={
        "username": secure_registry.username, "password": secure_registry.password})
    assert image.labels["org.fairing.python"] == "3.11"


def test_base_image_tags_have_the_expected_media_types(registry, base_image):
    repo = "fairing/python"
    accept = ", ".join([MT_V2S2, MT_OCI, MT_INDEX, MT_LIST])
    assert base_image.docker == f"{registry.host}/{repo}:3.11"
    mt, manifest, docker_digest = _manifest(registry.url, repo, "3.11", accept)
    assert mt == MT_V2S2 and manifest["mediaType"] == MT_V2S2
    config = netutil.request(f"{registry.url}/v2/{repo}/blobs/{manifest['config']['digest']}").json()
    assert config["config"]["Labels"]["org.fairing.python"] == "3.11"
    assert f"PYTHON_VERSION={base_image.python_version}" in config["config"]["Env"]
    assert config["architecture"] == "amd64"

    mt, oci, oci_digest = _manifest(registry.url, repo, "3.11-oci", accept)
    assert base_image.oci.endswith(":3.11-oci") and mt == MT_OCI
    assert oci["layers"][0]["mediaType"].startswith("application/vnd.oci.image.layer.v1.tar")

    mt, index, _ = _manifest(registry.url, repo, "3.11-multi", accept)
    assert base_image.index.endswith(":3.11-multi") and mt == MT_INDEX
    platforms = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    assert platforms["amd64"] == oci_digest and "arm64" in platforms

    mt, dlist, _ = _manifest(registry.url, repo, "3.11-list", accept)
    assert mt == MT_LIST
    assert {m["platform"]["architecture"]: m["digest"] for m in dlist["manifests"]}["amd64"] == \
        docker_digest
    assert base_image.digests[base_image.docker] == docker_digest


def test_base_image_is_identical_on_the_authenticated_registries(base_image, secure_registry,
                                                                 token_registry):
    plain = base_image.digests[base_image.docker]
    for reg, ref in ((secure_registry, base_image.secure), (token_registry, base_image.token)):
        assert ref == f"{reg.host}/fairing/python:3.11"
        mt, _, digest = _manifest(reg.url, "fairing/python", "3.11", MT_V2S2,
                                  username=reg.username, password=reg.password,
                                  ca_file=getattr(reg, "ca_file", None))
        assert (mt, digest) == (MT_V2S2, plain)


def test_rig_cli_is_idempotent_under_concurrency():
    # Two processes asking at once serialise on the rig lock and agree on the result.
    cmd = [sys.executable, "-m", "tests.rig", "env"]
    procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    assert b"export DOCKER_HOST=unix:///run/fairing/podman.sock" in outs[0][0]


def test_rig_service_restarts_a_dead_process_and_never_adopts_a_stranger():
    svc = Service(f"rigtest-sleeper-{os.getpid()}", ["sleep", "600"])
    try:
        svc.ensure(lambda: True)
        first = svc.pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while svc.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        svc.ensure(lambda: True)
        second = svc.pid()
        assert second is not None and second != first
        svc.stop()
        # A pidfile naming a live process that the rig did not start (here: this test process,
        # with another start time) must never be treated as ours, let alone killed.
        svc.pidfile.write_text(f"{os.getpid()} 1\n")
        assert svc.pid() is None and svc.stop() is False
    finally:
        svc.stop()
        svc.log.unlink(missing_ok=True)


# --- tar safety and determinism ------------------------------------------------------------------
def _tar(entries) -> bytes:
    """entries: (name, kind, payload) with kind file|dir|symlink|hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE}[kind]
            info.linkname = payload or ""
            tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("entries", [
    [("../evil", "file", b"x")],
    [("/evil", "file", b"x")],
    [("a/../../evil", "file", b"x")],
    [("ok", "file", b"x"), ("link", "hardlink", "../../evil")],
    [("link", "hardlink", "/etc/passwd")],
    [("up", "symlink", "../../.."), ("up/evil", "file", b"x")],
    [("etc", "symlink", "/"), ("etc/evil", "file", b"x")],
    [("d", "dir", None), ("d/esc", "symlink", "../../outside")],
], ids=["dotdot", "absolute", "nested-dotdot", "hardlink-dotdot", "hardlink-absolute",
        "write-through-relative-symlink", "write-through-absolute-symlink", "symlink-escape"])
def test_tar_extraction_refuses_entries_escaping_the_root(tmp_path, entries):
    archive = tmp_path / "bad.tar"
    archive.write_bytes(_tar(entries))
    dest = tmp_path / "deep" / "er" / "dest"
    with pytest.raises(UnsafeTarError):
        check_tar(archive)
    with pytest.raises(UnsafeTarError):
        safe_extract(archive, dest)
    # Validation happens before any write: nothing at all was extracted.
    assert not any(dest.iterdir())
    assert not (tmp_path / "evil").exists() and not (tmp_path / "deep" / "evil").exists()


def test_tar_extraction_keeps_a_normal_root_filesystem(tmp_path):
    archive = tmp_path / "ok.tar"
    archive.write_bytes(_tar([
        ("usr", "dir", None), ("usr/bin", "dir", None), ("usr/bin/tool", "file", b"#!/bin/sh\n"),
        ("bin", "symlink", "usr/bin"), ("usr/bin/alias", "hardlink", "usr/bin/tool"),
        ("etc", "dir", None), ("etc/localtime", "symlink", "/usr/share/zoneinfo/UTC"),
    ]))
    safe_extract(archive, tmp_path / "root")
    root = tmp_path / "root"
    assert (root / "usr/bin/alias").read_bytes() == b"#!/bin/sh\n"
    assert (root / "bin").readlink() == Path("usr/bin")
    # Absolute symlinks are legal in a rootfs (they resolve inside the container).
    assert str((root / "etc/localtime").readlink()) == "/usr/share/zoneinfo/UTC"


def test_tree_tarball_is_deterministic(tmp_path):
    def make(root: Path, touch: int):
        (root / "b/sub").mkdir(parents=True)
        (root / "a.txt").write_text("alpha")
        (root / "b/sub/c.txt").write_text("gamma")
        (root / "link").symlink_to("a.txt")
        for p in root.rglob("*"):
            if not p.is_symlink():
                os.utime(p, (touch, touch))

    make(tmp_path / "one", 1_000_000)
    make(tmp_path / "two", 2_000_000)
    outs = []
    for name in ("one", "two"):
        buf = io.BytesIO()
        write_tree(tmp_path / name, buf)
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    names = tarfile.open(fileobj=io.BytesIO(outs[0])).getnames()
    assert names == ["a.txt", "b", "b/sub", "b/sub/c.txt", "link"]


def test_containers_conf_merge_keeps_unrelated_settings():
    before = ('# site settings\n[containers]\nlog_driver = "k8s-file"\ndefault_ulimits = [\n'
              '  "nofile=65535:65535",\n]\n\n[network]\nnetwork_backend = "netavark"\n')
    after = merge_toml(before, {"engine": {"runtime": '"runc"'},
                                "containers": {"default_ulimits": '["nofile=1024:1024"]'}})
    parsed = tomllib.loads(after)
    assert parsed["containers"] == {"log_driver": "k8s-file", "default_ulimits": ["nofile=1024:1024"]}
    assert parsed["network"] == {"network_backend": "netavark"}
    assert parsed["engine"] == {"runtime": "runc"}
    assert "# site settings" in after
    assert merge_toml(after, {"engine": {"runtime": '"runc"'}}) == after  # idempotent


def test_control_plane_drops_webhooks_whose_host_server_is_gone(kube, admin):
    """etcd outlives the rig's host-run webhook servers (a reboot, a CI machine that keeps
    FAIRING_CACHE): a registered `failurePolicy: Fail` webhook with nothing behind it refuses every
    object it covers until the control plane's start-up drops it. One whose server listens stays."""
    from fairing.errors import DeployError
    from fairing.kube.client import Resource, register
    from tests.rig.kube import drop_dead_webhooks
    from tests.rig.state import free_port

    register(Resource("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration",
                      "mutatingwebhookconfigurations", False))
    tag = hashlib.sha256(os.urandom(8)).hexdigest()[:8]
    live = socket.socket()
    live.bind(("127.0.0.1", 0))
    live.listen()

    def config(name, port):
        return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": name},
                "webhooks": [{"name": f"{name}.fairing-rig.local",
                              "clientConfig": {"url": f"https://127.0.0.1:{port}/mutate"},
                              "objectSelector": {"matchLabels": {"fairing.test/webhook": tag}},
                              "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                         "resources": ["configmaps"]}],
                              "admissionReviewVersions": ["v1"], "sideEffects": "None",
                              "failurePolicy": "Fail", "timeoutSeconds": 2}]}

    dead_name, live_name = f"fairing-test-dead-{tag}", f"fairing-test-live-{tag}"
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": f"wh-{tag}", "labels": {"fairing.test/webhook": tag}}, "data": {}}
    try:
        admin.create(config(dead_name, free_port()))
        admin.create(config(live_name, live.getsockname()[1]))
        dropped = drop_dead_webhooks(admin)
        assert dead_name in dropped and live_name not in dropped
        kind = ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")
        assert admin.get(*kind, dead_name) is None
        assert admin.get(*kind, live_name) is not None
        admin.delete(*kind, live_name)
        # Nothing refuses it any more, once the API server's webhook cache has seen the deletions.
        deadline = time.monotonic() + 15
        while True:
            try:
                admin.create(cm)
                break
            except DeployError as e:
                assert "failed calling webhook" in str(e)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        assert admin.get("v1", "ConfigMap", cm["metadata"]["name"]) is not None
    finally:
        live.close()
        for name in (dead_name, live_name):
            with contextlib.suppress(Exception):
                admin.delete("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", name)
        with contextlib.suppress(Exception):
            admin.delete("v1", "ConfigMap", cm["metadata"]["name"])
