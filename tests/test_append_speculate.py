"""Speculative dependency layers: the layers of pinned wheels already in the wheel store are begun
while resolution runs, and used only when resolution picks exactly those files. Real registry,
real uv/pip resolution against the package index, real wheels; nothing mocked."""
from __future__ import annotations

import gzip
import io
import shutil
import tarfile
import threading
import uuid
import zipfile
from pathlib import Path

import pytest
import requests

from fairing.builders.append import AppendBuilder
from fairing.builders.deps import platform_tags
from fairing.builders.deps.speculate import candidates, pins
from fairing.context import BuildContext
from fairing.errors import BuildError
from fairing.oci.cache import Cache, sha256_file

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
SMALL = ("six==1.16.0", "idna==3.6", "pip==24.0")  # pip's wheel (2.1 MB) gets a layer of its own
PIP = "pip-24.0-py3-none-any.whl"
TAGS = platform_tags({"architecture": "amd64"})
LAYER_THREADS = ("fairing-layer", "fairing-speculate", "fairing-compile", "fairing-download")


def ctx(requirements=SMALL) -> BuildContext:
    return BuildContext(files={"main.py": b"import pip, six\nprint(pip.__version__)\n"}, entrypoint=("python3", "main.py"),
                        requirements=tuple(requirements), python="3.11")


def target(host: str) -> tuple[str, str]:
    name = f"test/spec-{uuid.uuid4().hex[:10]}"
    return name, f"{host}/{name}:v1"


def with_store(store: Path, cache: Path) -> Path:
    """A fresh cache whose wheel store holds copies of `store`'s wheels (as after earlier builds)."""
    shutil.copytree(store, cache / "wheels")
    return cache


@pytest.fixture(scope="module")
def without(registry, base_image, tmp_path_factory):
    """The image built from an empty cache (nothing in the store: no speculation), and the wheel
    store that build left: (digest, store directory)."""
    cache = tmp_path_factory.mktemp("no-store")
    _, ref = target(registry.host)
    img = AppendBuilder(base_image.docker, cache_dir=cache).build(ctx(), ref)
    assert "speculated" not in img.stats.phases and "speculate" not in img.stats.phases
    assert (cache / "wheels" / PIP).is_file()
    return img.digest, cache / "wheels"


# --- which store wheels are guessed (pure) ----------------------------------------------------------------
def test_only_exact_pins_of_fitting_big_store_wheels_are_guessed(tmp_path):
    assert pins(["numpy==2.1.3", "Scikit_Learn==1.5.2", "pandas>=2", "six==1.*", "idna[all]==3.6",
                 "tqdm==4.66.4; python_version >= '3.8'", "pip @ https://example.invalid/pip.whl", "a==1,<2"]) \
        == {"numpy": "2.1.3", "scikit-learn": "1.5.2"}
    store = tmp_path / "wheels"
    store.mkdir()
    for name, size in {"numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl": 2 << 20,
                       "numpy-2.1.3-cp311-cp311-manylinux_2_28_x86_64.whl": 2 << 20,  # preferred: the newer glibc
                       "numpy-2.1.3-cp312-cp312-manylinux_2_17_x86_64.whl": 3 << 20,  # another Python
                       "numpy-2.1.3-cp311-cp311-manylinux_2_34_x86_64.whl": 3 << 20,  # newer than the base's glibc
                       "numpy-2.1.2-cp311-cp311-manylinux_2_17_x86_64.whl": 3 << 20,  # another version
                       "scipy-1.14.1-cp311-cp311-manylinux_2_17_aarch64.whl": 9 << 20,  # another architecture
                       "scikit_learn-1.5.2-cp311-cp311-manylinux_2_17_x86_64.whl": 5 << 20,
                       "six-1.16.0-py2.py3-none-any.whl": 11_000}.items():  # small: its group depends on the rest
        (store / name).write_bytes(b"\0" * size)
    found = candidates(["numpy==2.1.3", "scikit-learn==1.5.2", "scipy==1.14.1", "six==1.16.0"], "3.11", TAGS, Cache(tmp_path))
    assert [(n, v, p.name) for n, v, p in found] == [
        ("scikit-learn", "1.5.2", "scikit_learn-1.5.2-cp311-cp311-manylinux_2_17_x86_64.whl"),  # biggest first
        ("numpy", "2.1.3", "numpy-2.1.3-cp311-cp311-manylinux_2_28_x86_64.whl")]


