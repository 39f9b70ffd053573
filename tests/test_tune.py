"""Hyperparameter tuning (fairing.tune, `fair tune`): the search space and its CLI syntax, the
`name=value` metric lines, the Optuna-driven trials on the local backend (processes, and
containers on the rig's Podman with the image pushed once to the rig registry), failure handling
(max_failed, a metric never printed), Ctrl-C, the plot, and the dry run of the Katib Experiment
and the trial Job template."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import fairing
from fairing.errors import ConfigError
from fairing.tune.metrics import format_metrics, parse_metrics
from fairing.tune.result import TuneFailed
from fairing.tune.space import Choice, IntRange, LogUniform, Uniform, check_space, parse_param, parse_params
from tests.test_cli import assert_one_error, clean_env, fair

ROOT = Path(__file__).resolve().parents[1]
TRAIN = '''import argparse, os
p = argparse.ArgumentParser()
p.add_argument("--x", type=float, required=True)
a = p.parse_args()
assert float(os.environ["FAIRING_PARAM_X"]) == a.x, "env and args disagree"
print("training with", a.x)
print(f"score={-(a.x - 3) ** 2}")
'''


def env(**extra):
    """The fresh-machine environment, with this worktree's fairing importable by trials."""
    return clean_env(PYTHONPATH=str(ROOT), **extra)


# --- the search space and its CLI syntax ---------------------------------------------------------

def test_param_syntax():
    assert parse_param("lr=1e-4..1e-1:log") == ("lr", LogUniform(1e-4, 1e-1))
    assert parse_param("x=0..6") == ("x", Uniform(0.0, 6.0))  # a bare range is a float range
    assert parse_param("layers=1..8:int") == ("layers", IntRange(1, 8))
    assert parse_param("layers=1,2,3") == ("layers", Choice((1, 2, 3)))
    assert parse_param("opt=adam, sgd") == ("opt", Choice(("adam", "sgd")))
    for bad, needle in [("lr", "expected NAME=LOW..HIGH"), ("lr=1..", "LOW..HIGH with numbers"),
                        ("lr=5", "two or more values"), ("x=6..0", "low must be below high"),
                        ("1x=1,2", "not a valid name"), ("lr=0..1:log", "above 0"), ("a=1..2:foo", "':foo'"),
                        ("n=1.5..3:int", "whole-number")]:
        with pytest.raises(ConfigError, match=needle):
            parse_param(bad)
    with pytest.raises(ConfigError, match="given twice"):
        parse_params(["x=0..1", "x=1,2"])


def test_space_values_validate_and_render_for_katib():
    assert fairing.uniform(0, 6).katib() == {"parameterType": "double", "feasibleSpace": {"min": "0", "max": "6"}}
    assert fairing.loguniform(1e-4, 0.1).katib()["feasibleSpace"] == {"min": "0.0001", "max": "0.1",
                                                                     "distribution": "logUniform"}
    assert fairing.intrange(1, 8, 2).katib() == {"parameterType": "int", "feasibleSpace": {"min": "1", "max": "8", "step": "2"}}
    assert fairing.choice([1, 2, 3]).katib() == {"parameterType": "categorical", "feasibleSpace": {"list": ["1", "2", "3"]}}
    # Katib substitutes text; the value comes back with its type
    assert fairing.choice([1, 2, 3]).parse("2") == 2 and fairing.choice("adam", "sgd").parse("sgd") == "sgd"
    assert fairing.loguniform(1e-4, 1).grid(5) == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1])
    assert fairing.intrange(1, 10).grid(3) == [1, 5, 10] and fairing.intrange(1, 3).grid(9) == [1, 2, 3]
    assert check_space({"opt": ["adam", "sgd"]}) == {"opt": Choice(("adam", "sgd"))}  # a list means choice
    for bad, needle in [({}, "empty"), ({"lr": 0.1}, "not a search-space value"), ({"a-b": [1, 2]}, "invalid parameter name"),
                        ({"lr": [1, 2], "LR": [3, 4]}, "share FAIRING_PARAM_LR")]:
        with pytest.raises(ConfigError, match=needle):
            check_space(bad)
    with pytest.raises(ConfigError, match="above 0"):
        fairing.loguniform(0, 1)


