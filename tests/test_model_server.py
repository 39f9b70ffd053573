"""The model server in-process (starlette TestClient) and as a real uvicorn process on the host.

The same file runs inside serving images; the container round trip is in test_serving_local.py."""
from __future__ import annotations

import http.server
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import requests
from starlette.testclient import TestClient

from fairing.image_runtime import model_server as ms

SERVER_FILE = Path(ms.__file__)


class Summer:
    """predict sums each row; preprocess/postprocess leave visible marks."""

    loads = 0

    def load(self):
        type(self).loads += 1

    def preprocess(self, rows):
        return [[float(v) for v in r] for r in rows]

    def predict(self, rows):
        if any(len(r) != 2 for r in rows):
            raise ValueError(f"expected 2 features per row, got {[len(r) for r in rows]}")
        return [sum(r) for r in rows]

    def postprocess(self, out):
        return [round(v, 3) for v in out]


def serve(model, name="summer", env=None):
    state = ms.ModelState(name, model, env=env if env is not None else {})
    client = TestClient(ms.create_app(state))
    client.__enter__()  # runs the lifespan: starts loading
    assert state.loaded.wait(10), "load did not finish"
    return client, state


@pytest.fixture
def summer():
    Summer.loads = 0
    client, _ = serve(Summer)
    yield client
    client.__exit__(None, None, None)


def test_v1_predict_runs_preprocess_predict_postprocess(summer):
    r = summer.post("/v1/models/summer:predict", json={"instances": [[1, 2], ["0.5", 0.25]]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [3.0, 0.75]}
    assert summer.get("/v1/models/summer").json() == {"name": "summer", "ready": True}
    assert summer.get("/v1/models").json() == {"models": ["summer"]}


def test_load_is_called_once_before_ready(summer):
    for _ in range(5):
        assert summer.post("/v1/models/summer:predict", json={"instances": [[1, 1]]}).status_code == 200
    assert Summer.loads == 1


def test_v2_health_metadata_and_infer(summer):
    assert summer.get("/v2/health/live").json() == {"live": True}
    assert summer.get("/v2/health/ready").json() == {"ready": True}
    assert summer.get("/v2/models/summer/ready").json() == {"name": "summer", "ready": True}
    assert summer.get("/v2/models/summer").json()["name"] == "summer"
    assert summer.get("/v2").json()["name"] == "fairing-model-server"
    body = {"id": "req-1", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3.5, 4]}]}
    r = summer.post("/v2/models/summer/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "model_name": "summer",
        "id": "req-1",
        "outputs": [{"name": "output-0", "shape": [2], "datatype": "FP64", "data": [3.0, 7.5]}],
    }
    # Nested data is accepted too (the protocol allows either layout).
    body["inputs"][0]["data"] = [[1, 2], [3.5, 4]]
    assert summer.post("/v2/models/summer/infer", json=body).json()["outputs"][0]["data"] == [3.0, 7.5]


class Multi:
    def predict(self, inputs):
        a, b = inputs["a"], inputs["b"]
        return {"sum": [x + y for x, y in zip(a, b)], "first": a[0], "label": ["even" if (x + y) % 2 == 0 else "odd" for x, y in zip(a, b)]}


def test_v2_several_inputs_and_named_outputs():
    client, _ = serve(Multi, name="multi")
    with client:
        inputs = [{"name": "a", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]},
                  {"name": "b", "shape": [3], "datatype": "INT32", "data": [10, 20, 31]}]
        r = client.post("/v2/models/multi/infer", json={"inputs": inputs})
        assert r.status_code == 200, r.text
        outs = {o["name"]: o for o in r.json()["outputs"]}
        assert outs["sum"] == {"name": "sum", "shape": [3], "datatype": "INT64", "data": [11, 22, 34]}
        assert outs["first"] == {"name": "first", "shape": [], "datatype": "INT64", "data": [1]}
        assert outs["label"]["datatype"] == "BYTES" and outs["label"]["data"] == ["odd", "even", "even"]
        r = client.post("/v2/models/multi/infer", json={"inputs": inputs, "outputs": [{"name": "sum"}]})
        assert [o["name"] for o in r.json()["outputs"]] == ["sum"]
        r = client.post("/v2/models/multi/infer", json={"inputs": inputs, "outputs": [{"name": "nope"}]})
        assert r.status_code == 422 and "nope" in r.json()["error"]


