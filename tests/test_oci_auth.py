"""Credential discovery and auth-challenge parsing (no services needed).

Credential helpers here are real executables on PATH (small shell scripts speaking the
docker-credential protocol), not mocks."""
from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from fairing.oci import auth
from fairing.oci.auth import Credentials, find_credentials, may_send_credentials, parse_challenge


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty HOME and no auth-related env, so only what a test writes is found."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for var in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(var, raising=False)
    return h


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _write(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def _helper(bin_dir: Path, name: str, body: str, monkeypatch) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / f"docker-credential-{name}"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_parse_bearer_challenge_keeps_commas_inside_quotes():
    scheme, p = parse_challenge('Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push"')
    assert scheme == "bearer"
    assert p == {"realm": "https://auth.example/token", "service": "reg.example", "scope": "repository:a/b:pull,push"}


def test_parse_basic_challenge_and_unquoted_values():
    assert parse_challenge('Basic realm="fairing-rig"') == ("basic", {"realm": "fairing-rig"})
    assert parse_challenge("Bearer realm=https://a/t, service=x") == ("bearer", {"realm": "https://a/t", "service": "x"})


def test_docker_config_auth_and_username_password(home, tmp_path, monkeypatch):
    cfg = tmp_path / "dockercfg"
    _write(cfg / "config.json", {"auths": {
        "https://reg.example:5443/v2/": {"auth": _b64("alice:s3cret:with:colons")},
        "other.example": {"username": "bob", "password": "pw"},
    }})
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    c = find_credentials("reg.example:5443").credentials
    assert (c.username, c.password) == ("alice", "s3cret:with:colons")
    assert c.source == str(cfg / "config.json")
    c = find_credentials("other.example").credentials
    assert (c.username, c.password) == ("bob", "pw")
    assert find_credentials("unknown.example").credentials is None


def test_docker_hub_aliases(home):
    _write(home / ".docker" / "config.json", {"auths": {"https://index.docker.io/v1/": {"auth": _b64("hub:pw")}}})
    assert find_credentials("docker.io", "library/python").credentials.username == "hub"


def test_containers_auth_json_locations_and_repo_scoped_keys(home, tmp_path, monkeypatch):
    _write(home / ".config" / "containers" / "auth.json", {"auths": {
        "reg.example": {"auth": _b64("host-wide:pw")},
        "reg.example/team/private": {"auth": _b64("team:pw")},
    }})
    assert find_credentials("reg.example", "team/private/app").credentials.username == "team"
    assert find_credentials("reg.example", "other/app").credentials.username == "host-wide"
    runtime = tmp_path / "run"
    _write(runtime / "containers" / "auth.json", {"auths": {"reg.example": {"auth": _b64("xdg:pw")}}})
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert find_credentials("reg.example", "other/app").credentials.username == "xdg"
    explicit = _write(tmp_path / "explicit.json", {"auths": {"reg.example": {"auth": _b64("explicit:pw")}}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(explicit))
    assert find_credentials("reg.example").credentials.username == "explicit"


def test_cred_helpers_and_creds_store(home, tmp_path, monkeypatch):
    _helper(tmp_path / "bin", "team", 'read server\n[ "$1" = get ] || exit 2\n'
            'printf \'{"ServerURL":"%s","Username":"helper-user","Secret":"helper-secret"}\' "$server"\n', monkeypatch)
    _helper(tmp_path / "bin", "store", 'read server\n'
            'if [ "$server" = "stored.example" ]; then echo \'{"Username":"<token>","Secret":"refresh-tok"}\'; '
            'else echo "credentials not found in native keychain"; exit 1; fi\n', monkeypatch)
    _write(home / ".docker" / "config.json", {"credsStore": "store", "credHelpers": {"helped.example": "team"},
                                              "auths": {"plain.example": {"auth": _b64("plain:pw")}}})
    c = find_credentials("helped.example").credentials
    assert (c.username, c.password) == ("helper-user", "helper-secret")
    assert c.source == "credential helper docker-credential-team"
    c = find_credentials("stored.example").credentials
    assert c.identity_token == "refresh-tok"
    # the store has nothing for plain.example: fall back to the auths entry
    assert find_credentials("plain.example").credentials.username == "plain"


def test_missing_or_broken_helper_is_a_note_not_a_crash(home, tmp_path, monkeypatch):
    _helper(tmp_path / "bin", "broken", 'echo "oops the-secret-value" >&2\nexit 3\n', monkeypatch)
    _write(home / ".docker" / "config.json", {"credHelpers": {"a.example": "nonexistent", "b.example": "broken"}})
    lookup = find_credentials("a.example")
    assert lookup.credentials is None
    assert "docker-credential-nonexistent is not installed" in lookup.notes[0]
    lookup = find_credentials("b.example")
    assert lookup.credentials is None and "exit code 3" in lookup.notes[0]
    assert "the-secret-value" not in " ".join(lookup.notes)  # helper output is never echoed


def test_secrets_are_not_in_reprs():
    c = Credentials("alice", "hunter2", identity_token="tok-123", source="x")
    assert "hunter2" not in repr(c) and "tok-123" not in repr(c) and "alice" not in repr(c)


def test_credentials_only_over_https_or_loopback():
    assert may_send_credentials("https://reg.example/v2/")
    assert may_send_credentials("http://127.0.0.1:5000/v2/")
    assert may_send_credentials("http://localhost:5000/v2/")
    assert may_send_credentials("http://[::1]:5000/v2/")
    assert not may_send_credentials("http://reg.example:5000/v2/")
    assert not may_send_credentials("http://10.0.0.5:5000/v2/")


def test_token_auth_never_sends_a_header_over_plain_http_to_a_remote_host():
    t = auth.TokenAuth("reg.example:5000", None, session=None, lookup=lambda: auth.Lookup(Credentials("u", "p")))
    t.set_challenge('Basic realm="x"')
    assert t.header(("repository:a:pull",), "http://reg.example:5000/v2/a/manifests/latest") is None
    assert t.header(("repository:a:pull",), "https://reg.example:5000/v2/a/manifests/latest").startswith("Basic ")
