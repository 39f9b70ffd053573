"""Per-package dependency layers: the grouping, the wheel install, and what reaches the registry
(real uv/pip resolution against the package index, real registries, Podman for the heavy set)."""
from __future__ import annotations

import gzip
import io
import json
import re
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
import requests

from fairing.builders.append import AppendBuilder
from fairing.builders.deps import SITE_DIR, Wheel, group, install_layers, platform_tags
from fairing.context import BuildContext
from fairing.oci.cache import Cache

TAGS = platform_tags({"architecture": "amd64"})
SMALL = ("six==1.16.0", "idna==3.6", "pip==24.0")  # pip's wheel (2.1 MB) gets a layer of its own
HEAVY = ("numpy==2.1.3", "pandas==2.2.3", "scikit-learn==1.5.2", "scipy==1.14.1")
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def wheel(name: str, size: int, version: str = "1.0") -> Wheel:
    return Wheel(name, version, f"{name}-{version}-py3-none-any.whl", f"https://example.invalid/{name}.whl",
                 (name + version).encode().hex().ljust(64, "0")[:64], size)


def ctx(requirements, note: str = "v1") -> BuildContext:
    return BuildContext(files={"main.py": f"print({note!r})\n".encode()}, entrypoint=("python3", "main.py"),
                        requirements=tuple(requirements), python="3.11")


# --- grouping (pure) ------------------------------------------------------------------------------
def test_grouping_is_deterministic_and_bounded():
    wheels = [wheel(f"big{i:02d}", (i + 2) << 20) for i in range(30)] + [wheel(f"tiny{i}", 1000) for i in range(12)]
    groups = group(wheels)
    assert len(groups) <= 20
    assert group(list(reversed(wheels))) == groups  # input order does not matter
    own = [g for g in groups if not g.name.startswith("small-")]
    assert len(own) == 16 and all(len(g.wheels) == 1 for g in own)
    # the biggest packages get their own layers; the rest share the small groups
    assert {g.wheels[0].name for g in own} == {f"big{i:02d}" for i in range(14, 30)}
    assert sum(len(g.wheels) for g in groups) == len(wheels)


def test_adding_or_changing_one_small_package_changes_one_group():
    base = [wheel("numpy", 16 << 20), wheel("joblib", 300_000), wheel("six", 11_000), wheel("idna", 66_000), wheel("pytz", 500_000)]
    before = group(base)
    added = group(base + [wheel("tqdm", 78_000)])
    changed = group([w if w.name != "idna" else wheel("idna", 67_000, "3.7") for w in base])
    for after in (added, changed):
        differ = [g for g in after if g not in before]
        assert len(differ) == 1 and differ[0].name.startswith("small-")
    assert [g.name for g in before][0] == "numpy"