@pytest.mark.parametrize(
    "path, payload, status, words",
    [
        ("/v1/models/summer:predict", b"{not json", 400, "not valid JSON"),
        ("/v1/models/summer:predict", b"", 400, "empty"),
        ("/v1/models/summer:predict", {"rows": [[1, 2]]}, 422, '"instances"'),
        ("/v1/models/summer:predict", {"instances": {"a": 1}}, 422, "must be a list"),
        ("/v1/models/summer:predict", {"instances": [[1, 2, 3]]}, 422, "expected 2 features per row"),
        ("/v1/models/summer:predict", {"instances": [["x", 1]]}, 422, "could not convert string to float"),
        ("/v2/models/summer/infer", {"inputs": []}, 422, 'non-empty "inputs"'),
        ("/v2/models/summer/infer", {"inputs": [{"name": "x", "shape": [2]}]}, 422, "missing datatype, data"),
        ("/v2/models/summer/infer", {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]},
         422, "has 3 values but shape [2, 2] needs 4"),
        ("/v2/models/summer/infer", {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FLOAT", "data": [1, 2]}]},
         422, "datatype 'FLOAT' is not one of"),
        ("/v2/models/summer/infer", {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [1, "2"]}]},
         422, 'declares INT64 but holds "2"'),
        ("/v2/models/summer/infer", {"inputs": [{"name": "x", "shape": [-1, 2], "datatype": "FP64", "data": [1, 2]}]},
         422, "non-negative integers"),
        ("/v2/models/other/infer", {"inputs": []}, 404, "model 'other' not found"),
        ("/v1/models/other:predict", {"instances": []}, 404, "model 'other' not found"),
    ],
)
def test_bad_payloads_get_json_errors_with_a_message(summer, path, payload, status, words):
    kw = {"content": payload} if isinstance(payload, bytes) else {"json": payload}
    r = summer.post(path, **kw)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["error"]
    # The server keeps serving after a bad request.
    assert summer.post("/v1/models/summer:predict", json={"instances": [[1, 2]]}).json() == {"predictions": [3.0]}


def test_unknown_routes_and_methods_answer_json(summer):
    r = summer.get("/v3/whatever")
    assert r.status_code == 404 and "/v3/whatever" in r.json()["error"]
    r = summer.get("/v1/models/summer:predict")
    assert r.status_code == 405 and "POST" in r.json()["error"]


class Crashes:
    def predict(self, rows):
        raise RuntimeError("disk on fire")


def test_a_model_bug_is_a_500_naming_the_exception():
    client, _ = serve(Crashes, name="crash")
    with client:
        r = client.post("/v1/models/crash:predict", json={"instances": [[1]]})
        assert r.status_code == 500
        assert r.json() == {"error": "predict failed: RuntimeError: disk on fire"}
        assert client.get("/v2/health/live").status_code == 200


class BadLoad:
    def load(self):
        raise FileNotFoundError("model.joblib is missing")

    def predict(self, rows):  # pragma: no cover - never reached
        return rows


def test_load_failure_keeps_readiness_false_and_says_why(caplog):
    caplog.set_level("ERROR", logger="fairing.model_server")
    client, state = serve(BadLoad, name="bad")
    with client:
        why = "model 'bad' failed to load: FileNotFoundError: model.joblib is missing"
        assert client.get("/v2/health/live").status_code == 200  # alive, so it isn't restarted in a loop
        r = client.get("/v2/health/ready")
        assert r.status_code == 503 and r.json() == {"ready": False, "error": why}
        r = client.get("/v2/models/bad/ready")
        assert r.status_code == 503 and r.json()["error"] == why
        r = client.post("/v1/models/bad:predict", json={"instances": [[1]]})
        assert r.status_code == 503 and r.json() == {"error": why}
        r = client.post("/v2/models/bad/infer", json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]})
        assert r.status_code == 503 and r.json() == {"error": why}
        assert client.get("/v1/models/bad").json() == {"name": "bad", "ready": False, "error": why}
    assert why in caplog.text and "Traceback" in caplog.text


def test_not_ready_while_load_runs_but_live():
    gate = threading.Event()

    class Slow:
        def load(self):
            gate.wait(10)

        def predict(self, rows):
            return rows

    state = ms.ModelState("slow", Slow, env={})
    with TestClient(ms.create_app(state)) as client:
        assert client.get("/v2/health/live").status_code == 200
        r = client.get("/v2/health/ready")
        assert r.status_code == 503 and "still loading" in r.json()["error"]
        assert client.post("/v1/models/slow:predict", json={"instances": [1]}).status_code == 503
        gate.set()
        assert state.loaded.wait(10)
        assert client.get("/v2/health/ready").status_code == 200
        assert client.post("/v1/models/slow:predict", json={"instances": [1]}).json() == {"predictions": [1]}


