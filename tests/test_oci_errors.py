"""Registry failures are typed by kind (fairing.errors.Unreachable / Unauthorized / Forbidden) and
stay BuildErrors (exit code 3) with the same messages. Real registries (the rig's)."""
from __future__ import annotations

import os

import pytest

from fairing import errors
from fairing.oci import errors as oci_errors
from fairing.oci.registry import RegistryClient
from tests.test_oci_registry import REPO, _digest, _repo, docker_config, no_ambient_creds  # noqa: F401


def test_unreachable_registry_is_typed():
    with pytest.raises(oci_errors.Unreachable) as e:
        RegistryClient("127.0.0.1:1", retries=1, backoff=0.01).get_manifest("x/y", "latest")
    assert isinstance(e.value, errors.Unreachable) and e.value.exit_code == 3
    assert e.value.message == "cannot connect to registry 127.0.0.1:1 (ConnectionError)"


def test_no_login_and_pull_only_login_are_typed(token_registry, base_image, no_ambient_creds, monkeypatch):
    with pytest.raises(errors.Unauthorized) as e:  # anonymous: the token server refuses
        RegistryClient(token_registry.host).get_manifest(REPO, "3.11")
    assert isinstance(e.value, errors.BuildError) and "refused anonymous access" in e.value.message
    docker_config(no_ambient_creds, monkeypatch, token_registry.host, token_registry.reader_username,
                  token_registry.reader_password)
    c = RegistryClient(token_registry.host)
    c.get_manifest(REPO, "3.11")
    data = os.urandom(10)
    with pytest.raises((errors.Unauthorized, errors.Forbidden)) as e:  # may pull, may not push
        c.upload(_repo("typed"), _digest(data), len(data), lambda: data)
    assert e.value.hint and "login" in e.value.hint
