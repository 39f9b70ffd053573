"""Distributed training, schedules and serving on the rig's real node: the training operator's
rendezvous environment, cluster DNS, Services and readiness probes are exercised by real processes
talking to each other, not by kwok stages."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest

import fairing
from fairing.errors import DeployError
from fairing.kube.client import Kube

FAIR = [sys.executable, "-m", "fairing.cli"]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def submit(on_node, tmp_path, script: str, name: str, deployer: str, **opts):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(script))
    schedule = opts.pop("schedule", None)
    job = fairing.TrainJob(path, registry=on_node.registry, base_image=on_node.base,
                           kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace, name=name,
                           deployer=deployer, schedule=schedule, progress=False,
                           deployer_options={"mutators": on_node.mutators(), **opts})
    return job.submit()


# --- PyTorchJob / TFJob ------------------------------------------------------------------------------

RENDEZVOUS = """
    import os, socket, time
    rank, addr, port = int(os.environ["RANK"]), os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    print("rank", rank, "world", os.environ["WORLD_SIZE"], "master", addr, port, flush=True)
    if rank == 0:
        srv = socket.create_server(("", port))
        srv.settimeout(240)
        conn, _ = srv.accept()
        msg = conn.recv(1024).decode()
        conn.sendall(("ack " + msg).encode())
        print("master got:", msg, flush=True)
    else:
        deadline = time.time() + 240
        while True:  # the master's Service name resolves once its pod is up
            try:
                c = socket.create_connection((addr, port), timeout=5)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        c.sendall(("hello from rank %d" % rank).encode())
        print("worker got:", c.recv(1024).decode(), flush=True)
"""


def test_pytorchjob_worker_talks_to_the_master_over_master_addr(on_node, tmp_path):
    h = submit(on_node, tmp_path, RENDEZVOUS, uid("node-pt"), "pytorchjob", master=1, workers=1)
    try:
        assert h.wait(timeout=400) == "Succeeded"
        text = "\n".join(h.logs())
        assert "master got: hello from rank 1" in text, text
        assert "worker got: ack hello from rank 1" in text, text
        assert f"master {h.name}-master-0 " in text  # a Service name, resolved by cluster DNS
    finally:
        h.delete()


TF_PEERS = """
    import json, os, socket, threading, time
    cfg = json.loads(os.environ["TF_CONFIG"])
    me = (cfg["task"]["type"], cfg["task"]["index"])
    peers = {(t, i): addr for t, addrs in cfg["cluster"].items() for i, addr in enumerate(addrs)}
    port = int(peers[me].rsplit(":", 1)[1])
    heard = set()
    srv = socket.create_server(("", port))

    def serve():
        while len(heard) < len(peers) - 1:
            conn, _ = srv.accept()
            heard.add(conn.recv(256).decode())
            conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    reached = []
    for peer, addr in sorted(peers.items()):
        if peer == me:
            continue
        host, p = addr.rsplit(":", 1)
        deadline = time.time() + 240
        while True:
            try:
                with socket.create_connection((host, int(p)), timeout=5) as c:
                    c.sendall(("%s-%d" % me).encode())
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        reached.append("%s-%d" % peer)
    t.join(240)
    print("task %s-%d reached %s heard %s" % (me + (sorted(reached), sorted(heard))), flush=True)
    assert len(heard) == len(peers) - 1
"""


def test_tfjob_replicas_parse_tf_config_and_reach_their_peers(on_node, tmp_path):
    h = submit(on_node, tmp_path, TF_PEERS, uid("node-tf"), "tfjob", chief=0, ps=1, workers=2)
    try:
        assert h.wait(timeout=400) == "Succeeded"
        text = "\n".join(h.logs())
        for me, others in (("worker-0", ["ps-0", "worker-1"]), ("worker-1", ["ps-0", "worker-0"]),
                           ("ps-0", ["worker-0", "worker-1"])):
            if me == "ps-0" and me not in text:
                continue  # the operator may clean the PS pod once the workers are done
            assert f"task {me} reached {others} heard {others}" in text, text
    finally:
        h.delete()


# --- CronJob ------------------------------------------------------------------------------------------

def test_cronjob_triggered_run_executes_and_its_log_is_read(on_node, tmp_path):
    h = submit(on_node, tmp_path, "import datetime\nprint('nightly retrain at', datetime.date.today())\n",
               uid("node-cron"), "cronjob", schedule="0 3 * * *")
    try:
        run = h.trigger()
        assert run.wait(timeout=300) == "Succeeded"
        text = "\n".join(run.logs(prefix=False))
        assert "nightly retrain at 20" in text, text  # the pod's own clock printed it
        assert run.status() == "Succeeded"
    finally:
        h.delete()


# --- serving ------------------------------------------------------------------------------------------

MODEL = """
class Doubler:
    def load(self):
        import socket
        self.host = socket.gethostname()

    def predict(self, rows):
        return [[2 * v for v in row] for row in rows]
