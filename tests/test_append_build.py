"""The append builder end to end: real registries, real pip, images run by Podman."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from fairing.builders.append import AppendBuilder
from fairing.context import BuildContext
from fairing.deployers.template import template_of
from fairing.errors import BuildError, ConfigError
from fairing.oci.image import DOCKER_LAYER, DOCKER_MANIFEST, OCI_LAYER, OCI_MANIFEST

ACCEPT = ", ".join([OCI_MANIFEST, DOCKER_MANIFEST])
REQS = ("six==1.16.0",)
MAIN = "import six\nimport helper\nprint('six', six.__version__)\nprint(helper.GREETING)\n"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One layer cache for the module, so pip runs once for most tests."""
    return tmp_path_factory.mktemp("fairing-cache")


def project(root: Path, main: str = MAIN, mtime: int = 1_600_000_000) -> BuildContext:
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.py").write_text(main)
    (root / "helper.py").write_text("GREETING = 'hello from the code layer'\n")
    for p in root.iterdir():
        os.utime(p, (mtime, mtime))
    return BuildContext(files={"main.py": root / "main.py", "helper.py": root / "helper.py"},
                        entrypoint=("python3", "main.py"), requirements=REQS, env={"MODE": "test"})


def repo(registry_host: str, name: str = "append") -> str:
    return f"{registry_host}/test/{name}-{uuid.uuid4().hex[:10]}"


def manifest(url: str, ref: str, tag: str, **kw) -> dict:
    r = requests.get(f"{url}/v2/{ref}/manifests/{tag}", headers={"Accept": ACCEPT}, **kw)
    r.raise_for_status()
    return r.json()


def run_in_podman(engine, image_ref: str) -> str:
    client = engine.client()
    out = client.containers.run(image_ref, remove=True)
    return out.decode()


def test_build_push_and_run_with_podman(registry, base_image, engine, cache, tmp_path):
    ctx = project(tmp_path / "proj")
    target = repo(registry.host)
    img = AppendBuilder(base_image.docker, cache_dir=cache).build(ctx, f"{target}:v1")
    assert img.ref.startswith(f"{target}@sha256:") and img.digest in img.ref and img.tag == "v1"
    container = template_of(img)["spec"]["containers"][0]  # the deployers' template for this image
    assert container["name"] == "main" and container["image"] == img.ref
    assert container["command"] == ["python3", "main.py"] and container["workingDir"] == "/app"
    out = run_in_podman(engine, img.ref)
    assert "six 1.16.0" in out  # imported from the dependency layer
    assert "hello from the code layer" in out


def test_config_of_the_built_image(registry, base_image, cache, tmp_path):
    target = repo(registry.host)
    img = AppendBuilder(base_image.docker, cache_dir=cache).build(project(tmp_path / "p"), f"{target}:v1")
    m = manifest(registry.url, target.split("/", 1)[1], "v1")
    cfg = requests.get(f"{registry.url}/v2/{target.split('/', 1)[1]}/blobs/{m['config']['digest']}").json()
    c = cfg["config"]
    env = dict(e.split("=", 1) for e in c["Env"])
    assert env["PYTHONPATH"] == "/opt/fairing/site-packages" and env["PATH"].startswith("/opt/fairing/site-packages/bin:")
    assert env["MODE"] == "test" and env["PYTHON_VERSION"]  # the base's Env is kept
    assert c["Entrypoint"] == ["python3", "main.py"] and c["WorkingDir"] == "/app" and "Cmd" not in c
    assert cfg["created"] == "1970-01-01T00:00:00Z"
    assert len(cfg["history"]) >= len(cfg["rootfs"]["diff_ids"]) and cfg["history"][-1]["created_by"].startswith("fairing:")
    assert len(m["layers"]) == len(cfg["rootfs"]["diff_ids"])
    raw = requests.get(f"{registry.url}/v2/{target.split('/', 1)[1]}/manifests/v1", headers={"Accept": ACCEPT}).content
    assert img.digest == "sha256:" + __import__("hashlib").sha256(raw).hexdigest()


