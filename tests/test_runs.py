"""Run records (fairing.runs): one record per command, safe under concurrent writers, `fair runs`
list/show/diff/rerun, the Python API, and the run id on what fairing starts."""
import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import yaml
import requests

from tests.test_cli import EXAMPLES, assert_one_error, clean_env, fair

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    return tmp_path / "runs" / "runs.db"


def runs_env(store, **extra):
    return clean_env(FAIRING_RUNS=store, **extra)


def records(store, *args):
    return json.loads(fair("runs", *args, "-o", "json", env=runs_env(store), check=0).stdout)


def write_train(d: Path, loss_line: str = "loss={loss}") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.py").write_text(textwrap.dedent(f"""\
        import sys
        lr = float(sys.argv[sys.argv.index("--lr") + 1]) if "--lr" in sys.argv else 0.1
        for step in range(1, 4):
            loss = round(1.0 / (step * lr * 10), 4)
            print(f"step={{step}} {loss_line}", flush=True)
        print(f"accuracy={{0.5 + lr:.2f}}")
        """))
    (d / "util.py").write_text("HELPER = 1\n")
    return d


# --- concurrency ------------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    import fairing.runs as runs
    from fairing.runs.store import Store
    store, who, n, t0 = Store(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    while time.time() < t0:
        time.sleep(0.001)
    for i in range(n):
        r = runs.start("train", entry=f"{who}-{i}.py", params={"i": i}, store=store, git=False)
        r.log(f"step=1 loss={i} writer={len(who)}")
        r.finish("Succeeded")
""")


def test_concurrent_writers_lose_nothing(store):
    """Six real processes open a brand-new store at the same instant and each writes 40 runs
    (a start and a finish each): every run is there, finished, with its own metrics."""
    n, writers = 40, [f"w{k}" for k in range(6)]
    t0 = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(store), w, str(n), str(t0)], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for w in writers]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "not recorded" not in err
    import fairing.runs as runs
    from fairing.runs.store import Store

    got = runs.list(store=Store(store))
    assert len(got) == n * len(writers) and len({r["id"] for r in got}) == n * len(writers)
    assert {r["status"] for r in got} == {"Succeeded"}
    by_entry = {r["entry"]: r for r in got}
    for w in writers:
        for i in range(n):
            r = by_entry[f"{w}-{i}.py"]
            assert r["params"] == {"i": i} and r["metrics"] == {"loss": i, "writer": 2}
    assert subprocess.run(["sqlite3", "--version"], capture_output=True).returncode != 0 or \
        "wal" in subprocess.run(["sqlite3", str(store), "PRAGMA journal_mode"], capture_output=True, text=True).stdout


