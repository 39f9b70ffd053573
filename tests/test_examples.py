"""Every example in examples/ runs: the script directly and through `fair train`, both notebooks
executed for real with nbclient (one-liner API on the local deployer), and the scheduled
retraining example rendered (no cluster) and submitted to the rig's control plane."""
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def fresh_env(monkeypatch):
    """No cluster, no registry, no engine configured (kernels started by nbclient inherit this)."""
    for k in list(os.environ):
        if k.startswith(("FAIRING_", "DOCKER_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("KUBECONFIG", "")
    return dict(os.environ)


def test_train_script_runs_directly():
    out = subprocess.run([sys.executable, EXAMPLES / "train.py", "--epochs", "200"], capture_output=True,
                         text=True, check=True).stdout
    assert out.splitlines()[-2:] == ["ran directly", "trained: w=2.00 b=1.00"]


@pytest.mark.slow
def test_train_script_through_fair(fresh_env, tmp_path):
    r = subprocess.run([shutil.which("fair") or "fair", "train", EXAMPLES / "train.py"], cwd=tmp_path,
                       env=fresh_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-2:] == ["ran inside fairing", "trained: w=2.00 b=1.00"]


def run_notebook(path: Path, cwd: Path):
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")


@pytest.mark.slow
def test_notebook_example(fresh_env, tmp_path):
    shutil.copy(EXAMPLES / "notebook.ipynb", tmp_path)
    out = run_notebook(tmp_path / "notebook.ipynb", tmp_path)
    assert "mode: local process" in out
    # The workload ran the notebook's training cell (and not the fairing cells, tagged exclude).
    assert "workload: trained: w=2.00 b=1.00" in out
    assert "workload: mode:" not in out


@pytest.mark.slow
def test_function_from_notebook_example(fresh_env, tmp_path):
    shutil.copy(EXAMPLES / "function_from_notebook.ipynb", tmp_path)
    out = run_notebook(tmp_path / "function_from_notebook.ipynb", tmp_path)
    assert "result: {'w': 2.0, 'b': 1.0}" in out


@pytest.mark.slow
def test_scheduled_retrain_dry_run_needs_no_cluster(fresh_env):
    import yaml

    r = subprocess.run([sys.executable, EXAMPLES / "scheduled_retrain.py", "--registry", "registry.example/team",
                        "--dry-run"], env=fresh_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    [cron] = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "CronJob"]
    assert cron["metadata"]["name"] == "nightly-retrain" and cron["spec"]["schedule"] == "0 3 * * *"
    main = next(c for c in cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"] if c["name"] == "main")
    assert main["command"][-3:] == ["train.py", "--epochs", "100"]


def test_scheduled_retrain_on_the_cluster(fresh_env, kube, registry, base_image, tmp_path):
    name = f"nightly-{uuid.uuid4().hex[:6]}"
    env = dict(fresh_env)
    r = subprocess.run([sys.executable, EXAMPLES / "scheduled_retrain.py", "--registry", f"{registry.host}/examples",
                        "--base-image", base_image.docker, "--kubeconfig", kube.kubeconfig, "--namespace",
                        kube.namespace, "--name", name, "--schedule", "*/5 * * * *"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["name"] == name and "@sha256:" in out["image"]
    fair = shutil.which("fair") or "fair"
    env["KUBECONFIG"] = kube.kubeconfig
    try:
        listed = subprocess.run([fair, "list", "-n", kube.namespace, "-o", "json"], env=env, capture_output=True,
                                text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        [row] = [w for w in json.loads(listed.stdout) if w["name"] == name]
        assert row["kind"] == "CronJob" and row["status"] == "Scheduled"
    finally:
        d = subprocess.run([fair, "delete", name, "-n", kube.namespace], env=env, capture_output=True, text=True,
                           timeout=180)
    assert d.returncode == 0, d.stderr


def test_tune_example_runs_six_trials_and_plots(fresh_env, tmp_path):
    env = {**fresh_env, "FAIRING_LOCAL_MODE": "process", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, EXAMPLES / "tune.py", tmp_path / "tune.png"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("best: x=") and "score=" in lines[0]
    assert lines[1].startswith("6 of 6 trials finished, all on context:")
    assert (tmp_path / "tune.png").read_bytes()[:4] == b"\x89PNG"
