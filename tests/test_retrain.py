"""Retraining that promotes, without a cluster: the gate's grammar and its reasons, the outputs
shim registering and promoting on a real directory store (what a retrain's pod runs), and bad
input refused on the client before anything is built. The real node's CronJob is in
tests/test_node_retrain.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairing.image_runtime import modeldocs, outputs as shim

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("gate, clauses", [
    ("accuracy >= champion", [("accuracy", ">=", ("alias", "champion"))]),
    ("accuracy>=champion and loss < 0.5", [("accuracy", ">=", ("alias", "champion")), ("loss", "<", ("number", 0.5))]),
    ("val/f1 > 1e-3", [("val/f1", ">", ("number", 0.001))]),
    ("acc == staging", [("acc", "==", ("alias", "staging"))]),
])
def test_the_gate_grammar(gate, clauses):
    assert modeldocs.parse_gate(gate) == clauses


@pytest.mark.parametrize("gate, says", [
    ("accuracy >>= champion", "'>>=' is not a comparison"),
    ("accuracy >= ", "ends too early"),
    ("accuracy >= Champion!", "neither a number nor an alias"),
    ("accuracy >= champion or loss < 1", "expected `and` before 'or'"),
    ("accuracy >= champion and f1 >= staging", "one alias per gate"),
    ("", "empty"),
    ("3 >= champion", "'3' is not a metric name"),
])
def test_a_gate_that_does_not_parse_says_where(gate, says):
    with pytest.raises(modeldocs.GateError) as e:
        modeldocs.parse_gate(gate)
    assert says in e.value.message and "\n" not in e.value.message
    assert e.value.hint


def test_the_reasons_name_both_values_and_the_champion():
    g = modeldocs.parse_gate("accuracy >= champion")
    champ = {"model": "iris", "version": 3, "run": {"metrics": {"accuracy": 0.95}}}
    assert modeldocs.evaluate(g, {"accuracy": 0.91}, champ) == (
        False, "not promoted: accuracy 0.91 < champion 0.95 (iris:3)")
    assert modeldocs.evaluate(g, {"accuracy": 0.97}, champ) == (
        True, "promoted: accuracy 0.97 >= champion 0.95 (iris:3)")
    ok, why = modeldocs.evaluate(g, {"accuracy": 0.5}, None)
    assert ok and why == "promoted: no champion yet: the first version is promoted"
    old = {"model": "iris", "version": 1, "run": {"metrics": {"f1": 0.7}}}  # registered before accuracy was printed
    assert modeldocs.evaluate(g, {"accuracy": 0.99}, old) == (
        False, "not promoted: champion iris:1 has no metric accuracy to compare with; promote by hand (fair models promote)")
    g = modeldocs.parse_gate("accuracy >= champion and loss < 0.2")
    assert modeldocs.evaluate(g, {"accuracy": 0.99, "loss": 0.3}, champ) == (False, "not promoted: loss 0.3 >= 0.2")
    with pytest.raises(modeldocs.GateError) as e:
        modeldocs.check_metrics(g, {"accuracy": 0.9, "f1": 0.8})
    assert "needs metric 'loss', which the run did not report (it reported: accuracy, f1)" in e.value.message
    assert "loss=VALUE" in e.value.hint


TRAIN = """
import os, sys
acc = float(sys.argv[1])
open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.joblib"), "w").write("weights %s" % acc)
print("epoch=1 loss=%s" % (1 - acc))
print("accuracy=%s" % acc, file=sys.stderr if len(sys.argv) > 2 else sys.stdout)
"""


def retrain(tmp_path, store: Path, run_id: str, acc: float, gate="accuracy >= champion", stderr=False, model="iris"):
    """One retrain as its pod runs it: the shim wraps the command, saves, registers, gates."""
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    out = tmp_path / f"out-{run_id}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FAIRING_")},
           "FAIRING_OUTPUT_DIR": str(out), "FAIRING_RUN_ID": run_id,
           "FAIRING_OUTPUTS_STORE": json.dumps({"kind": "dir", "path": str(store)}),
           "FAIRING_REGISTER": model, **({"FAIRING_PROMOTE_IF": gate} if gate else {})}
    p = subprocess.run([sys.executable, str(ROOT / "fairing/image_runtime/outputs.py"), "--", sys.executable,
                        str(script), str(acc), *(["stderr"] if stderr else [])],
                       env=env, capture_output=True, text=True, timeout=60)
    if not (store / "runs").is_dir():
        return p, None  # no index could be written
    return p, shim.DirBackend(str(store)).get_run(run_id)["record"]


def test_each_run_registers_and_the_champion_moves_only_when_the_gate_holds(tmp_path):
    store = tmp_path / "store"
    b = shim.DirBackend(str(store))
    p, rec = retrain(tmp_path, store, "r1", 0.90)
    assert p.returncode == 0, p.stderr
    assert "accuracy=0.9" in p.stdout  # the command's output still reaches the log
    assert rec["metrics"]["accuracy"] == 0.9 and rec["model"]["registered"] == "iris:1"
    assert rec["model"]["promoted"] and rec["model"]["reason"] == "promoted: no champion yet: the first version is promoted"
    p, rec = retrain(tmp_path, store, "r2", 0.95, stderr=True)  # a metric printed on stderr counts too
    assert rec["model"] == {**rec["model"], "registered": "iris:2", "promoted": True,
                            "reason": "promoted: accuracy 0.95 >= champion 0.9 (iris:1)"}
    p, rec = retrain(tmp_path, store, "r3", 0.91)
    assert p.returncode == 0  # a gate that does not hold is not a failure of the run
    assert rec["model"]["registered"] == "iris:3" and rec["model"]["promoted"] is False
    assert rec["model"]["reason"] == "not promoted: accuracy 0.91 < champion 0.95 (iris:2)"
    assert "fairing: registered iris:3; not promoted: accuracy 0.91 < champion 0.95 (iris:2)" in p.stderr
    move, champ = modeldocs.resolve_alias(b, "iris", "champion")
    assert champ["version"] == 2 and move["seq"] == 2  # two moves, the champion untouched by run 3
    assert modeldocs.versions(b, "iris") == [1, 2, 3]
    assert champ["run"]["id"] == "r2" and champ["files"][0]["path"] == "model.joblib"
    # The client's registry reads what the pod wrote.
    import fairing.models as models

    assert models.get("iris@champion", store=str(store))["version"] == 2


def test_a_retried_pod_that_registered_but_lost_its_index_does_not_register_again(tmp_path):
    """The first pod registers iris:1 and promotes it, then cannot write its index (here: the store's
    runs/ is a file); the Job's retry (same run id, same files) finds iris:1 and registers nothing new."""
    store = tmp_path / "store"
    (store / "runs").parent.mkdir(parents=True)
    (store / "runs").write_text("not a directory")
    p, _ = retrain(tmp_path, store, "r1", 0.90)
    assert "fairing: registered iris:1; promoted" in p.stderr and "outputs not saved" in p.stderr, p.stderr
    assert p.returncode == shim.EXIT_NOT_SAVED
    (store / "runs").unlink()
    p, rec = retrain(tmp_path, store, "r1", 0.90)
    assert p.returncode == 0, p.stderr
    assert "fairing: iris:1 already registered from run r1; already champion" in p.stderr, p.stderr
    assert rec["model"]["registered"] == "iris:1" and rec["model"]["already"] is True and rec["model"]["promoted"]
    b = shim.DirBackend(str(store))
    assert modeldocs.versions(b, "iris") == [1] and modeldocs.alias_seqs(b, "iris") == {"champion": 1}
    # Another run with the same files is another version (the key is the run and its files).
    assert retrain(tmp_path, store, "r2", 0.90)[1]["model"]["registered"] == "iris:2"


