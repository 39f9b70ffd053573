"""The trainjob deployer on the real API server with the real Kubeflow Trainer v2 controller, the
real JobSet controller and their CRDs (all built from their module sources by tests/rig/trainer.py):
Trainer turns the Kubeflow TrainJob into a JobSet, JobSet makes the Jobs, the Job controller the
pods, kwok runs them, and the conditions travel back up."""
import base64
import copy
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fairing.deployers import pod
from fairing.deployers.k8s.trainjob import TrainJobDeployer
from fairing.errors import ConfigError, DeployError
from fairing.kube.client import CRDNotInstalled, Kube
from tests.rig.kube import OUTCOME_LABEL, fake_image, require_simulation, serve_logs

API = "trainer.kubeflow.org/v1alpha1"
JOBSET = ("jobset.x-k8s.io/v1alpha2", "JobSet")
REPO = Path(__file__).resolve().parents[1]


def _env(container) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def test_trainjob_to_jobset_to_pods_succeeds(trainer, kube, admin, cleanup):
    require_simulation(kube)
    image = fake_image("trainjob-ok")
    d = TrainJobDeployer(kubeconfig=kube.sa_kubeconfig, nodes=2, procs_per_node=1,
                         mutators=[pod.cpu("500m"), pod.memory("256Mi"), pod.env(EPOCHS=3)])
    h = d.deploy(image)
    cleanup(h)
    assert h.wait(timeout=180) == "Succeeded"
    assert h.status() == "Succeeded"

    # The stored Kubeflow TrainJob: our image by digest, on the torch-distributed runtime.
    tj = admin.get(API, "TrainJob", h.name)
    assert tj["spec"]["runtimeRef"]["name"] == "torch-distributed"
    t = tj["spec"]["trainer"]
    assert t["image"] == image.ref and "@sha256:" in t["image"]
    assert t["numNodes"] == 2 and t["numProcPerNode"] == 1
    assert t["resourcesPerNode"]["requests"] == {"cpu": "500m", "memory": "256Mi"}
    assert {"name": "EPOCHS", "value": "3"} in t["env"]

    # Trainer made a JobSet owned by the TrainJob; JobSet made the Jobs.
    js = admin.get(*JOBSET, h.name)
    assert js is not None and js["metadata"]["ownerReferences"][0]["kind"] == "TrainJob"
    jobs = admin.list("batch/v1", "Job", kube.namespace, label_selector=f"jobset.sigs.k8s.io/jobset-name={h.name}")
    assert jobs["items"] and all(j["metadata"]["ownerReferences"][0]["kind"] == "JobSet" for j in jobs["items"])

    # One pod per node, our container image and resources, the PET_* env the torch runtime injects.
    pods = sorted(h.pods(), key=lambda p: p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"])
    assert len(pods) == 2 and {p["status"]["phase"] for p in pods} == {"Succeeded"}
    ranks = []
    for p in pods:
        (c,) = [c for c in p["spec"]["containers"] if c["name"] == "node"]
        assert c["image"] == image.ref
        assert c["resources"]["requests"] == {"cpu": "500m", "memory": "256Mi"}
        env = {e["name"]: e for e in c["env"]}
        assert env["PET_NNODES"]["value"] == "2" and env["PET_NPROC_PER_NODE"]["value"] == "1"
        assert env["PET_MASTER_ADDR"]["value"] == f"{h.name}-node-0-0.{h.name}"
        assert env["PET_MASTER_PORT"]["value"] == "29500"
        assert env["EPOCHS"]["value"] == "3"
        ranks.append(env["PET_NODE_RANK"])
    assert len(ranks) == 2  # node rank comes from each pod's completion index

    # Logs of every node, prefixed per node; the function's result comes from node 0.
    import cloudpickle

    for i, p in enumerate(pods):
        payload = base64.b64encode(cloudpickle.dumps({"node": i})).decode()
        serve_logs(admin, kube.namespace, p["metadata"]["name"], f"hello from {i}\nFAIRING_RESULT: {payload}")
    lines = list(h.logs())
    assert "[node-0] hello from 0" in lines and "[node-1] hello from 1" in lines
    assert h.result() == {"node": 0}

    # delete removes the TrainJob, its JobSet, Jobs and pods.
    h.delete()
    assert admin.get(API, "TrainJob", h.name) is None

    # Its JobSet, Jobs and pods follow by garbage collection (Trainer's owner reference does not
    # block the TrainJob's deletion): gone within seconds, not at the same instant.
    def left():
        return ((admin.get(*JOBSET, h.name) is not None)
                + len(admin.list("batch/v1", "Job", kube.namespace,
                                 label_selector=f"jobset.sigs.k8s.io/jobset-name={h.name}")["items"])
                + len(admin.list("v1", "Pod", kube.namespace, label_selector=h.pod_selector)["items"]))

    deadline = time.monotonic() + 60
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left() == 0


def _fast_fail_runtime(admin, name: str) -> None:
    """torch-distributed with backoffLimit 0: Kubernetes' default of 6 retries (10 s, 20 s, 40 s ...)
    would make a failing node take minutes to fail the TrainJob. Admins set this in their runtimes."""
    src = admin.get(API, "ClusterTrainingRuntime", "torch-distributed")
    rt = {"apiVersion": API, "kind": "ClusterTrainingRuntime",
          "metadata": {"name": name, "labels": src["metadata"].get("labels") or {}}, "spec": copy.deepcopy(src["spec"])}
    for rj in rt["spec"]["template"]["spec"]["replicatedJobs"]:
        rj["template"]["spec"]["backoffLimit"] = 0
    admin.apply(rt, field_manager="fairing-test")


def test_trainjob_failure_reason(trainer, kube, admin, cleanup):
    require_simulation(kube)
    _fast_fail_runtime(admin, "fairing-torch-nobackoff")
    d = TrainJobDeployer(kubeconfig=kube.sa_kubeconfig, nodes=1, runtime="fairing-torch-nobackoff",
                         labels={OUTCOME_LABEL: "oom"}, mutators=[pod.memory("128Mi")])
    h = d.deploy(fake_image("trainjob-oom"))
    cleanup(h)
    with pytest.raises(DeployError) as e:
        h.wait(timeout=180)
    assert "out of memory (limit 128Mi)" in e.value.message and "'node'" in e.value.message, e.value.message
    assert h.status() == "Failed"
    assert "Failed" in (h.status_detail() or "")


def test_runtime_missing_lists_the_runtimes(trainer, kube):
    name = f"tj-noruntime-{uuid.uuid4().hex[:6]}"
    d = TrainJobDeployer(kubeconfig=kube.sa_kubeconfig, runtime="torch-nonexistent", name=name)
    with pytest.raises(ConfigError) as e:
        d.deploy(fake_image("trainjob-noruntime"))
    assert "ClusterTrainingRuntime 'torch-nonexistent' does not exist" in e.value.message
    assert "torch-distributed" in e.value.hint
    assert Kube(kube.kubeconfig, namespace=kube.namespace).get(API, "TrainJob", name) is None  # nothing created


@pytest.fixture(scope="module")
def bare_apiserver(kube, tmp_path_factory):
    """A real kube-apiserver on the rig's etcd under its own key prefix: an empty cluster where
    Kubeflow Trainer (and Kueue) are not installed, without touching the shared one's CRDs."""
    from tests.rig import kube as rig
    from tests.rig.state import Service, free_port

    require_simulation(kube, "the local control plane")
    pki = kube.pki
    port = free_port()
    argv = rig._apiserver_argv(pki, port) + [f"--etcd-prefix=/fairing-bare-{uuid.uuid4().hex[:8]}"]  # noqa: SLF001
    svc = Service(f"kube/apiserver-bare-{port}", argv)
    svc.ensure(lambda: rig.https_ok(f"https://127.0.0.1:{port}/readyz", pki), port=port, timeout=120)  # noqa: SLF001
    cfg = rig.write_kubeconfig(tmp_path_factory.mktemp("bare") / "admin.kubeconfig", f"https://127.0.0.1:{port}",
                               pki.ca_crt, user="fairing-admin", cert=pki.admin_crt, key=pki.admin_key,
                               namespace="default")
    yield cfg
    svc.stop()
    svc.log.unlink(missing_ok=True)


def test_trainer_not_installed_names_the_install(bare_apiserver):
    d = TrainJobDeployer(kubeconfig=str(bare_apiserver))
    with pytest.raises(CRDNotInstalled) as e:
        d.deploy(fake_image("trainjob-nocrd"))
    assert "Kubeflow Trainer v2 is not installed" in e.value.message
    assert "github.com/kubeflow/trainer" in e.value.hint and "manifests/overlays/manager" in e.value.hint


def _fair(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "fairing.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_cli_trainer_not_installed_one_line(bare_apiserver, tmp_path, registry):
    (tmp_path / "train.py").write_text("print('hi')\n")
    r = _fair("train", "train.py", "--deployer", "trainjob", "--nodes", "2", "--registry", f"{registry.host}/t",
              "--kubeconfig", str(bare_apiserver), cwd=tmp_path)
    assert r.returncode == 4, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
    assert errors[0].startswith("error: Kubeflow Trainer v2 is not installed"), r.stderr
    assert len(errors) == 2 and "Traceback" not in r.stderr
    # Checked before the build: nothing was pushed (no build stage ran).
    assert "append" not in r.stderr and "layers pushed" not in r.stderr


@pytest.mark.slow  # `fair` subprocess
def test_dry_run_renders_the_trainjob(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    r = _fair("train", "train.py", "--deployer", "trainjob", "--nodes", "2", "--procs-per-node", "4",
              "--runtime", "torch-distributed", "--queue", "team-queue", "--cpu", "2", "--memory", "4Gi",
              "--registry", "registry.example.com/team", "--namespace", "team", "--dry-run", "--output", "json",
              cwd=tmp_path, env={"KUBECONFIG": str(tmp_path / "none")})
    assert r.returncode == 0, r.stderr
    (tj,) = json.loads(r.stdout)["manifests"]
    assert tj["apiVersion"] == API and tj["kind"] == "TrainJob"
    assert tj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-queue"
    spec = tj["spec"]
    assert spec["suspend"] is True
    assert spec["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                  "kind": "ClusterTrainingRuntime"}
    t = spec["trainer"]
    assert t["image"].startswith("registry.example.com/team/fairing-train:") and "@sha256:" in t["image"]
    assert t["numNodes"] == 2 and t["numProcPerNode"] == 4
    assert t["command"] and t["command"][-1].endswith("train.py")
    assert t["resourcesPerNode"]["requests"] == {"cpu": "2", "memory": "4Gi"}


@pytest.mark.slow  # `fair` subprocesses
@pytest.mark.parametrize("args, message", [
    (["--deployer", "job", "--nodes", "2"], "--nodes is an option of the trainjob deployer, not 'job'"),
    (["--deployer", "serving", "--queue", "q"], "--queue needs a training deployer"),
    (["--deployer", "trainjob", "--runtime", "Bad_Name"], "invalid runtime name"),
])
def test_bad_trainjob_options(tmp_path, args, message):
    (tmp_path / "train.py").write_text("print('hi')\n")
    r = _fair("train", "train.py", "--registry", "registry.example.com/team", "--dry-run", *args, cwd=tmp_path,
              env={"KUBECONFIG": str(tmp_path / "none")})
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr


def test_envfrom_is_refused_not_dropped():
    d = TrainJobDeployer("team", mutators=[pod.env_from_secret("wandb")])
    with pytest.raises(ConfigError, match="takes no envFrom"):
        d.render(fake_image("trainjob-envfrom"))
    # Named keys work: each is an env entry referencing the Secret.
    d = TrainJobDeployer("team", mutators=[pod.env_from_secret("wandb", ["WANDB_API_KEY"])])
    (tj,) = d.render(fake_image("trainjob-envfrom"))
    assert tj["spec"]["trainer"]["env"] == [
        {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "WANDB_API_KEY"}}}]


def test_pod_mutators_reach_the_trainer_pods(trainer, kube, admin, cleanup):
    """Volumes, tolerations, node selector, service account and pull secrets travel through the
    TrainJob's runtime patch into the pods the JobSet makes."""
    require_simulation(kube)
    d = TrainJobDeployer(kubeconfig=kube.sa_kubeconfig, nodes=1, mutators=[
        pod.empty_dir("/scratch"), pod.toleration("example.com/special"), pod.node_selector({"type": "kwok"}),
        pod.service_account("default"), pod.image_pull_secret("regcred"),
        pod.env_from_secret("creds", {"TOKEN": "token"}, optional=True)])
    h = d.deploy(fake_image("trainjob-mutators"))
    cleanup(h)
    assert h.wait(timeout=180) == "Succeeded"
    (p,) = h.pods()
    spec = p["spec"]
    (c,) = [c for c in spec["containers"] if c["name"] == "node"]
    assert {"name": "scratch-scratch", "mountPath": "/scratch"} in c["volumeMounts"]
    assert any(v["name"] == "scratch-scratch" and "emptyDir" in v for v in spec["volumes"])
    assert {"key": "example.com/special", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"type": "kwok"}
    assert spec["serviceAccountName"] == "default"
    assert {"name": "regcred"} in spec["imagePullSecrets"]
    env = {e["name"]: e for e in c["env"]}
    assert env["TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "creds", "key": "token", "optional": True}


@pytest.mark.slow  # `fair` subprocess
def test_readme_trainjob_manifest_is_what_dry_run_prints(tmp_path):
    """The README's Kubeflow TrainJob example runs as written and prints the manifest shown there
    (run id and the image tag/placeholder normalised)."""
    import re
    import shlex

    import yaml

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Kubeflow TrainJob"):readme.index("### Kueue queues")]
    cmd = re.search(r"```sh\n(fair train .*--deployer trainjob.*)\n```", section).group(1)
    documented = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAIRING_", "KUBECONFIG"))}
    r = subprocess.run([sys.executable, "-m", "fairing.cli", *shlex.split(cmd)[1:]], cwd=REPO, capture_output=True,
                       text=True, timeout=120, env={**env, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    printed = yaml.safe_load(r.stdout.split("\n---\n", 1)[1])

    def norm(doc):
        # The run id, and the code layer's digest (it holds fairing's own shim too), vary.
        text = json.dumps(doc).replace(doc["metadata"]["labels"]["fairing.dev/run-id"], "RUN")
        text = re.sub(r'"fairing.dev/source-(hash|digest)": "(sha256:)?[0-9a-f]+"', r'"fairing.dev/source-\1": "SRC"', text)
        return json.loads(re.sub(r"fairing-train:[0-9a-f]+@", "fairing-train:TAG@", text))
    assert norm(printed) == norm(documented)


def train_fn(epochs):
    return {"epochs": epochs}


def test_python_api_trainjob_renders_a_kubeflow_trainjob(tmp_path, monkeypatch):
    """fairing.TrainJob (the pipeline) with deployer="trainjob" makes a Kubeflow TrainJob."""
    import fairing

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    job = fairing.TrainJob(train_fn, kwargs={"epochs": 3}, deployer="trainjob", nodes=2, procs_per_node=2,
                           runtime="torch-distributed", queue="team-queue", registry="registry.example.com/team",
                           namespace="team")
    (tj,) = job.dry_run()["manifests"]
    assert tj["kind"] == "TrainJob" and tj["spec"]["trainer"]["numNodes"] == 2
    assert tj["spec"]["trainer"]["numProcPerNode"] == 2
    assert tj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-queue"
    assert tj["spec"]["trainer"]["command"]  # the function shim's entry point
    with pytest.raises(ConfigError, match="invalid nodes 0"):
        fairing.TrainJob(train_fn, deployer="trainjob", nodes=0, registry="registry.example.com/team").dry_run()
