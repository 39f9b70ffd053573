"""Serving telemetry: the model server's Prometheus /metrics after real predictions (counts by
protocol and status, latency and batch-size histograms, labels tying it to the run), and
`fair status NAME` reading it back for a served model."""
import json
import subprocess
import sys
import textwrap
import uuid

import pytest
import requests
from starlette.testclient import TestClient

from fairing import telemetry
from fairing.image_runtime import model_server as ms
from tests.test_cli import ROOT, clean_env, fair


class Doubler:
    def predict(self, rows):
        if any(len(r) != 2 for r in rows):
            raise ValueError("each row needs 2 features")
        return [[2 * x for x in r] for r in rows]


ENV = {"FAIRING_RUN_ID": "abc123def456", "FAIRING_IMAGE": "127.0.0.1:5000/m@sha256:" + "e" * 64}


def served(env=ENV):
    state = ms.ModelState("dbl", factory=Doubler, env=env)
    return TestClient(ms.create_app(state))


def samples(text):
    return {(n, tuple(sorted(l.items()))): v for n, l, v in telemetry.parse(text)}


def test_metrics_count_requests_errors_latency_and_batches_with_run_labels():
    with served() as c:
        c.get("/v2/health/ready")
        assert c.post("/v1/models/dbl:predict", json={"instances": [[1, 2], [3, 4]]}).status_code == 200
        assert c.post("/v1/models/dbl:predict", json={"instances": [[1, 2]]}).status_code == 200
        assert c.post("/v1/models/dbl:predict", json={"instances": [[1, 2, 3]]}).status_code == 422
        body = {"inputs": [{"name": "x", "shape": [3, 2], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]}]}
        assert c.post("/v2/models/dbl/infer", json=body).status_code == 200
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    s = samples(r.text)
    # model_version / model_run are empty unless the endpoint serves a registered model (--model).
    base = (("image_digest", "sha256:" + "e" * 64), ("model", "dbl"), ("run_id", "abc123def456"),
            ("model_version", ""), ("model_run", ""))

    def key(name, **more):
        return name, tuple(sorted(base + tuple(more.items())))

    assert s[key("fairing_model_requests_total", protocol="v1", code="200")] == 2
    assert s[key("fairing_model_requests_total", protocol="v1", code="422")] == 1
    assert s[key("fairing_model_requests_total", protocol="v2", code="200")] == 1
    assert s[key("fairing_model_request_errors_total", protocol="v1", code="422")] == 1
    assert key("fairing_model_request_errors_total", protocol="v2", code="200") not in s
    assert s[key("fairing_model_request_duration_seconds_count", protocol="v1")] == 3
    assert s[key("fairing_model_batch_size_sum", protocol="v1")] == 2 + 1 + 1
    assert s[key("fairing_model_batch_size_sum", protocol="v2")] == 3
    assert s[key("fairing_model_batch_size_bucket", protocol="v1", le="1.0")] == 2
    assert s[key("fairing_model_info")] == 1
    summary = telemetry.summarize(r.text)
    assert summary["requests"] == 4 and summary["errors"] == 1 and summary["error_rate"] == 0.25
    assert summary["by_protocol"] == {"v1": 3, "v2": 1} and summary["run_id"] == "abc123def456"
    assert 0 < summary["p50_seconds"] <= summary["p95_seconds"] < 1


def test_quantiles_follow_prometheus_histogram_quantile():
    buckets = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert telemetry.quantile(0.5, buckets) == pytest.approx(0.01)
    assert telemetry.quantile(0.95, buckets) == pytest.approx(0.1 + 0.9 * 0.5)
    assert telemetry.quantile(0.5, [(float("inf"), 0.0)]) is None