# --- builds through the registry ---------------------------------------------------------------------------
def test_speculation_gives_the_same_digest_as_without(registry, base_image, without, tmp_path):
    digest, store = without
    _, ref = target(registry.host)
    lines: list[str] = []
    img = AppendBuilder(base_image.docker, cache_dir=with_store(store, tmp_path / "c"), progress=lines.append).build(ctx(), ref)
    phases = img.stats.phases
    assert phases["speculated"] == 1 and phases["speculated_unused"] == 0, phases  # pip's own layer
    assert phases["speculate"] > 0 and phases["resolve"] > 0
    assert any(line.startswith("while resolving: making the layers of 1 pinned wheel(s)") for line in lines)
    assert img.digest == digest
    assert not [t for t in threading.enumerate() if t.name.startswith(LAYER_THREADS)]


@pytest.mark.parametrize("plant", ["other-tags", "same-file-name"])
def test_a_store_wheel_resolution_does_not_pick_never_reaches_the_image(registry, base_image, without, tmp_path, plant):
    """A pip 24.0 wheel in the store with a module the real one lacks: either under tags the
    guess prefers (resolution picks the index's py3-none-any file), or under the real file's very
    name. Its layer may be begun, but the image has the resolved wheel's, as without speculation."""
    digest, store = without
    cache = with_store(store, tmp_path / "c")
    real = (cache / "wheels" / PIP).read_bytes()
    planted = cache / "wheels" / (PIP.replace("-any.whl", "-manylinux_2_17_x86_64.whl") if plant == "other-tags" else PIP)
    buf = io.BytesIO(real)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("pip/planted_by_test.py", "PLANTED = True\n")
    planted.write_bytes(buf.getvalue())
    name, ref = target(registry.host)
    img = AppendBuilder(base_image.docker, cache_dir=cache).build(ctx(), ref)
    phases = img.stats.phases
    assert phases["speculated_unused"] == 1 and phases["speculated"] == 0, phases
    assert img.digest == digest
    # The pushed pip layer has the index's files only.
    m = requests.get(f"{registry.url}/v2/{name}/manifests/v1", headers={"Accept": ACCEPT}, timeout=30).json()
    config = requests.get(f"{registry.url}/v2/{name}/blobs/{m['config']['digest']}", timeout=30).json()
    lines = [h.get("created_by", "") for h in config["history"] if not h.get("empty_layer")]
    pip_layer = m["layers"][next(i for i, line in enumerate(lines) if line.startswith("fairing: install pip==24.0"))]
    blob = requests.get(f"{registry.url}/v2/{name}/blobs/{pip_layer['digest']}", timeout=60).content
    members = tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))).getnames()
    assert "opt/fairing/site-packages/pip/__init__.py" in members
    assert not [n for n in members if "planted_by_test" in n]
    if plant == "same-file-name":  # the store holds the index's file again, checked by its sha256
        assert sha256_file(cache / "wheels" / PIP) == sha256_file(store / PIP)


def test_layers_are_made_before_resolution_answers(registry, base_image, without, tmp_path, monkeypatch):
    """Resolved by pip, as on a machine without uv (slower than uv: seconds), pip's own layer is
    made before the answer comes, and the image is the same."""
    import importlib

    monkeypatch.setattr(importlib.import_module("fairing.builders.deps.resolve"), "uv_binary", lambda: None)
    digest, store = without
    _, ref = target(registry.host)
    lines: list[str] = []
    img = AppendBuilder(base_image.docker, cache_dir=with_store(store, tmp_path / "c"), progress=lines.append).build(ctx(), ref)
    phases = img.stats.phases
    assert any(" with pip for Python 3.11" in line for line in lines)
    assert phases["speculated"] == 1 and phases["speculated_early"] >= 1, phases
    assert img.digest == digest


def test_a_failed_resolution_leaves_nothing_behind(registry, base_image, without, tmp_path):
    _, store = without
    cache = with_store(store, tmp_path / "c")
    name, ref = target(registry.host)
    lines: list[str] = []
    with pytest.raises(BuildError, match="no wheel of"):
        AppendBuilder(base_image.docker, cache_dir=cache, progress=lines.append).build(
            ctx(("pip==24.0", f"fairing-no-such-dist-{uuid.uuid4().hex[:6]}==1.0")), ref)
    assert any(line.startswith("while resolving: making the layers of 1 pinned wheel(s)") for line in lines)
    # No speculative (or other) layer thread outlives the build, no temp file or dir is left in
    # the cache, and the registry has no manifest and no tag.
    assert not [t.name for t in threading.enumerate() if t.name.startswith(LAYER_THREADS)]
    assert not [p for p in cache.rglob("*") if p.name.startswith((".tmp-", ".build-", ".resolve-"))]
    assert requests.get(f"{registry.url}/v2/{name}/manifests/v1", headers={"Accept": ACCEPT}, timeout=30).status_code == 404
    tags = requests.get(f"{registry.url}/v2/{name}/tags/list", timeout=30)
    assert tags.status_code == 404 or not (tags.json().get("tags") or [])
