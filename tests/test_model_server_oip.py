"""An independent Open Inference Protocol client (tritonclient, from PyPI) against the model server
running as a real uvicorn process: JSON tensors, the binary tensor data extension both ways (the
client's default), and model metadata with declared inputs/outputs. The same client against the
cluster is in test_node_workloads.py."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from fairing.image_runtime import model_server as ms

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is a test extra")

SERVER_FILE = Path(ms.__file__)

MODEL = '''
class Scaler:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    outputs = [{"name": "scaled", "datatype": "FP64", "shape": [-1, 3]},
               {"name": "label", "datatype": "BYTES", "shape": [-1]}]

    def predict(self, rows):
        return {"scaled": [[v * 10 for v in r] for r in rows],
                "label": ["big" if sum(r) > 5 else "small" for r in rows]}
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("oip")
    (d / "scaler.py").write_text(MODEL)
    port = _free_port()
    env = {**os.environ, "MODEL_NAME": "scaler", "PORT": str(port), "HOST": "127.0.0.1",
           "FAIRING_MODEL": "scaler:Scaler"}
    proc = subprocess.Popen([sys.executable, "-u", str(SERVER_FILE)], cwd=d, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"http://{url}/v2/health/ready", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.communicate(timeout=10)


X = np.array([[0.5, 1.0, 1.5], [2.0, 3.0, 4.0]], dtype=np.float32)


def infer(client, *, binary_in: bool, binary_out: bool):
    inp = httpclient.InferInput("x", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=binary_in)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in ("scaled", "label")]
    return client.infer("scaler", [inp], outputs=outs)


@pytest.mark.parametrize("binary_in,binary_out", [(True, True), (True, False), (False, True), (False, False)])
def test_tritonclient_gets_the_same_answer_in_binary_and_json(server, binary_in, binary_out):
    client = httpclient.InferenceServerClient(server)
    res = infer(client, binary_in=binary_in, binary_out=binary_out)
    np.testing.assert_allclose(res.as_numpy("scaled"), X.astype(np.float64) * 10)
    labels = [v.decode() if isinstance(v, bytes) else v for v in res.as_numpy("label").tolist()]
    assert labels == ["small", "big"]


def test_tritonclient_default_request_without_named_outputs(server):
    """No outputs named: the client asks for every output in binary (binary_data_output)."""
    client = httpclient.InferenceServerClient(server)
    inp = httpclient.InferInput("x", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)  # binary by default: the request that used to get a 400
    res = client.infer("scaler", [inp])
    np.testing.assert_allclose(res.as_numpy("scaled"), X.astype(np.float64) * 10)


def test_metadata_lists_the_declared_inputs_and_outputs(server):
    client = httpclient.InferenceServerClient(server)
    assert client.is_server_live() and client.is_model_ready("scaler")
    meta = client.get_model_metadata("scaler")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert [o["name"] for o in meta["outputs"]] == ["scaled", "label"]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


def test_bad_binary_requests_are_clear_400s(server):
    body = b'{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}'
    url = f"http://{server}/v2/models/scaler/infer"
    short = requests.post(url, data=body + b"\x00" * 4, timeout=5,
                          headers={"Inference-Header-Content-Length": str(len(body))})
    assert short.status_code == 400 and "binary_data_size 8" in short.json()["error"]
    extra = requests.post(url, data=body + b"\x00" * 12, timeout=5,
                          headers={"Inference-Header-Content-Length": str(len(body))})
    assert extra.status_code == 400 and "belong to no input" in extra.json()["error"]
    bad_len = requests.post(url, data=body, timeout=5, headers={"Inference-Header-Content-Length": "abc"})
    assert bad_len.status_code == 400 and "must be an integer" in bad_len.json()["error"]