def test_status_adds_up_every_replica_and_names_each_ones_model_version():
    """Two real model servers of one endpoint mid-rollout (iris:1 and iris:2): the summary adds
    their counters and histograms, and says which replica serves which version."""
    texts = []
    for version, rows in (("iris:1", [[[1, 2]], [[1, 2], [3, 4]]]), ("iris:2", [[[5, 6]]])):
        with served({**ENV, "FAIRING_MODEL_VERSION": version, "FAIRING_MODEL_RUN": f"run-{version[-1]}"}) as c:
            c.get("/v2/health/ready")
            for instances in rows:
                assert c.post("/v1/models/dbl:predict", json={"instances": instances}).status_code == 200
            texts.append(c.get("/metrics").text)
    replicas = [{"pod": "dbl-a", "ready": True, "metrics": texts[0]},
                {"pod": "dbl-b", "ready": False, "metrics": texts[1]},
                {"pod": "dbl-c", "ready": False, "metrics": None, "error": "/metrics answered 502"}]
    s = telemetry.aggregate(replicas)
    assert s["requests"] == 3 and s["by_protocol"] == {"v1": 3} and s["p50_seconds"] is not None
    assert s["mixed"] and s["model_version"] == ""
    assert [(r["pod"], r.get("model_version"), r.get("model_run"), r.get("requests")) for r in s["replicas"]] == [
        ("dbl-a", "iris:1", "run-1", 2), ("dbl-b", "iris:2", "run-2", 1), ("dbl-c", None, None, None)]
    shown = telemetry.lines(s)
    assert shown[:4] == ["model: differs between replicas (a rollout in progress)",
                         "replica dbl-a (ready): iris:1 from run run-1, 2 requests, 0 errors",
                         "replica dbl-b (not ready): iris:2 from run run-2, 1 requests, 0 errors",
                         "replica dbl-c (not ready): /metrics answered 502"]
    # Once every replica serves one version, that version is the endpoint's.
    same = telemetry.aggregate([{**replicas[1], "pod": "dbl-d"}, {**replicas[1], "ready": True}])
    assert not same["mixed"] and telemetry.lines(same)[0] == "model: iris:2 from run run-2" and same["requests"] == 2
    assert telemetry.aggregate([replicas[2]]) is None


def test_without_prometheus_client_the_server_still_serves():
    # The one way to have the package absent in this interpreter: block its import (a real
    # serving image without it behaves the same).
    code = textwrap.dedent("""
        import sys
        sys.modules["prometheus_client"] = None
        from starlette.testclient import TestClient
        from fairing.image_runtime import model_server as ms
        from tests.test_serving_metrics import Doubler
        with TestClient(ms.create_app(ms.ModelState("dbl", factory=Doubler, env={}))) as c:
            c.get("/v2/health/ready")
            print(c.post("/v1/models/dbl:predict", json={"instances": [[1, 2]]}).json())
            r = c.get("/metrics")
            print(r.status_code, r.json()["error"])
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "{'predictions': [[2, 4]]}" in out and "404 metrics need prometheus_client" in out


def test_fair_status_shows_traffic_of_a_served_model(tmp_path, engine, base_image):
    (tmp_path / "model.py").write_text("class Doubler:\n    def predict(self, instances):\n"
                                       "        return [[2 * x for x in row] for row in instances]\n")
    env = clean_env(DOCKER_HOST=engine.docker_host, FAIRING_RUNS=tmp_path / "runs.db")
    name = f"tel-{uuid.uuid4().hex[:6]}"
    dep = json.loads(fair("deploy", "model.py:Doubler", "--name", name, "--base-image", base_image.docker, "-o", "json",
                          cwd=tmp_path, env=env, check=0).stdout)
    try:
        url = f"{dep['url']}/v1/models/{name}:predict"
        for rows in ([[1]], [[1], [2], [3]], [[4, 5]]):
            assert requests.post(url, json={"instances": rows}, timeout=30).status_code == 200
        assert requests.post(url, data=b"not json", timeout=30).status_code == 400
        metrics = requests.get(f"{dep['url']}/metrics", timeout=30).text
        rec = json.loads(fair("runs", "show", dep["run_id"], "-o", "json", env=env, check=0).stdout)
        info = telemetry.summarize(metrics)
        assert info["run_id"] == rec["id"] and info["model"] == name
        assert info["image_digest"] == rec["image"]["digest"]
        st = json.loads(fair("status", dep["name"], "-o", "json", cwd=tmp_path, env=env, check=0).stdout)
        assert st["status"] == "Ready" and st["run_id"] == rec["id"]
        t = st["traffic"]
        assert t["requests"] == 4 and t["errors"] == 1 and t["error_rate"] == 0.25 and t["by_protocol"] == {"v1": 4}
        assert t["p50_seconds"] is not None
        text = fair("status", dep["name"], cwd=tmp_path, env=env, check=0).stdout.splitlines()
        assert text[1].strip() == "requests: 4 (v1 4)" and text[2].strip() == "errors: 1 (25.0%)"
        assert text[3].strip().startswith("latency: p50 ")
    finally:
        fair("delete", dep["name"], cwd=tmp_path, env=env)
