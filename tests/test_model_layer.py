"""A registered model version's layer (issue 22): registering into a registry store writes the
version's files as one deterministic uncompressed tar layer; a serving image (and a modelcar) of
that version on the same registry gets it by cross-repository mount: the files are never fetched
to this machine nor uploaded, and the image digest pins code and model together.

What was fetched or uploaded is read from the rig's plain registry's own access log (every request
it answered), filtered by this test's unique repository names: no wrapped transport."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from fairing.image_runtime import outputs as shim

ROOT = Path(__file__).resolve().parent.parent

READER = textwrap.dedent("""
    import os

    class Reader:
        def load(self, model_dir):
            import hashlib
            self.where = model_dir
            self.digest = hashlib.sha256(open(os.path.join(model_dir, "model.joblib"), "rb").read()).hexdigest()

        def predict(self, instances):
            return [[self.where, self.digest] for _ in instances]
""")


def _log_path() -> Path:
    from tests.rig.state import rig_dir

    return rig_dir() / "registry-plain.log"


LOG = _log_path()  # read before a test points FAIRING_CACHE (which the rig's dir follows) elsewhere


def access_log() -> Path:
    return LOG


def requests_since(mark: int, repo_part: str) -> list[str]:
    """The request lines ("METHOD URI STATUS") the plain registry logged after byte `mark` that
    name `repo_part`."""
    time.sleep(0.3)  # the registry writes its access line after the response
    with open(access_log(), "rb") as f:
        f.seek(mark)
        text = f.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        if '"' not in line or repo_part not in line:
            continue
        try:
            request, rest = line.split('"')[1], line.split('"')[2]
        except IndexError:
            continue
        out.append(f"{request.rsplit(' ', 1)[0]} {rest.split()[0]}")
    return out


def old_python() -> str:
    """Python 3.8 (the oldest an image may have) when this machine has one that runs, else ours."""
    import glob
    import subprocess
    import sys

    for cand in [os.path.expanduser("~/.pyenv/versions/3.8.18/bin/python3.8"), *glob.glob("/usr/bin/python3.8")]:
        if os.path.exists(cand) and subprocess.run([cand, "-c", "pass"], capture_output=True).returncode == 0:
            return cand
    return sys.executable


def saved_run(tmp_path, store_text: str, run_id: str, files: dict) -> dict:
    """A run that kept `files` in `store_text`, saved by the pod's own shim code."""
    from fairing.outputs import store as ostore

    out = tmp_path / f"out-{run_id}"
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    shim.save(str(out), ostore.open_backend(ostore.parse(store_text)), run_id, {"id": run_id, "status": "Succeeded"})
    return {"id": run_id, "command": "train", "status": "Succeeded", "outputs": {"store": store_text}}


def get(registry, path: str, accept: str | None = None) -> bytes:
    import requests

    r = requests.get(registry.url + path, headers={"Accept": accept} if accept else {}, timeout=60)
    r.raise_for_status()
    return r.content


def image_of(registry, ref: str) -> tuple[dict, dict]:
    repo, digest = ref.split("/", 1)[1].split("@")
    m = json.loads(get(registry, f"/v2/{repo}/manifests/{digest}",
                       "application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.manifest.v1+json"))
    return m, json.loads(get(registry, f"/v2/{repo}/blobs/{m['config']['digest']}"))


@pytest.fixture
def registered(tmp_path, registry, monkeypatch):
    """iris:1 (promoted to champion) registered into a registry store, from a run in another
    repository of the same registry; the store is the `outputs` setting."""
    import fairing.models as models

    tag = uuid.uuid4().hex[:10]
    runs_store, model_store = (f"oci+http://{registry.host}/mlayer-test/runs-{tag}",
                               f"oci+http://{registry.host}/mlayer-test/reg-{tag}")
    for k, v in {"FAIRING_CACHE": tmp_path / "cache", "FAIRING_RUNS": tmp_path / "runs.db",
                 "FAIRING_OUTPUTS": model_store}.items():
        monkeypatch.setenv(k, str(v))
    files = {"model.joblib": os.urandom(1_500_000), "tok/vocab.txt": b"a b c\n" * 1000}
    run = saved_run(tmp_path, runs_store, "r" + tag, files)
    v = models.register("iris", run, store=model_store)
    models.promote("iris", 1, "champion", store=model_store)
    return tag, model_store, files, v


