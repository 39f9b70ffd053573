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
