"""Serving for real: examples/serve_sklearn built with the append builder onto the rig's base image,
pushed to the rig registry, run through Podman's Docker API, asked for predictions on both
protocols and compared with the same model run in this process."""
from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import requests

from fairing.deployers.local.endpoint import LocalServingHandle
from fairing.errors import DeployError
from fairing.serving import PredictionEndpoint, PredictionError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "serve_sklearn"
REQUIREMENTS = [f"{d}=={version(d)}" for d in ("scikit-learn", "numpy", "scipy", "joblib")]


def _load_example_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(f"serve_sklearn_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The example's files in a scratch dir, with model.joblib trained by the example's train.py."""
    work = tmp_path_factory.mktemp("serve_sklearn")
    for f in ("model.py", "train.py"):
        (work / f).write_text((EXAMPLE / f).read_text())
    _load_example_module("train", work / "train.py").train(work)
    model_mod = _load_example_module("model", work / "model.py")
    local = model_mod.IrisModel()
    local.load(str(work))
    return work, local


@pytest.fixture(scope="module")
def iris_endpoint(trained, engine, base_image, registry):
    work, _ = trained
    ep = PredictionEndpoint(
        f"{work}/model.py:IrisModel", name="iris", base_image=base_image.docker, registry=registry.host,
        target=f"{registry.host}/fairing-test/serve-iris", deployer="local", requirements=REQUIREMENTS,
        files=["model.joblib"], docker_host=engine.docker_host, timeout=300, out=lambda s: None)
    ep.create()
    yield ep
    ep.delete()
    assert ep.status() == "Deleted"


def _iris_rows():
    from sklearn.datasets import load_iris

    return load_iris().data.tolist()


def test_local_endpoint_answers_like_the_in_process_model(iris_endpoint, trained):
    _, local = trained
    rows = _iris_rows()
    expected = local.predict(rows)
    assert len(set(expected)) == 3  # the comparison covers every class
    assert iris_endpoint.url.startswith("http://127.0.0.1:")
    assert iris_endpoint.status() == "Ready"
    assert iris_endpoint.predict(rows) == expected
    assert iris_endpoint.predict(rows, protocol="v2") == expected
    # numpy input works on both protocols (FP64 tensor for v2).
    import numpy as np

    arr = np.asarray(rows[:5])
    assert iris_endpoint.predict(arr) == expected[:5]
    raw = iris_endpoint.predict(arr, protocol="v2", raw=True)
    assert raw["model_name"] == "iris"
    assert raw["outputs"] == [{"name": "output-0", "shape": [5], "datatype": "INT64", "data": expected[:5]}]


def test_plain_http_clients_see_both_protocols(iris_endpoint):
    url = iris_endpoint.url
    assert requests.get(f"{url}/v2/health/live", timeout=5).json() == {"live": True}
    assert requests.get(f"{url}/v2/health/ready", timeout=5).json() == {"ready": True}
    assert requests.get(f"{url}/v1/models/iris", timeout=5).json() == {"name": "iris", "ready": True}
    r = requests.post(f"{url}/v1/models/iris:predict", json={"instances": [[6.7, 3.0, 5.2, 2.3]]}, timeout=5)
    assert r.json() == {"predictions": [2]}
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
    r = requests.post(f"{url}/v2/models/iris/infer", json=body, timeout=5)
    assert r.json()["outputs"][0]["data"] == [0]


def test_bad_payloads_are_clear_on_both_sides(iris_endpoint):
    url = iris_endpoint.url
    # HTTP side: JSON errors with a message.
    r = requests.post(f"{url}/v1/models/iris:predict", data=b"{oops", headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = requests.post(f"{url}/v1/models/iris:predict", json={"rows": [[1, 2, 3, 4]]}, timeout=5)
    assert r.status_code == 422 and '"instances"' in r.json()["error"]
    r = requests.post(f"{url}/v2/models/iris/infer", timeout=5,
                      json={"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    assert r.status_code == 422 and "has 4 values but shape [2, 4] needs 8" in r.json()["error"]
    # Client side: a FairingError quoting the server's message.
    with pytest.raises(PredictionError) as e:
        iris_endpoint.predict([[5.1, 3.5, 1.4]])
    assert e.value.status == 422
    assert "X has 3 features, but LogisticRegression is expecting 4 features" in e.value.message
    assert "model 'iris' answered 422" in e.value.message and e.value.hint
    with pytest.raises(PredictionError) as e:
        iris_endpoint.predict([["a", "b", "c", "d"]], protocol="v2")
    assert e.value.status == 422 and "could not convert string to float" in e.value.message
    # Still serving afterwards.
    assert iris_endpoint.predict([[5.1, 3.5, 1.4, 0.2]]) == [0]


class BrokenLoad:
    """Pickled by value into the image (this test module is not there): load() always fails."""

    def load(self, model_dir):
        import os

        raise FileNotFoundError(f"no weights.bin in {model_dir} (has: {sorted(os.listdir(model_dir))[:3]})")

    def predict(self, rows):  # pragma: no cover - never reached
        return rows


def test_a_model_whose_load_raises(engine, base_image, registry):
    common = dict(name="broken", base_image=base_image.docker, registry=registry.host,
                  target=f"{registry.host}/fairing-test/serve-broken", deployer="local",
                  docker_host=engine.docker_host, timeout=120, out=lambda s: None)
    client = engine.client()

    def ours():  # the engine is shared with other tests: look only at this model's containers
        return client.containers.list(all=True, filters={"label": "fairing.dev/model=broken"})

    assert ours() == []

    # create() waits for readiness: it fails with the load error and leaves no container behind.
    printed = []
    ep = PredictionEndpoint(BrokenLoad, **{**common, "out": printed.append})
    with pytest.raises(DeployError) as e:
        ep.create()
    assert "model 'broken' failed to load: FileNotFoundError: no weights.bin in /app" in e.value.message
    assert "logs" in e.value.hint
    # The end of the server log (with the traceback) was printed before the container went away.
    text = "\n".join(printed)
    assert "last lines of the model server log (broken)" in text
    assert "Traceback" in text and "FileNotFoundError: no weights.bin" in text
    assert ours() == []

    # Without waiting: the server stays up, not ready, and predict says why.
    ep = PredictionEndpoint(BrokenLoad, image=ep.image, **common)
    ep.create(wait=False)
    try:
        handle = ep.handle
        assert isinstance(handle, LocalServingHandle)
        import time

        deadline = time.monotonic() + 60
        while handle.status() in ("Pending", "Loading") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert handle.status() == "Failed"
        r = requests.get(f"{ep.url}/v2/health/ready", timeout=5)
        assert r.status_code == 503 and "failed to load: FileNotFoundError" in r.json()["error"]
        assert requests.get(f"{ep.url}/v2/health/live", timeout=5).status_code == 200
        with pytest.raises(PredictionError) as e:
            ep.predict([[1, 2, 3, 4]])
        assert e.value.status == 503
        assert "failed to load: FileNotFoundError: no weights.bin" in e.value.message
        logs = "\n".join(ep.logs())
        assert "model 'broken' failed to load" in logs and "Traceback" in logs
    finally:
        ep.delete()
    assert ours() == []


def test_the_local_plugin_hands_serving_images_to_local_serving(iris_endpoint, engine):
    """`fair deploy --deployer local` goes through the stage table's LocalDeployer, which must give a
    serving image to LocalServingDeployer (same image, another container, another port)."""
    from fairing import stages

    deployer = stages.load("deployer", "local")(name="iris-via-plugin", docker_host=engine.docker_host)
    handle = deployer.deploy(iris_endpoint.image)
    try:
        assert isinstance(handle, LocalServingHandle)
        assert handle.wait(120) == "Ready"
        assert handle.url != iris_endpoint.url
        assert handle.predict([[6.7, 3.0, 5.2, 2.3]]) == [2]
    finally:
        handle.delete()


def test_the_example_script_runs_end_to_end(tmp_path, engine, base_image, registry):
    """`python deploy.py` as a user runs it (in a copy, so model.joblib is not written into the repo)."""
    import os
    import subprocess

    for f in ("train.py", "model.py", "deploy.py"):
        (tmp_path / f).write_text((EXAMPLE / f).read_text())
    env = {**os.environ, "DOCKER_HOST": engine.docker_host}
    p = subprocess.run([sys.executable, "deploy.py", "--base-image", base_image.docker, "--registry", registry.host,
                        "--name", "iris-example"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "held-out accuracy" in p.stdout
    assert "model 'iris-example' is being served at http://127.0.0.1:" in p.stdout
    assert "V1: [0, 2]" in p.stdout and "v2: [0, 2]" in p.stdout
    # The script deletes its endpoint at the end.
    assert engine.client().containers.list(all=True, filters={"label": "fairing.dev/model=iris-example"}) == []


def test_deploying_again_replaces_the_local_endpoint_but_not_foreign_containers(iris_endpoint, engine, base_image):
    from fairing.deployers.local.endpoint import LocalServingDeployer

    client = engine.client()
    d = LocalServingDeployer(name="iris-again", docker_host=engine.docker_host)
    first = d.deploy(iris_endpoint.image)
    second = None
    try:
        second = d.deploy(iris_endpoint.image)
        assert second.wait(120) == "Ready"
        assert first.status() == "Deleted"  # the earlier container was replaced, not left running
        assert second.predict([[5.1, 3.5, 1.4, 0.2]]) == [0]
        # Found again later by name (what `fair status/logs/delete` need), url and all.
        found = LocalServingDeployer(docker_host=engine.docker_host).attach("iris-again")
        assert found.url == second.url and found.status() == "Ready"
        assert found.predict([[6.7, 3.0, 5.2, 2.3]], protocol="v2") == [2]
    finally:
        (second or first).delete()
    foreign = client.containers.create(base_image.docker, ["true"], name="iris-foreign")
    try:
        with pytest.raises(DeployError) as e:
            LocalServingDeployer(name="iris-foreign", docker_host=engine.docker_host).deploy(iris_endpoint.image)
        assert "is not a fairing model server" in e.value.message
        foreign.reload()  # still there, untouched
    finally:
        foreign.remove(force=True)
