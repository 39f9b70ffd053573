"""Image references and immutable image values (no services needed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fairing.errors import BuildError, ConfigError
from fairing.oci import reference
from fairing.oci.image import DOCKER_LAYER, DOCKER_MANIFEST, OCI_LAYER, OCI_MANIFEST, Image, Layer, sha256
from fairing.oci.layout import parse_target
from fairing.oci.registry import select_platform


@pytest.mark.parametrize("text,registry,repo,tag,digest", [
    ("python", "docker.io", "library/python", None, None),
    ("python:3.11", "docker.io", "library/python", "3.11", None),
    ("user/app", "docker.io", "user/app", None, None),
    ("127.0.0.1:5000/fairing/python:3.11", "127.0.0.1:5000", "fairing/python", "3.11", None),
    ("localhost/app", "localhost", "app", None, None),
    ("localhost:5000/app", "localhost:5000", "app", None, None),
    ("ghcr.io/org/app:v1@sha256:" + "a" * 64, "ghcr.io", "org/app", "v1", "sha256:" + "a" * 64),
    ("index.docker.io/library/busybox", "docker.io", "library/busybox", None, None),
    ("[::1]:5000/app:x", "[::1]:5000", "app", "x", None),
])
def test_parse_references(text, registry, repo, tag, digest):
    r = reference.parse(text)
    assert (r.registry, r.repository, r.tag, r.digest) == (registry, repo, tag, digest)


def test_docker_hub_api_host_and_identifier():
    r = reference.parse("python:3.11")
    assert r.api_host == "registry-1.docker.io" and r.identifier == "3.11"
    assert reference.parse("x/y").identifier == "latest"


@pytest.mark.parametrize("bad,what", [
    ("", "empty"),
    ("Team/App", "uppercase"),
    ("reg.example/app:bad tag", "invalid tag"),
    ("reg.example/app@sha256:abc", "digest"),
    ("https://reg.example/app", "scheme"),
    ("reg.example/-app", "invalid repository"),
])
def test_bad_references_say_what_is_wrong(bad, what):
    with pytest.raises(ConfigError, match=what) as e:
        reference.parse(bad)
    assert e.value.hint


def test_loopback_hosts():
    assert reference.is_loopback("127.0.0.1:5000") and reference.is_loopback("localhost") and reference.is_loopback("[::1]:5000")
    assert not reference.is_loopback("10.1.2.3:5000") and not reference.is_loopback("registry.local:5000")


@pytest.mark.parametrize("text,path,tag", [
    ("oci:out", "out", None),
    ("oci:/tmp/out:v1", "/tmp/out", "v1"),
    ("oci:./a/b:latest", "./a/b", "latest"),
])
def test_layout_targets(text, path, tag):
    p, t = parse_target(text)
    assert (p, t) == (Path(path), tag)


def _base(media_type=DOCKER_MANIFEST):
    layer_type = DOCKER_LAYER if media_type == DOCKER_MANIFEST else OCI_LAYER
    config = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
              "config": {"Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"], "Cmd": ["python3"]},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
              "history": [{"created_by": "base"}]}
    cfg = json.dumps(config).encode()
    manifest = {"schemaVersion": 2, "mediaType": media_type,
                "config": {"mediaType": "x", "size": len(cfg), "digest": sha256(cfg)},
                "layers": [{"mediaType": layer_type, "size": 10, "digest": "sha256:" + "2" * 64}]}
    return Image.from_manifest(manifest, cfg, source="127.0.0.1:5000/fairing/python")


def test_append_returns_a_new_image_and_leaves_the_old_one_alone():
    base = _base()
    before = (base.digest, base.config_bytes)
    layer = Layer("sha256:" + "3" * 64, 5, base.layer_media_type, "sha256:" + "4" * 64)
    img = base.append(layer, created_by="fairing: code", created="1970-01-01T00:00:00Z")
    assert (base.digest, base.config_bytes) == before
    assert [x.digest for x in img.layers] == ["sha256:" + "2" * 64, "sha256:" + "3" * 64]
    cfg = img.config
    assert cfg["rootfs"]["diff_ids"][-1] == "sha256:" + "4" * 64
    assert cfg["history"][-1] == {"created": "1970-01-01T00:00:00Z", "created_by": "fairing: code"}
    img.config["config"]["Env"] = []  # mutating the returned dict does not change the image
    assert img.config["config"]["Env"]


@pytest.mark.parametrize("mt,layer_mt,config_mt", [
    (DOCKER_MANIFEST, DOCKER_LAYER, "application/vnd.docker.container.image.v1+json"),
    (OCI_MANIFEST, OCI_LAYER, "application/vnd.oci.image.config.v1+json"),
])
def test_media_types_follow_the_base(mt, layer_mt, config_mt):
    base = _base(mt)
    img = base.append(Layer("sha256:" + "3" * 64, 5, base.layer_media_type, "sha256:" + "4" * 64), created_by="x")
    m = json.loads(img.manifest_bytes())
    assert m["mediaType"] == mt and m["config"]["mediaType"] == config_mt
    assert m["layers"][-1]["mediaType"] == layer_mt
    assert m["config"]["digest"] == sha256(img.config_bytes) and img.digest == sha256(img.manifest_bytes())


def test_with_config_sets_env_workdir_entrypoint_and_drops_cmd():
    img = _base().with_config(env={"MODE": "train", "LANG": "en_US.UTF-8"}, prepend_env={"PATH": "/opt/x/bin", "PYTHONPATH": "/opt/x"},
                              workdir="/app", entrypoint=["python", "train.py"], clear_cmd=True, created="1970-01-01T00:00:00Z")
    c = img.config
    assert c["config"]["Env"] == ["PATH=/opt/x/bin:/usr/bin:/bin", "LANG=en_US.UTF-8", "MODE=train", "PYTHONPATH=/opt/x"]
    assert c["config"]["WorkingDir"] == "/app" and c["config"]["Entrypoint"] == ["python", "train.py"]
    assert "Cmd" not in c["config"]  # the base's Cmd would otherwise become arguments
    assert c["created"] == "1970-01-01T00:00:00Z"


def test_a_pythonpath_the_user_sets_keeps_the_dependencies_first():
    # Found building Katib's optuna service: env={"PYTHONPATH": ...} used to replace the dependency
    # layers' directory, and every installed package was gone in the image.
    img = _base().with_config(env={"PYTHONPATH": "/opt/katib:/opt/katib/pkg"}, prepend_env={"PYTHONPATH": "/opt/fairing/site-packages"})
    assert "PYTHONPATH=/opt/fairing/site-packages:/opt/katib:/opt/katib/pkg" in img.config["config"]["Env"]


def test_same_inputs_same_digest():
    a = _base().with_config(env={"A": "1", "B": "2"}, workdir="/app")
    b = _base().with_config(env={"A": "1", "B": "2"}, workdir="/app")
    assert a.digest == b.digest and a.config_bytes == b.config_bytes


def test_inconsistent_base_is_refused():
    cfg = json.dumps({"rootfs": {"diff_ids": []}}).encode()
    with pytest.raises(BuildError, match="inconsistent"):
        Image.from_manifest({"mediaType": DOCKER_MANIFEST, "layers": [{"mediaType": DOCKER_LAYER, "size": 1, "digest": "sha256:" + "0" * 64}]}, cfg)


def test_platform_selection():
    index = {"manifests": [
        {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:b", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "sha256:c", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
    ]}
    assert select_platform(index, "linux/amd64", "x")["digest"] == "sha256:a"
    assert select_platform(index, "linux/arm64", "x")["digest"] == "sha256:b"
    assert select_platform(index, "linux/arm/v7", "x")["digest"] == "sha256:c"
    with pytest.raises(BuildError, match="no image for platform linux/s390x") as e:
        select_platform(index, "linux/s390x", "x")
    assert "linux/amd64" in e.value.hint and "linux/arm64/v8" in e.value.hint
