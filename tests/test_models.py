"""Models with names (issue 22): versions and aliases over the outputs store. The CLI against the
local store with real local runs; the same registry in the rig's real stores (a registry, SeaweedFS's
S3 gateway, a directory), with two real processes registering and promoting at the same moment;
the mirror into a real MLflow server; serving a model by name on the local deployer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from fairing.image_runtime import outputs as shim

ROOT = Path(__file__).resolve().parent.parent
FAIR = [sys.executable, "-m", "fairing.cli"]

TRAIN = textwrap.dedent("""
    import os, sys
    lr = sys.argv[2] if len(sys.argv) > 2 else "0.1"
    d = os.environ.get("FAIRING_OUTPUT_DIR", "outputs")
    open(os.path.join(d, "model.joblib"), "wb").write(("model-" + lr).encode() * 1000)
    open(os.path.join(d, "train.log"), "w").write("ok")
    print(f"accuracy={0.5 + float(lr)}")
""")


def fair(*args, env, cwd, timeout=300):
    return subprocess.run([*FAIR, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def local_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAIRING_", "KUBECONFIG", "MLFLOW_"))}
    env.update(FAIRING_CACHE=str(tmp_path / "cache"), FAIRING_RUNS=str(tmp_path / "runs.db"), KUBECONFIG="",
               PYTHONPATH=str(ROOT))
    return env


def train(tmp_path, env, lr) -> str:
    (tmp_path / "train.py").write_text(TRAIN)
    r = fair("train", "train.py", "--local-mode", "process", "--", "--lr", lr, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = fair("runs", "-o", "json", "--last", "1", env=env, cwd=tmp_path)
    return json.loads(r.stdout)[0]["id"]


def docs(tmp_path) -> list[str]:
    d = tmp_path / "cache" / "outputs" / "docs"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


# --- the CLI, on the local store ------------------------------------------------------------------

def test_register_promote_show_diff_list_on_the_local_store(tmp_path, local_env):
    r1, r2 = train(tmp_path, local_env, "0.1"), train(tmp_path, local_env, "0.3")
    a = fair("models", "register", "iris", "--run", r1[:6], "--path", "model.joblib", env=local_env, cwd=tmp_path)
    assert a.returncode == 0 and a.stdout.strip() == "iris:1", a.stderr
    assert "nothing uploaded" in a.stderr
    again = fair("models", "register", "iris", "--run", r1, "--path", "model.joblib", env=local_env, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == "iris:1", again.stderr
    assert f"fair: iris:1 already registered from run {r1}: nothing written" in again.stderr
    b = fair("models", "register", "iris", "--run", r2, "--path", "model.joblib", "-o", "json", env=local_env, cwd=tmp_path)
    v2 = json.loads(b.stdout)
    assert v2["version"] == 2 and v2["run"]["id"] == r2 and v2["run"]["metrics"] == {"accuracy": 0.8}
    assert v2["run"]["params"]["lr"] == "0.3" and v2["run"]["source_digest"].startswith("sha256:")
    # The version names the run's blob by digest: the very blob the run's outputs hold.
    run_files = {f["path"]: f["digest"] for f in json.loads(fair("runs", "show", r2, "-o", "json", env=local_env,
                                                                 cwd=tmp_path).stdout)["outputs"]["files"]}
    assert [f["digest"] for f in v2["files"]] == [run_files["model.joblib"]]
    blobs = list((tmp_path / "cache" / "outputs" / "blobs" / "sha256").iterdir())
    assert len(blobs) == 3  # two models and one log (the same in both runs): no copy made by register

    p = fair("models", "promote", "iris", "1", "--alias", "champion", env=local_env, cwd=tmp_path)
    assert p.returncode == 0 and "iris@champion -> version 1" in p.stderr
    p = fair("models", "promote", "iris", "2", "--alias", "champion", env=local_env, cwd=tmp_path)
    assert "iris@champion -> version 2 (was 1)" in p.stderr
    fair("models", "promote", "iris", "1", "--alias", "staging", env=local_env, cwd=tmp_path)
    show = fair("models", "show", "iris@champion", env=local_env, cwd=tmp_path)
    assert show.stdout.startswith("iris:2  (@champion)") and f"run:         {r2}" in show.stdout, show.stdout
    assert "accuracy=0.8" in show.stdout and "model.joblib  9000 bytes  sha256:" in show.stdout
    d = fair("models", "diff", "iris:1", "iris:2", env=local_env, cwd=tmp_path)
    assert "metric accuracy: 0.6 -> 0.8" in d.stdout and "param lr: 0.1 -> 0.3" in d.stdout
    assert f"run: {r1} -> {r2}" in d.stdout and "model file ~ model.joblib" in d.stdout
    ls = json.loads(fair("models", "-o", "json", env=local_env, cwd=tmp_path).stdout)
    assert ls == [{"name": "iris", "versions": [1, 2], "latest": 2, "created": ls[0]["created"], "run": r2,
                   "aliases": {"champion": 2, "staging": 1}}]
    assert json.loads(fair("models", "list", "-o", "json", env=local_env, cwd=tmp_path).stdout) == ls

    # Python: the same registry.
    os.environ["FAIRING_CACHE"], os.environ["FAIRING_RUNS"] = local_env["FAIRING_CACHE"], local_env["FAIRING_RUNS"]
    try:
        import fairing

        assert fairing.models.get("iris@staging")["ref"] == "iris:1"
        got = fairing.models.files("iris@champion", tmp_path / "m")
        assert (got / "model.joblib").read_bytes() == b"model-0.3" * 1000
    finally:
        del os.environ["FAIRING_CACHE"], os.environ["FAIRING_RUNS"]


@pytest.fixture(scope="module")
def one_model(tmp_path_factory):
    """One trained run registered as iris:1, promoted to champion: the state every bad input meets."""
    d = tmp_path_factory.mktemp("bad")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAIRING_", "KUBECONFIG", "MLFLOW_"))}
    env.update(FAIRING_CACHE=str(d / "cache"), FAIRING_RUNS=str(d / "runs.db"), KUBECONFIG="", PYTHONPATH=str(ROOT))
    rid = train(d, env, "0.1")
    fair("models", "register", "iris", "--run", rid, env=env, cwd=d)
    fair("models", "promote", "iris", "1", env=env, cwd=d)
    return d, env, rid


@pytest.mark.parametrize("args, message, hint", [
    (["show", "wine"], "no model 'wine'", "models here: iris"),
    (["show", "iris@prod"], "model iris has no alias 'prod'", "its aliases: champion"),
    (["show", "iris:7"], "model iris has no version 7", "its versions: 1"),
    (["register", "iris", "--run", "RUN", "--path", "nope.bin"], "has no output 'nope.bin'", "its outputs: model.joblib, train.log"),
    (["register", "iris", "--run", "ffffffffffff"], "no run 'ffffffffffff'", "fair runs"),
    (["register", "iris", "--run", "best:RUN"], "is a train run, not a tuning run", "best:ID takes"),
    (["register", "Iris.X", "--run", "RUN"], "bad model name 'Iris.X'", "lowercase"),
    (["promote", "iris", "wine:1"], "wine:1 is a version of model wine, not of iris", "promote a version of iris"),
    (["promote", "iris", "3"], "model iris has no version 3", "its versions: 1"),
    (["promote", "iris", "1", "--alias", "v2"], "bad alias 'v2'", "not v<number>"),
])
def test_bad_input_is_one_line_with_a_hint_and_writes_nothing(one_model, args, message, hint):
    d, env, rid = one_model
    before = docs(d)
    r = fair("models", *[a.replace("RUN", rid) for a in args], env=env, cwd=d)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert lines[1].startswith("hint: ") and hint in lines[1], r.stderr
    assert len(lines) == 2 and "Traceback" not in r.stderr
    assert docs(d) == before  # nothing half-made


# --- the race, in each real store -----------------------------------------------------------------

RACER = textwrap.dedent("""
    import json, sys, time
    import fairing.models as models
    from fairing.models import registry

    from fairing.image_runtime import outputs as shim, outputs_s3

    what, store, arg, t_put = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

    def at_the_same_moment(real):
        def put_doc(self, name, doc, exclusive=False):
            if exclusive:  # both processes have read the current state by now; both write at t_put
                time.sleep(max(0.0, t_put - time.time()))
            return real(self, name, doc, exclusive=exclusive)
        return put_doc

    for cls in (shim.DirBackend, shim.RegistryBackend, outputs_s3.S3Backend):
        cls.put_doc = at_the_same_moment(cls.put_doc)
    try:
        if what == "promote":
            out = models.promote("race", int(arg), "champion", store=store)
            print(json.dumps({"won": out["version"]}))
        else:
            out = models.register("race", json.loads(arg), store=store)
            print(json.dumps({"won": out["version"], "run": out["run"]["id"]}))
    except models.ConcurrentUpdate as e:
        print(json.dumps({"lost": e.message, "hint": e.hint}))