def test_reproducible_digest_across_directories_mtimes_and_machines(registry, base_image, tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    target = repo(registry.host, "repro")
    # Two "machines": different project directories, file mtimes and (cold) layer caches.
    a = AppendBuilder(base_image.docker, cache_dir=tmp_path / "cache-a").build(project(tmp_path / "a", mtime=1_000_000), f"{target}:a")
    b_builder = AppendBuilder(base_image.docker, cache_dir=tmp_path / "cache-b")
    b = b_builder.build(project(tmp_path / "elsewhere" / "b", mtime=1_700_000_000), f"{target}:b")
    assert a.digest == b.digest
    # The second machine rebuilt its dependency layer with pip, found every blob already in the
    # registry by digest, and uploaded only the manifest for its new tag.
    assert b.stats.layers_uploaded == 0
    raw = requests.get(f"{registry.url}/v2/{target.split('/', 1)[1]}/manifests/b", headers={"Accept": ACCEPT}).content
    assert b.stats.bytes_uploaded == len(raw)


def test_code_change_reuses_the_dependency_layer(registry, base_image, cache, tmp_path):
    target = repo(registry.host, "reuse")
    messages: list[str] = []
    builder = AppendBuilder(base_image.docker, cache_dir=cache, progress=messages.append)
    first = builder.build(project(tmp_path / "p"), f"{target}:v1")
    messages.clear()
    changed = project(tmp_path / "p", main=MAIN + "print('one more line')\n")
    second = AppendBuilder(base_image.docker, cache_dir=cache, progress=messages.append).build(changed, f"{target}:v2")
    assert second.digest != first.digest
    assert not any(m.startswith("installing") for m in messages)  # pip did not run again
    m = manifest(registry.url, target.split("/", 1)[1], "v2")
    raw = requests.get(f"{registry.url}/v2/{target.split('/', 1)[1]}/manifests/v2", headers={"Accept": ACCEPT}).content
    code_layer, config = m["layers"][-1], m["config"]
    assert second.stats.layers_uploaded == 1 and second.stats.layers_skipped == len(m["layers"]) - 1
    assert second.stats.bytes_uploaded == code_layer["size"] + config["size"] + len(raw)
    # A no-op rebuild uploads nothing at all.
    again = builder.build(changed, f"{target}:v2")
    assert again.digest == second.digest and again.stats.bytes_uploaded == 0 and again.stats.layers_uploaded == 0


@pytest.mark.parametrize("flavour,media_type,layer_type", [
    ("docker", DOCKER_MANIFEST, DOCKER_LAYER),
    ("oci", OCI_MANIFEST, OCI_LAYER),
    ("index", OCI_MANIFEST, OCI_LAYER),
    ("docker_list", DOCKER_MANIFEST, DOCKER_LAYER),
])
def test_manifest_format_follows_the_base(registry, base_image, cache, tmp_path, flavour, media_type, layer_type):
    target = repo(registry.host, "format")
    img = AppendBuilder(getattr(base_image, flavour), cache_dir=cache).build(project(tmp_path / "p"), f"{target}:v1")
    m = manifest(registry.url, target.split("/", 1)[1], "v1")
    assert m["mediaType"] == media_type
    assert {x["mediaType"] for x in m["layers"]} == {layer_type}
    assert img.stats.layers_skipped >= 1  # base layers mounted from fairing/python, not re-uploaded
    if media_type == OCI_MANIFEST:
        assert m["annotations"]["org.opencontainers.image.base.name"] == getattr(base_image, flavour)


def test_index_base_of_another_platform_is_used_for_that_platform(registry, base_image, cache, tmp_path):
    ctx = BuildContext(files={"main.py": b"print('hi')\n"}, entrypoint=("python3", "main.py"))
    target = repo(registry.host, "arm")
    img = AppendBuilder(base_image.index, platform="linux/arm64", cache_dir=cache).build(ctx, f"{target}:v1")
    m = manifest(registry.url, target.split("/", 1)[1], "v1")
    cfg = requests.get(f"{registry.url}/v2/{target.split('/', 1)[1]}/blobs/{m['config']['digest']}").json()
    assert cfg["architecture"] == "arm64" and img.digest
    with pytest.raises(BuildError, match="no image for platform linux/s390x"):
        AppendBuilder(base_image.index, platform="linux/s390x", cache_dir=cache).build(ctx, f"{target}:v2")


def _docker_config(tmp_path, monkeypatch, reg) -> None:
    d = tmp_path / "docker-config"
    d.mkdir()
    auth = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    (d / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)


def test_push_to_tls_registry_with_basic_auth(secure_registry, base_image, cache, tmp_path, monkeypatch):
    _docker_config(tmp_path, monkeypatch, secure_registry)
    target = repo(secure_registry.host, "secure")
    img = AppendBuilder(base_image.secure, ca_file=secure_registry.ca_file, cache_dir=cache).build(project(tmp_path / "p"), f"{target}:v1")
    assert img.stats.layers_skipped >= 1  # the base layer was mounted
    m = manifest(secure_registry.url, target.split("/", 1)[1], "v1", auth=(secure_registry.username, secure_registry.password), verify=secure_registry.ca_file)
    assert m["layers"][-1]["digest"] and img.digest.startswith("sha256:")


def test_push_to_token_registry(token_registry, base_image, cache, tmp_path, monkeypatch):
    _docker_config(tmp_path, monkeypatch, token_registry)
    target = repo(token_registry.host, "token")
    img = AppendBuilder(base_image.token, cache_dir=cache).build(project(tmp_path / "p"), f"{target}:v1")
    r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds", f"{token_registry.username}:{token_registry.password}",
                        f"docker://{target}:v1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Digest"] == img.digest