def test_registering_a_run_again_in_a_registry_store_returns_its_version(tmp_path, registry):
    """The pod's register_and_gate on the rig's registry (the store a cluster run keeps its outputs
    in): the same run and files a second time is the same version, and the gate is not judged
    against itself."""
    import uuid

    b = shim.RegistryBackend(registry.url, f"retrain-test/{uuid.uuid4().hex[:8]}")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.joblib").write_bytes(b"weights" * 100)
    files = shim.save(str(out), b, "r1", {"id": "r1", "status": "Succeeded"})["files"]
    run = {"id": "r1", "metrics": {"accuracy": 0.9}}
    first = modeldocs.register_and_gate(b, "iris", "accuracy > champion", files, run)
    again = modeldocs.register_and_gate(b, "iris", "accuracy > champion", files, run)
    assert first["registered"] == again["registered"] == "iris:1" and "already" not in first
    assert again["already"] is True and again["promoted"] and again["reason"] == "already champion"
    assert modeldocs.versions(b, "iris") == [1] and modeldocs.alias_seqs(b, "iris") == {"champion": 1}


def test_a_gate_naming_a_metric_the_run_lacks_registers_nothing_and_fails_the_run_in_one_line(tmp_path):
    store = tmp_path / "store"
    p, rec = retrain(tmp_path, store, "r1", 0.9, gate="f1 >= champion")
    assert p.returncode == shim.EXIT_NOT_REGISTERED
    said = [l for l in p.stderr.splitlines() if "not registered" in l]
    assert said == ["fairing: model not registered: the promotion gate needs metric 'f1', which the run did not "
                    "report (it reported: accuracy, loss) (hint: print f1=VALUE from the run (fairing.report(f1=...)), "
                    "or change --promote-if)"]
    assert "Traceback" not in p.stderr
    assert modeldocs.versions(shim.DirBackend(str(store)), "iris") == []  # nothing half-made
    assert rec["model"]["registered"] is None and "f1" in rec["model"]["error"]


