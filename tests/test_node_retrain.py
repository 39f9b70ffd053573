"""Retraining that promotes, on the rig's real node (issue 22, part 4): a CronJob on a one-minute
schedule trains, and its pod registers a version on every run and moves `champion` only when
"accuracy >= champion" holds; an endpoint deployed with --model NAME@champion follows the alias
under a steady request load, with no failed request; a gate that fails leaves the champion and the
endpoint as they were, and the run's record says why. The accuracy each run reports comes from a
ConfigMap the test changes between runs (the data a nightly retrain would read). A promoted version
the endpoint's model refuses to load leaves it serving the version it had, and its log says why."""
from __future__ import annotations

import json
import textwrap
import threading
import time
import uuid
from datetime import datetime

import fairing
from fairing.deployers import pod
from fairing.image_runtime import modeldocs, outputs as shim
from fairing.kube.client import Kube
from tests.test_node_models import fair

RETRAIN = textwrap.dedent("""
    import os
    acc = os.environ["ACC"]
    open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.joblib"), "w").write("weights-" + acc)
    print("epoch=1 loss=0.3")
    print("accuracy=" + acc)
""")
# Answers with its model file's bytes (which version it loaded shows in every answer); refuses to
# load a model trained on data it cannot trust (0.99: too good to be true), as a broken file would.
PICKY = textwrap.dedent("""
    import os

    class Picky:
        def load(self, model_dir):
            weights = open(os.path.join(model_dir, "model.joblib")).read()
            if weights.endswith("0.99"):
                raise ValueError("refusing " + weights)
            self.weights = weights

        def predict(self, instances):
            return [self.weights] * len(instances)
""")


class Load:
    """A steady request load on the endpoint: one request every `every` seconds, each answer kept
    with its time; an exception or an unknown answer is a failed request."""

    def __init__(self, ep, every=0.2):
        self.ep, self.every = ep, every
        self.answers: list[tuple[float, str]] = []
        self.failed: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            t = time.time()
            try:
                self.answers.append((t, self.ep.predict([[1]])[0]))
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failed.append((t, f"{type(e).__name__}: {e}"))
            self.stop.wait(max(0.0, self.every - (time.time() - t)))

    def first(self, answer: str, after: float = 0.0) -> float | None:
        return next((t for t, a in self.answers if a == answer and t >= after), None)