def test_oci_layout_output_and_layout_base(registry, base_image, engine, cache, tmp_path):
    out = tmp_path / "layout"
    img = AppendBuilder(base_image.docker, cache_dir=cache).build(project(tmp_path / "p"), f"oci:{out}:v1")
    assert img.ref == f"oci:{out}@{img.digest}"
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((out / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == ["v1"]
    r = subprocess.run(["skopeo", "inspect", f"oci:{out}:v1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Digest"] == img.digest
    # The layout is complete: copy it to a registry with skopeo and run it.
    target = repo(registry.host, "fromlayout")
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{out}:v1", f"docker://{target}:v1"], check=True, timeout=300)
    assert "hello from the code layer" in run_in_podman(engine, f"{target}:v1")
    # A layout can be the base, too (no registry involved at all).
    ctx2 = BuildContext(files={"second.py": b"import helper, six; print('second', helper.GREETING)\n"}, entrypoint=("python3", "second.py"))
    img2 = AppendBuilder(f"oci:{out}:v1", cache_dir=cache).build(ctx2, f"oci:{out}:v2")
    names = sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in json.loads((out / "index.json").read_text())["manifests"])
    assert names == ["v1", "v2"] and img2.digest != img.digest
    r = subprocess.run(["skopeo", "inspect", f"oci:{out}:v2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout)["Digest"] == img2.digest


def test_requirement_without_a_wheel_is_a_clear_error_and_pushes_nothing(registry, base_image, cache, tmp_path):
    ctx = BuildContext(files={"main.py": b"print(1)\n"}, entrypoint=("python3", "main.py"), requirements=("six==0.0.0.1",))
    target = repo(registry.host, "nowheel")
    with pytest.raises(BuildError, match=r"no wheel of six==0\.0\.0\.1 for Python 3\.11") as e:
        AppendBuilder(base_image.docker, cache_dir=cache).build(ctx, f"{target}:v1")
    assert "docker builder" in e.value.hint
    r = requests.get(f"{registry.url}/v2/{target.split('/', 1)[1]}/tags/list")
    assert r.status_code == 404  # the repository was never created


def test_default_tag_is_the_context_hash(registry, base_image, cache, tmp_path):
    target = repo(registry.host, "deftag")
    ctx = project(tmp_path / "p")
    img = AppendBuilder(base_image.docker, cache_dir=cache).build(ctx, target)
    from fairing.builders.base import context_hash

    assert img.tag == context_hash(ctx)
    assert manifest(registry.url, target.split("/", 1)[1], img.tag)["layers"]


def test_plan_needs_no_network_and_hides_url_credentials(tmp_path):
    ctx = BuildContext(files={"main.py": b"print(1)\n"}, entrypoint=("python3", "main.py"),
                       requirements=("six==1.16.0", "private @ git+https://user:s3cret@git.example/p.git"))
    plan = AppendBuilder("127.0.0.1:1/nothing/here:1", cache_dir=tmp_path).plan(ctx, "127.0.0.1:1/team/job:v1")
    assert plan["target"] == "127.0.0.1:1/team/job" and plan["tag"] == "v1"
    assert [layer["name"] for layer in plan["layers"]] == ["dependencies", "code"]
    assert "s3cret" not in json.dumps(plan)
    assert plan["config"]["Entrypoint"] == ["python3", "main.py"]


@pytest.mark.parametrize("base,target,err", [
    ("Bad/Base", "127.0.0.1:5000/x/y", "uppercase"),
    ("127.0.0.1:5000/fairing/python:3.11", "127.0.0.1:5000/x/y@sha256:" + "a" * 64, "cannot push to a digest"),
    ("127.0.0.1:5000/fairing/python:3.11", "", "no image target"),
])
def test_bad_input_is_a_config_error(base, target, err):
    with pytest.raises(ConfigError, match=err):
        AppendBuilder(base).plan(BuildContext(files={}, entrypoint=("true",)), target)
