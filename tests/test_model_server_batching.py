"""Adaptive batching in the model server (FAIRING_MAX_BATCH_SIZE / FAIRING_MAX_LATENCY_MS), on a
real uvicorn process serving concurrent HTTP requests: rows of concurrent requests reach ONE
predict() call, and each request gets its own rows back, in order."""
from __future__ import annotations

import json
from collections import Counter
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from fairing.image_runtime import model_server as ms

SERVER_FILE = Path(ms.__file__)

# predict records the size of every batch it is given (one line per call, in a file).
RECORDER = """
import json, os, time

class Recorder:
    def predict(self, rows):
        with open(os.environ["BATCH_LOG"], "a") as f:
            f.write(json.dumps(len(rows)) + "\\n")
        time.sleep(0.02)  # a model that costs something per call, as real ones do
        return [[r[0] * 10, r[1] + 0.5] for r in rows]

class Whole:
    def predict(self, rows):
        with open(os.environ["BATCH_LOG"], "a") as f:
            f.write(json.dumps(len(rows)) + "\\n")
        return {"count": len(rows), "total": sum(r[0] for r in rows)}  # not one row per input row
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    procs = []

    def start(model: str, **env_extra):
        (tmp_path / "recmodel.py").write_text(RECORDER)
        log = tmp_path / f"batches-{len(procs)}.log"
        port = _free_port()
        env = {**os.environ, "MODEL_NAME": "rec", "PORT": str(port), "HOST": "127.0.0.1",
               "FAIRING_MODEL": f"recmodel:{model}", "BATCH_LOG": str(log), **env_extra}
        proc = subprocess.Popen([sys.executable, "-u", str(SERVER_FILE)], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
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
        return url, lambda: [json.loads(x) for x in log.read_text().split()] if log.exists() else []

    yield start
    for p in procs:
        p.terminate()
        p.communicate(timeout=10)


def rows_of(i: int) -> list[list[float]]:
    """Request i's rows: 1 to 3 of them, each unique to the request."""
    return [[i * 100 + j, -(i * 100 + j)] for j in range(1 + i % 3)]


def fire(url: str, n: int, path: str, body) -> list:
    with requests.Session() as s0, ThreadPoolExecutor(n) as pool:
        s0.get(url, timeout=5)
        return list(pool.map(lambda i: requests.post(url + path, json=body(i), timeout=30), range(n)))


def test_concurrent_requests_share_predict_calls_and_get_their_own_rows_in_order(server):
    url, batches = server("Recorder", FAIRING_MAX_BATCH_SIZE="16", FAIRING_MAX_LATENCY_MS="200")
    answers = fire(url, 24, "/v1/models/rec:predict", lambda i: {"instances": rows_of(i)})
    for i, r in enumerate(answers):
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [[a * 10, b + 0.5] for a, b in rows_of(i)]}, i
    sizes = batches()
    assert sum(sizes) == sum(len(rows_of(i)) for i in range(24))  # every row predicted once
    assert max(sizes) > 1 and len(sizes) < 24, sizes  # batched: fewer predict calls than requests
    assert max(sizes) <= 16, sizes  # never more rows than max_batch_size


def test_v2_requests_batch_too(server):
    url, batches = server("Recorder", FAIRING_MAX_BATCH_SIZE="32", FAIRING_MAX_LATENCY_MS="200")

    def body(i):
        rows = rows_of(i)
        return {"inputs": [{"name": "x", "shape": [len(rows), 2], "datatype": "FP64",
                            "data": [v for r in rows for v in r]}]}

    answers = fire(url, 12, "/v2/models/rec/infer", body)
    for i, r in enumerate(answers):
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["shape"] == [len(rows_of(i)), 2]
        assert out["data"] == [v for a, b in rows_of(i) for v in (a * 10, b + 0.5)], i
    assert len(batches()) < 12, batches()


def test_without_the_option_every_request_is_its_own_predict_call(server):
    url, batches = server("Recorder")
    fire(url, 8, "/v1/models/rec:predict", lambda i: {"instances": rows_of(i)})
    assert sorted(batches()) == sorted(len(rows_of(i)) for i in range(8))


def test_an_output_that_is_not_one_row_per_input_row_is_predicted_per_request(server):
    url, batches = server("Whole", FAIRING_MAX_BATCH_SIZE="16", FAIRING_MAX_LATENCY_MS="200")
    answers = fire(url, 6, "/v1/models/rec:predict", lambda i: {"instances": rows_of(i)})
    for i, r in enumerate(answers):
        rows = rows_of(i)
        assert r.json() == {"predictions": {"count": len(rows), "total": sum(a for a, _ in rows)}}, i
    # After the shared call, each request was predicted on its own rows.
    assert Counter(len(rows_of(i)) for i in range(6)) <= Counter(batches()), batches()


def test_a_bad_request_in_a_batch_does_not_fail_the_others(server):
    url, _ = server("Recorder", FAIRING_MAX_BATCH_SIZE="16", FAIRING_MAX_LATENCY_MS="200")
    answers = fire(url, 6, "/v1/models/rec:predict",
                   lambda i: {"instances": [["x"]] if i == 3 else rows_of(i)})
    for i, r in enumerate(answers):
        if i == 3:
            assert r.status_code == 422, r.text
        else:
            assert r.json() == {"predictions": [[a * 10, b + 0.5] for a, b in rows_of(i)]}, (i, r.text)


def test_bad_batching_options_are_refused():
    with pytest.raises(ValueError):
        ms.ModelState("m", object, env={"FAIRING_MAX_BATCH_SIZE": "-1"})
    assert ms.ModelState("m", object, env={"FAIRING_MAX_BATCH_SIZE": "1"}).max_batch_size == 0  # 1 row: no batching
