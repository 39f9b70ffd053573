"""fairing inside the cluster, as in a Kubeflow notebook server: a pod on the real node imports
fairing, finds the API server and its namespace from the ServiceAccount it runs as (no kubeconfig),
builds and submits a Job on the same cluster, and reads that Job's log."""
from __future__ import annotations

import shutil
import textwrap
import uuid
from pathlib import Path

import fairing
import fairing.errors
import pytest
from fairing.deployers import pod

REPO = Path(__file__).resolve().parents[1]

INNER = """
    import os, fairing
    from pathlib import Path
    assert not os.environ.get("KUBECONFIG") and not Path.home().joinpath(".kube/config").exists()
    ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text()
    print("notebook pod in namespace", ns, flush=True)
    res = fairing.config.run("hello.py", registry=os.environ["INNER_REGISTRY"],
                             base_image=os.environ["INNER_BASE"], wait=True)
    h = res.handle
    print("inner job", h.name, "in", h.namespace, "status", h.status(), flush=True)
    for line in h.logs(prefix=False):
        print("inner log:", line, flush=True)
    h.delete()
"""


def host_network(p: dict) -> dict:
    """The rig's registries listen on the machine's loopback only, so the notebook pod shares the
    node's network to push there (the API server it reaches through the `kubernetes` Service)."""
    p.setdefault("spec", {}).update(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    return p


def test_fairing_in_a_pod_submits_a_job_on_its_own_cluster(on_node, tmp_path):
    if on_node.node.external:
        pytest.skip("the notebook pod pushes to the rig's loopback registry through the node's network")
    nb = tmp_path / "notebook"
    nb.mkdir()
    shutil.copytree(REPO / "fairing", nb / "fairing", ignore=shutil.ignore_patterns("__pycache__"))
    (nb / "main.py").write_text(textwrap.dedent(INNER))
    (nb / "hello.py").write_text("import socket\nprint('hello from', socket.gethostname())\n")
    name = f"node-nb-{uuid.uuid4().hex[:6]}"
    # What fairing needs to submit a Job from a script (the notebook extras are not needed here).
    reqs = ["requests>=2.31", "pyyaml>=6", "cloudpickle>=3.0", "kubernetes>=29", "typer>=0.12",
            "rich>=13", "pathspec>=0.12", "packaging>=23"]
    job = fairing.TrainJob(nb, registry=on_node.registry, base_image=on_node.base, requirements=reqs,
                           kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace, name=name,
                           deployer="job", progress=False,
                           # the inner Job goes to the real node too, by fairing settings in its env
                           env={"INNER_REGISTRY": on_node.registry, "INNER_BASE": on_node.base,
                                **on_node.node.settings_env()},
                           deployer_options={"mutators": [
                               *on_node.mutators(), pod.service_account("fairing"), host_network,
                               # A notebook server is not a fairing workload: run() must really run.
                               pod.env({"FAIRING_RUNTIME": "0"})]})
    h = job.submit()
    try:
        try:
            status = h.wait(timeout=600)
        except fairing.errors.DeployError as e:
            pytest.fail(f"{e}\n--- notebook pod log ---\n{h.log_text()}")
        assert status == "Succeeded", h.log_text()
        text = h.log_text()
        assert f"notebook pod in namespace {on_node.namespace}" in text
        inner = next(line for line in text.splitlines() if line.startswith("inner job "))
        assert inner.endswith("status Succeeded") and f" in {on_node.namespace} " in inner
        inner_name = inner.split()[2]
        assert f"inner log: hello from {inner_name}-" in text, text
    finally:
        h.delete()