def test_register_into_a_registry_writes_the_versions_layer_deterministically(registered, registry):
    tag, model_store, files, v = registered
    layer = v["layer"]
    assert layer["mediaType"] == "application/vnd.cncf.model.weight.v1.tar"
    repo = f"mlayer-test/reg-{tag}"
    blob = get(registry, f"/v2/{repo}/blobs/{layer['digest']}")
    assert len(blob) == layer["size"] and "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["models", "models/model.joblib", "models/tok", "models/tok/vocab.txt"]
        assert {(m.uid, m.gid, m.mtime, m.uname) for m in members} == {(0, 0, 0, "")}
        assert tar.extractfile("models/tok/vocab.txt").read() == files["tok/vocab.txt"]
    # The version's artifact references the layer (so the registry's GC keeps it), untitled (so
    # `oras pull` of the tag still gets just the files).
    m = json.loads(get(registry, f"/v2/{repo}/manifests/model.iris.v1", shim.MANIFEST_MEDIA_TYPE))
    assert m["layers"][-1] == {k: layer[k] for k in ("mediaType", "digest", "size")}
    # The same files in another repository give the same bytes (one writer, no time, no owner).
    from fairing.image_runtime import modellayer

    d = Path(os.environ["FAIRING_CACHE"]) / "again"
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    assert modellayer.describe(v["files"], str(d)) == layer
    # `fair models show` names it.
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "fairing.cli", "models", "show", "iris@champion", "--store", model_store],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert f"  layer:       {layer['digest']}  {layer['size']} bytes" in r.stdout, r.stdout + r.stderr


def test_serving_a_registered_version_mounts_its_layer_nothing_fetched_nothing_uploaded(
        registered, registry, base_image, engine, tmp_path):
    from fairing.serving import PredictionEndpoint

    tag, model_store, files, v = registered
    layer = v["layer"]
    (tmp_path / "model.py").write_text(READER)
    mark = access_log().stat().st_size
    ep = PredictionEndpoint(f"{tmp_path / 'model.py'}:Reader", name="iris", base_image=base_image.docker,
                            target=f"{registry.host}/mlayer-test/serve-{tag}:v1", deployer="local",
                            docker_host=engine.docker_host, model_ref="iris@champion", out=lambda s: None)
    img = ep.build()
    seen = requests_since(mark, f"mlayer-test/")
    hexes = [f["digest"][7:] for f in v["files"]] + [layer["digest"][7:]]
    # (1) The files were not fetched: no GET of any of their blobs (nor of the layer), no cache dir.
    assert not [r for r in seen if r.startswith("GET ") and any(h in r for h in hexes)], seen
    assert not (Path(os.environ["FAIRING_CACHE"]) / "models").exists()
    # (3) The layer was mounted from the model registry's repository (201), never uploaded.
    mounts = [r for r in seen if r.startswith(f"POST /v2/mlayer-test/serve-{tag}/blobs/uploads/?")
              and layer["digest"][7:] in r]
    assert len(mounts) == 1 and f"reg-{tag}" in mounts[0] and mounts[0].endswith(" 201"), seen
    assert not [r for r in seen if r.startswith(("PUT ", "PATCH ")) and layer["digest"][7:] in r], seen
    # (2) The image lists the version's layer, uncompressed (its digest its diff_id), before the code.
    manifest, config = image_of(registry, img.ref)
    assert manifest["layers"][-2] == {"mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                                      "size": layer["size"], "digest": layer["digest"]}
    assert config["rootfs"]["diff_ids"][-2] == layer["digest"]
    assert "FAIRING_MODEL_DIR=/models" in config["config"]["Env"]
    assert "FAIRING_MODEL_VERSION=iris:1" in config["config"]["Env"]
    # (4) The image's model dir holds the version's files: the layer, pulled from the serving
    # image's repository, extracted and checked by digest.
    blob = get(registry, f"/v2/mlayer-test/serve-{tag}/blobs/{layer['digest']}")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for f in v["files"]:
            data = tar.extractfile(f"models/{f['path']}").read()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == f["digest"]

    # The image runs (the rig's engine pulls it from the registry): load(model_dir) reads the
    # version's file from /models.
    ep.create()
    try:
        want = next(f["digest"][7:] for f in v["files"] if f["path"] == "model.joblib")
        assert ep.predict([[1]]) == [["/models", want]]
    finally:
        ep.delete()

    # The modelcar of the same version (beside the serving image) mounts the same layer: the
    # version's layer is byte-identical in both images.
    from fairing.builders.append import AppendBuilder
    from fairing.models import modelcar
    from fairing.publish.target import parse

    mark = access_log().stat().st_size
    car = modelcar.build(AppendBuilder(base_image.docker), parse(f"{registry.host}/mlayer-test/serve-{tag}:v1"),
                         ep.resolve_model())
    seen = requests_since(mark, f"mlayer-test/serve-{tag}-modelcar")
    assert [r for r in seen if r.startswith("POST ") and layer["digest"][7:] in r and r.endswith(" 201")], seen
    assert not [r for r in seen if r.startswith(("PUT ", "PATCH ")) and layer["digest"][7:] in r], seen
    manifest, _ = image_of(registry, car.ref)
    assert manifest["layers"][-2]["digest"] == layer["digest"]
    assert not (Path(os.environ["FAIRING_CACHE"]) / "models").exists()


def test_another_registry_or_a_layout_target_fetches_the_files_as_before(registered, base_image, engine, tmp_path):
    """A target the layer cannot be mounted into (an OCI layout here): the files are fetched and
    checked here and placed in the working dir, as for a version without a layer."""
    from fairing.serving import PredictionEndpoint

    tag, model_store, files, v = registered
    (tmp_path / "model.py").write_text(READER)
    layout = tmp_path / "layout"
    ep = PredictionEndpoint(f"{tmp_path / 'model.py'}:Reader", name="iris", base_image=base_image.docker,
                            target=f"oci:{layout}:v1", deployer="local", docker_host=engine.docker_host,
                            model_ref="iris@champion", out=lambda s: None)
    ep.build()
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    assert v["layer"]["digest"] not in [x["digest"] for x in manifest["layers"]]
    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text())
    assert not any(e.startswith("FAIRING_MODEL_DIR=") for e in config["config"]["Env"])
    fetched = next((Path(os.environ["FAIRING_CACHE"]) / "models").iterdir())
    assert (fetched / "model.joblib").read_bytes() == files["model.joblib"]