def test_two_fair_train_at_once_are_both_recorded(tmp_path, store):
    a, b = write_train(tmp_path / "a"), write_train(tmp_path / "b")
    env = runs_env(store)
    cmd = [sys.executable, "-m", "fairing.cli", "train"]
    procs = [subprocess.Popen([*cmd, str(d / "train.py"), "--local-mode", "process", "-o", "json", "--", "--lr", lr],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for d, lr in ((a, "0.1"), (b, "0.2"))]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ids = {json.loads(out)["run_id"] for out, _ in outs}
    got = {r["id"]: r for r in records(store)}
    assert set(got) == ids
    for r in got.values():
        assert r["status"] == "Succeeded" and r["command"] == "train"
        lr = float(r["params"]["lr"])
        assert r["metrics"]["accuracy"] == round(0.5 + lr, 2)
        assert r["metric_steps"]["loss"] == [[s, round(1.0 / (s * lr * 10), 4)] for s in (1, 2, 3)]
        assert r["how"]["deployer"]["name"] == "local" and r["how"]["mode"] == "local process"
        assert r["source"]["digest"].startswith("sha256:") and sorted(r["source"]["files"]) == ["train.py"]
        assert r["duration"] > 0 and r["user"] and r["host"]


# --- diff -----------------------------------------------------------------------------------------

def test_diff_after_a_one_line_change_and_a_pin_change_names_exactly_those(tmp_path, store):
    proj = write_train(tmp_path / "proj")
    # Both pins are satisfied by this interpreter, so the process-mode runs need no network.
    env = runs_env(store)
    fair("train", proj, "--local-mode", "process", "-r", "pyyaml>=5,pytest>=7", cwd=tmp_path, env=env, check=0)
    src = (proj / "train.py").read_text().replace("print(f\"accuracy", "print(\"changed\")\nprint(f\"accuracy")
    (proj / "train.py").write_text(src)
    fair("train", proj, "--local-mode", "process", "-r", "pyyaml>=5,pytest>=8", cwd=tmp_path, env=env, check=0)
    new, old = records(store)
    d = json.loads(fair("runs", "diff", old["id"], new["id"], "-o", "json", env=env, check=0).stdout)
    assert d["files"] == {"changed": ["train.py"]}
    assert d["requirements"] == {"given": {"pytest": {"a": "pytest>=7", "b": "pytest>=8"}}}
    assert d["source"]["a"] != d["source"]["b"]
    assert set(d) == {"a", "b", "files", "requirements", "source"}  # no params, metrics, base image
    text = fair("runs", "diff", old["id"][:6], new["id"][:6], env=env, check=0).stdout.splitlines()
    assert "  file ~ train.py" in text and "  requirement (given) pytest: pytest>=7 -> pytest>=8" in text
    assert not any("util.py" in line or "pyyaml" in line for line in text)


# --- the CLI and the Python API --------------------------------------------------------------------

def test_fair_runs_lists_filters_shows_and_fails_cleanly(tmp_path, store):
    proj = write_train(tmp_path / "p")
    (proj / "bad.py").write_text("import sys\nprint('loss=9')\nsys.exit('broken input')\n")
    env = runs_env(store)
    fair("train", proj / "train.py", "--local-mode", "process", cwd=tmp_path, env=env, check=0)
    assert fair("train", proj / "bad.py", "--local-mode", "process", cwd=tmp_path, env=env).returncode == 4
    fair("train", proj / "train.py", "--local-mode", "process", "--", "--lr", "0.3", cwd=tmp_path, env=env, check=0)
    every = records(store)
    assert [r["status"] for r in every] == ["Succeeded", "Failed", "Succeeded"]
    failed = records(store, "--status", "failed")
    assert len(failed) == 1 and "broken input" in failed[0]["reason"] and failed[0]["metrics"] == {"loss": 9}
    assert [r["id"] for r in records(store, "--last", "2")] == [r["id"] for r in every[:2]]
    table = fair("runs", env=env, check=0).stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "TIME", "COMMAND", "STATUS"] and len(table) == 4
    assert every[1]["id"] in table[2] and "Failed" in table[2]
    shown = fair("runs", "show", every[0]["id"][:7], env=env, check=0).stdout
    # YAML quotes an all-digit id ('0123…'); read it back rather than match its spelling.
    assert yaml.safe_load(shown)["id"] == every[0]["id"] and "lr: '0.3'" in shown
    assert_one_error(fair("runs", "show", "zzzz", env=env), 2, "no run 'zzzz'")
    assert_one_error(fair("runs", "-o", "yaml", env=env), 2, "--output must be text or json")
    assert_one_error(fair("runs", "rerun", every[0]["id"], env=env), 2, "ran as a local process")


def test_python_api(tmp_path, store, monkeypatch):
    proj = write_train(tmp_path / "p")
    env = runs_env(store)
    fair("train", proj / "train.py", "--local-mode", "process", cwd=tmp_path, env=env, check=0)
    fair("train", proj / "train.py", "--local-mode", "process", "--", "--lr", "0.5", cwd=tmp_path, env=env, check=0)
    monkeypatch.setenv("FAIRING_RUNS", str(store))
    import fairing

    new, old = fairing.runs.list()
    assert fairing.runs.get(new["id"][:5]) == new
    d = fairing.runs.diff(old["id"], new["id"])
    assert d["params"]["lr"] == {"a": None, "b": "0.5"} and d["metrics"]["accuracy"] == {"a": 0.6, "b": 1.0}
    assert "files" not in d
    assert fairing.runs.list(status="Failed") == []