def fair(*args, cwd, env=None):
    e = {**{k: v for k, v in os.environ.items() if not k.startswith("FAIRING_")}, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "fairing.cli", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args, line, hint", [
    (["--register", "iris", "--promote-if", "accuracy >>= champion"],
     "error: the promotion gate 'accuracy >>= champion': '>>=' is not a comparison", "hint: write METRIC OP"),
    (["--promote-if", "accuracy >= champion"], "error: --promote-if needs --register NAME", "hint: e.g. --register iris"),
    (["--register", "Iris!", "--promote-if", "accuracy >= champion"], "error: bad model name 'Iris!'", "hint: a model name"),
    (["--register", "iris", "--deployer", "local", "--local-mode", "process"], "error: --register needs a cluster run",
     "hint: run on the cluster"),
    (["--register", "iris", "--outputs", "none"], "error: --register iris needs an outputs store to keep the model in",
     "hint: set outputs: oci://HOST/REPO"),
])
def test_bad_retrain_input_is_one_line_before_anything_is_built(tmp_path, args, line, hint):
    (tmp_path / "train.py").write_text("print('accuracy=1')\n")
    cache = tmp_path / "cache"
    registry = [] if "local" in args else ["--registry", "registry.invalid:5000/team"]
    p = fair("train", "train.py", *registry, "--kubeconfig", str(tmp_path / "kc"), *args, cwd=tmp_path, env={"FAIRING_CACHE": str(cache), "FAIRING_RUNS": str(tmp_path / "runs.db")})
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith(line), p.stderr
    assert lines[1].startswith(hint) and len(lines) == 2 and "Traceback" not in p.stderr
    # Nothing half-made: no run recorded, nothing built (the registry's host does not even resolve).
    runs = fair("runs", "-o", "json", cwd=tmp_path, env={"FAIRING_RUNS": str(tmp_path / "runs.db")})
    assert json.loads(runs.stdout or "[]") == [], runs.stdout + runs.stderr
    assert not (cache / "layers").exists()


def test_the_python_api_refuses_the_same_before_anything_is_built(tmp_path, monkeypatch):
    import fairing
    from fairing.errors import ConfigError

    monkeypatch.setenv("FAIRING_RUNS", str(tmp_path / "runs.db"))
    (tmp_path / "train.py").write_text("print('accuracy=1')\n")
    with pytest.raises(ConfigError) as e:
        fairing.TrainJob(str(tmp_path / "train.py"), promote_if="accuracy >= champion")
    assert "promote_if needs register=NAME" in e.value.message
    job = fairing.TrainJob(str(tmp_path / "train.py"), registry="registry.invalid:5000/team", deployer="job",
                           kubeconfig=str(tmp_path / "kc"), register="iris", promote_if="accuracy => champion",
                           progress=False)
    with pytest.raises(ConfigError) as e:
        job.submit()
    assert e.value.message == "the promotion gate 'accuracy => champion': '=>' is not a comparison"
    assert job.image is None and fairing.runs.list() == []


# --- a model server following an alias -------------------------------------------------------------

class Echo:
    """Answers with the bytes of its model file: which version it loaded shows in every answer."""

    def load(self, model_dir):
        text = (Path(model_dir) / "model.joblib").read_text()
        if "broken" in text:
            raise ValueError("cannot unpickle " + text)
        self.text = text

    def predict(self, instances):
        return [self.text for _ in instances]