""")


def race(tmp_path, env, what, store, args) -> list[dict]:
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    t_put = time.time() + 4.0  # both have imported and read the state well before this
    procs = [subprocess.Popen([sys.executable, str(script), what, store, a, str(t_put)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a in args]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def saved_run(tmp_path, store_text: str, run_id: str, payload: bytes) -> dict:
    """A run that kept model.joblib in `store_text`, saved by the pod's own shim code."""
    from fairing.outputs import store as ostore

    out = tmp_path / f"out-{run_id}"
    out.mkdir()
    (out / "model.joblib").write_bytes(payload)
    shim.save(str(out), ostore.open_backend(ostore.parse(store_text)), run_id, {"id": run_id, "status": "Succeeded"})
    return {"id": run_id, "command": "train", "status": "Succeeded", "params": {"seed": run_id},
            "metrics": {"accuracy": 0.9}, "outputs": {"store": store_text}}


@pytest.fixture(params=["dir", "s3", "registry"])
def any_store(request, tmp_path):
    """(store URL, env for the racing processes) for each kind of store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAIRING_", "MLFLOW_", "AWS_"))}
    env.update(PYTHONPATH=str(ROOT), FAIRING_CACHE=str(tmp_path / "cache"), FAIRING_RUNS=str(tmp_path / "runs.db"))
    tag = uuid.uuid4().hex[:10]
    if request.param == "dir":
        return str(tmp_path / "store"), env
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        bucket = s3.create_bucket("fairing-models-test")
        env.update(AWS_ENDPOINT_URL=s3.endpoint, AWS_ACCESS_KEY_ID=s3.access_key,
                   AWS_SECRET_ACCESS_KEY=s3.secret_key, AWS_REGION=s3.region)
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            request.getfixturevalue("monkeypatch").setenv(k, env[k])
        return f"s3://{bucket}/models-{tag}", env
    reg = request.getfixturevalue("registry")
    return f"oci+http://{reg.host}/models-test/{tag}", env


def test_two_people_registering_and_promoting_at_once_one_wins_and_nothing_is_lost(tmp_path, any_store, monkeypatch):
    store, env = any_store
    for k in ("FAIRING_CACHE", "FAIRING_RUNS"):
        monkeypatch.setenv(k, env[k])
    import fairing.models as models

    runs = [saved_run(tmp_path, store, f"run{i}{uuid.uuid4().hex[:6]}", f"weights {i}".encode() * 500) for i in range(2)]
    # Register: both read "no versions", both write v1 at once.
    outs = race(tmp_path, env, "register", store, [json.dumps(r) for r in runs])
    won = [o for o in outs if "won" in o]
    lost = [o for o in outs if "lost" in o]
    assert len(won) == 1 and len(lost) == 1, outs
    assert won[0]["won"] == 1 and "race version 1 was registered by someone else at the same moment" in lost[0]["lost"]
    assert lost[0]["hint"]
    v1 = models.get("race:1", store=store)
    assert v1["run"]["id"] == won[0]["run"]  # the winner's version, whole
    loser = next(r for r in runs if r["id"] != won[0]["run"])
    assert models.register("race", loser, store=store)["version"] == 2  # trying again works
    again = models.register("race", loser, store=store)  # the same run and files: that version, not v3
    assert again["version"] == 2 and again["already"] is True and "already" not in models.get("race:2", store=store)
    third = saved_run(tmp_path, store, f"run2{uuid.uuid4().hex[:6]}", b"weights 2" * 500)
    assert models.register("race", third, store=store)["version"] == 3

    # Promote: both read champion's history, both move it at once, to different versions.
    for rnd in range(2):
        before = [n for n in _names(store) if n.startswith("model.race.champion.")]
        current = models.get("race@champion", store=store)["version"] if before else None
        outs = race(tmp_path, env, "promote", store, [str(v) for v in (1, 2, 3) if v != current][:2])
        won = [o for o in outs if "won" in o]
        lost = [o for o in outs if "lost" in o]
        assert len(won) == 1 and len(lost) == 1, outs
        assert "race@champion was moved by someone else at the same moment" in lost[0]["lost"]
        after = [n for n in _names(store) if n.startswith("model.race.champion.")]
        assert len(after) == len(before) + 1  # one move recorded, none lost or doubled
        assert models.get("race@champion", store=store)["version"] == won[0]["won"]


def _names(store: str) -> list[str]:
    from fairing.models.registry import Registry

    return Registry(store).names("model.race.")


# --- MLflow's Model Registry mirrors it -----------------------------------------------------------

@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    pytest.importorskip("mlflow")
    from tests.rig import mlflow as rig

    srv = rig.start(tmp_path_factory.mktemp("mlflow"))
    yield srv
    srv.stop()


@pytest.mark.slow  # a real MLflow server starts (~20 s)
def test_mlflow_models_uri_resolves_to_the_same_files(tmp_path, local_env, mlflow_server):
    r1, r2 = train(tmp_path, local_env, "0.1"), train(tmp_path, local_env, "0.3")
    env = {**local_env, "MLFLOW_TRACKING_URI": mlflow_server.uri}
    for rid in (r1, r2):
        r = fair("models", "register", "iris", "--run", rid, "--path", "model.joblib", env=env, cwd=tmp_path)
        assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    p = fair("models", "promote", "iris", "2", "--alias", "champion", "-o", "json", env=env, cwd=tmp_path)
    assert json.loads(p.stdout)["version"] == 2, p.stdout  # MLflow's chatter kept off stdout
    code = textwrap.dedent(f"""
        import hashlib, json, pathlib, mlflow
        mlflow.set_tracking_uri({mlflow_server.uri!r})
        c = mlflow.MlflowClient()
        mv = c.get_model_version_by_alias("iris", "champion")
        d = pathlib.Path(mlflow.artifacts.download_artifacts("models:/iris@champion", dst_path={str(tmp_path / 'dl')!r}))
        print(json.dumps({{"tags": mv.tags, "files": {{p.name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
                                                      for p in d.rglob("*") if p.is_file()}}}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    ours = json.loads(fair("models", "show", "iris@champion", "-o", "json", env=env, cwd=tmp_path).stdout)
    assert got["files"] == {f["path"]: f["digest"] for f in ours["files"]}
    assert got["tags"]["fairing.version"] == "2" and got["tags"]["fairing.digest"] == ours["digest"]
    assert got["tags"]["fairing.run_id"] == r2
    # Moving the alias back moves it in MLflow too.
    fair("models", "promote", "iris", "1", env=env, cwd=tmp_path)
    back = subprocess.run([sys.executable, "-c", f"import mlflow; print(mlflow.MlflowClient({mlflow_server.uri!r})"
                           ".get_model_version_by_alias('iris', 'champion').tags['fairing.version'])"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert back.stdout.strip() == "1", back.stderr


MLFLOW_STATE = textwrap.dedent("""
    import hashlib, json, pathlib, sys, mlflow
    uri, name, dest = sys.argv[1:4]
    mlflow.set_tracking_uri(uri)
    c = mlflow.MlflowClient()
    vs = [{"version": int(mv.version), "tags": mv.tags} for mv in c.search_model_versions(f"name='{name}'")]
    champ = c.get_model_version_by_alias(name, "champion")
    d = pathlib.Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion", dst_path=dest))
    print(json.dumps({"versions": sorted(vs, key=lambda v: v["version"]), "champion": champ.tags,
                      "files": {str(p.relative_to(d)): "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
                                for p in d.rglob("*") if p.is_file()}}))
""")


def mlflow_state(uri: str, name: str, dest: Path, env: dict) -> dict:
    """MLflow's side, read by its own client in its own process: every version of `name` with its
    tags, where champion points, and the files models:/NAME@champion downloads (their digests)."""
    out = subprocess.run([sys.executable, "-c", MLFLOW_STATE, uri, name, str(dest)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def mirror_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "MLflow" in line]


@pytest.mark.slow  # a real MLflow server (shared with the test above) and a dozen `fair` processes
def test_what_a_retrains_pod_registers_and_promotes_reaches_mlflow_by_sync(tmp_path, local_env, mlflow_server,
                                                                           monkeypatch):
    """The pod registers and promotes with no MLflow client (the shim wraps the command in a plain
    process, as in the image); `fair models sync` then makes MLflow's versions and moves its alias,
    twice is once, and `fair runs sync` / `fair models list` do it on the way, at no cost when
    nothing changed."""
    from tests.test_retrain import retrain

    store = tmp_path / "store"
    name = f"retrained-{uuid.uuid4().hex[:6]}"
    env = {**local_env, "MLFLOW_TRACKING_URI": mlflow_server.uri, "FAIRING_OUTPUTS": str(store)}

    def pod(run_id, acc):
        p, rec = retrain(tmp_path, store, run_id, acc, model=name)
        assert p.returncode == 0 and rec["model"]["registered"], p.stderr
        return rec

    pod("r1", 0.90)
    r = fair("models", "sync", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "INFO" not in r.stderr, r.stderr  # MLflow's own chatter kept out: our lines say it
    assert mirror_lines(r.stderr) == [f"fair: mirrored {name}:1 to MLflow (its version 1)",
                                      f"fair: MLflow {name}@champion -> {name}:1 (its version 1)"], r.stderr
    assert pod("r2", 0.95)["model"]["promoted"] is True
    assert pod("r3", 0.91)["model"]["promoted"] is False
    r = fair("models", "sync", name, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert mirror_lines(r.stderr) == [f"fair: mirrored {name}:2 to MLflow (its version 2)",
                                      f"fair: mirrored {name}:3 to MLflow (its version 3)",
                                      f"fair: MLflow {name}@champion -> {name}:2 (its version 2, was 1)"], r.stderr
    # Twice is once: nothing made, nothing moved.
    r = fair("models", "sync", "-o", "json", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"model": name, "versions": [], "aliases": [], "conflicts": []}]
    assert f"MLflow is up to date with {name}" in fair("models", "sync", env=env, cwd=tmp_path).stderr

    ours = {n: json.loads(fair("models", "show", f"{name}:{n}", "-o", "json", env=env, cwd=tmp_path).stdout)
            for n in (1, 2, 3)}
    got = mlflow_state(mlflow_server.uri, name, tmp_path / "dl", env)
    assert [(v["tags"]["fairing.version"], v["tags"]["fairing.digest"], v["tags"]["fairing.run_id"])
            for v in got["versions"]] == [(str(n), ours[n]["digest"], f"r{n}") for n in (1, 2, 3)]  # no duplicate
    assert got["champion"]["fairing.version"] == "2" and got["champion"]["fairing.digest"] == ours[2]["digest"]
    assert got["files"] == {f["path"]: f["digest"] for f in ours[2]["files"]}

    # On the way: `fair runs sync` imports run 4, whose pod promoted it; MLflow follows.
    pod("r4", 0.97)
    r = fair("runs", "sync", "--store", store, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"fair: mirrored {name}:4 to MLflow (its version 4)" in r.stderr
    assert f"fair: MLflow {name}@champion -> {name}:4 (its version 4, was 2)" in r.stderr
    got = mlflow_state(mlflow_server.uri, name, tmp_path / "dl4", env)
    assert len(got["versions"]) == 4 and got["champion"]["fairing.version"] == "4"
    # ...and `fair models list`; when nothing changed it does not even import mlflow.
    pod("r5", 0.50)
    r = fair("models", env=env, cwd=tmp_path)
    assert r.returncode == 0 and mirror_lines(r.stderr) == [f"fair: mirrored {name}:5 to MLflow (its version 5)"], r.stderr
    quiet = subprocess.run([*FAIR[:1], "-X", "importtime", *FAIR[1:], "models"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and name in quiet.stdout, quiet.stderr
    assert not mirror_lines(quiet.stderr) and " mlflow" not in quiet.stderr  # no import line for mlflow
    assert len(mlflow_state(mlflow_server.uri, name, tmp_path / "dl5", env)["versions"]) == 5

    # A client that waited for the retrain (`fair train --register` on a Job) and tracks to MLflow
    # mirrors on settling its record: the record as the wait settles it from the pod's index.
    # (On the real node this costs an MLflow server beside the retrain test, about 4x its time.)
    from fairing.runhandle import mirror_registered
    from fairing.runs.record import Run, attach_trackers
    from fairing.runs.sync import record_from_index

    monkeypatch.setenv("FAIRING_CACHE", env["FAIRING_CACHE"])
    pod("r6", 0.99)
    run = Run(record_from_index(shim.DirBackend(str(store)).get_run("r6"), str(store)), store=None)
    attach_trackers(run, {"mlflow": mlflow_server.uri})
    assert mirror_registered(run) == [{"model": name, "versions": [[6, 6]], "aliases": [["champion", 6, 6, 4]],
                                       "conflicts": []}]
    assert mlflow_state(mlflow_server.uri, name, tmp_path / "dl6", env)["champion"]["fairing.run_id"] == "r6"
    assert mirror_registered(run) == []  # nothing changed since: nothing to do


@pytest.mark.slow  # the real MLflow server above
def test_a_model_of_the_same_name_from_another_store_is_reported_and_mlflow_left_alone(tmp_path, local_env,
                                                                                        mlflow_server):
    """Two stores, one MLflow: the second store's iris:1 is not the first's (another digest).
    Syncing it says so and changes nothing there; it never rewrites MLflow's history."""
    from tests.test_retrain import retrain

    name = f"clash-{uuid.uuid4().hex[:6]}"
    env = {**local_env, "MLFLOW_TRACKING_URI": mlflow_server.uri}
    for store, acc in (("a", 0.9), ("b", 0.8)):
        p, rec = retrain(tmp_path, tmp_path / store, f"{store}1", acc, model=name)
        assert p.returncode == 0 and rec["model"]["promoted"], p.stderr
    assert fair("models", "sync", "--store", tmp_path / "a", env=env, cwd=tmp_path).returncode == 0
    theirs = json.loads(fair("models", "show", name, "--store", tmp_path / "b", "-o", "json", env=env, cwd=tmp_path).stdout)
    r = fair("models", "sync", name, "--store", tmp_path / "b", "-o", "json", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    [report] = json.loads(r.stdout)
    assert report["versions"] == [] and report["aliases"] == [] and len(report["conflicts"]) == 1
    assert f"MLflow's {name} version 1 is fairing {name}:1 with digest" in report["conflicts"][0]
    assert f"not {theirs['digest']}" in report["conflicts"][0] and "left as it is" in report["conflicts"][0]
    assert "warning: MLflow's" in r.stderr  # said to the person too
    got = mlflow_state(mlflow_server.uri, name, tmp_path / "dl", env)
    assert len(got["versions"]) == 1 and got["champion"]["fairing.run_id"] == "a1"  # store a's, untouched
    r = fair("models", "sync", "nosuch", "--store", tmp_path / "b", env=env, cwd=tmp_path)
    assert r.returncode == 2 and "no model 'nosuch'" in r.stderr and name in r.stderr, r.stderr


def test_a_dead_mlflow_server_costs_a_warning_and_the_version_is_kept(tmp_path, local_env):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rid = train(tmp_path, local_env, "0.1")
    r = fair("models", "register", "iris", "--run", rid, "--mlflow", f"http://127.0.0.1:{port}", env=local_env, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "iris:1", r.stderr
    assert "warning: MLflow model registry at" in r.stderr and "not updated" in r.stderr
    # On the way (`fair models list`) it is one warning too, and the command does its work.
    dead = {**local_env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    r = fair("models", env=dead, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("NAME") and "iris" in r.stdout, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("warning:")] == [r.stderr.strip()], r.stderr
    assert "fair models sync tries again" in r.stderr
    # Asked for explicitly it is an error, in one line with its fix.
    r = fair("models", "sync", env=dead, cwd=tmp_path)
    assert r.returncode != 0 and "MLflow model registry at" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "fair models sync again" in r.stderr
    r = fair("models", "sync", env=local_env, cwd=tmp_path)
    assert r.returncode == 2 and "MLflow is not configured" in r.stderr and "MLFLOW_TRACKING_URI" in r.stderr, r.stderr


def test_on_a_registry_a_version_is_an_artifact_of_the_runs_blobs_and_an_alias_the_same_digest(tmp_path, registry, monkeypatch):
    """Versions are OCI artifacts whose layers are the run's file blobs; a model registry in
    another repository of the same registry gets them by cross-repository mount, never by upload;
    the alias tag is the version's manifest (one digest)."""
    import fairing.models as models

    monkeypatch.setenv("FAIRING_CACHE", str(tmp_path / "cache"))
    tag = uuid.uuid4().hex[:10]
    runs_store, model_store = f"oci+http://{registry.host}/models-test/runs-{tag}", f"oci+http://{registry.host}/models-test/reg-{tag}"
    run = saved_run(tmp_path, runs_store, "r" + tag, os.urandom(300_000))

    def no_upload(self, digest, size, path):
        raise AssertionError(f"{digest} uploaded: it should have been mounted")

    monkeypatch.setattr(shim.RegistryBackend, "put_blob", no_upload)
    v = models.register("iris", run, store=model_store)
    models.promote("iris", 1, "champion", store=model_store)
    be = shim.RegistryBackend(registry.url, f"models-test/reg-{tag}")
    status, _, body = be._request("GET", f"/v2/models-test/reg-{tag}/manifests/model.iris.v1",
                                  headers={"Accept": shim.MANIFEST_MEDIA_TYPE})
    m = json.loads(body)
    assert m["artifactType"] == "application/vnd.fairing.model.version.v1"
    assert [(lay["digest"], lay["annotations"][shim.TITLE]) for lay in m["layers"][:-1]] == [
        (f["digest"], f["path"]) for f in v["files"]]
    assert m["layers"][-1]["digest"] == v["layer"]["digest"]  # the files as one image layer (test_model_layer.py)
    assert be._tag_digest("model.iris.champion") == be._tag_digest("model.iris.v1")
    got = models.files("iris@champion", tmp_path / "m", store=model_store)
    assert (got / "model.joblib").stat().st_size == 300_000


# --- serving a model by name ----------------------------------------------------------------------

READER = textwrap.dedent("""
    import os

    class Reader:
        def load(self, model_dir):
            self.weights = open(os.path.join(model_dir, "model.joblib"), "rb").read()[:9].decode()

        def predict(self, instances):
            return [self.weights for _ in instances]
""")


def test_fair_deploy_model_alias_serves_that_versions_files_and_names_it(tmp_path, local_env, engine, base_image):
    """train twice -> register -> promote -> fair deploy --model iris@champion -> predict; the
    endpoint's /metrics, `fair status` and the deploy's run record name the version and its run."""
    import requests

    r1, r2 = train(tmp_path, local_env, "0.1"), train(tmp_path, local_env, "0.3")
    for rid in (r1, r2):
        fair("models", "register", "iris", "--run", rid, "--path", "model.joblib", env=local_env, cwd=tmp_path)
    fair("models", "promote", "iris", "1", env=local_env, cwd=tmp_path)
    (tmp_path / "model.py").write_text(READER)
    env = {**local_env, "DOCKER_HOST": engine.docker_host}
    name = f"iris-{uuid.uuid4().hex[:6]}"
    # Bad references: one line and a hint, before anything is built.
    bad = fair("deploy", "model.py:Reader", "--name", name, "--model", "iris@prod", "--base-image", base_image.docker,
               env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "error: model iris has no alias 'prod'" in bad.stderr and "hint: " in bad.stderr
    bad = fair("deploy", "model.py:Reader", "--name", name, "--model", "run:ffffffffffff", "--base-image",
               base_image.docker, env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "error: no run 'ffffffffffff'" in bad.stderr

    r = fair("deploy", "model.py:Reader", "--name", name, "--model", "iris@champion", "--base-image", base_image.docker,
             "-o", "json", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    try:
        assert data["model"]["resolved"] == "iris:1" and data["model"]["run"] == r1
        resp = requests.post(f"{data['url']}/v1/models/{name}:predict", json={"instances": [[1]]}, timeout=30)
        assert resp.json() == {"predictions": ["model-0.1"]}
        metrics = requests.get(f"{data['url']}/metrics", timeout=30).text
        assert f'model_run="{r1}"' in metrics and 'model_version="iris:1"' in metrics
        st = fair("status", data["name"], env=env, cwd=tmp_path)
        assert f"model: iris:1 from run {r1}" in st.stdout, st.stdout + st.stderr
        rec = json.loads(fair("runs", "show", data["run_id"], "-o", "json", env=env, cwd=tmp_path).stdout)
        assert rec["model"]["ref"] == "iris@champion" and rec["model"]["version"] == "1" and rec["model"]["run"] == r1
    finally:
        fair("delete", data["name"], env=env, cwd=tmp_path)

    # The alias moves: a new deploy serves the new version; run:ID serves a run's outputs directly.
    fair("models", "promote", "iris", "2", env=local_env, cwd=tmp_path)
    r = fair("deploy", "model.py:Reader", "--name", name, "--model", f"run:{r1}", "--base-image", base_image.docker,
             "-o", "json", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    try:
        resp = requests.post(f"{data['url']}/v1/models/{name}:predict", json={"instances": [[1]]}, timeout=30)
        assert resp.json() == {"predictions": ["model-0.1"]}
        assert data["model"]["resolved"] == f"run:{r1}"
    finally:
        fair("delete", data["name"], env=env, cwd=tmp_path)
    import fairing.models

    os.environ["FAIRING_CACHE"], os.environ["FAIRING_RUNS"] = local_env["FAIRING_CACHE"], local_env["FAIRING_RUNS"]
    try:
        assert fairing.models.get("iris@champion")["version"] == 2
    finally:
        del os.environ["FAIRING_CACHE"], os.environ["FAIRING_RUNS"]


def test_best_of_a_tuning_run_is_a_model_each_trial_keeping_its_outputs(tmp_path, local_env):
    (tmp_path / "tr.py").write_text(textwrap.dedent("""
        import argparse, os
        p = argparse.ArgumentParser(); p.add_argument("--lr", type=float); a = p.parse_args()
        open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.joblib"), "w").write(f"lr={a.lr}")
        print(f"accuracy={1 - abs(a.lr - 0.3)}")
    """))
    t = fair("tune", "tr.py", "--param", "lr=0.1..0.5", "--objective", "accuracy", "--maximize", "--trials", "3",
             "--parallel", "2", "--backend", "local", "--local-mode", "process", "-o", "json", env=local_env, cwd=tmp_path)
    assert t.returncode == 0 and "warning" not in t.stderr, t.stderr
    tune = json.loads(t.stdout)
    trials = json.loads(fair("runs", "--parent", tune["run"], "-o", "json", env=local_env, cwd=tmp_path).stdout)
    assert len(trials) == 3 and all(r["outputs"]["files"][0]["path"] == "model.joblib" for r in trials)
    r = fair("models", "register", "iris", "--run", f"best:{tune['run']}", "--path", "model.joblib", "-o", "json",
             env=local_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    best = next(x for x in trials if x["params"]["lr"] == tune["best"]["params"]["lr"])
    assert v["run"]["id"] == best["id"] and v["run"]["via"] == f"best:{tune['run']}"
    os.environ["FAIRING_CACHE"], os.environ["FAIRING_RUNS"] = local_env["FAIRING_CACHE"], local_env["FAIRING_RUNS"]
    try:
        import fairing

        d = fairing.models.files(f"best:{tune['run']}", tmp_path / "b")
        assert (d / "model.joblib").read_text() == f"lr={tune['best']['params']['lr']}"
    finally:
        del os.environ["FAIRING_CACHE"], os.environ["FAIRING_RUNS"]


def test_the_models_files_are_a_layer_of_their_own_not_held_by_the_context_cap(tmp_path, local_env, base_image, engine,
                                                                                monkeypatch):
    """With the append builder the version's files are one layer, beside the code layer: the same
    digest however the code changes (pushed once), and not counted against the context size cap."""
    big = tmp_path / "big.py"
    big.write_text(textwrap.dedent("""
        import os
        open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.joblib"), "wb").write(os.urandom(400_000))
    """))
    r = fair("train", "big.py", "--local-mode", "process", env=local_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rid = json.loads(fair("runs", "-o", "json", "--last", "1", env=local_env, cwd=tmp_path).stdout)[0]["id"]
    fair("models", "register", "big", "--run", rid, env=local_env, cwd=tmp_path)
    for k in ("FAIRING_CACHE", "FAIRING_RUNS"):
        monkeypatch.setenv(k, local_env[k])
    monkeypatch.setenv("FAIRING_MAX_CONTEXT_BYTES", "300000")  # the code fits, the model alone would not
    from fairing.serving import PredictionEndpoint

    (tmp_path / "model.py").write_text(READER)
    digests = []
    for n, extra in enumerate(("", "\n# changed code\n")):
        (tmp_path / "model.py").write_text(READER + extra)
        layout = tmp_path / f"layout{n}"
        ep = PredictionEndpoint(f"{tmp_path / 'model.py'}:Reader", name="big", base_image=base_image.docker,
                                target=f"oci:{layout}:v1", deployer="local", docker_host=engine.docker_host,
                                model_ref="big:1", out=lambda s: None)
        img = ep.build()
        index = json.loads((layout / "index.json").read_text())
        manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
        config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text())
        created = [h.get("created_by", "") for h in config["history"] if not h.get("empty_layer")]
        assert created[-2] == "fairing: copy 1 model files to /app (big:1)", created
        model_layer, code_layer = manifest["layers"][-2:]
        assert model_layer["size"] > 400_000 > code_layer["size"]
        digests.append((model_layer["digest"], code_layer["digest"], img.digest))
    assert digests[0][0] == digests[1][0]  # the model layer: the same bytes, reused
    assert digests[0][1] != digests[1][1] and digests[0][2] != digests[1][2]  # the code and the image changed