def test_report_prints_katib_stdout_lines_and_parse_reads_them_back(capsys):
    fairing.report(accuracy=0.93, loss=2, epoch=3)
    out = capsys.readouterr().out
    assert out == "accuracy=0.93\nloss=2\nepoch=3\n"
    log = "starting lr=0.1\n" + out + "accuracy = 0.95\nnoise a= b\nval-loss=1e-3\n"
    # the last value wins (Katib's "latest"), spaces around '=' and exponents are read as Katib reads them
    assert parse_metrics(log) == {"lr": 0.1, "accuracy": 0.95, "loss": 2.0, "epoch": 3.0, "val-loss": 0.001}
    with pytest.raises(ValueError, match="not finite"):
        format_metrics({"loss": float("nan")})
    with pytest.raises(ValueError, match="not a number"):
        format_metrics({"loss": "low"})


def test_import_fairing_stays_light():
    code = "import sys, fairing; fairing.uniform(0, 1); import fairing.tune.api; " \
           "print(sorted(m for m in ('optuna', 'matplotlib', 'pandas', 'kubernetes') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), check=True).stdout
    assert out.strip() == "[]"


# --- the local backend: trials as local processes --------------------------------------------------

def objective(x):
    import time as t

    start = t.time()
    t.sleep(0.3)  # long enough for parallel trials to overlap
    return {"score": -(x - 3) ** 2, "started": start, "ended": t.time()}


@pytest.fixture(scope="module")
def six_trials():
    """-(x-3)^2 over x in [0, 6], 6 trials, 2 in parallel, as local processes."""
    return fairing.tune(objective, params={"x": fairing.uniform(0, 6)}, objective="score", goal="maximize",
                        trials=6, parallel=2, algorithm="tpe", seed=7, local_mode="process", progress=False)


def test_function_trials_find_the_best_and_run_two_at_a_time(six_trials):
    r = six_trials
    assert r.status == "Succeeded" and len(r.trials) == 6
    assert all(t.state == "Succeeded" for t in r.trials)
    # every metric came from the trial's own run: the objective printed matches its parameter
    for t in r.trials:
        assert t.value == pytest.approx(-(t.params["x"] - 3) ** 2)
        assert 0 <= t.params["x"] <= 6
    assert r.best.value == max(t.value for t in r.trials)
    assert len({t.params["x"] for t in r.trials}) == 6  # six different suggestions
    # at most 2 trials ran at any moment, and 2 did run together
    spans = [(t.metrics["started"], t.metrics["ended"]) for t in r.trials]
    overlap = max(sum(1 for s, e in spans if s <= p < e) for p, _ in spans)
    assert overlap == 2
    assert r.image.startswith("context:")  # no engine, no registry: one context, every trial ran it