def test_a_server_following_the_alias_switches_only_to_a_version_that_loads(tmp_path):
    from fairing.image_runtime import model_server as ms

    store = tmp_path / "store"
    b = shim.DirBackend(str(store))
    for run_id, acc in (("r1", 0.90), ("r2", 0.95)):
        retrain(tmp_path, store, run_id, acc)
    _, v2 = modeldocs.resolve_alias(b, "iris", "champion")
    first = Path(tmp_path / "baked")
    modeldocs.fetch_files(b, v2, str(first))
    env = {"FAIRING_MODEL_DIR": str(first), "FAIRING_MODEL_VERSION": "iris:2", "FAIRING_MODEL_DIGEST": modeldocs.digest_of(v2),
           "FAIRING_OUTPUTS_STORE": json.dumps({"kind": "dir", "path": str(store)}),
           "FAIRING_MODEL_VERSIONS_DIR": str(tmp_path / "versions")}
    state = ms.ModelState("iris", factory=Echo, env=env)
    state._load()
    assert state.model.predict([1]) == ["weights 0.95"]
    follower = ms.Follower(state, "iris@champion")
    assert follower.check() is False  # the alias still names what it serves
    retrain(tmp_path, store, "r3", 0.97)  # promoted: v3
    old = state.model
    assert follower.check() is True
    assert state.version == "iris:3" and state.model.predict([1]) == ["weights 0.97"]
    assert old.predict([1]) == ["weights 0.95"]  # a request holding the old object finishes on it
    # A version whose load() fails: the old one keeps serving, and it is not tried again each poll.
    out = tmp_path / "out-r4"
    out.mkdir()
    (out / "model.joblib").write_text("broken 0.99")
    files = [{"path": "model.joblib", "digest": shim.file_digest(str(out / "model.joblib")), "size": 11,
              "mediaType": shim.MODEL_MEDIA_TYPE}]
    b.put_blob(files[0]["digest"], 11, str(out / "model.joblib"))
    modeldocs.register_and_gate(b, "iris", "accuracy >= champion", files, {"id": "r4", "metrics": {"accuracy": 0.99}})
    assert follower.check() is False
    assert state.version == "iris:3" and state.model.predict([1]) == ["weights 0.97"] and follower.failed
    assert follower.check() is False


def test_a_dry_run_shows_what_the_pod_will_register(tmp_path):
    (tmp_path / "train.py").write_text("print('accuracy=1')\n")
    p = fair("train", "train.py", "--registry", "registry.invalid:5000/team", "--kubeconfig", str(tmp_path / "kc"),
             "--schedule", "*/2 * * * *", "--register", "iris", "--promote-if", "accuracy >= champion", "--dry-run",
             cwd=tmp_path, env={"FAIRING_CACHE": str(tmp_path / "cache"), "FAIRING_RUNS": str(tmp_path / "runs.db")})
    assert p.returncode == 0, p.stderr
    import yaml

    cron = next(d for d in yaml.safe_load_all(p.stdout) if d and d.get("kind") == "CronJob")
    c = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["FAIRING_REGISTER"] == "iris" and env["FAIRING_PROMOTE_IF"] == "accuracy >= champion"
    assert cron["spec"]["schedule"] == "*/2 * * * *"


def test_two_retrains_at_once_in_the_pod_each_gets_its_version_and_the_gate_is_judged_again(tmp_path):
    """Another retrain writes version N+1 and moves the champion between this pod's reads and its
    writes: the exclusive put fails, the pod reads again, takes N+2, and judges its gate against
    the champion that is there now (so a 0.93 does not replace the other pod's 0.96)."""
    store = tmp_path / "store"
    retrain(tmp_path, store, "r1", 0.90)

    class Contended(shim.DirBackend):
        """The other pod's writes land just before this pod's first exclusive put of each kind."""
        def __init__(self, root):
            super().__init__(root)
            self.raced = set()

        def put_doc(self, name, doc, exclusive=False):
            kind = "alias" if ".champion." in name else "version"
            if exclusive and kind not in self.raced:
                self.raced.add(kind)
                other = shim.DirBackend(self.root)
                if kind == "version":
                    modeldocs.put_version(other, "iris", modeldocs.new_version(
                        "iris", [], {"id": "other", "metrics": {"accuracy": 0.96}}))
                else:
                    mine = modeldocs.version(other, "iris", 3)
                    theirs = modeldocs.version(other, "iris", 2)
                    assert mine["run"]["id"] == "r2" and theirs["run"]["id"] == "other"
                    modeldocs.move_alias(other, "iris", "champion", theirs)
            return super().put_doc(name, doc, exclusive=exclusive)

    b = Contended(str(store))
    files = shim.DirBackend(str(store)).get_run("r1")["files"]
    out = modeldocs.register_and_gate(b, "iris", "accuracy >= champion", files, {"id": "r2", "metrics": {"accuracy": 0.93}})
    assert out["registered"] == "iris:3"  # v2 was taken by the other pod: this one is v3, nothing lost
    assert out["promoted"] is False and out["reason"] == "not promoted: accuracy 0.93 < champion 0.96 (iris:2)"
    _, champ = modeldocs.resolve_alias(b, "iris", "champion")
    assert champ["version"] == 2 and champ["run"]["id"] == "other"