def test_a_retrain_registering_in_its_pod_writes_the_layer_too(tmp_path, registry):
    """The pod's side: the outputs shim, run as in the image (the shipped files alone, copied out of
    the package, on Python 3.8), saves the run, registers iris:1 and writes the same layer the
    client would have (same files, same bytes)."""
    import shutil
    import subprocess

    from fairing.image_runtime import SHIM_FILES, modellayer

    here = Path(__file__).resolve().parent.parent / "fairing" / "image_runtime"
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for n in SHIM_FILES:
        shutil.copy(here / n, shipped / n)
    script = tmp_path / "train.py"
    script.write_text("import os\nd = os.environ['FAIRING_OUTPUT_DIR']\nos.makedirs(os.path.join(d, 'tok'))\n"
                      "open(os.path.join(d, 'model.joblib'), 'wb').write(b'w' * 700000)\n"
                      "open(os.path.join(d, 'tok', 'vocab.txt'), 'w').write('a b c')\n")
    repo = f"mlayer-test/pod-{uuid.uuid4().hex[:10]}"
    out = tmp_path / "out"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("FAIRING_", "PYTHON"))},
           "FAIRING_OUTPUT_DIR": str(out), "FAIRING_RUN_ID": "podrun1", "FAIRING_REGISTER": "iris",
           "FAIRING_OUTPUTS_STORE": json.dumps({"kind": "registry", "url": registry.url, "repo": repo})}
    python = old_python()
    p = subprocess.run([python, str(shipped / "outputs.py"), "--", python, str(script)], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "registered iris:1" in p.stderr, p.stderr
    backend = shim.RegistryBackend(registry.url, repo)
    doc = backend.get_doc("model.iris.v1")
    assert doc["layer"] == modellayer.describe(doc["files"], str(out))
    assert backend.has_blob(doc["layer"]["digest"])


def test_on_the_real_node_the_mounted_layer_is_the_model_dir(on_node, registry, tmp_path, monkeypatch):
    """The same on the rig's real node (containerd pulls the image): a version registered into a
    store on the registry the image goes to is served from its mounted layer, /models. (NAME:N,
    not an alias: the store is the registry's loopback name, which a pod could not follow.)"""
    import fairing.models as models
    from fairing.serving import PredictionEndpoint

    tag = uuid.uuid4().hex[:10]
    host = on_node.registry.split("/", 1)[0]
    runs_store, model_store = f"oci+http://{host}/node-tests/mlayer-runs-{tag}", f"oci+http://{host}/node-tests/mlayer-reg-{tag}"
    for k, v in on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=model_store).items():
        if k.startswith("FAIRING_"):
            monkeypatch.setenv(k, v)
    payload = os.urandom(300_000)
    run = saved_run(tmp_path, runs_store, "n" + tag, {"model.joblib": payload})
    v = models.register("iris", run, store=model_store)
    (tmp_path / "model.py").write_text(READER)
    name = f"node-mlayer-{tag[:6]}"
    ep = PredictionEndpoint(f"{tmp_path / 'model.py'}:Reader", name=name, base_image=on_node.base,
                            registry=on_node.registry, deployer="serving", kubeconfig=str(on_node.kubeconfig),
                            namespace=on_node.namespace, mutators=on_node.mutators(), timeout=300,
                            out=lambda s: None, model_ref="iris:1")
    ep.create()
    try:
        manifest, _ = image_of(registry, ep.image.ref)
        assert manifest["layers"][-2]["digest"] == v["layer"]["digest"]
        assert ep.predict([[1]]) == [["/models", hashlib.sha256(payload).hexdigest()]]
    finally:
        ep.delete()
    from fairing.settings import cache_dir

    assert not (cache_dir() / "models" / v["digest"][7:31]).exists()  # the fetch cache of this version
