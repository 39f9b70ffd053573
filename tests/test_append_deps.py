"""The host-built dependency layer: which Python/platform it targets, how it is keyed, and what
pip's output looks like inside the layer (real pip, real PyPI wheels)."""
from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from fairing.builders.deps import SITE_DIR, dependency_layer, deps_key, image_python, installed_packages, pip_command, platform_tags
from fairing.errors import BuildError, ConfigError
from fairing.oci.cache import Cache


def test_python_version_from_label_env_or_argument():
    assert image_python({"config": {"Labels": {"org.fairing.python": "3.12"}, "Env": ["PYTHON_VERSION=3.10.4"]}}) == "3.12"
    assert image_python({"config": {"Env": ["PYTHON_VERSION=3.10.4"]}}) == "3.10"
    assert image_python({"config": {"Env": ["PYTHON_VERSION=3.10.4"]}}, "3.11") == "3.11"
    with pytest.raises(BuildError, match="cannot tell which Python") as e:
        image_python({"config": {}})
    assert "python_version" in e.value.hint
    with pytest.raises(ConfigError, match="not a Python version"):
        image_python({}, "latest")


def test_platform_tags_follow_the_architecture_and_glibc():
    amd = platform_tags({"architecture": "amd64"})
    assert amd[0] == "manylinux_2_28_x86_64" and amd[-2:] == ["manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    arm = platform_tags({"architecture": "arm64", "config": {"Labels": {"org.fairing.glibc": "2.36"}}})
    assert arm[0] == "manylinux_2_36_aarch64" and all("aarch64" in t for t in arm)
    with pytest.raises(BuildError, match="architecture 'mips'"):
        platform_tags({"architecture": "mips"})


def test_key_depends_on_requirements_python_and_platform_not_order():
    tags = platform_tags({"architecture": "amd64"})
    k = deps_key(["six==1.16.0", "idna==3.6"], "3.11", tags)
    assert k == deps_key(["idna==3.6", "six==1.16.0"], "3.11", tags)
    assert k != deps_key(["six==1.16.0", "idna==3.6"], "3.12", tags)
    assert k != deps_key(["six==1.16.0", "idna==3.6"], "3.11", platform_tags({"architecture": "arm64"}))
    assert k != deps_key(["six==1.16.0"], "3.11", tags)


def test_pip_command_only_takes_wheels_for_the_target(tmp_path):
    cmd = pip_command(tmp_path / "t", tmp_path / "r.txt", "3.11", ["manylinux_2_28_x86_64"])
    joined = " ".join(cmd)
    for flag in ("--target", "--python-version 3.11", "--implementation cp", "--abi cp311",
                 "--platform manylinux_2_28_x86_64", "--only-binary=:all:", "--no-compile"):
        assert flag in joined


@pytest.mark.slow
def test_layer_contents_and_console_script_shebangs(tmp_path):
    cache = Cache(tmp_path / "cache")
    tags = platform_tags({"architecture": "amd64"})
    layer, built = dependency_layer(["wheel==0.42.0"], python="3.11", tags=tags, cache=cache)
    assert built
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.path.read_bytes())))}
    site = SITE_DIR.lstrip("/")
    assert f"{site}/wheel/__init__.py" in members
    script = members[f"{site}/bin/wheel"]
    assert script.mode == 0o755
    tar = tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.path.read_bytes())))
    first_line = tar.extractfile(script).read().split(b"\n", 1)[0]
    assert first_line == b"#!/usr/bin/env python3"  # not this host's interpreter path
    assert not any("__pycache__" in n for n in members)
    # the second time it comes from the cache, without pip
    again, built = dependency_layer(["wheel==0.42.0"], python="3.11", tags=tags, cache=cache)
    assert not built and again == layer
    # what pip installed is remembered with the layer: run records show it as the resolved set
    assert installed_packages(["wheel==0.42.0"], "3.11", tags, cache) == ("wheel==0.42.0",)
