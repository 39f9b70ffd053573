"""Runs logged to a real MLflow tracking server (loopback, sqlite backend), read back with
MlflowClient; a server stopped mid-run costs one warning and the run is still recorded locally."""
import json
import subprocess
import sys
import textwrap
import time

import pytest

from tests.test_cli import ROOT, clean_env, fair

mlflow = pytest.importorskip("mlflow", reason="mlflow is a test extra: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for this module (it takes a while to start on a busy machine); the last test
    stops it on purpose."""
    from tests.rig.mlflow import start

    s = start(tmp_path_factory.mktemp("mlflow"))
    yield s
    s.stop()


def write_train(d, sleep=0.0):
    (d / "train.py").write_text(textwrap.dedent(f"""
        import sys, time
        lr = float(sys.argv[sys.argv.index("--lr") + 1])
        for step in range(1, 4):
            print(f"step={{step}} loss={{1 / (step * 10 * lr):.4f}}", flush=True)
            time.sleep({sleep})
        print(f"accuracy={{0.5 + lr}}")
    """))
    return d / "train.py"


def test_a_run_is_logged_with_params_per_step_metrics_tags_and_artifacts(tmp_path, server):
    from mlflow.tracking import MlflowClient

    script = write_train(tmp_path)
    env = clean_env(FAIRING_RUNS=tmp_path / "runs.db", MLFLOW_TRACKING_URI=server.uri)
    fair("train", script, "--local-mode", "process", "--", "--lr", "0.25", cwd=tmp_path, env=env, check=0)
    rec = json.loads(fair("runs", "-o", "json", env=env, check=0).stdout)[0]
    assert rec["mlflow"]["experiment"] == "train" and rec["mlflow"]["tracking_uri"] == server.uri

    c = MlflowClient(tracking_uri=server.uri)
    exp = c.get_experiment_by_name("train")
    (run,) = c.search_runs([exp.experiment_id])
    assert run.info.run_id == rec["mlflow"]["run_id"] and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.25", "argv": "--lr 0.25"}
    assert run.data.metrics == {"loss": 0.1333, "accuracy": 0.75}
    history = [(m.step, m.value) for m in c.get_metric_history(run.info.run_id, "loss")]
    assert history == [(1, 0.4), (2, 0.2), (3, 0.1333)]
    tags = run.data.tags
    assert tags["fairing.run_id"] == rec["id"] and tags["fairing.source_digest"] == rec["source"]["digest"]
    assert tags["fairing.image"] == rec["image"]["ref"] and tags["fairing.deployer"] == "local"
    assert tags["mlflow.runName"] == rec["id"]
    arts = {a.path for a in c.list_artifacts(run.info.run_id, "fairing")}
    assert arts == {"fairing/run.json"}
    local = c.download_artifacts(run.info.run_id, "fairing/run.json", str(tmp_path / "dl"))
    doc = json.loads(open(local).read())
    assert doc["id"] == rec["id"] and doc["metrics"] == rec["metrics"]

    # --experiment and --mlflow on the command line; a failed run is FAILED there too.
    (tmp_path / "bad.py").write_text("print('loss=3')\nraise SystemExit('diverged')\n")
    r = fair("train", tmp_path / "bad.py", "--local-mode", "process", "--mlflow", server.uri, "--experiment", "team-x",
             cwd=tmp_path, env=clean_env(FAIRING_RUNS=tmp_path / "runs.db"))
    assert r.returncode == 4
    (bad,) = c.search_runs([c.get_experiment_by_name("team-x").experiment_id])
    assert bad.info.status == "FAILED" and bad.data.metrics == {"loss": 3.0} and bad.data.tags["fairing.status"] == "Failed"


def test_a_function_run_logs_its_arguments_and_result(tmp_path, server, monkeypatch):
    from mlflow.tracking import MlflowClient

    code = textwrap.dedent("""
        import fairing
        def fit(epochs, lr=0.1):
            print(f"step=1 loss={lr}")
            return {"w": epochs}
        fairing.config.set_deployer("local", mode="process")
        print(fairing.config.fn(fit)(4, lr=0.5))
    """)
    env = clean_env(FAIRING_RUNS=tmp_path / "runs.db", MLFLOW_TRACKING_URI=server.uri, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    c = MlflowClient(tracking_uri=server.uri)
    (run,) = c.search_runs([c.get_experiment_by_name("fit").experiment_id])
    assert run.data.params == {"epochs": "4", "lr": "0.5"}
    local = c.download_artifacts(run.info.run_id, "fairing/result.txt", str(tmp_path / "dl"))
    assert open(local).read() == "{'w': 4}"
    # The result file the local run wrote is uploaded too, and the record says where it went.
    local = c.download_artifacts(run.info.run_id, "fairing/result/result.pkl", str(tmp_path / "dl"))
    import cloudpickle

    assert cloudpickle.loads(open(local, "rb").read()) == {"w": 4}
    (rec,) = json.loads(fair("runs", "-o", "json", env=env, check=0).stdout)
    assert rec["artifacts"]["result"] == f"{run.info.artifact_uri}/fairing/result/result.pkl"


def test_a_failed_notebook_run_uploads_the_executed_notebook(tmp_path, server):
    import nbformat
    from mlflow.tracking import MlflowClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('loss=0.5')"),
                                         nbformat.v4.new_code_cell("raise ValueError('bad batch')")])
    nbformat.write(nb, tmp_path / "explore.ipynb")
    env = clean_env(FAIRING_RUNS=tmp_path / "runs.db", MLFLOW_TRACKING_URI=server.uri)
    r = fair("train", "explore.ipynb", "--preprocessor", "full_notebook", "--local-mode", "process",
             cwd=tmp_path, env=env)
    assert r.returncode == 4, r.stderr
    c = MlflowClient(tracking_uri=server.uri)
    (run,) = c.search_runs([c.get_experiment_by_name("explore").experiment_id])
    assert run.info.status == "FAILED" and run.data.metrics == {"loss": 0.5}
    local = c.download_artifacts(run.info.run_id, "fairing/notebook/explore.executed.ipynb", str(tmp_path / "dl"))
    executed = nbformat.read(local, as_version=4)
    assert executed.cells[1].outputs[0]["ename"] == "ValueError"  # the traceback is in the uploaded copy
    (rec,) = json.loads(fair("runs", "-o", "json", env=env, check=0).stdout)
    assert rec["status"] == "Failed" and rec["artifacts"]["notebook"].endswith("fairing/notebook/explore.executed.ipynb")


def test_fair_tune_logs_the_tuning_run_with_its_trials_as_child_runs(tmp_path, server):
    """`fair tune` with a tracking server: the tuning run is an MLflow run made when tuning starts,
    each trial a child run of it (params, its metric), and the parent ends with the best value."""
    from mlflow.tracking import MlflowClient

    (tmp_path / "search.py").write_text(textwrap.dedent("""
        import sys
        lr = float(sys.argv[sys.argv.index("--lr") + 1])
        print(f"accuracy={1 - (lr - 0.3) ** 2}")
    """))
    env = clean_env(FAIRING_RUNS=tmp_path / "runs.db", MLFLOW_TRACKING_URI=server.uri, PYTHONPATH=str(ROOT))
    r = fair("tune", "search.py", "--param", "lr=0.1..0.5", "--objective", "accuracy", "--maximize",
             "--trials", "3", "--parallel", "2", "--algorithm", "random", "--seed", "1", "--local-mode", "process",
             "--experiment", "tune-demo", "-o", "json", cwd=tmp_path, env=env, check=0)
    out = json.loads(r.stdout)
    c = MlflowClient(tracking_uri=server.uri)
    got = {m.data.tags["fairing.run_id"]: m for m in c.search_runs([c.get_experiment_by_name("tune-demo").experiment_id])}
    assert len(got) == 4
    parent = got.pop(out["run"])
    assert parent.info.status == "FINISHED" and "mlflow.parentRunId" not in parent.data.tags
    assert parent.data.tags["fairing.command"] == "tune" and parent.data.tags["fairing.status"] == "Succeeded"
    assert parent.data.metrics == {"accuracy": out["best"]["value"]}
    assert parent.data.params["objective"] == "accuracy" and parent.data.params["space.lr"] == "uniform(0.1, 0.5)"
    by_lr = {t["params"]["lr"]: t for t in out["trials"]}
    for child in got.values():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["fairing.command"] == "trial" and child.info.status == "FINISHED"
        t = by_lr[float(child.data.params["lr"])]
        assert child.data.metrics == {"accuracy": pytest.approx(t["value"])}


def test_a_server_stopped_mid_run_warns_once_and_the_run_is_recorded(tmp_path, server):
    """Last in this module: it stops the shared server."""
    script = write_train(tmp_path, sleep=1.0)
    env = clean_env(FAIRING_RUNS=tmp_path / "runs.db", MLFLOW_TRACKING_URI=server.uri)
    p = subprocess.Popen([sys.executable, "-m", "fairing.cli", "train", str(script), "--local-mode", "process",
                          "--", "--lr", "0.5"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    time.sleep(1.0)
    server.stop()
    t0 = time.monotonic()
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "accuracy=1.0" in out
    assert err.count("warning: mlflow") == 1 and "recorded locally" in err
    assert time.monotonic() - t0 < 60  # no minutes of retries against a dead server
    rec = json.loads(fair("runs", "-o", "json", env=env, check=0).stdout)[0]
    assert rec["status"] == "Succeeded" and rec["metrics"] == {"loss": 0.0667, "accuracy": 1.0} and "mlflow" not in rec
