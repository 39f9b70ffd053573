"""Models on the rig's real node (issue 22): train (a Job whose pod keeps model.joblib in the
outputs store) -> register -> promote -> serve iris@champion (Deployment + Service on the node) ->
predict through the API server; `fair status` names the version and the run that made it."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

FAIR = [sys.executable, "-m", "fairing.cli"]

TRAIN = textwrap.dedent("""
    import os, sys
    lr = sys.argv[2]
    open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.joblib"), "w").write("weights-" + lr)
    print(f"accuracy={0.5 + float(lr)}")
""")
READER = textwrap.dedent("""
    import os

    class Reader:
        def load(self, model_dir):
            self.weights = open(os.path.join(model_dir, "model.joblib")).read()

        def predict(self, instances):
            return [self.weights for _ in instances]
""")


def fair(*args, env, cwd, timeout=600):
    return subprocess.run([*FAIR, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_train_register_promote_serve_the_champion_on_the_node(on_node, tmp_path, monkeypatch):
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "model.py").write_text(READER)
    env = on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=on_node.outputs)
    model = f"iris-{uuid.uuid4().hex[:6]}"  # the node's outputs store is shared by every run of this test
    runs = []
    for lr in ("0.1", "0.3"):
        name = f"node-iris-{uuid.uuid4().hex[:6]}"
        r = fair("train", "train.py", "--registry", on_node.registry, "--base-image", on_node.base,
                 "-n", on_node.namespace, "--name", name, "--", "--lr", lr, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        runs.append(json.loads(fair("runs", "-o", "json", "--last", "1", cwd=tmp_path, env=env).stdout)[0])
        fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)
    for run in runs:
        r = fair("models", "register", model, "--run", run["id"], "--path", "model.joblib", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
    assert fair("models", "promote", model, "2", cwd=tmp_path, env=env).returncode == 0
    v = json.loads(fair("models", "show", f"{model}@champion", "-o", "json", cwd=tmp_path, env=env).stdout)
    assert v["run"]["id"] == runs[1]["id"] and v["run"]["image"] and v["run"]["metrics"] == {"accuracy": 0.8}
    # The version names the blob the pod saved: the same digest as the run's outputs.
    assert v["files"][0]["digest"] == runs[1]["outputs"]["files"][0]["digest"]

    for k, val in env.items():
        if k.startswith("FAIRING_"):
            monkeypatch.setenv(k, val)
    from fairing.serving import PredictionEndpoint

    name = f"node-champ-{uuid.uuid4().hex[:6]}"
    ep = PredictionEndpoint(f"{tmp_path / 'model.py'}:Reader", name=name, base_image=on_node.base,
                            registry=on_node.registry, deployer="serving", kubeconfig=str(on_node.kubeconfig),
                            namespace=on_node.namespace, mutators=on_node.mutators(), timeout=300,
                            out=lambda s: None, model_ref=f"{model}@champion")
    ep.create()
    try:
        assert ep.predict([[1]]) == ["weights-0.3"]
        assert ep.run.doc["model"]["resolved"] == f"{model}:2" and ep.run.doc["model"]["run"] == runs[1]["id"]
        # The admin kubeconfig: `fair status` looks through every kind it knows, and the test
        # ServiceAccount may not get trainjobs (a limit of `fair status`, not of serving).
        st = fair("status", name, "-n", on_node.namespace, cwd=tmp_path,
                  env={**env, "KUBECONFIG": str(on_node.admin_kubeconfig)})
        assert f"model: {model}:2 from run {runs[1]['id']}" in st.stdout, st.stdout + st.stderr
    finally:
        ep.delete()


def test_the_best_trial_of_a_jobs_tuning_run_on_the_node_is_a_model(on_node, tmp_path, monkeypatch):
    """Each trial Job keeps its outputs in the store (its pod's shim saves them under the trial's run
    id); best:TUNE_RUN_ID registers the best trial's files."""
    import fairing

    (tmp_path / "tr.py").write_text(textwrap.dedent("""
        import argparse, os
        p = argparse.ArgumentParser(); p.add_argument("--lr", type=float); a = p.parse_args()
        open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.joblib"), "w").write(f"lr={a.lr}")
        print(f"accuracy={1 - abs(a.lr - 0.3)}")
    """))
    monkeypatch.chdir(tmp_path)
    for k, v in {"FAIRING_RUNS": str(tmp_path / "runs.db"), "FAIRING_OUTPUTS": on_node.outputs}.items():
        monkeypatch.setenv(k, v)
    r = fairing.tune(str(tmp_path / "tr.py"), params={"lr": fairing.uniform(0.1, 0.5)}, objective="accuracy",
                     goal="maximize", trials=3, parallel=2, algorithm="random", backend="jobs",
                     name=f"node-best-{uuid.uuid4().hex[:5]}", registry=f"{on_node.registry}/tunebest",
                     base_image=on_node.base, kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace,
                     mutators=on_node.mutators(), progress=False, timeout=300)
    assert r.status == "Succeeded", r.reason
    trials = fairing.runs.list(parent=r.run)
    assert len(trials) == 3 and all(t["outputs"]["store"] == on_node.outputs for t in trials)
    assert all([f["path"] for f in t["outputs"]["files"]] == ["model.joblib"] for t in trials), trials
    model = f"best-{uuid.uuid4().hex[:6]}"
    v = fairing.models.register(model, f"best:{r.run}", path="model.joblib")
    assert v["run"]["params"]["lr"] == r.best.params["lr"]
    d = fairing.models.files(f"{model}:1", tmp_path / "m")
    assert (d / "model.joblib").read_text() == f"lr={r.best.params['lr']}"