def test_numpy_outputs_and_async_predict():
    np = pytest.importorskip("numpy")

    class Async:
        async def predict(self, rows):
            return np.asarray(rows, dtype=np.float32).sum(axis=1)

    client, _ = serve(Async, name="np")
    with client:
        r = client.post("/v1/models/np:predict", json={"instances": [[1, 2], [3, 4]]})
        assert r.json() == {"predictions": [3.0, 7.0]}
        r = client.post("/v2/models/np/infer", json={"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})
        assert r.json()["outputs"][0] == {"name": "output-0", "shape": [1], "datatype": "FP64", "data": [3.0]}


class DirModel:
    def load(self, model_dir):
        self.dir = Path(model_dir)
        self.weight = float((self.dir / "weight.txt").read_text())

    def predict(self, rows):
        return [self.weight * r for r in rows]


def test_load_receives_the_model_dir(tmp_path):
    (tmp_path / "weight.txt").write_text("2.5")
    client, _ = serve(DirModel, name="w", env={"FAIRING_MODEL_DIR": str(tmp_path)})
    with client:
        assert client.post("/v1/models/w:predict", json={"instances": [2]}).json() == {"predictions": [5.0]}


def test_a_modelcar_dir_that_appears_late_is_waited_for(tmp_path):
    """KServe's modelcar sidecar links /mnt/models after the server starts (MODEL_INIT_MODE=async):
    load() runs once the directory has files; a dir that never comes is a load error naming it."""
    import threading

    models = tmp_path / "models"
    threading.Timer(1.0, lambda: (models.mkdir(), (models / "weight.txt").write_text("3"))).start()
    client, state = serve(DirModel, name="w", env={"FAIRING_MODEL_DIR": str(models), "MODEL_INIT_MODE": "async"})
    with client:
        assert state.ready and client.post("/v1/models/w:predict", json={"instances": [2]}).json() == {"predictions": [6.0]}
    client, state = serve(DirModel, name="w", env={"FAIRING_MODEL_DIR": str(tmp_path / "never"), "MODEL_INIT_MODE": "async",
                                                   "FAIRING_MODEL_DIR_TIMEOUT": "1"})
    with client:
        assert not state.ready and "still missing or empty after 1 s (is the modelcar sidecar running?)" in state.error


def test_storage_uri_file_and_directory(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "weight.txt").write_text("3")
    # A directory is used in place.
    client, _ = serve(DirModel, name="w", env={"FAIRING_STORAGE_URI": f"file://{src}"})
    with client:
        assert client.post("/v1/models/w:predict", json={"instances": [1]}).json() == {"predictions": [3.0]}
    # A file is copied into the model dir.
    dest = tmp_path / "models"
    client, _ = serve(DirModel, name="w", env={"FAIRING_STORAGE_URI": f"file://{src / 'weight.txt'}", "FAIRING_MODEL_DIR": str(dest)})
    with client:
        assert client.post("/v1/models/w:predict", json={"instances": [1]}).json() == {"predictions": [3.0]}
    assert (dest / "weight.txt").read_text() == "3"
    # A missing file is a load error that names the URI.
    client, state = serve(DirModel, name="w", env={"FAIRING_STORAGE_URI": f"file://{tmp_path / 'nope'}", "FAIRING_MODEL_DIR": str(dest)})
    with client:
        assert "does not exist inside the container" in client.get("/v2/health/ready").json()["error"]


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(www), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_storage_uri_http_with_archive(tmp_path, http_dir):
    www, base = http_dir
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"4"
        info = tarfile.TarInfo("weight.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (www / "model.tar.gz").write_bytes(buf.getvalue())
    dest = tmp_path / "mnt"
    client, _ = serve(DirModel, name="w", env={"FAIRING_STORAGE_URI": f"{base}/model.tar.gz", "FAIRING_MODEL_DIR": str(dest)})
    with client:
        assert client.post("/v1/models/w:predict", json={"instances": [1]}).json() == {"predictions": [4.0]}
    assert sorted(p.name for p in dest.iterdir()) == ["weight.txt"]  # archive unpacked and removed
    client, _ = serve(DirModel, name="w", env={"FAIRING_STORAGE_URI": f"{base}/missing.bin", "FAIRING_MODEL_DIR": str(dest)})
    with client:
        err = client.get("/v2/health/ready").json()["error"]
        assert "HTTPError" in err and "404" in err


def test_tar_members_escaping_the_model_dir_are_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "evil.tar").write_bytes(buf.getvalue())
    client, _ = serve(DirModel, name="w", env={"FAIRING_STORAGE_URI": f"file://{tmp_path / 'evil.tar'}", "FAIRING_MODEL_DIR": str(tmp_path / "m")})
    with client:
        assert "failed to load" in client.get("/v2/health/ready").json()["error"]
    assert not (tmp_path / "escape.txt").exists()


def test_resolve_model_by_reference_and_pickle(tmp_path, monkeypatch):
    (tmp_path / "mymodel.py").write_text("class Echo:\n    def predict(self, rows):\n        return rows\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    cls = ms.resolve_model({"FAIRING_MODEL": "mymodel:Echo"})
    assert cls.__name__ == "Echo" and cls().predict([1]) == [1]
    import cloudpickle

    (tmp_path / "m.pkl").write_bytes(cloudpickle.dumps(Summer))
    with pytest.raises(RuntimeError, match="pickled with Python 2.7 but this image runs Python 3"):
        ms.resolve_model({"FAIRING_MODEL_PICKLE": str(tmp_path / "m.pkl"), "FAIRING_PYTHON": "2.7"})
    with pytest.raises(RuntimeError, match="FAIRING_MODEL=module:Class"):
        ms.resolve_model({})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_file_runs_as_a_real_uvicorn_process(tmp_path):
    """The exact entrypoint the image runs: `python -u model_server.py`, configured by env."""
    (tmp_path / "mymodel.py").write_text(
        "class Double:\n"
        "    def load(self, model_dir):\n"
        "        import pathlib; self.k = int(pathlib.Path(model_dir, 'k.txt').read_text())\n"
        "    def predict(self, rows):\n"
        "        return [self.k * r for r in rows]\n"
    )
    (tmp_path / "k.txt").write_text("2")
    port = _free_port()
    env = {**os.environ, "MODEL_NAME": "double", "PORT": str(port), "HOST": "127.0.0.1", "FAIRING_MODEL": "mymodel:Double"}
    proc = subprocess.Popen([sys.executable, "-u", str(SERVER_FILE)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
        r = requests.post(f"{url}/v1/models/double:predict", json={"instances": [1, 2]}, timeout=5)
        assert r.json() == {"predictions": [2, 4]}
        r = requests.post(f"{url}/v2/models/double/infer", timeout=5,
                          json={"inputs": [{"name": "x", "shape": [2], "datatype": "INT64", "data": [3, 4]}]})
        assert r.json()["outputs"][0]["data"] == [6, 8]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert "model 'double' is ready" in out
    # SIGTERM is a graceful shutdown (uvicorn re-raises the signal once done, hence -15).
    assert "Application shutdown complete" in out and proc.returncode in (0, -15), out


def _on_loop() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def test_a_fast_predict_moves_onto_the_event_loop_and_a_slow_one_moves_back():
    """A sub-millisecond predict is served from the event loop once it has shown itself fast (no
    thread handoff: bench/serve.py's p99 against KServe); the first slow call sends it back to the
    worker threads, so a second slow request no longer holds up the health check."""

    class Varies:
        calls: list = []

        def predict(self, rows):
            type(self).calls.append(_on_loop())
            if rows[0][0] < 0:
                time.sleep(-rows[0][0])
            return [sum(r) for r in rows]

    client, _ = serve(Varies, name="varies")
    try:
        for i in range(ms.INLINE_AFTER + 8):
            assert client.post("/v1/models/varies:predict", json={"instances": [[i, 1]]}).json() == {"predictions": [i + 1]}
        calls = Varies.calls
        assert not calls[0], "a hook of unknown cost must start on a worker thread"
        assert all(calls[ms.INLINE_AFTER:]), f"a fast predict should run on the event loop after {ms.INLINE_AFTER} calls: {calls}"
        # Slow now: this call runs inline (the loop learns it only from this call) ...
        assert client.post("/v1/models/varies:predict", json={"instances": [[-0.3, 0]]}).status_code == 200
        assert Varies.calls[-1] is True
        # ... and the next slow one goes to a thread, so liveness answers while it runs.
        slow = threading.Thread(target=client.post, args=("/v1/models/varies:predict",), kwargs={"json": {"instances": [[-1.0, 0]]}})
        slow.start()
        time.sleep(0.2)
        t0 = time.perf_counter()
        assert client.get("/v2/health/live").status_code == 200
        waited = time.perf_counter() - t0
        slow.join()
        assert Varies.calls[-1] is False, "after a slow inline call, predict must go back to a worker thread"
        assert waited < 0.5, f"the health check waited {waited:.2f} s behind a slow predict"
    finally:
        client.__exit__(None, None, None)