"""


def test_fair_deploy_serving_is_ready_and_predicts_through_the_service_proxy(on_node, tmp_path):
    from fairing import workloads

    (tmp_path / "model.py").write_text(MODEL)
    name = uid("node-serve")
    env = on_node.cli_env()
    r = subprocess.run([*FAIR, "deploy", "model.py:Doubler", "--deployer", "serving", "--registry",
                        on_node.registry, "--base-image", on_node.base, "-n", on_node.namespace,
                        "--name", name, "--timeout", "300"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        ep = workloads.attach(name, {"kubeconfig": str(on_node.kubeconfig), "namespace": on_node.namespace,
                                     "deployer": "serving"})
        assert ep.status() == "Ready"
        # The readiness probe really passed: the kubelet marked the container ready.
        kube = Kube(on_node.admin_kubeconfig, namespace=on_node.namespace)
        pods = kube.list("v1", "Pod", on_node.namespace, label_selector=f"fairing.dev/serving={name}")["items"]
        assert pods and all(p["status"]["containerStatuses"][0]["ready"] for p in pods)
        assert ep.predict([[1, 2], [3, 4]]) == [[2, 4], [6, 8]]
        assert ep.predict([[1.5, -2]], protocol="v2") == [[3.0, -4]]
        logs = "\n".join(ep.logs())
        assert "infer" in logs or "predict" in logs or logs  # the server's own log comes back
    finally:
        subprocess.run([*FAIR, "delete", name, "-n", on_node.namespace], cwd=tmp_path, env=env,
                       capture_output=True, timeout=300)


BROKEN = """
class Broken:
    def load(self):
        raise FileNotFoundError("no weights.bin in the image")

    def predict(self, rows):
        return rows
"""


def test_a_model_whose_load_raises_is_reported_with_the_servers_traceback(on_node, tmp_path):
    from fairing.serving import PredictionEndpoint

    (tmp_path / "broken.py").write_text(BROKEN)
    name = uid("node-broken")
    printed = []
    ep = PredictionEndpoint(f"{tmp_path / 'broken.py'}:Broken", name=name, base_image=on_node.base,
                            registry=on_node.registry, deployer="serving", kubeconfig=str(on_node.kubeconfig),
                            namespace=on_node.namespace, mutators=on_node.mutators(), timeout=240,
                            out=printed.append)
    try:
        with pytest.raises(DeployError) as e:
            ep.create()
        text = str(e.value) + "\n" + "\n".join(printed)
        assert "FileNotFoundError: no weights.bin in the image" in text, text
        assert "Traceback" in text, text
        # Said as soon as load() fails (from the server's log), not as the wait's 240 s timeout.
        assert "not ready after" not in str(e.value), str(e.value)
        assert "failed: model '" in str(e.value) and "failed to load: FileNotFoundError" in str(e.value), str(e.value)
    finally:
        ep.delete()


SCALER = '''
class Scaler:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
    outputs = [{"name": "output-0", "datatype": "FP64", "shape": [-1, 2]}]

    def predict(self, rows):
        return [[v * 10 for v in r] for r in rows]
'''


def test_an_independent_oip_client_through_the_api_server(on_node, tmp_path):
    """tritonclient (not ours), binary tensors both ways, through the API server's service proxy."""
    import base64
    import ssl

    import numpy as np
    import tritonclient.http as httpclient
    import yaml

    from fairing.serving import PredictionEndpoint

    (tmp_path / "scaler.py").write_text(SCALER)
    name = uid("node-oip")
    ep = PredictionEndpoint(f"{tmp_path / 'scaler.py'}:Scaler", name=name, base_image=on_node.base,
                            registry=on_node.registry, deployer="serving", kubeconfig=str(on_node.kubeconfig),
                            namespace=on_node.namespace, mutators=on_node.mutators(), timeout=300,
                            out=lambda s: None)
    ep.create()
    try:
        cfg = yaml.safe_load(on_node.kubeconfig.read_text())
        server = cfg["clusters"][0]["cluster"]
        ca = tmp_path / "ca.crt"
        ca.write_bytes(base64.b64decode(server["certificate-authority-data"]))
        auth = {"Authorization": "Bearer " + cfg["users"][0]["user"]["token"]}
        hostport = server["server"].removeprefix("https://")
        url = f"{hostport}/api/v1/namespaces/{on_node.namespace}/services/{name}:http/proxy"
        client = httpclient.InferenceServerClient(url, ssl=True,
                                                  ssl_context_factory=lambda: ssl.create_default_context(cafile=str(ca)))
        assert client.is_model_ready(name, headers=auth)
        meta = client.get_model_metadata(name, headers=auth)
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
        x = np.array([[1.0, 2.0], [3.5, -1.0]], dtype=np.float32)
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)  # binary, the client's default
        res = client.infer(name, [inp], headers=auth)
        np.testing.assert_allclose(res.as_numpy("output-0"), x.astype(np.float64) * 10)
        client.close()
    finally:
        ep.delete()
