"""Bytecode layers: the dependencies' .pyc files are in the image, Python in the image really loads
them (no compiling at start), their bytes do not depend on the building process, and a machine
without the image's Python says so (or fails, when bytecode was asked for)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import uuid

import pytest
import requests

from fairing.builders.append import AppendBuilder
from fairing.builders.deps import SITE_DIR, bytecode
from fairing.context import BuildContext
from fairing.errors import BuildError, ConfigError

REQS = ("idna==3.6", "six==1.16.0")
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def ctx(entrypoint=("python3", "main.py")) -> BuildContext:
    return BuildContext(files={"main.py": b"import idna, six\nprint(idna.encode('b\\xfccher.example').decode(), six.PY3)\n"},
                        entrypoint=entrypoint, requirements=REQS, python="3.11")


def history(url: str, repo: str, tag: str) -> tuple[dict, list[str]]:
    m = requests.get(f"{url}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=30).json()
    config = requests.get(f"{url}/v2/{repo}/blobs/{m['config']['digest']}", timeout=30).json()
    return m, [h.get("created_by", "") for h in config["history"] if not h.get("empty_layer")]


def test_the_image_loads_the_dependencies_from_their_bytecode(registry, base_image, engine, tmp_path):
    interp = bytecode.interpreter("3.11")
    assert interp is not None, "the test machine runs Python 3.11, so it must be found"
    said: list[str] = []
    repo = f"fairing-test/pyc-{uuid.uuid4().hex[:8]}"
    img = AppendBuilder(base_image.docker, cache_dir=tmp_path / "cache", progress=said.append).build(
        ctx(("python3", "-v", "main.py")), f"{registry.host}/{repo}:v1")
    assert any("bytecode layers" in s for s in said), said
    m, lines = history(registry.url, repo, "v1")
    pyc_layers = [layer for layer, line in zip(m["layers"], lines) if line.startswith("fairing: bytecode of")]
    assert pyc_layers and all(f"compiled by Python {interp.version}" in line for line in lines if line.startswith("fairing: bytecode"))
    # Each bytecode layer follows its group's install layer and holds only __pycache__/*.pyc.
    for i, line in enumerate(lines):
        if line.startswith("fairing: bytecode of"):
            assert lines[i - 1].startswith("fairing: install")
    for layer in pyc_layers:
        blob = requests.get(f"{registry.url}/v2/{repo}/blobs/{layer['digest']}", timeout=30)
        with tarfile.open(fileobj=io.BytesIO(blob.content)) as t:
            files = [n.name for n in t.getmembers() if n.isfile()]
        assert files and all(f.startswith(SITE_DIR.lstrip("/")) and "/__pycache__/" in f and f.endswith(".cpython-311.pyc") for f in files)

    client = engine.client()
    try:
        client.images.pull(img.ref)
        out = client.containers.run(img.ref, remove=True, stdout=True, stderr=True).decode()
    finally:
        client.close()
    assert "xn--bcher-kva.example True" in out
    # python -v names the pyc it loaded each module from, and "matches" says it was accepted.
    core = f"{SITE_DIR}/idna/__pycache__/core.cpython-311.pyc"
    assert f"# code object from '{core}'" in out, [l for l in out.splitlines() if "idna" in l][:10]
    assert f"# {core} matches {SITE_DIR}/idna/core.py" in out
    assert "bad magic" not in out and f"# wrote '{SITE_DIR}" not in out


def test_bytecode_bytes_do_not_depend_on_the_building_process():
    interp = bytecode.interpreter("3.11")
    assert interp is not None
    modules = [(f"{SITE_DIR}/m{i}.py", f"X = {{'a{i}', 'b', 'c', 'd'}}\nimport os\ndef f(x):\n    return x in X and os.sep\n".encode())
               for i in range(20)]
    ours = bytecode.compile_all(interp, modules)
    assert len(ours) == 20 and all(k.endswith(".cpython-311.pyc") and "/__pycache__/" in k for k in ours)
    # Another process, another hash seed, other modules imported, the modules in another order.
    script = ("import sys, json, hashlib, pickle, email.mime.text, decimal\n"
              "from fairing.builders.deps import bytecode\n"
              "mods = pickle.loads(sys.stdin.buffer.read())[::-1]\n"
              "out = bytecode.compile_all(bytecode.interpreter('3.11'), mods)\n"
              "print(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in out.items()}))\n")
    r = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(modules), capture_output=True,
                       env={**os.environ, "PYTHONHASHSEED": "4242"}, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout) == {k: hashlib.sha256(v).hexdigest() for k, v in ours.items()}


def test_no_matching_python_auto_builds_without_bytecode_and_on_fails_cleanly(registry, base_image, tmp_path, monkeypatch):
    # A machine with no Python 3.10: nothing on PATH, and this interpreter is 3.11.
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(bytecode, "_found", {})
    said: list[str] = []
    repo = f"fairing-test/nopyc-{uuid.uuid4().hex[:8]}"
    b = AppendBuilder(base_image.docker, cache_dir=tmp_path / "cache", python_version="3.10", progress=said.append)
    b.build(ctx(), f"{registry.host}/{repo}:auto")
    assert any(s.startswith("no Python 3.10 on this machine: dependency layers without bytecode") for s in said), said
    _, lines = history(registry.url, repo, "auto")
    assert not any(line.startswith("fairing: bytecode") for line in lines)

    on = AppendBuilder(base_image.docker, cache_dir=tmp_path / "cache", python_version="3.10", bytecode=True)
    with pytest.raises(BuildError) as e:
        on.build(ctx(), f"{registry.host}/{repo}:on")
    assert "needs Python 3.10" in str(e.value) and "bytecode=False" in e.value.hint
    assert requests.get(f"{registry.url}/v2/{repo}/manifests/on", headers={"Accept": ACCEPT}, timeout=30).status_code == 404


def test_bytecode_setting_is_checked_once_and_can_be_turned_off(base_image, monkeypatch):
    with pytest.raises(ConfigError) as e:
        AppendBuilder(base_image.docker, bytecode="sometimes")
    assert "auto, on, off" in str(e.value)
    monkeypatch.setenv("FAIRING_BYTECODE", "off")
    assert AppendBuilder(base_image.docker).bytecode == "off"
    assert AppendBuilder(base_image.docker, bytecode=True).bytecode == "on"  # the explicit option wins


def test_bytecode_bytes_do_not_depend_on_how_the_modules_are_cut_into_processes():
    """The store compiles a wheel in units on several processes at once: the bytes must be those of
    one process compiling everything."""
    from fairing.builders.deps import store

    interp = bytecode.interpreter("3.11")
    modules = [(f"{SITE_DIR}/pkg/m{i:02d}.py", f"T = ({i}, 'x{i}', 2.5, b'y')\nclass C{i}:\n    def f(self):\n        return T\n".encode())
               for i in range(30)]
    whole = bytecode.compile_all(interp, modules)
    cut = store.units(modules, 200)
    assert len(cut) > 5 and [m for u in cut for m in u] == modules
    parts: dict = {}
    for u in cut:
        parts.update(bytecode.compile_all(interp, u))
    assert parts == whole


def build_pyc(base_image, registry, cache, reqs, repo):
    """One append build with its progress lines; (image, what it said about bytecode, digests of
    the bytecode layers)."""
    said: list[str] = []
    c = BuildContext(files={"main.py": b"import six\n"}, entrypoint=("python3", "main.py"), requirements=reqs, python="3.11")
    img = AppendBuilder(base_image.docker, cache_dir=cache, progress=said.append).build(c, f"{registry.host}/{repo}:v1")
    m, lines = history(registry.url, repo, "v1")
    pycs = [layer["digest"] for layer, line in zip(m["layers"], lines) if line.startswith("fairing: bytecode of")]
    return img, [s for s in said if s.startswith("bytecode:")], pycs


def test_a_build_with_an_emptied_layer_cache_takes_the_bytecode_from_the_store(registry, base_image, tmp_path):
    import shutil

    from fairing.builders.deps import store

    cache = tmp_path / "cache"
    repo = f"fairing-test/pycstore-{uuid.uuid4().hex[:8]}"
    first, said, pycs = build_pyc(base_image, registry, cache, REQS, repo + "-a")
    assert pycs and said and " 0 wheel(s) from the bytecode store" in said[0] and not said[0].startswith("bytecode: 0 modules")
    assert first.stats.phases["compile"] > 0
    entries = sorted((cache / store.AREA).rglob("*.zip"))
    assert len(entries) == 2  # one per wheel: idna, six

    # Layers and indexes gone (wheels and bytecode kept, as after `fair cache prune` of layers, or
    # on another project's first build): nothing is compiled and the image is the same.
    for area in ("layers", "keys"):
        shutil.rmtree(cache / area)
    again, said, pycs_again = build_pyc(base_image, registry, cache, REQS, repo + "-b")
    assert said == ["bytecode: 0 modules of 0 wheel(s) compiled (0.00 CPU-s), 2 wheel(s) from the bytecode store"]
    assert again.stats.phases.get("compile", 0) == 0
    assert pycs_again == pycs and again.digest == first.digest

    # Another project, whose small group holds six and tqdm (a new layer): only tqdm is compiled.
    _, said, _ = build_pyc(base_image, registry, cache, ("six==1.16.0", "tqdm==4.66.4"), repo + "-c")
    assert len(said) == 1 and " of 1 wheel(s) compiled" in said[0] and said[0].endswith(", 1 wheel(s) from the bytecode store")

    # A damaged entry is compiled again, to the same bytes; a fresh cache compiles everything, to
    # the same bytes too (the store holds exactly what compiling gives).
    for area in ("layers", "keys"):
        shutil.rmtree(cache / area)
    entries[0].write_bytes(entries[0].read_bytes()[:-40])
    fixed, said, pycs_fixed = build_pyc(base_image, registry, cache, REQS, repo + "-d")
    assert " of 1 wheel(s) compiled" in said[0] and said[0].endswith(" 1 wheel(s) from the bytecode store")
    assert pycs_fixed == pycs and fixed.digest == first.digest
    fresh, said, pycs_fresh = build_pyc(base_image, registry, tmp_path / "fresh", REQS, repo + "-e")
    assert " of 2 wheel(s) compiled" in said[0] and pycs_fresh == pycs and fresh.digest == first.digest
