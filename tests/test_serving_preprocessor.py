"""The serve preprocessor: what goes into the serving BuildContext, and that the context really runs
(materialised to a directory and started with this machine's Python, as the image would)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import requests

from fairing.context import write_context
from fairing.errors import ConfigError
from fairing.preprocessors.serve import SERVER_REQUIREMENTS, ServePreprocessor, default_name


class Tripler:
    """Defined in this test module, which the image does not have: must travel by value."""

    factor = 3

    def load(self, model_dir):
        p = Path(model_dir, "offset.txt")
        self.offset = float(p.read_text()) if p.exists() else 0.0

    def predict(self, rows):
        return [self.factor * r + self.offset for r in rows]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_context(ctx, root: Path):
    """Start the context's entrypoint like the container would: cwd = workdir, env = ctx.env.
    Returns (process, url)."""
    write_context(ctx, root)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(ctx.env, PORT=str(port), HOST="127.0.0.1")
    argv = [sys.executable if a in ("python", "python3") else a for a in ctx.entrypoint]
    proc = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"{url}/v2/health/live", timeout=1)
            return proc, url
        except requests.ConnectionError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read())
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


def _wait_ready(url, status=200):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = requests.get(f"{url}/v2/health/ready", timeout=2)
        if r.status_code == status and (status == 200 or "loading" not in r.json().get("error", "")):
            return r
        time.sleep(0.1)
    raise AssertionError(f"readiness stayed {r.status_code}: {r.text}")


def test_class_is_pickled_by_value_and_served(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "offset.txt").write_text("0.5")
    ctx = ServePreprocessor().prepare(Tripler, name="tripler", files={"offset.txt": src / "offset.txt"})
    assert ctx.kind == "serve"
    assert ctx.env["MODEL_NAME"] == "tripler" and ctx.env["PORT"] == "8080"
    assert ctx.env["FAIRING_PYTHON"] == "%d.%d" % sys.version_info[:2] == ctx.python
    assert set(ctx.files) == {".fairing/model_server.py", ".fairing/model.pkl", "offset.txt"}
    assert ctx.entrypoint == ("python3", "-u", ".fairing/model_server.py")
    for pin in SERVER_REQUIREMENTS:
        assert pin in ctx.requirements
    assert f"cloudpickle=={cloudpickle.__version__}" in ctx.requirements
    # Pickling by value must not leave this module registered for later pickles.
    assert "tests.test_serving_preprocessor" not in cloudpickle.list_registry_pickle_by_value()
    proc, url = run_context(ctx, tmp_path / "app")  # cwd has no `tests` package: by value or bust
    try:
        _wait_ready(url)
        r = requests.post(f"{url}/v1/models/tripler:predict", json={"instances": [1, 2]}, timeout=5)
        assert r.json() == {"predictions": [3.5, 6.5]}
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_file_reference_ships_the_file_and_requirements_txt(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "model.py").write_text(
        "import json\n"
        "class Echo:\n"
        "    def predict(self, rows):\n"
        "        return rows\n"
    )
    (proj / "requirements.txt").write_text("numpy==2.1.0\nstarlette==1.9.0\n")
    (proj / "weights.bin").write_bytes(b"\0" * 10)
    (proj / "data").mkdir()
    (proj / "data" / "vocab.txt").write_text("a\nb\n")
    ctx = ServePreprocessor().prepare(f"{proj}/model.py:Echo", files=["weights.bin", "data"])
    assert ctx.env["FAIRING_MODEL"] == "model:Echo"
    assert "FAIRING_MODEL_PICKLE" not in ctx.env and ctx.python is None
    assert ctx.env["MODEL_NAME"] == "echo"
    assert set(ctx.files) == {"model.py", "weights.bin", "data/vocab.txt", ".fairing/model_server.py"}
    # The user's pin wins over the server's; the rest are added; no cloudpickle for a file reference.
    assert ctx.requirements == ("numpy==2.1.0", "starlette==1.9.0", "uvicorn==0.54.0", "prometheus_client==0.26.0")
    proc, url = run_context(ctx, tmp_path / "app")
    try:
        _wait_ready(url)
        r = requests.post(f"{url}/v1/models/echo:predict", json={"instances": [[1, "a"]]}, timeout=5)
        assert r.json() == {"predictions": [[1, "a"]]}
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_storage_uri_goes_to_env(tmp_path):
    ctx = ServePreprocessor().prepare(Tripler, name="t", storage_uri="https://models.example/iris.joblib", requirements=["scikit-learn==1.5.2"])
    assert ctx.env["FAIRING_STORAGE_URI"] == "https://models.example/iris.joblib"
    assert ctx.requirements[0] == "scikit-learn==1.5.2"


def test_adaptive_batching_goes_to_env_only_when_asked_for(tmp_path):
    assert not {"FAIRING_MAX_BATCH_SIZE", "FAIRING_MAX_LATENCY_MS"} & ServePreprocessor().prepare(Tripler, name="t").env.keys()
    ctx = ServePreprocessor().prepare(Tripler, name="t", max_batch_size=32, max_latency_ms=2.5)
    assert ctx.env["FAIRING_MAX_BATCH_SIZE"] == "32" and ctx.env["FAIRING_MAX_LATENCY_MS"] == "2.5"


def test_default_names():
    assert default_name(Tripler) == "tripler"
    assert default_name("x/model.py:IrisModel") == "iris-model"
    assert default_name(Tripler()) == "tripler"


@pytest.mark.parametrize(
    "model, kw, words",
    [
        ("model.py", {}, "is not 'file.py:ClassName'"),
        ("missing.py:M", {}, "model file missing.py does not exist"),
        (Tripler, {"name": "Bad_Name"}, "model name 'Bad_Name' is not valid"),
        (Tripler, {"name": "9lives"}, "is not valid"),
        (object, {}, "object has no predict() method"),
        (Tripler, {"files": ["nope.joblib"]}, "model file nope.joblib does not exist"),
        (Tripler, {"storage_uri": "s3://bucket/model"}, "is not http(s):// or file:"),
        (Tripler, {"max_batch_size": 1}, "max_batch_size must be an integer of at least 2"),
        (Tripler, {"max_batch_size": 8, "max_latency_ms": -1}, "max_latency_ms must be a number"),
        (Tripler, {"max_latency_ms": 5}, "max_latency_ms needs max_batch_size"),
    ],
)
def test_bad_input_is_a_config_error(model, kw, words):
    with pytest.raises(ConfigError) as e:
        ServePreprocessor().prepare(model, **kw)
    assert words in e.value.message and e.value.hint


def test_reference_to_a_class_the_file_lacks(tmp_path):
    (tmp_path / "model.py").write_text("class Other:\n    pass\n")
    with pytest.raises(ConfigError) as e:
        ServePreprocessor().prepare(f"{tmp_path}/model.py:Iris")
    assert "defines no 'Iris'" in e.value.message and "Other" in e.value.hint
    (tmp_path / "broken.py").write_text("class (:\n")
    with pytest.raises(ConfigError, match="does not parse"):
        ServePreprocessor().prepare(f"{tmp_path}/broken.py:X")


def test_unpicklable_model_says_what_to_do():
    import threading

    class Holder:
        lock = None

        def predict(self, rows):
            return rows

    h = Holder()
    h.lock = threading.Lock()
    with pytest.raises(ConfigError) as e:
        ServePreprocessor().prepare(h, name="holder")
    assert "cannot pickle model Holder: attribute 'lock' is a threading.Lock" in e.value.message
    assert "load()" in e.value.hint


def test_class_from_a_local_module_travels_with_its_helpers(tmp_path, monkeypatch):
    """model.py imports helpers.py from the user's folder; neither exists in the image."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "scoring_helpers.py").write_text("def score(x):\n    return x * 10 + 1\n")
    (src / "user_model.py").write_text(
        "import scoring_helpers\n"
        "class Scored:\n"
        "    def predict(self, rows):\n"
        "        return [scoring_helpers.score(r) for r in rows]\n"
    )
    monkeypatch.syspath_prepend(str(src))
    import importlib

    user_model = importlib.import_module("user_model")
    try:
        ctx = ServePreprocessor().prepare(user_model.Scored, name="scored")
        assert not any(k.endswith(".py") and "helpers" in k for k in ctx.files)  # pickled, not copied
        proc, url = run_context(ctx, tmp_path / "app")
        try:
            _wait_ready(url)
            r = requests.post(f"{url}/v1/models/scored:predict", json={"instances": [1, 2]}, timeout=5)
            assert r.json() == {"predictions": [11, 21]}
        finally:
            proc.terminate()
            proc.communicate(timeout=10)
    finally:
        sys.modules.pop("user_model", None)
        sys.modules.pop("scoring_helpers", None)
