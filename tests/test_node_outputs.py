"""Run outputs on the rig's real node (issue 21): a Job's files outlive its pod in the outputs store
(the plain registry, by the node's address); function results of any size come back; each run of a
CronJob is its own run, recorded by the pod with no client waiting, and imported by `fair runs sync`."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid

import yaml

import fairing
from fairing.image_runtime import outputs as shim

FAIR = [sys.executable, "-m", "fairing.cli"]


def fair(*args, env, cwd, timeout=600):
    return subprocess.run([*FAIR, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


SAVE = textwrap.dedent("""
    import hashlib, os
    d = os.environ["FAIRING_OUTPUT_DIR"]
    data = hashlib.sha256(b"fairing").digest() * 40000
    open(os.path.join(d, "model.joblib"), "wb").write(data)
    print("wrote", len(data), "bytes to", d)
""")
EXPECT = hashlib.sha256(b"fairing").digest() * 40000


def assert_fetched(run_id: str, env: dict, tmp_path) -> None:
    """`fair runs outputs` returns the model the pod wrote, byte for byte."""
    got = fair("runs", "outputs", run_id, "--dest", tmp_path / "got", cwd=tmp_path, env=env)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "got" / "model.joblib").read_bytes() == EXPECT


def test_a_job_keeps_model_joblib_and_fair_runs_outputs_returns_the_same_bytes(on_node, tmp_path):
    (tmp_path / "train_save.py").write_text(SAVE)
    name = uid("node-out")
    env = on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=on_node.outputs)
    r = fair("train", "train_save.py", "--registry", on_node.registry, "--base-image", on_node.base,
             "-n", on_node.namespace, "--name", name, cwd=tmp_path, env=env)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "fairing: outputs saved: 1 file" in r.stdout + r.stderr  # the pod said so in its log
        run = json.loads(fair("runs", "-o", "json", "--last", "1", cwd=tmp_path, env=env).stdout)[0]
        assert run["outputs"]["store"] == on_node.outputs
        assert [(f["path"], f["size"]) for f in run["outputs"]["files"]] == [("model.joblib", len(EXPECT))]
    finally:
        fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)
    # The pod is gone; the file is not.
    assert_fetched(run["id"], env, tmp_path)


def test_function_results_of_8_mb_and_500_mb_round_trip(on_node, tmp_path):
    def make(n_mb):
        import os

        return os.urandom(1 << 16) * (16 * n_mb)  # n_mb MiB, not compressible by accident

    for n in (8, 500):
        name = uid(f"node-res{n}")
        job = fairing.TrainJob(make, args=(n,), registry=on_node.registry, base_image=on_node.base,
                               kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace, name=name,
                               deployer="job", deployer_options={"mutators": on_node.mutators()},
                               progress=False, outputs=on_node.outputs)
        h = job.submit()
        try:
            assert h.wait(timeout=600) == "Succeeded"
            value = h.result()
            assert isinstance(value, bytes) and len(value) == n << 20
            assert value[: 1 << 16] * (16 * n) == value  # the pod's own bytes, whole
        finally:
            h.delete()


def test_each_cronjob_run_is_its_own_run_recorded_by_the_pod(on_node, tmp_path):
    (tmp_path / "nightly.py").write_text(SAVE)
    name = uid("node-cron-out")
    env = on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=on_node.outputs)
    job = fairing.TrainJob(tmp_path / "nightly.py", registry=on_node.registry, base_image=on_node.base,
                           kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace, name=name,
                           deployer="cronjob", schedule="0 3 * * *",
                           deployer_options={"mutators": on_node.mutators()}, progress=False, outputs=on_node.outputs)
    os.environ["FAIRING_RUNS"] = str(tmp_path / "runs.db")
    try:
        h = job.submit()
        parent = h.run.id
        runs_done = []
        for _ in range(2):
            one = h.trigger()  # what the schedule does; no client waits on the Job it starts
            assert one.wait(timeout=300) == "Succeeded"
            runs_done.append(one.name)
        be = shim.RegistryBackend("http://" + on_node.outputs.split("://", 1)[1].split("/", 1)[0],
                                  on_node.outputs.split("://", 1)[1].split("/", 1)[1])
        ids = [shim.run_id_of({"FAIRING_RUN_PER_JOB": "1", "FAIRING_JOB_NAME": j}) for j in runs_done]
        assert len(set(ids)) == 2  # two Jobs, two runs
        r = fair("runs", "sync", "--store", on_node.outputs, "-o", "json", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        assert set(ids) <= set(json.loads(r.stdout)["imported"])
        for rid, jname in zip(ids, runs_done):
            rec = fairing.runs.get(rid)
            assert rec["status"] == "Succeeded" and rec["parent"] == parent and rec["workload"]["name"] == jname
            assert be.get_run(rid)["record"]["job"] == jname
            d = fairing.runs.outputs(rid, tmp_path / rid)
            assert (d / "model.joblib").read_bytes() == EXPECT
        # The run's Secret-free store needs none; a second sync imports nothing new.
        again = fair("runs", "sync", "--store", on_node.outputs, "-o", "json", cwd=tmp_path, env=env)
        assert not set(ids) & set(json.loads(again.stdout)["imported"])
    finally:
        os.environ.pop("FAIRING_RUNS", None)
        try:
            h.delete()
        except Exception:  # noqa: BLE001 - submit may have failed before a handle existed
            pass


def test_s3_store_from_a_pod_with_a_per_run_secret_that_is_gone_after(on_node, s3_server, tmp_path):
    """The pod writes SeaweedFS with credentials it gets only from the run's Secret (scoped to one
    bucket); the Secret is owned by the Job, never in the manifest, and deleted when the run ends."""
    from fairing.kube.client import Kube

    bucket = s3_server.scoped_bucket
    s3_server.create_bucket(bucket)
    (tmp_path / "train_save.py").write_text(SAVE)
    name = uid("node-s3")
    store = f"s3://{bucket}/runs-{uuid.uuid4().hex[:6]}"
    env = on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=store,
                          AWS_ENDPOINT_URL=s3_server.pod_endpoint, AWS_ACCESS_KEY_ID=s3_server.scoped_access_key,
                          AWS_SECRET_ACCESS_KEY=s3_server.scoped_secret_key)
    dry = fair("train", "train_save.py", "--registry", on_node.registry, "--base-image", on_node.base,
               "-n", on_node.namespace, "--name", name, "--dry-run", cwd=tmp_path, env=env)
    assert dry.returncode == 0, dry.stderr
    assert s3_server.scoped_secret_key not in dry.stdout + dry.stderr
    r = fair("train", "train_save.py", "--registry", on_node.registry, "--base-image", on_node.base,
             "-n", on_node.namespace, "--name", name, cwd=tmp_path, env=env)
    kube = Kube(on_node.admin_kubeconfig, namespace=on_node.namespace)
    try:
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert s3_server.scoped_secret_key not in out
        run = json.loads(fair("runs", "-o", "json", "--last", "1", cwd=tmp_path, env=env).stdout)[0]
        assert s3_server.scoped_secret_key not in json.dumps(run)
        secret = f"fairing-outputs-{run['id']}"
        assert kube.get("v1", "Secret", secret, on_node.namespace) is None  # deleted when the run ended
        job = kube.get("batch/v1", "Job", name, on_node.namespace)
        assert s3_server.scoped_secret_key not in json.dumps(job)
        # The dry run printed the outputs wiring the run applied: env, volume and Secret name (its
        # run id aside), the Secret's values as placeholders.
        dry_docs = [d for d in yaml.safe_load_all(dry.stdout) if d and "kind" in d]
        dry_job = next(d for d in dry_docs if d["kind"] == "Job")
        (dry_secret,) = [d for d in dry_docs if d["kind"] == "Secret"]
        dry_id = dry_job["metadata"]["labels"]["fairing.dev/run-id"]

        def wiring(j, rid):
            spec = j["spec"]["template"]["spec"]
            c = spec["containers"][0]
            text = json.dumps([sorted((e["name"], e.get("value")) for e in c["env"] if e["name"].startswith("FAIRING_OUTPUT")),
                               c.get("volumeMounts"), spec.get("volumes")], sort_keys=True)
            return json.loads(text.replace(rid, "RUN"))
        assert wiring(dry_job, dry_id) == wiring(job, run["id"])
        assert dry_secret["metadata"]["name"] == f"fairing-outputs-{dry_id}" and list(dry_secret["data"]) == ["auth.json"]
        assert [(f["path"], f["size"]) for f in run["outputs"]["files"]] == [("model.joblib", len(EXPECT))]
    finally:
        fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)
    assert_fetched(run["id"], env, tmp_path)


def test_a_2_gb_file_is_saved_from_a_pod_limited_to_512_mi(on_node, tmp_path):
    (tmp_path / "big.py").write_text(textwrap.dedent("""
        import hashlib, os
        block = hashlib.sha256(b"big").digest() * 32768  # 1 MiB
        with open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "weights.bin"), "wb") as f:
            for _ in range(2048):
                f.write(block)
        print("wrote 2 GiB")
    """))
    name = uid("node-2g")
    env = on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=on_node.outputs)
    r = fair("train", "big.py", "--registry", on_node.registry, "--base-image", on_node.base, "--memory", "512Mi",
             "-n", on_node.namespace, "--name", name, cwd=tmp_path, env=env, timeout=900)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        run = json.loads(fair("runs", "-o", "json", "--last", "1", cwd=tmp_path, env=env).stdout)[0]
        block = hashlib.sha256(b"big").digest() * 32768
        h = hashlib.sha256()
        for _ in range(2048):
            h.update(block)
        assert run["outputs"]["files"] == [{"path": "weights.bin", "size": 2 << 30, "digest": "sha256:" + h.hexdigest(),
                                            "mediaType": shim.MODEL_MEDIA_TYPE}]
    finally:
        fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)


def test_job_trials_keep_their_outputs_and_best_outputs_fetches_the_best_model(on_node, tmp_path, monkeypatch):
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        import argparse, os
        p = argparse.ArgumentParser(); p.add_argument("--x", type=float); x = p.parse_args().x
        open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.txt"), "w").write(repr(x))
        print(f"score={-(x - 3) ** 2}")
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAIRING_RUNS", str(tmp_path / "runs.db"))
    r = fairing.tune(str(tmp_path / "train.py"), params={"x": fairing.uniform(0, 6)}, objective="score",
                     goal="maximize", trials=2, parallel=2, algorithm="grid", backend="jobs", name=uid("tune-out"),
                     registry=f"{on_node.registry}/tuneout", base_image=on_node.base, kubeconfig=str(on_node.kubeconfig),
                     namespace=on_node.namespace, mutators=on_node.mutators(), progress=False, timeout=300,
                     outputs=on_node.outputs)
    assert r.status == "Succeeded"
    for t in r.trials:
        assert float((t.outputs / "model.txt").read_text()) == t.params["x"]  # each trial its own model
        rec = fairing.runs.get(t.run_id)
        assert [f["path"] for f in rec["outputs"]["files"]] == ["model.txt"]
    assert float((r.best.outputs / "model.txt").read_text()) == r.best.params["x"]


def test_a_cluster_runs_outputs_become_its_mlflow_runs_artifacts(on_node, tmp_path, tmp_path_factory):
    from mlflow.tracking import MlflowClient

    from tests.rig.mlflow import start

    server = start(tmp_path_factory.mktemp("mlflow"))
    try:
        (tmp_path / "train_save.py").write_text(SAVE)
        name = uid("node-mlf")
        env = on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=on_node.outputs,
                              MLFLOW_TRACKING_URI=server.uri)
        r = fair("train", "train_save.py", "--registry", on_node.registry, "--base-image", on_node.base,
                 "-n", on_node.namespace, "--name", name, cwd=tmp_path, env=env)
        fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        rec = json.loads(fair("runs", "-o", "json", "--last", "1", cwd=tmp_path, env=env).stdout)[0]
        c = MlflowClient(tracking_uri=server.uri)
        assert {a.path for a in c.list_artifacts(rec["mlflow"]["run_id"], "outputs")} == {"outputs/model.joblib"}
        got = c.download_artifacts(rec["mlflow"]["run_id"], "outputs/model.joblib", str(tmp_path / "dl"))
        assert open(got, "rb").read() == EXPECT
    finally:
        server.stop()


def test_a_pvc_store_keeps_the_model_and_fair_runs_outputs_reads_it_through_a_pod(on_node, real_node, tmp_path):
    """pvc://CLAIM/SUBPATH: the Job's pod saves into the claim; `fair runs outputs` (no access to the
    volume from here) reads it back through a short-lived reader Job and Service, under the
    namespace's least-privilege role, and leaves nothing behind. The claim is a hostPath volume on
    the rig's node, bound statically (the rig has no provisioner)."""
    from fairing.kube.client import Kube, Resource, register

    register(Resource("v1", "PersistentVolume", "persistentvolumes", False))
    admin = Kube(real_node.kubeconfig, namespace=on_node.namespace)  # the cluster admin makes the volume
    claim = uid("outputs-claim")
    host_dir = tmp_path / "volume"
    host_dir.mkdir()
    os.chmod(host_dir, 0o777)
    admin.create({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": claim},
                  "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                           "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(host_dir)},
                           "claimRef": {"namespace": on_node.namespace, "name": claim}}})
    admin.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
                  "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": claim,
                           "resources": {"requests": {"storage": "1Gi"}}}}, on_node.namespace)
    (tmp_path / "train_save.py").write_text(SAVE)
    name = uid("node-pvc")
    env = on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=f"pvc://{claim}/team")
    try:
        r = fair("train", "train_save.py", "--registry", on_node.registry, "--base-image", on_node.base,
                 "-n", on_node.namespace, "--name", name, cwd=tmp_path, env=env)
        fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "fairing: outputs saved: 1 file" in r.stdout + r.stderr
        run = json.loads(fair("runs", "-o", "json", "--last", "1", cwd=tmp_path, env=env).stdout)[0]
        assert run["outputs"]["store"] == f"pvc://{claim}/team"
        # On the volume, under the sub-path: the content-addressed blob and the run's index.
        assert (host_dir / "team" / "runs" / f"{run['id']}.json").is_file()
        assert_fetched(run["id"], env, tmp_path)
        # `fair runs show` lists the files only once asked (reading a volume takes a pod); then the
        # record keeps them, with size and digest like every store.
        shown = fair("runs", "show", run["id"], cwd=tmp_path, env=env).stdout
        assert f"(files not read yet: fair runs show {run['id']} --files reads them through a short-lived reader Job)" \
            in shown, shown
        line = f"  model.joblib  {len(EXPECT)} bytes  sha256:{hashlib.sha256(EXPECT).hexdigest()}"
        asked = fair("runs", "show", run["id"], "--files", cwd=tmp_path, env=env)
        assert asked.returncode == 0 and line in asked.stdout.splitlines(), asked.stdout + asked.stderr
        kept = fair("runs", "show", run["id"], cwd=tmp_path, env={**env, "KUBECONFIG": "/nonexistent"})
        assert line in kept.stdout.splitlines(), kept.stdout + kept.stderr  # no cluster needed now
        # The reader is gone: no Job, Service or pod of it left.
        left = [(k, o["metadata"]["name"]) for api, k in (("batch/v1", "Job"), ("v1", "Service"), ("v1", "Pod"))
                for o in admin.list(api, k, on_node.namespace, label_selector="fairing.dev/outputs-reader")["items"]
                if not o["metadata"].get("deletionTimestamp")]
        assert left == []
    finally:
        admin.delete("v1", "PersistentVolumeClaim", claim, on_node.namespace, propagation="Background")
        admin.delete("v1", "PersistentVolume", claim, propagation="Background")