# --- the wheel install (real wheels from the index) ----------------------------------------------------
def layer_members(path: Path) -> dict:
    tar = tarfile.open(fileobj=io.BytesIO(gzip.decompress(path.read_bytes())))
    return {m.name: (m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


@pytest.mark.slow
def test_each_package_its_own_layer_with_scripts_record_and_no_host_paths(tmp_path):
    cache = Cache(tmp_path / "cache")
    layers = install_layers(list(SMALL), python="3.11", tags=TAGS, cache=cache)
    names = [d.group.name for d in layers]
    assert names[0] == "pip" and all(n.startswith("small-") for n in names[1:])
    site = SITE_DIR.lstrip("/")
    pip_layer = layer_members(layers[0].layer.path)
    script = pip_layer[f"{site}/bin/pip"]
    assert script[0].mode == 0o755 and script[1].startswith(b"#!/usr/bin/env python3\n")
    assert b"from pip._internal.cli.main import main" in script[1]
    assert pip_layer[f"{site}/pip-24.0.dist-info/INSTALLER"][1] == b"fairing\n"
    record = pip_layer[f"{site}/pip-24.0.dist-info/RECORD"][1].decode()
    assert "bin/pip," in record and sys.executable.encode() not in b"".join(v[1] or b"" for v in pip_layer.values())
    assert not any("__pycache__" in n for n in pip_layer)
    small = {n for d in layers[1:] for n in layer_members(d.layer.path)}
    assert f"{site}/six.py" in small and f"{site}/idna/__init__.py" in small and f"{site}/pip/__init__.py" not in small
    # the second time every layer comes from the cache, without resolving or downloading
    timings: dict = {}
    again = install_layers(list(SMALL), python="3.11", tags=TAGS, cache=cache, timings=timings)
    assert [d.layer for d in again] == [d.layer for d in layers] and not any(d.built for d in again)
    assert "download" not in timings and "layers" not in timings


@pytest.mark.slow
def test_pip_fallback_resolves_to_the_same_wheels_and_layers(tmp_path, monkeypatch):
    """Without uv (not installed, or a platform it cannot target) pip resolves; the layers must
    not depend on which one did."""
    import importlib

    resolve_mod = importlib.import_module("fairing.builders.deps.resolve")  # the module, not the function

    with_uv = install_layers(list(SMALL), python="3.11", tags=TAGS, cache=Cache(tmp_path / "a"))
    monkeypatch.setattr(resolve_mod, "uv_binary", lambda: None)  # as on a machine without uv
    wheels, how = resolve_mod.resolve(list(SMALL), "3.11", TAGS, Cache(tmp_path / "b"))
    assert how == "pip"
    assert sorted(w.sha256 for w in wheels) == sorted(w.sha256 for d in with_uv for w in d.group.wheels)
    with_pip = install_layers(list(SMALL), python="3.11", tags=TAGS, cache=Cache(tmp_path / "b"))
    assert [d.layer.digest for d in with_pip] == [d.layer.digest for d in with_uv]


# --- what reaches the registry ------------------------------------------------------------------------
def uploaded_blobs(log: Path, start: int, repo: str) -> list[str]:
    """Digests of blob uploads the registry completed for `repo` since byte `start` of its access log."""
    text = log.read_bytes()[start:].decode(errors="replace")
    out = []
    for line in text.splitlines():
        if f'"PUT /v2/{repo}/blobs/uploads/' in line and re.search(r'HTTP/1\.1" 201 ', line):
            m = re.search(r"digest=sha256(?:%3A|:)([0-9a-f]{64})", line)
            if m:
                out.append(f"sha256:{m.group(1)}")
    return out


def manifest(url: str, repo: str, ref: str) -> dict:
    r = requests.get(f"{url}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=30)
    r.raise_for_status()
    return r.json()


def layer_names(url: str, repo: str, m: dict) -> dict[str, str]:
    """{layer digest: its history line} for an image (history entries with a layer, in order)."""
    config = requests.get(f"{url}/v2/{repo}/blobs/{m['config']['digest']}", timeout=30).json()
    lines = [h.get("created_by", "") for h in config["history"] if not h.get("empty_layer")]
    assert len(lines) == len(m["layers"])
    return {layer["digest"]: line for layer, line in zip(m["layers"], lines)}


def group_layers(names: dict[str, str], package: str) -> list[str]:
    """The digests of the layer installing `package` and of its bytecode layer (right after it), if any."""
    digests = list(names)
    i = next(i for i, d in enumerate(digests) if names[d].startswith("fairing: install") and package in names[d])
    following = digests[i + 1:i + 2]
    return [digests[i], *(d for d in following if names[d].startswith("fairing: bytecode of"))]


def test_pin_change_uploads_only_the_changed_layer(registry_factory, base_image, tmp_path):
    """The registry's own access log is the witness: which blobs were PUT, per build."""
    reg = registry_factory()
    # The base image lives on the shared registry; copy it over (mount needs the same registry).
    base = f"{reg.host}/base/python:3.11"
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--src-tls-verify=false", "-q",
                    f"docker://{base_image.docker}", f"docker://{base}"], check=True, capture_output=True, timeout=300)
    cache = tmp_path / "cache"
    repo = "team/pins"

    def build(requirements, tag):
        start = reg.log.stat().st_size
        img = AppendBuilder(base, cache_dir=cache).build(ctx(requirements), f"{reg.host}/{repo}:{tag}")
        return img, uploaded_blobs(reg.log, start, repo), manifest(reg.url, repo, tag)

    img1, up1, m1 = build(SMALL, "v1")
    n_base = len(manifest(reg.url, "base/python", "3.11")["layers"])
    deps1 = m1["layers"][n_base:-1]  # pip's own layer + the small groups, then the code layer
    assert len(deps1) >= 2
    assert set(up1) >= {d["digest"] for d in deps1}  # first build: everything new goes up

    changed = ("six==1.16.0", "idna==3.7", "pip==24.0")
    img2, up2, m2 = build(changed, "v2")
    new = [d["digest"] for d in m2["layers"] if d["digest"] not in {x["digest"] for x in m1["layers"]}]
    # Only idna's small group differs (the code layer is the same bytes): its files and, when
    # this machine has Python 3.11 (the base's), its bytecode layer.
    names = layer_names(reg.url, repo, m2)
    assert sorted(new) == sorted(group_layers(names, "idna==3.7")), [names[d] for d in new]
    config2 = m2["config"]["digest"]
    assert sorted(up2) == sorted([*new, config2]), "blobs other than the changed layers and the config were uploaded"
    assert img2.stats.layers_uploaded == len(new) and img2.stats.layers_skipped == len(m2["layers"]) - len(new)
    assert img2.stats.phases.get("upload", 0) > 0 and "resolve" in img2.stats.phases

    # Same requirements again from another cache directory: same digest, nothing uploaded.
    start = reg.log.stat().st_size
    img3 = AppendBuilder(base, cache_dir=tmp_path / "other-cache").build(ctx(changed), f"{reg.host}/{repo}:v3")
    assert img3.digest == img2.digest
    assert uploaded_blobs(reg.log, start, repo) == []


def test_heavy_set_runs_its_imports_in_podman(registry, base_image, engine, tmp_path_factory):
    cache = tmp_path_factory.mktemp("heavy-cache")
    target = f"{registry.host}/fairing-test/heavy-{uuid.uuid4().hex[:8]}:v1"
    code = BuildContext(files={"main.py": b"import numpy, pandas, sklearn, scipy\n"
                                          b"print(numpy.__version__, pandas.__version__, sklearn.__version__, scipy.__version__)\n"},
                        entrypoint=("python3", "main.py"), requirements=HEAVY, python="3.11")
    img = AppendBuilder(base_image.docker, cache_dir=cache).build(code, target)
    m = manifest(registry.url, target.split("/", 1)[1].rsplit(":", 1)[0], "v1")
    history = json.loads(requests.get(f"{registry.url}/v2/{target.split('/', 1)[1].rsplit(':', 1)[0]}/blobs/{m['config']['digest']}", timeout=30).content)["history"]
    installs = [h["created_by"] for h in history if h["created_by"].startswith("fairing: install")]
    assert 5 <= len(installs) <= 20
    assert any("scipy==1.14.1" in h for h in installs) and any("numpy==2.1.3" in h for h in installs)
    client = engine.client()
    try:
        client.images.pull(img.ref)
        out = client.containers.run(img.ref, remove=True).decode()
    finally:
        client.close()
    assert out.split() == ["2.1.3", "2.2.3", "1.5.2", "1.14.1"]


def test_heavy_set_runs_its_imports_on_the_real_node(on_node, tmp_path_factory):
    """The same per-package layers pulled by containerd on the rig's real node and run as a Job."""
    import fairing

    cache = tmp_path_factory.mktemp("heavy-node-cache")
    (cache / "main.py").write_text("import numpy, pandas, sklearn, scipy\n"
                                   "print(numpy.__version__, pandas.__version__, sklearn.__version__, scipy.__version__)\n")
    job = fairing.TrainJob(cache / "main.py", registry=on_node.registry, base_image=on_node.base,
                           requirements=list(HEAVY), kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace,
                           name=f"heavy-{uuid.uuid4().hex[:6]}", deployer="job", progress=False,
                           deployer_options={"mutators": on_node.mutators()})
    h = job.submit()
    try:
        assert h.wait(timeout=600) == "Succeeded"
        assert h.log_text().split() == ["2.1.3", "2.2.3", "1.5.2", "1.14.1"]
    finally:
        h.delete()


# --- compression: fixed bytes ---------------------------------------------------------------------------
def fixed_input(n: int) -> bytes:
    """Deterministic, compressible bytes (same on every machine and Python)."""
    import hashlib

    words = [hashlib.sha256(str(i).encode()).hexdigest()[: 3 + i % 7] for i in range(500)]
    out, i = [], 0
    while sum(map(len, out)) < n:
        h = hashlib.sha256(str(i).encode()).digest()
        out.append(" ".join(words[b % 500] for b in h).encode() + b"\n")
        i += 1
    return b"".join(out)[:n]


# The gzip bytes of a fixed 3.3 MiB layer (four pieces). If this changes, every layer digest
# changes with it: only change it together with Compression's settings, on purpose.
STORED_GZIP_DIGEST = "sha256:35098ab18b9d92e36303002843f34d24f104511f49f1d490c7a3e99d6631420e"


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2", "7"])
def test_block_gzip_bytes_are_fixed_whatever_the_thread_count(jobs, monkeypatch):
    import fairing.oci.layer as layer

    monkeypatch.setenv("FAIRING_JOBS", jobs)
    monkeypatch.setattr(layer, "_pool", None)  # a pool of this size
    buf = io.BytesIO()
    info = layer.write_layer({"data/blob.txt": fixed_input(3_500_000)}, buf, mtime=0)
    assert gzip.decompress(buf.getvalue())  # one valid gzip stream
    assert info.digest == STORED_GZIP_DIGEST


def test_zstd_is_opt_in_and_runs_in_podman(registry, base_image, engine, tmp_path):
    pytest.importorskip("zstandard", reason="zstd layers need the zstandard package")
    target = f"{registry.host}/fairing-test/zstd-{uuid.uuid4().hex[:8]}:v1"
    c = BuildContext(files={"main.py": b"import six; print('zstd ok', six.__version__)\n"}, entrypoint=("python3", "main.py"),
                     requirements=("six==1.16.0",), python="3.11")
    default = AppendBuilder(base_image.docker, cache_dir=tmp_path / "c").image(c)
    assert not any(layer.media_type.endswith("zstd") for layer in default.layers)
    img = AppendBuilder(base_image.docker, cache_dir=tmp_path / "c", compression="zstd").build(c, target)
    m = manifest(registry.url, target.split("/", 1)[1].rsplit(":", 1)[0], "v1")
    assert m["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert [d["mediaType"] for d in m["layers"][-2:]] == ["application/vnd.oci.image.layer.v1.tar+zstd"] * 2
    client = engine.client()
    try:
        client.images.pull(img.ref)
        assert client.containers.run(img.ref, remove=True).decode().strip() == "zstd ok 1.16.0"
    finally:
        client.close()


# --- fair cache info / prune ----------------------------------------------------------------------------
def fair(*args, cache: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "FAIRING_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "fairing.cli", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
def test_cache_info_and_prune_least_recently_used_first(tmp_path):
    import os
    import time

    cache = Cache(tmp_path / "cache")
    install_layers(["six==1.16.0"], python="3.11", tags=TAGS, cache=cache)
    (tmp_path / "cache" / "bin").mkdir()
    (tmp_path / "cache" / "bin" / "crane").write_bytes(b"x" * 5000)  # a tool, not a cache entry
    info = json.loads(fair("cache", "info", "-o", "json", cache=tmp_path / "cache").stdout)
    assert info["wheels"]["entries"] == 1 and info["keys"]["entries"] == 2 and info["layers"]["entries"] == 1
    # age everything but the layer; --older-than removes exactly the aged entries
    old = time.time() - 10 * 86400
    for area in ("wheels", "keys"):
        for p in (tmp_path / "cache" / area).rglob("*"):
            os.utime(p, (old, old))
        for p in (tmp_path / "cache" / area).iterdir():
            os.utime(p, (old, old))
    dry = fair("cache", "prune", "--older-than", "7d", "--dry-run", cache=tmp_path / "cache")
    assert dry.returncode == 0 and dry.stdout.startswith("would remove")
    assert (tmp_path / "cache" / "wheels").iterdir().__next__()  # nothing removed by a dry run
    r = fair("cache", "prune", "--older-than", "7d", "-o", "json", cache=tmp_path / "cache")
    assert r.returncode == 0 and json.loads(r.stdout)["removed"] == 3
    left = json.loads(fair("cache", "info", "-o", "json", cache=tmp_path / "cache").stdout)
    assert left["wheels"]["entries"] == left["keys"]["entries"] == 0
    assert left["layers"]["entries"] == 1
    assert fair("cache", "prune", "--max-size", "0", cache=tmp_path / "cache").returncode == 0
    assert json.loads(fair("cache", "info", "-o", "json", cache=tmp_path / "cache").stdout)["total"]["entries"] == 0
    assert (tmp_path / "cache" / "bin" / "crane").exists()
    bad = fair("cache", "prune", "--max-size", "lots", cache=tmp_path / "cache")
    assert bad.returncode == 2 and "is not a size" in bad.stderr and "Traceback" not in bad.stderr