def test_function_runs_record_params_by_name_and_the_result(tmp_path, store, monkeypatch):
    monkeypatch.setenv("FAIRING_RUNS", str(store))
    code = textwrap.dedent("""
        import fairing
        def fit(epochs, lr=0.1, *, tag="x"):
            print(f"step=1 loss={lr}")
            return {"w": epochs * 2}
        fairing.config.set_deployer("local", mode="process")
        print(fairing.config.fn(fit)(3, lr=0.25))
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=runs_env(store, PYTHONPATH=ROOT),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (rec,) = records(store)
    assert rec["params"] == {"epochs": 3, "lr": 0.25}
    assert rec["result"] == "{'w': 6}" and rec["metrics"] == {"loss": 0.25} and rec["status"] == "Succeeded"
    assert rec["entry"].endswith(":fit") and rec["artifacts"]["result"].endswith("result.pkl")


def test_a_submitted_run_is_settled_when_its_handle_is_waited_on(tmp_path, store):
    # TrainJob(fn).submit() returns at once (record "Deployed"); waiting on the handle later gives the
    # record its outcome, metrics and result, for a success and for a failure, and a wait that times
    # out records nothing.
    code = textwrap.dedent("""
        import time, fairing
        from fairing.errors import DeployError
        def fit(epochs):
            print(f"accuracy={epochs / 10}")
            return epochs * 2
        def bad():
            raise SystemExit(3)
        def slow():
            time.sleep(3)
        h = fairing.TrainJob(fit, args=(7,), deployer="local", deployer_options={"mode": "process"}, progress=False).submit()
        print("after submit", fairing.runs.list(last=1)[0]["status"])
        print("waited", h.wait(), h.result())
        s = fairing.TrainJob(slow, deployer="local", deployer_options={"mode": "process"}, progress=False).submit()
        try:
            s.wait(timeout=0.5)
        except DeployError:
            print("still running", fairing.runs.list(last=1)[0]["status"])
        s.wait()
        b = fairing.TrainJob(bad, deployer="local", deployer_options={"mode": "process"}, progress=False).submit()
        try:
            b.wait()
        except DeployError as e:
            print("failed:", e.message)
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=runs_env(store, PYTHONPATH=ROOT),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "after submit Deployed" in r.stdout and "waited Succeeded 14" in r.stdout
    assert "still running Deployed" in r.stdout
    bad, slow, fit = records(store)
    assert fit["status"] == "Succeeded" and fit["metrics"] == {"accuracy": 0.7} and fit["result"] == "14"
    assert slow["status"] == "Succeeded"
    assert bad["status"] == "Failed" and "exit code 3" in bad["reason"]


def test_importing_fairing_and_the_cli_loads_no_store_or_tracker():
    code = ("import sys, fairing, fairing.runs, fairing.cli\n"
            "print([m for m in ('sqlite3', 'mlflow', 'kfp', 'prometheus_client', 'fairing.runs.store') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_unwritable_store_warns_once_and_the_run_goes_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proj = write_train(tmp_path / "p")
    r = fair("train", proj / "train.py", "--local-mode", "process", cwd=tmp_path,
             env=clean_env(FAIRING_RUNS=blocker / "runs.db"), check=0)
    assert "accuracy=0.60" in r.stdout
    assert r.stderr.count("not recorded") == 1


# --- with the rig's registry, engine and cluster ---------------------------------------------------

MANIFEST_TYPES = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json"])


def _manifest(registry, ref: str) -> tuple[dict, str]:
    repo, ident = ref.split("/", 1)[1].rsplit("@", 1) if "@" in ref else ref.split("/", 1)[1].rsplit(":", 1)
    r = requests.get(f"{registry.url}/v2/{repo}/manifests/{ident}", headers={"Accept": MANIFEST_TYPES}, timeout=30)
    r.raise_for_status()
    return r.json(), r.headers["Docker-Content-Digest"]


def test_build_and_deploy_are_recorded_with_image_source_and_base_digests(tmp_path, store, registry, base_image, engine):
    (tmp_path / "job.py").write_text("print('built')\n")
    env = runs_env(store, DOCKER_HOST=engine.docker_host)
    out = json.loads(fair("build", "job.py", "--registry", f"{registry.host}/fairing-runs", "--base-image",
                          base_image.docker, "-r", "pytest>=7", "-o", "json", cwd=tmp_path, env=env, check=0).stdout)
    rec = json.loads(fair("runs", "show", out["run_id"], "-o", "json", env=env, check=0).stdout)
    assert rec["command"] == "build" and rec["status"] == "Succeeded"
    assert rec["image"]["ref"] == out["image"] and rec["image"]["digest"] == out["digest"]
    manifest, _ = _manifest(registry, out["image"])
    # The source hash is the code layer's digest: the last layer of the pushed image.
    assert rec["source"]["digest"] == manifest["layers"][-1]["digest"]
    assert rec["image"]["base"] == base_image.docker
    assert rec["image"]["base_digest"] == _manifest(registry, base_image.docker)[1]
    assert rec["requirements"]["given"] == ["pytest>=7"]
    assert rec["requirements"]["resolved"] and all("==" in r for r in rec["requirements"]["resolved"])
    assert any(r.startswith("pytest==") for r in rec["requirements"]["resolved"])

    (tmp_path / "model.py").write_text("class Doubler:\n    def predict(self, instances):\n"
                                       "        return [[2 * x for x in row] for row in instances]\n")
    name = f"rec-{uuid.uuid4().hex[:6]}"
    dep = json.loads(fair("deploy", "model.py:Doubler", "--name", name, "--base-image", base_image.docker, "-o", "json",
                          cwd=tmp_path, env=env, check=0).stdout)
    try:
        rec = json.loads(fair("runs", "show", dep["run_id"], "-o", "json", env=env, check=0).stdout)
        assert rec["command"] == "deploy" and rec["status"] == "Ready" and rec["workload"]["name"] == dep["name"]
        assert rec["entry"] == "model.py:Doubler" and "model.py" in rec["source"]["files"]
        st = json.loads(fair("status", dep["name"], "-o", "json", cwd=tmp_path, env=env, check=0).stdout)
        assert st["run_id"] == dep["run_id"]
        listed = json.loads(fair("list", "-o", "json", cwd=tmp_path, env=env, check=0).stdout)
        assert any(w["name"] == dep["name"] and w["run_id"] == dep["run_id"] for w in listed)
    finally:
        fair("delete", dep["name"], cwd=tmp_path, env=env)
    assert [r["command"] for r in records(store)] == ["deploy", "build"]


def test_rerun_runs_the_same_digest_as_a_new_run(tmp_path, store, engine, base_image):
    env = runs_env(store, DOCKER_HOST=engine.docker_host)
    first = json.loads(fair("train", EXAMPLES / "train.py", "--base-image", base_image.docker, "-o", "json",
                            "--", "--epochs", "100", cwd=tmp_path, env=env, check=0).stdout)
    r = fair("runs", "rerun", first["run_id"][:8], "-o", "json", env=env, check=0)
    again = json.loads(r.stdout)
    assert again["rerun_of"] == first["run_id"] and again["run_id"] != first["run_id"]
    assert again["status"] == "Succeeded" and again["image"] == first["image"]
    assert "epoch 100 loss" in r.stderr and "trained: w=2.00 b=1.00" in r.stderr  # same params: 100 epochs
    old, new = fair_runs_pair(store, first["run_id"], again["run_id"])
    assert new["command"] == "rerun" and new["params"] == old["params"] == {"argv": ["--epochs", "100"], "epochs": "100"}
    assert new["image"]["digest"] == old["image"]["digest"]
    assert new["metrics"] == old["metrics"] == {"w": 2.0, "b": 1.0}  # "trained: w=2.00 b=1.00"
    d = json.loads(fair("runs", "diff", old["id"], new["id"], "-o", "json", env=env, check=0).stdout)
    assert set(d) == {"a", "b"}  # nothing changed


def fair_runs_pair(store, a, b):
    by_id = {r["id"]: r for r in records(store)}
    return by_id[a], by_id[b]


def test_run_id_and_source_hash_label_every_cluster_object(tmp_path, store, kube, registry, base_image):
    from fairing.kube.client import Kube

    env = runs_env(store, KUBECONFIG=kube.kubeconfig)
    name = f"rec-{uuid.uuid4().hex[:6]}"
    out = json.loads(fair("train", EXAMPLES / "train.py", "--registry", f"{registry.host}/fairing-runs", "--base-image",
                          base_image.docker, "-n", kube.namespace, "--name", name, "--detach", "-o", "json",
                          cwd=tmp_path, env=env, check=0).stdout)
    try:
        rec = records(store)[0]
        assert rec["id"] == out["run_id"] and rec["status"] == "Deployed"
        assert rec["workload"] == {"name": name, "namespace": kube.namespace}
        job = Kube(kube.kubeconfig, None, kube.namespace).get("batch/v1", "Job", name, kube.namespace)
        short = rec["source"]["digest"].split(":")[1][:12]
        for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
            assert meta["labels"]["fairing.dev/run-id"] == rec["id"]
            assert meta["labels"]["fairing.dev/source-hash"] == short
        assert job["metadata"]["annotations"]["fairing.dev/source-digest"] == rec["source"]["digest"]
        main = job["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "FAIRING_RUN_ID", "value": rec["id"]} in main["env"]
        deadline = time.time() + 120
        while (st := json.loads(fair("status", name, "-n", kube.namespace, "-o", "json", cwd=tmp_path, env=env,
                                     check=0).stdout))["status"] not in ("Succeeded", "Failed") and time.time() < deadline:
            time.sleep(1)
        assert st["run_id"] == rec["id"] and st["status"] == "Succeeded"
        assert records(store)[0]["status"] == "Succeeded"  # `fair status` settled the detached run's record
        listed = json.loads(fair("list", "-n", kube.namespace, "-o", "json", cwd=tmp_path, env=env, check=0).stdout)
        assert any(w["name"] == name and w["run_id"] == rec["id"] for w in listed)
    finally:
        fair("delete", name, "-n", kube.namespace, cwd=tmp_path, env=env)


def test_the_readme_runs_example_as_written(tmp_path, store):
    import re
    import shlex

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run records and MLflow", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    cmds = [shlex.split(line.split("  #")[0]) for line in block.splitlines() if line.strip()]
    assert [c[:2] for c in cmds] == [["fair", "train"], ["fair", "train"], ["fair", "runs"]]
    env = runs_env(store)
    for c in cmds[:2]:
        fair(*[str(ROOT / a) if a.startswith("examples/") else a for a in c[1:]], cwd=tmp_path, env=env, check=0)
    table = fair(*cmds[2][1:], cwd=tmp_path, env=env, check=0).stdout.splitlines()
    assert len(table) == 3 and all("Succeeded" in row and "b=1 w=2" in row for row in table[1:])
    new, old = records(store)
    d = json.loads(fair("runs", "diff", old["id"], new["id"], "-o", "json", env=env, check=0).stdout)
    assert d["params"]["epochs"] == {"a": "100", "b": "300"} and "files" not in d
