"""A Kubeflow TrainJob whose nodes really run: Trainer v2 makes the JobSet, JobSet the Jobs and the
headless Service, and the two node pods on the rig's real node find each other through
PET_MASTER_ADDR (cluster DNS) and PET_MASTER_PORT with plain sockets, as torchrun's rendezvous
would; the function's return value comes back from node 0."""
from __future__ import annotations

import uuid

import pytest

import fairing
from fairing.kube.client import Kube


def rendezvous(greeting):
    """Node 0 listens on PET_MASTER_PORT; node 1 resolves PET_MASTER_ADDR and connects. Each node
    returns what it heard from the other."""
    import os
    import socket
    import time

    rank, n = int(os.environ["PET_NODE_RANK"]), int(os.environ["PET_NNODES"])
    addr, port = os.environ["PET_MASTER_ADDR"], int(os.environ["PET_MASTER_PORT"])
    me = f"{greeting} from node {rank} ({socket.gethostname()})"
    print(f"node {rank}/{n}: master {addr}:{port}", flush=True)
    if rank == 0:
        srv = socket.create_server(("0.0.0.0", port))
        srv.settimeout(240)
        conn, peer = srv.accept()
        heard = conn.recv(1024).decode()
        conn.sendall(me.encode())
        conn.close()
    else:
        deadline = time.monotonic() + 240
        while True:  # the master's DNS name and listener appear when its pod runs
            try:
                conn = socket.create_connection((addr, port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        conn.sendall(me.encode())
        heard = conn.recv(1024).decode()
        conn.close()
    print(f"node {rank} heard: {heard}", flush=True)
    return {"rank": rank, "heard": heard}


def test_two_node_trainjob_rendezvous_and_result(trainer, on_node):
    if on_node.node.external:
        pytest.skip("the rig's Trainer controllers run against the rig's own control plane")
    from tests.rig.trainer import grant_sa

    grant_sa(Kube(on_node.admin_kubeconfig, namespace=on_node.namespace), on_node.namespace)
    name = f"rdzv-{uuid.uuid4().hex[:6]}"
    job = fairing.TrainJob(rendezvous, args=("hello",), deployer="trainjob", nodes=2, name=name,
                           registry=on_node.registry, base_image=on_node.base, kubeconfig=str(on_node.kubeconfig),
                           namespace=on_node.namespace, progress=False,
                           deployer_options={"mutators": on_node.mutators()})
    h = job.submit()
    try:
        assert h.wait(timeout=600) == "Succeeded", h.log_text() if hasattr(h, "log_text") else ""
        # node 0's return value: what node 1 told it over the socket
        res = h.result()
        assert res["rank"] == 0 and res["heard"].startswith(f"hello from node 1 ({name}-node-0-1"), res
        lines = list(h.logs())
        assert f"[node-0] node 0/2: master {name}-node-0-0.{name}:29500" in lines, lines
        assert any(ln.startswith(f"[node-1] node 1 heard: hello from node 0 ({name}-node-0-0") for ln in lines), lines
        # both pods ran on the real node
        pods = h.pods()
        assert len(pods) == 2 and {p["spec"]["nodeName"] for p in pods} == {on_node.node.name}
    finally:
        h.delete()