def test_result_to_dataframe_and_plot(six_trials, tmp_path):
    df = six_trials.to_dataframe()
    assert list(df["number"]) == list(range(6)) and df["value"].max() == six_trials.best.value
    assert "param_x" in df.columns
    png = tmp_path / "tune.png"
    fig = six_trials.plot(str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from IPython.core.formatters import PNGFormatter

    assert PNGFormatter()(fig)[:8] == b"\x89PNG\r\n\x1a\n"  # what a notebook cell shows for result.plot()
    per_trial, vs_x = fig.axes[0], fig.axes[1]
    pts = per_trial.collections[0].get_offsets()
    assert len(pts) == len(six_trials.finished_trials) == 6
    assert sorted(pts[:, 1]) == sorted(t.value for t in six_trials.trials)
    best_line = per_trial.lines[0].get_ydata()
    assert best_line[-1] == six_trials.best.value and list(best_line) == sorted(best_line)  # best so far only improves
    assert len(vs_x.collections[0].get_offsets()) == 6
    assert sorted(vs_x.collections[0].get_offsets()[:, 0]) == sorted(t.params["x"] for t in six_trials.trials)


def flaky(mode, x):
    if mode == "crash":
        raise ValueError("boom: bad batch")
    if mode == "silent":
        return {"other": 1.0}
    return {"score": x}


def test_failed_trials_are_reported_and_the_run_continues():
    r = fairing.tune(flaky, params={"mode": fairing.choice(["ok", "crash", "silent"]), "x": fairing.choice([1, 2])},
                     objective="score", trials=6, parallel=2, algorithm="grid", local_mode="process", progress=False)
    assert r.status == "Succeeded" and len(r.trials) == 6
    by_mode = {}
    for t in r.trials:
        by_mode.setdefault(t.params["mode"], []).append(t)
    assert {t.state for t in by_mode["ok"]} == {"Succeeded"}
    for t in by_mode["crash"]:
        assert t.state == "Failed" and "ValueError: boom: bad batch" in t.error
    for t in by_mode["silent"]:
        assert t.state == "Failed"
        assert "'score' was never printed" in t.error and "score=<number>" in t.error
    assert r.best.params == {"mode": "ok", "x": 2} and r.best.value == 2  # maximize by default in the API


def always_fails(x):
    raise RuntimeError("no GPU here")


def test_max_failed_stops_the_run():
    with pytest.raises(TuneFailed, match=r"stopped after 2 failed trials \(max_failed=1\).*no GPU here") as e:
        fairing.tune(always_fails, params={"x": fairing.uniform(0, 1)}, objective="score", trials=6, parallel=1,
                     max_failed=1, local_mode="process", progress=False)
    r = e.value.result
    assert len(r.trials) == 2 and all(t.state == "Failed" for t in r.trials)
    assert r.best is None


def test_bad_tune_arguments_fail_before_any_trial():
    for kw, needle in [({"goal": "max"}, "goal must be"), ({"objective": "my score"}, "invalid objective"),
                       ({"trials": 0}, "trials must be"), ({"algorithm": "bayes"}, "unknown algorithm"),
                       ({"backend": "slurm"}, "unknown tuning backend"), ({"regsitry": "x"}, "unknown tune"),
                       ({"deployer": "serving"}, "cannot run on the serving deployer")]:
        args = {"objective": "score", "local_mode": "process", **kw}
        with pytest.raises(ConfigError, match=needle):
            fairing.tune(objective, params={"x": fairing.uniform(0, 6)}, **args)


# --- `fair tune` -----------------------------------------------------------------------------------

def test_cli_tunes_a_script_with_args_env_and_plot(tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    r = fair("tune", "train.py", "--param", "x=0..6", "--objective", "score", "--maximize", "--trials", "4",
             "--parallel", "2", "--algorithm", "random", "--seed", "3", "--local-mode", "process",
             "--plot", "tune.png", "-o", "json", cwd=tmp_path, env=env(), check=0)
    out = json.loads(r.stdout)
    assert out["status"] == "Succeeded" and out["backend"] == "local" and len(out["trials"]) == 4
    for t in out["trials"]:
        assert t["value"] == pytest.approx(-(t["params"]["x"] - 3) ** 2)
    assert out["best"]["value"] == max(t["value"] for t in out["trials"])
    assert (tmp_path / "tune.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_text_output_has_the_table_and_the_best_trial(tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    r = fair("tune", "train.py", "--param", "x=0..6", "--objective", "score", "--maximize", "--trials", "3",
             "--parallel", "3", "--local-mode", "process", cwd=tmp_path, env=env(), check=0)
    assert "Succeeded" in r.stdout and r.stdout.count("Succeeded") == 3
    assert "best: trial" in r.stdout and "score=" in r.stdout and "image: context:" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["--param", "lr=1e-4..", "--objective", "acc"], "bad --param 'lr=1e-4..'"),
    (["--param", "lr", "--objective", "acc"], "bad --param 'lr'"),
    (["--param", "x=0..1"], "--objective is required"),
    (["--objective", "acc"], "no --param given"),
    (["--param", "x=0..1", "--objective", "acc", "--maximize", "--minimize"], "both given"),
    (["--param", "x=0..1", "--objective", "acc", "--algorithm", "bayes"], "unknown algorithm"),
    (["--param", "x=0..1", "--objective", "acc", "--backend", "slurm"], "unknown tuning backend"),
    (["--param", "x=0..1", "--objective", "acc", "--deployer", "tfjob"], "cannot run on the tfjob deployer"),
    (["--param", "x=0..1", "--objective", "acc", "--schedule", "0 3 * * *"], "cannot be scheduled"),
    (["--param", "x=0..1", "--objective", "acc", "--trials", "0"], "trials must be"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    (tmp_path / "train.py").write_text(TRAIN)
    r = fair("tune", "train.py", *args, "--local-mode", "process", cwd=tmp_path, env=env())
    assert_one_error(r, 2, needle)
    assert not list(tmp_path.glob("*.png"))


def test_cli_failing_trials_exit_1_with_the_table(tmp_path):
    (tmp_path / "train.py").write_text("import sys\nprint('loading')\nsys.exit('out of data')\n")
    r = fair("tune", "train.py", "--param", "x=0..6", "--objective", "score", "--trials", "3", "--parallel", "1",
             "--max-failed", "0", "--local-mode", "process", cwd=tmp_path, env=env())
    line = assert_one_error(r, 1, "stopped after 1 failed trial (max_failed=0)")
    assert "out of data" in line
    assert r.stdout.count("Failed") == 1 and "no trial finished" in r.stdout


def test_ctrl_c_stops_the_running_trials(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    (tmp_path / "train.py").write_text("import os, time\n"
                                       f"open(os.path.join({str(pids)!r}, str(os.getpid())), 'w').close()\n"
                                       "time.sleep(120)\nprint('score=1')\n")
    cmd = [sys.executable, "-m", "fairing.cli", "tune", "train.py", "--param", "x=0..6", "--objective", "score",
           "--trials", "4", "--parallel", "2", "--local-mode", "process"]
    e = env(FAIRING_RUNS=str(tmp_path / "runs.db"))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    started = [int(p.name) for p in pids.iterdir()]
    assert len(started) == 2, "two trials should be running"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "error: interrupted" in err and "Traceback" not in err
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert len(list(pids.iterdir())) == 2  # nothing new started after Ctrl-C
    # the records say so: the tuning run and both running trials ended Failed, "interrupted"
    recs = json.loads(fair("runs", "-o", "json", env=e, check=0).stdout)
    assert sorted((r["command"], r["status"], r.get("reason")) for r in recs) == [
        ("trial", "Failed", "interrupted"), ("trial", "Failed", "interrupted"), ("tune", "Failed", "interrupted")]


# --- dry run: the search space and the trial template / Experiment ------------------------------

def test_dry_run_local_shows_space_and_the_trial_run(tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    r = fair("tune", "train.py", "--param", "x=0..6", "--param", "opt=adam,sgd", "--objective", "score",
             "--local-mode", "process", "--dry-run", "-o", "json", cwd=tmp_path, env=env(), check=0)
    out = json.loads(r.stdout)
    assert out["space"] == {"x": "uniform(0, 6)", "opt": "choice(adam, sgd)"} and out["backend"] == "local"
    run = out["manifests"][0]
    assert run["kind"] == "LocalRun"
    assert run["spec"]["command"][-4:] == ["--x", "3.0", "--opt", "sgd"] or run["spec"]["command"][-4:] == ["--x", "3.0", "--opt", "adam"]
    assert {"name": "FAIRING_PARAM_X", "value": "3.0"} in run["spec"]["env"]


def test_dry_run_katib_prints_the_experiment(tmp_path, registry):
    (tmp_path / "train.py").write_text(TRAIN)
    r = fair("tune", "train.py", "--param", "x=0..6", "--param", "lr=1e-4..1e-1:log", "--param", "layers=1,2,3",
             "--objective", "accuracy", "--maximize", "--trials", "6", "--parallel", "2", "--max-failed", "1",
             "--algorithm", "random", "--backend", "katib", "--registry", f"{registry.host}/team",
             "-n", "team-a", "--dry-run", cwd=tmp_path, env=env(), check=0)
    import yaml

    assert "#   lr: loguniform(0.0001, 0.1)" in r.stdout and "#   layers: choice(1, 2, 3)" in r.stdout
    exp = [d for d in yaml.safe_load_all(r.stdout.split("\n---\n", 1)[1])][0]
    assert exp["apiVersion"] == "kubeflow.org/v1beta1" and exp["kind"] == "Experiment"
    assert exp["metadata"]["namespace"] == "team-a"
    spec = exp["spec"]
    # --max-failed 1 tolerates one failed trial; Katib stops when failures *reach* its count
    assert (spec["maxTrialCount"], spec["parallelTrialCount"], spec["maxFailedTrialCount"]) == (6, 2, 2)
    assert spec["objective"] == {"type": "maximize", "objectiveMetricName": "accuracy",
                                 "metricStrategies": [{"name": "accuracy", "value": "latest"}]}
    # A fresh seed for Katib's suggestion, named in the header: another run tries other points.
    seed = int(r.stdout.split(", seed ", 1)[1].split()[0])
    assert spec["algorithm"] == {"algorithmName": "random", "algorithmSettings": [{"name": "random_state", "value": str(seed)}]}
    assert spec["metricsCollectorSpec"] == {"collector": {"kind": "StdOut"}}
    assert [p["name"] for p in spec["parameters"]] == ["x", "lr", "layers"]
    assert spec["parameters"][1]["feasibleSpace"]["distribution"] == "logUniform"
    tt = spec["trialTemplate"]
    assert tt["primaryContainerName"] == "main"
    assert [p["reference"] for p in tt["trialParameters"]] == ["x", "lr", "layers"]
    job = tt["trialSpec"]
    assert job["kind"] == "Job" and "name" not in job["metadata"] and job["spec"]["backoffLimit"] == 0
    main = job["spec"]["template"]["spec"]["containers"][0]
    assert main["name"] == "main" and main["image"].startswith(f"{registry.host}/team/fairing-train")
    assert main["args"] == ["--x", "${trialParameters.x}", "--lr", "${trialParameters.lr}",
                            "--layers", "${trialParameters.layers}"]
    assert {"name": "FAIRING_PARAM_LR", "value": "${trialParameters.lr}"} in main["env"]


def test_dry_run_jobs_prints_one_trial_job(tmp_path, registry):
    (tmp_path / "train.py").write_text(TRAIN)
    r = fair("tune", "train.py", "--param", "x=0..6", "--objective", "score", "--backend", "jobs",
             "--registry", f"{registry.host}/team", "--name", "sweep", "--dry-run", "-o", "json",
             cwd=tmp_path, env=env(), check=0)
    out = json.loads(r.stdout)
    job = out["manifests"][0]
    assert job["kind"] == "Job" and job["metadata"]["name"] == "sweep-0"
    main = job["spec"]["template"]["spec"]["containers"][0]
    assert main["args"] == ["--x", "3.0"] and {"name": "FAIRING_PARAM_X", "value": "3.0"} in main["env"]


@pytest.mark.parametrize("backend", ["jobs", "katib"])
def test_dry_run_shows_the_trials_outputs_wiring(tmp_path, registry, backend):
    """A tuning dry run prints what its trials would get to keep their outputs, as `fair train
    --dry-run` does: the store's env on the trial pod, the credentials Secret (created before the
    trials, values never shown) mounted into it, and the trial's run identity (a jobs trial: its
    run id; a Katib trial: its run named after its Job, under the tuning run)."""
    import yaml

    (tmp_path / "train.py").write_text(TRAIN)
    key = "dry-tune-secret-never-shown"
    r = fair("tune", "train.py", "--param", "x=0..6", "--objective", "score", "--backend", backend,
             "--registry", f"{registry.host}/team", "--name", "sweep", "--outputs", "s3://bucket/runs", "--dry-run",
             cwd=tmp_path, env=env(AWS_ACCESS_KEY_ID="AKIDTUNE", AWS_SECRET_ACCESS_KEY=key,
                                   AWS_ENDPOINT_URL="http://10.0.0.1:8333"), check=0)
    assert r.returncode == 0, r.stderr
    assert key not in r.stdout + r.stderr and "AKIDTUNE" not in r.stdout + r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d and "kind" in d]
    assert [d["kind"] for d in docs] == ["Secret", "Job" if backend == "jobs" else "Experiment"]
    secret, workload = docs
    job = workload if backend == "jobs" else workload["spec"]["trialTemplate"]["trialSpec"]
    run_id = job["metadata"]["labels"]["fairing.dev/run-id"]
    assert secret["metadata"]["name"] == f"fairing-outputs-{run_id}"
    assert secret["data"] == {"auth.json": "<redacted: set at deploy from your store credentials>"}
    pod = job["spec"]["template"]["spec"]
    env_of = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert json.loads(env_of["FAIRING_OUTPUTS_STORE"])["kind"] == "s3"
    assert [v["secret"]["secretName"] for v in pod["volumes"]] == [secret["metadata"]["name"]]
    assert env_of["FAIRING_IMAGE"] == pod["containers"][0]["image"]
    if backend == "jobs":
        assert env_of["FAIRING_RUN_ID"] == run_id
    else:  # each trial's run is named after the Job Katib makes, its parent the tuning run
        assert "FAIRING_RUN_ID" not in env_of and env_of["FAIRING_RUN_PARENT"] == run_id


# --- local containers: the image is built and pushed once ----------------------------------------

def manifest_puts(repo: str) -> int:
    from tests.rig.state import rig_dir

    log = (rig_dir() / "registry-plain.log").read_text(errors="replace")
    return sum(1 for line in log.splitlines() if f'"PUT /v2/{repo}/manifests/' in line)


def test_container_trials_run_one_pushed_image(tmp_path, registry, engine, base_image):
    (tmp_path / "train.py").write_text(TRAIN)
    team = f"tune{uuid.uuid4().hex[:8]}"
    r = fair("tune", "train.py", "--param", "x=0..6", "--objective", "score", "--maximize", "--trials", "4",
             "--parallel", "2", "--backend", "local", "--local-mode", "container", "--registry",
             f"{registry.host}/{team}", "--base-image", base_image.docker, "-o", "json",
             cwd=tmp_path, env=env(DOCKER_HOST=engine.docker_host), check=0)
    out = json.loads(r.stdout)
    assert out["status"] == "Succeeded" and len(out["trials"]) == 4
    for t in out["trials"]:
        assert t["value"] == pytest.approx(-(t["params"]["x"] - 3) ** 2)
    assert out["image"].startswith(f"{registry.host}/{team}/fairing-train@sha256:")
    # The rig registry's access log: exactly one manifest PUT for this run's repository, so every
    # trial ran that one image.
    assert manifest_puts(f"{team}/fairing-train") == 1
    names = {c.name for c in engine.client().containers.list(all=True)}
    assert not any(n.startswith(out["experiment"]) for n in names), "trial containers are removed"


def test_a_notebook_is_tuned_through_its_env(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# toy"),
                nbformat.v4.new_code_cell("import os\nx = float(os.environ['FAIRING_PARAM_X'])\n%matplotlib inline"),
                nbformat.v4.new_code_cell("print(f'loss={(x - 1) ** 2}')")]
    nbformat.write(nb, tmp_path / "train.ipynb")
    r = fair("tune", "train.ipynb", "--param", "x=0..2", "--objective", "loss", "--trials", "3", "--parallel", "3",
             "--local-mode", "process", "--name", "nb-sweep", "-o", "json", cwd=tmp_path, env=env(), check=0)
    out = json.loads(r.stdout)
    assert out["goal"] == "minimize" and [t["name"] for t in out["trials"]] == ["nb-sweep-0", "nb-sweep-1", "nb-sweep-2"]
    for t in out["trials"]:
        assert t["value"] == pytest.approx((t["params"]["x"] - 1) ** 2)
    assert out["best"]["value"] == min(t["value"] for t in out["trials"])
    bad = fair("tune", "train.ipynb", "--param", "x=0..2", "--objective", "loss", "--name", "Bad_Name",
               "--local-mode", "process", cwd=tmp_path, env=env())
    assert_one_error(bad, 2, "Bad_Name")


def test_a_function_may_return_the_objective_alone_but_not_a_string():
    r = fairing.tune(lambda x: (x - 1) ** 2, params={"x": fairing.intrange(0, 3)}, objective="loss", goal="minimize",
                     trials=4, parallel=2, algorithm="grid", local_mode="process", progress=False)
    assert sorted(t.params["x"] for t in r.trials) == [0, 1, 2, 3]  # ints, typed back from the env
    assert all(isinstance(t.params["x"], int) for t in r.trials)
    assert r.best.params == {"x": 1} and r.best.value == 0
    with pytest.raises(TuneFailed) as e:
        fairing.tune(lambda x: "done", params={"x": fairing.uniform(0, 1)}, objective="loss", trials=1, parallel=1,
                     local_mode="process", progress=False)
    assert "returned str, not a dict of metrics" in e.value.result.trials[0].error


def test_a_tuning_run_is_recorded_with_its_trials_nested_under_it(tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    e = env(FAIRING_RUNS=str(tmp_path / "runs.db"))
    r = fair("tune", "train.py", "--param", "x=0..6", "--objective", "score", "--maximize", "--trials", "3",
             "--parallel", "2", "--algorithm", "random", "--seed", "5", "--local-mode", "process",
             "-o", "json", cwd=tmp_path, env=e, check=0)
    out = json.loads(r.stdout)
    tune = json.loads(fair("runs", "show", out["run"], "-o", "json", env=e, check=0).stdout)
    assert tune["command"] == "tune" and tune["status"] == "Succeeded" and tune["parent"] is None
    assert tune["params"]["objective"] == "score" and tune["params"]["space.x"] == out["space"]["x"]
    assert tune["metrics"] == {"score": out["best"]["value"]}
    assert tune["best"]["params"] == out["best"]["params"]
    trials = json.loads(fair("runs", "--parent", out["run"][:6], "-o", "json", env=e, check=0).stdout)
    assert len(trials) == 3 and {t["command"] for t in trials} == {"trial"}
    by_name = {t["workload"]["name"]: t for t in trials}
    for t in out["trials"]:
        rec = by_name[t["name"]]
        assert rec["status"] == "Succeeded" and rec["parent"] == out["run"]
        assert rec["params"] == t["params"] and rec["metrics"]["score"] == pytest.approx(t["value"])
        # the one image every trial ran, and the code it holds
        assert rec["image"]["ref"] == out["image"] and rec["source"]["digest"] == tune["source"]["digest"]
    assert tune["best"]["run"] == by_name[out["best"]["name"]]["id"]
    # a failing trial is a Failed record with its reason
    (tmp_path / "train.py").write_text("import sys\nprint('bad input', file=sys.stderr)\nsys.exit(3)\n")
    r = fair("tune", "train.py", "--param", "x=0..6", "--objective", "score", "--trials", "1", "--local-mode",
             "process", "-o", "json", cwd=tmp_path, env=e, check=1)
    failed = json.loads(r.stdout)
    (trial,) = json.loads(fair("runs", "--parent", failed["run"], "-o", "json", env=e, check=0).stdout)
    assert trial["status"] == "Failed" and "bad input" in trial["reason"]
    tune = json.loads(fair("runs", "show", failed["run"], "-o", "json", env=e, check=0).stdout)
    assert tune["status"] == "Failed" and tune["reason"].startswith("no trial finished")


def scored_model(x):
    import os

    with open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.txt"), "w") as f:
        f.write(repr(x))  # the "model" each trial trains: its own parameter
    return {"score": -(x - 3) ** 2}


def test_each_trial_keeps_its_outputs_and_best_outputs_is_the_best_model(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAIRING_RUNS", str(tmp_path / "runs.db"))
    monkeypatch.chdir(tmp_path)
    r = fairing.tune(scored_model, params={"x": fairing.uniform(0, 6)}, objective="score", trials=3, parallel=1,
                     seed=3, local_mode="process", progress=False)
    assert r.status == "Succeeded"
    d = r.best.outputs
    assert d == tmp_path / "outputs" / r.best.run_id
    assert float((d / "model.txt").read_text()) == r.best.params["x"]
    others = [t for t in r.trials if t is not r.best]
    assert float((others[0].outputs / "model.txt").read_text()) == others[0].params["x"]
    assert fairing.runs.get(r.best.run_id)["parent"] == r.run