def test_a_scheduled_retrain_promotes_a_better_model_and_the_endpoint_follows_under_load(on_node, tmp_path, monkeypatch):
    (tmp_path / "retrain.py").write_text(RETRAIN)
    (tmp_path / "model.py").write_text(PICKY)
    uid = uuid.uuid4().hex[:6]
    model, name, cm = f"iris-{uid}", f"node-retrain-{uid}", f"retrain-data-{uid}"
    for k, v in on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=on_node.outputs).items():
        if k.startswith("FAIRING_") or k == "KUBECONFIG":
            monkeypatch.setenv(k, v)
    admin = Kube(str(on_node.admin_kubeconfig), None, on_node.namespace)
    sa = Kube(str(on_node.kubeconfig), None, on_node.namespace)

    def data(acc: str) -> None:  # the data the next run reads
        admin.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm, "namespace": on_node.namespace},
                     "data": {"ACC": acc}}, on_node.namespace)

    host, repo = on_node.outputs.split("://", 1)[1].split("/", 1)
    store = shim.RegistryBackend("http://" + host, repo)
    seen: list[str] = []

    def next_run(timeout=200.0) -> dict:
        """The pod's record of the next Job the schedule starts (no client waits on it)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            jobs = [j for j in sa.list("batch/v1", "Job").get("items", [])
                    if any(o.get("name") == name for o in j["metadata"].get("ownerReferences") or [])]
            for j in sorted(jobs, key=lambda j: j["metadata"]["creationTimestamp"]):
                jn = j["metadata"]["name"]
                st = j.get("status") or {}
                if jn in seen or not (st.get("succeeded") or st.get("failed")):
                    continue
                doc = store.get_run(shim.run_id_of({"FAIRING_JOB_NAME": jn}))
                if doc is None:
                    continue
                seen.append(jn)
                return {**doc["record"], "finished_seen": time.time()}
            time.sleep(2)
        raise AssertionError(f"no new run of CronJob {name} finished within {timeout:.0f} s (seen: {seen})")

    data("0.90")
    job = fairing.TrainJob(tmp_path / "retrain.py", registry=on_node.registry, base_image=on_node.base,
                           kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace, name=name,
                           deployer="cronjob", schedule="*/1 * * * *", register=model, promote_if="accuracy >= champion",
                           deployer_options={"mutators": (*on_node.mutators(), pod.env_from_configmap(cm))},
                           progress=False, outputs=on_node.outputs)
    h = job.submit()
    ep = load = None
    try:
        # Run 1: no champion yet, so the first version is promoted.
        r1 = next_run()
        assert r1["status"] == "Succeeded" and r1["metrics"]["accuracy"] == 0.90, r1
        assert r1["model"] == {**r1["model"], "registered": f"{model}:1", "promoted": True,
                               "reason": "promoted: no champion yet: the first version is promoted"}
        data("0.95")  # run 2 reads better data

        from fairing.serving import PredictionEndpoint

        ep = PredictionEndpoint(f"{tmp_path / 'model.py'}:Picky", name=f"node-follow-{uid}", base_image=on_node.base,
                                registry=on_node.registry, deployer="serving", kubeconfig=str(on_node.kubeconfig),
                                namespace=on_node.namespace, mutators=on_node.mutators(), timeout=300,
                                out=lambda s: None, model_ref=f"{model}@champion")
        ep.create()
        assert ep.run.doc["model"]["follows"] == f"{model}@champion"
        load = Load(ep)
        load.thread.start()

        # Run 2: 0.95 >= 0.90: promoted; the endpoint follows within 3 minutes, with no failed request.
        r2 = next_run()
        assert r2["model"] == {**r2["model"], "registered": f"{model}:2", "promoted": True,
                               "reason": f"promoted: accuracy 0.95 >= champion 0.9 ({model}:1)"}
        data("0.91")  # run 3 reads worse data
        assert fairing.models.get(f"{model}@champion", store=on_node.outputs)["version"] == 2
        deadline = r2["finished_seen"] + 180
        while load.first("weights-0.95") is None and time.time() < deadline:
            time.sleep(1)
        switched = load.first("weights-0.95")
        assert switched is not None, f"still serving {load.answers[-1][1] if load.answers else '?'} 3 minutes after the promotion"
        _, move = modeldocs.alias_move(store, model, "champion")
        follow_s = switched - datetime.fromisoformat(move["moved"]).timestamp()  # from the alias move
        assert follow_s < 180
        after = [a for t, a in load.answers if t >= switched]
        assert set(after) == {"weights-0.95"}  # never back to the old version
        st = fair("status", ep.name, "-n", on_node.namespace, cwd=tmp_path,
                  env={**on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db")), "KUBECONFIG": str(on_node.admin_kubeconfig)})
        assert f"model: {model}:2 from run {r2['id']}" in st.stdout, st.stdout + st.stderr

        # Run 3: 0.91 < 0.95: registered, not promoted; the champion and the endpoint stay.
        r3 = next_run()
        assert r3["model"] == {**r3["model"], "registered": f"{model}:3", "promoted": False,
                               "reason": f"not promoted: accuracy 0.91 < champion 0.95 ({model}:2)"}
        assert fairing.models.get(f"{model}@champion", store=on_node.outputs)["version"] == 2
        # What a user reads: the pod's record, imported by `fair runs sync`, says why.
        cli_env = on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=on_node.outputs)
        assert fair("runs", "sync", "--store", on_node.outputs, cwd=tmp_path, env=cli_env).returncode == 0
        shown = json.loads(fair("runs", "show", r3["id"], "-o", "json", cwd=tmp_path, env=cli_env).stdout)
        assert shown["model"]["reason"] == f"not promoted: accuracy 0.91 < champion 0.95 ({model}:2)", shown
        assert shown["metrics"]["accuracy"] == 0.91 and shown["status"] == "Succeeded"
        data("0.99")  # run 4: promoted, but its model will not load on the endpoint
        r4 = next_run()
        assert r4["model"]["registered"] == f"{model}:4" and r4["model"]["promoted"] is True
        deadline = time.time() + 180
        while time.time() < deadline and not any("failed to load" in line for line in ep.logs()):
            time.sleep(3)
        said = [line for line in ep.logs() if "failed to load" in line]
        assert said and f"keeping {model}:2: {model}:4 failed to load: ValueError: refusing weights-0.99" in said[0], said
        time.sleep(5)
        load.stop.set()
        load.thread.join(10)
        assert {a for t, a in load.answers if t >= r3["finished_seen"]} == {"weights-0.95"}  # v2 all along
        st = fair("status", ep.name, "-n", on_node.namespace, cwd=tmp_path,
                  env={**on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db")), "KUBECONFIG": str(on_node.admin_kubeconfig)})
        assert f"model: {model}:2 from run {r2['id']}" in st.stdout, st.stdout + st.stderr
        total = len(load.answers) + len(load.failed)
        print(f"\nfollow: served {model}:2 {follow_s:.0f} s after the alias moved; failed requests {len(load.failed)}/{total}")
        assert load.failed == [], load.failed[:5]
        assert {a for _, a in load.answers} == {"weights-0.90", "weights-0.95"}
        assert total > 300  # a steady load, not a handful of requests
    finally:
        if load is not None:
            load.stop.set()
        if ep is not None:
            ep.delete()
        h.delete()
        admin.delete("v1", "ConfigMap", cm, on_node.namespace)


def test_fair_train_register_on_a_job_and_a_gate_naming_a_missing_metric(on_node, tmp_path):
    """The CLI's flags on a Job: a gate naming a metric the run did not report fails the run in one
    line and registers nothing; the right gate registers and promotes, and the run's record (this
    machine's, settled from the pod's) says so."""
    (tmp_path / "retrain.py").write_text(RETRAIN.replace('os.environ["ACC"]', '"0.93"'))
    env = on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=on_node.outputs)
    model = f"cli-{uuid.uuid4().hex[:6]}"
    common = ["--registry", on_node.registry, "--base-image", on_node.base, "-n", on_node.namespace]
    name = f"node-gate-{uuid.uuid4().hex[:6]}"
    r = fair("train", "retrain.py", *common, "--name", name, "--register", model, "--promote-if", "f1 >= champion",
             cwd=tmp_path, env=env)
    fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert ("fairing: model not registered: the promotion gate needs metric 'f1', which the run did not report "
            "(it reported: accuracy, loss)") in out
    assert "Traceback" not in out
    assert fair("models", "show", model, cwd=tmp_path, env=env).returncode == 2  # nothing registered

    name = f"node-gate-{uuid.uuid4().hex[:6]}"
    r = fair("train", "retrain.py", *common, "--name", name, "--register", model, "--promote-if",
             "accuracy >= champion and loss < 0.5", cwd=tmp_path, env=env)
    fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"fairing: registered {model}:1; promoted: no champion yet: the first version is promoted, loss 0.3 < 0.5" \
        in r.stdout + r.stderr
    run = json.loads(fair("runs", "-o", "json", "--last", "1", cwd=tmp_path, env=env).stdout)[0]
    assert run["model"]["registered"] == f"{model}:1" and run["model"]["promoted"] is True
    v = json.loads(fair("models", "show", f"{model}@champion", "-o", "json", cwd=tmp_path, env=env).stdout)
    assert v["version"] == 1 and v["run"]["id"] == run["id"] and v["run"]["metrics"]["accuracy"] == 0.93

    # `fair deploy --model NAME@champion` says that the endpoint follows, and serves version 1.
    (tmp_path / "model.py").write_text(PICKY)
    ep = f"node-cli-follow-{uuid.uuid4().hex[:5]}"
    r = fair("deploy", "model.py:Picky", "--model", f"{model}@champion", "--name", ep, *common, cwd=tmp_path, env=env)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"fair: the endpoint follows {model}@champion" in r.stderr
        st = fair("status", ep, "-n", on_node.namespace, cwd=tmp_path, env={**env, "KUBECONFIG": str(on_node.admin_kubeconfig)})
        assert f"model: {model}:1 from run {run['id']}" in st.stdout, st.stdout + st.stderr
    finally:
        fair("delete", ep, "-n", on_node.namespace, cwd=tmp_path, env=env)
