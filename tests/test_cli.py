"""`fair` end to end, by subprocess: every command, on the embedded default (no registry, no
cluster, no engine), through the rig's Podman engine and registry, and every error path printing
exactly `error: ...` + `hint: ...` with its documented exit code and no traceback."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

# Every test here runs the `fair` console script in a subprocess (~1-2 s each): not the fast tier.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FAIR = shutil.which("fair") or ""


def clean_env(**extra) -> dict:
    """The machine's environment without anything that would point fair at a cluster, a registry
    or an engine: the "fresh machine" case. KUBECONFIG="" means "no kubeconfig" (even if
    ~/.kube/config exists)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FAIRING_", "DOCKER_")) and k != "KUBECONFIG"}
    env["KUBECONFIG"] = ""
    env.update({k: str(v) for k, v in extra.items()})
    return env


def fair(*args, cwd=None, env=None, timeout=600, check=None):
    cmd = [FAIR] if FAIR else [sys.executable, "-m", "fairing.cli"]
    r = subprocess.run([*cmd, *map(str, args)], cwd=cwd or ROOT, env=env or clean_env(),
                       capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert r.returncode == check, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def assert_one_error(r, code: int, *needles: str) -> str:
    """Exactly two stderr lines, `error: ...` then `hint: ...`, the exit code, no traceback."""
    assert r.returncode == code, f"exit {r.returncode}, wanted {code}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    lines = [l for l in r.stderr.splitlines() if l.startswith(("error:", "hint:"))]
    assert [l.split(":")[0] for l in lines] == ["error", "hint"], r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


# --- the embedded default: no registry, no cluster, no engine -------------------------------------

def test_fair_is_installed_as_a_console_script():
    assert FAIR, "the `fair` console script is not on PATH (pip install -e . installs it)"
    r = fair("--help", check=0)
    for cmd in ("build", "train", "deploy", "status", "logs", "delete", "list", "init", "config"):
        assert cmd in r.stdout
    assert "Exit codes" in r.stdout


def test_train_example_on_a_fresh_machine_runs_as_a_local_process(tmp_path):
    r = fair("train", EXAMPLES / "train.py", cwd=tmp_path, check=0)
    assert "trained: w=2.00 b=1.00" in r.stdout
    assert "ran inside fairing" in r.stdout  # FAIRING_RUNTIME=1 in the workload
    assert "mode: local process" in r.stderr
    assert "Succeeded (local process)" in r.stderr


def test_train_passes_script_arguments_and_prints_json(tmp_path):
    r = fair("train", EXAMPLES / "train.py", "-o", "json", "--", "--epochs", "50", cwd=tmp_path, check=0)
    data = json.loads(r.stdout)  # stdout is only the JSON document; the logs went to stderr
    assert data["mode"] == "local process" and data["status"] == "Succeeded"
    assert [s["stage"] for s in data["stages"]] == ["package", "deploy", "wait"]
    assert "epoch 50 loss" in r.stderr and "epoch 200" not in r.stderr


def test_train_with_requirements_installs_them_in_a_virtualenv(tmp_path):
    (tmp_path / "job.py").write_text("import six, sys\nprint('six', six.__version__, sys.prefix)\n")
    r = fair("train", "job.py", "--requirements", "six==1.16.0", cwd=tmp_path, check=0)
    line = next(l for l in r.stdout.splitlines() if l.startswith("six "))
    assert line.split()[1] == "1.16.0"
    assert "venvs" in line.split()[2]  # ran in fairing's cached virtualenv, not the host Python


def test_env_cpu_memory_options_reach_the_workload(tmp_path):
    (tmp_path / "env.py").write_text("import os\nprint('GREETING=' + os.environ['GREETING'])\n")
    r = fair("train", "env.py", "--env", "GREETING=hello world", "--cpu", "1", "--memory", "1Gi",
             cwd=tmp_path, check=0)
    assert "GREETING=hello world" in r.stdout


def test_failing_workload_exits_4_with_its_last_line(tmp_path):
    (tmp_path / "bad.py").write_text("print('starting')\nraise SystemExit('dataset missing: /data/x.csv')\n")
    r = fair("train", "bad.py", cwd=tmp_path)
    assert_one_error(r, 4, "failed with exit code 1", "dataset missing: /data/x.csv")
    assert "starting" in r.stdout


def test_dry_run_prints_the_plan_and_needs_nothing(tmp_path):
    r = fair("train", EXAMPLES / "train.py", "--dry-run", cwd=tmp_path, check=0)
    import yaml

    docs = list(yaml.safe_load_all(r.stdout))
    # The script, and the outputs shim that wraps its command in every image.
    assert docs[0]["files"] == [".fairing/metriclines.py", ".fairing/modeldocs.py", ".fairing/modellayer.py", ".fairing/outputs.py",
                                ".fairing/outputs_s3.py", "train.py"]
    assert docs[1]["kind"] == "LocalRun" and docs[1]["spec"]["command"][-1] == "train.py"
    assert "trained" not in r.stdout  # nothing ran


def test_ctrl_c_exits_130_and_leaves_no_temp_dir(tmp_path):
    (tmp_path / "slow.py").write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(60)\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cmd = [FAIR] if FAIR else [sys.executable, "-m", "fairing.cli"]
    p = subprocess.Popen([*cmd, "train", "slow.py"], cwd=tmp_path, env=clean_env(TMPDIR=tmp),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "sleeping"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert err.splitlines()[-2].startswith("error: interrupted") and "Traceback" not in err
    time.sleep(0.5)
    assert list(tmp.iterdir()) == []  # the run's temp dir went away with it


# --- error paths: one line + hint, documented exit codes -------------------------------------------

@pytest.mark.parametrize("args,code,needle", [
    (["train", "missing.py"], 2, "missing.py does not exist"),
    (["train", "x.py", "--bogus"], 2, "No such option: --bogus"),
    (["train"], 2, "Missing argument"),
    (["frobnicate"], 2, "No such command"),
    (["train", "x.py", "--builder", "kaniko2"], 2, "unknown builder 'kaniko2'"),
    (["train", "x.py", "--deployer", "nope"], 2, "unknown deployer 'nope'"),
    (["train", "x.py", "--deployer", "job"], 2, "needs a registry"),
    (["train", "x.py", "--schedule", "nightly"], 2, "cron expression"),
    (["train", "x.py", "--env", "NOVALUE"], 2, "is not KEY=VALUE"),
    (["train", "x.py", "--gpus", "-1"], 2, "--gpus"),
    (["train", "x.py", "-o", "xml"], 2, "--output must be text or json"),
    (["train", "x.py", "--profile", "prod"], 2, "profile 'prod'"),
    (["config", "show", "--local-mode", "cloud"], 2, "invalid --local-mode 'cloud': expected one of"),
    (["train", "notes.txt"], 2, "not a Python file"),
    (["build", "x.py"], 2, "nothing to build into"),
])
def test_usage_and_config_errors(tmp_path, args, code, needle):
    (tmp_path / "x.py").write_text("print('x')\n")
    (tmp_path / "notes.txt").write_text("hi\n")
    r = fair(*args, cwd=tmp_path)
    assert_one_error(r, code, needle)


def test_debug_shows_the_traceback(tmp_path):
    r = fair("train", "missing.py", "--debug", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" in r.stderr and "error: missing.py does not exist" in r.stderr


def test_unreachable_registry_is_a_build_error(tmp_path):
    (tmp_path / "x.py").write_text("print('x')\n")
    # Port 9 (discard) on loopback: nothing listens there.
    r = fair("build", "x.py", "--registry", "127.0.0.1:9/team", "--base-image", "127.0.0.1:9/python:3.11",
             cwd=tmp_path, timeout=120)
    assert_one_error(r, 3, "127.0.0.1:9")


def test_status_with_nothing_configured_says_where_it_looked(tmp_path):
    # (tests/test_messages.py checks the exact lines for status, logs and delete.)
    r = fair("status", "no-such-run", cwd=tmp_path, env=clean_env(DOCKER_HOST=f"unix://{tmp_path}/dead.sock"))
    assert_one_error(r, 2, "cannot look for workload 'no-such-run': no cluster (KUBECONFIG is set but empty)",
                     f"no container engine (none answered at unix://{tmp_path}/dead.sock)")


def test_shell_completion_completes_commands():
    env = clean_env(_FAIR_COMPLETE="complete_bash", COMP_WORDS="fair tr", COMP_CWORD="1")
    r = subprocess.run([FAIR], env=env, capture_output=True, text=True, timeout=60)
    assert "train" in r.stdout.split(), r.stdout + r.stderr


# --- through the rig: the Podman engine and the local registry --------------------------------------

def test_train_in_a_local_container_through_the_engine(tmp_path, engine, base_image):
    env = clean_env(DOCKER_HOST=engine.docker_host)
    r = fair("train", EXAMPLES / "train.py", "--base-image", base_image.docker, "--memory", "256Mi",
             cwd=tmp_path, env=env, check=0)
    assert "trained: w=2.00 b=1.00" in r.stdout and "ran inside fairing" in r.stdout
    assert "mode: local container" in r.stderr and "Succeeded (local container)" in r.stderr


def test_status_logs_list_delete_of_a_local_container(tmp_path, engine, base_image):
    env = clean_env(DOCKER_HOST=engine.docker_host)
    name = f"fair-cli-{uuid.uuid4().hex[:6]}"
    r = fair("train", EXAMPLES / "train.py", "--base-image", base_image.docker, "--detach", "--name", name,
             "-o", "json", cwd=tmp_path, env=env, check=0)
    assert json.loads(r.stdout)["name"] == name
    try:
        deadline = time.time() + 120
        while True:
            st = fair("status", name, "-o", "json", cwd=tmp_path, env=env, check=0)
            if json.loads(st.stdout)["status"] in ("Succeeded", "Failed") or time.time() > deadline:
                break
            time.sleep(0.5)
        assert json.loads(st.stdout)["status"] == "Succeeded"
        assert fair("status", name, cwd=tmp_path, env=env, check=0).stdout.split()[:2] == [name, "Succeeded"]
        logs = fair("logs", name, cwd=tmp_path, env=env, check=0)
        assert logs.stdout.splitlines()[-1] == "trained: w=2.00 b=1.00"
        followed = fair("logs", "-f", name, cwd=tmp_path, env=env, check=0)
        assert followed.stdout == logs.stdout
        listed = json.loads(fair("list", "-o", "json", cwd=tmp_path, env=env, check=0).stdout)
        assert any(w["name"] == name and w["status"] == "Succeeded" for w in listed)
        table = fair("list", cwd=tmp_path, env=env, check=0).stdout
        assert table.splitlines()[0].split()[:2] == ["NAME", "KIND"] and name in table
    finally:
        d = fair("delete", name, cwd=tmp_path, env=env)
    assert d.returncode == 0 and d.stdout.strip() == f"deleted {name}"
    assert_one_error(fair("status", name, cwd=tmp_path, env=env), 4, f"no local workload named {name!r}")
    client = engine.client()
    try:
        assert not client.containers.list(all=True, filters={"name": name})
    finally:
        client.close()


def test_build_pushes_to_the_registry_pinned_by_digest(tmp_path, registry, base_image):
    (tmp_path / "job.py").write_text("print('built')\n")
    repo = f"{registry.host}/fairing-cli/{uuid.uuid4().hex[:8]}"
    r = fair("build", "job.py", "--registry", registry.host + "/fairing-cli", "--image-name", repo.rsplit("/", 1)[1],
             "--base-image", base_image.docker, "-o", "json", cwd=tmp_path, check=0)
    data = json.loads(r.stdout)
    assert data["image"].startswith(repo + "@sha256:")
    digest = data["image"].split("@", 1)[1]
    name = repo.split("/", 1)[1]
    head = requests.head(f"{registry.url}/v2/{name}/manifests/{digest}", timeout=30, headers={"Accept": ", ".join([
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"])})
    assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == digest
    # text output: just the reference, for $(fair build ...)
    r2 = fair("build", "job.py", "--registry", registry.host + "/fairing-cli", "--image-name",
              repo.rsplit("/", 1)[1], "--base-image", base_image.docker, cwd=tmp_path, check=0)
    assert r2.stdout.strip() == data["image"]  # reproducible: same context, same digest


def test_build_dry_run_prints_the_plan_without_pushing(tmp_path, registry, base_image):
    (tmp_path / "job.py").write_text("print('built')\n")
    name = f"fairing-cli/dry-{uuid.uuid4().hex[:8]}"
    r = fair("build", "job.py", "--target", f"{registry.host}/{name}:v1", "--base-image", base_image.docker,
             "--dry-run", cwd=tmp_path, check=0)
    assert "job.py" in r.stdout and base_image.docker in r.stdout
    assert requests.get(f"{registry.url}/v2/{name}/tags/list", timeout=30).status_code == 404


def test_build_into_an_oci_layout(tmp_path, base_image):
    (tmp_path / "job.py").write_text("print('built')\n")
    r = fair("build", "job.py", "--target", f"oci:{tmp_path / 'layout'}", "--base-image", base_image.docker,
             cwd=tmp_path, check=0)
    assert r.stdout.strip().startswith(f"oci:{tmp_path / 'layout'}")
    assert (tmp_path / "layout" / "index.json").is_file()


# --- the cluster (rig control plane) ---------------------------------------------------------------

def cluster_env(kube, **extra):
    return clean_env(KUBECONFIG=kube.kubeconfig, **extra)


def test_train_goes_to_the_cluster_with_registry_and_kubeconfig(tmp_path, kube, registry, base_image):
    env = cluster_env(kube)
    name = f"cli-{uuid.uuid4().hex[:6]}"
    r = fair("train", EXAMPLES / "train.py", "--registry", f"{registry.host}/fairing-cli", "--base-image",
             base_image.docker, "--namespace", kube.namespace, "--name", name, "--detach", "-o", "json",
             cwd=tmp_path, env=env, check=0)
    data = json.loads(r.stdout)
    assert data["mode"] == "job on cluster" and data["name"] == name and "@sha256:" in data["image"]
    try:
        st = fair("status", name, "-n", kube.namespace, "-o", "json", cwd=tmp_path, env=env, check=0)
        assert json.loads(st.stdout)["status"] in ("Pending", "Running", "Succeeded")
        listed = json.loads(fair("list", "-n", kube.namespace, "-o", "json", cwd=tmp_path, env=env, check=0).stdout)
        assert any(w["name"] == name and w["kind"] == "Job" for w in listed)
        # kwok nodes run no containers, so there is no log text; following still ends with the Job,
        # each line prefixed with its pod.
        logs = fair("logs", "-f", name, "-n", kube.namespace, cwd=tmp_path, env=env, check=0)
        assert all(l.startswith(f"[{name}-") for l in logs.stdout.splitlines())
        st = fair("status", name, "-n", kube.namespace, cwd=tmp_path, env=env, check=0)
        assert st.stdout.split()[:2] == [name, "Succeeded"]
    finally:
        d = fair("delete", name, "-n", kube.namespace, cwd=tmp_path, env=env)
    assert d.returncode == 0, d.stderr
    assert_one_error(fair("status", name, "-n", kube.namespace, cwd=tmp_path, env=env), 4, name)


def test_dry_run_renders_job_and_cronjob_without_a_cluster(tmp_path):
    import yaml

    r = fair("train", EXAMPLES / "train.py", "--registry", "registry.example/team", "--deployer", "job",
             "--gpus", "1", "--dry-run", cwd=tmp_path, check=0)
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    job = next(d for d in docs if d.get("kind") == "Job")
    main = next(c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "main")
    assert main["resources"]["limits"]["nvidia.com/gpu"] in (1, "1")
    r = fair("train", EXAMPLES / "train.py", "--registry", "registry.example/team", "--schedule", "0 3 * * *",
             "--dry-run", cwd=tmp_path, check=0)
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    cron = next(d for d in docs if d.get("kind") == "CronJob")
    assert cron["spec"]["schedule"] == "0 3 * * *"


# --- fair deploy (delegates to fairing.serving) ----------------------------------------------------

MODEL = "class Doubler:\n    def predict(self, instances):\n        return [[2 * x for x in row] for row in instances]\n"


def test_deploy_serves_a_model_locally_and_fair_delete_removes_it(tmp_path, engine, base_image):
    (tmp_path / "model.py").write_text(MODEL)
    env = clean_env(DOCKER_HOST=engine.docker_host)
    name = f"dbl-{uuid.uuid4().hex[:6]}"
    r = fair("deploy", "model.py:Doubler", "--name", name, "--base-image", base_image.docker, "-o", "json",
             cwd=tmp_path, env=env, check=0)
    data = json.loads(r.stdout)
    try:
        assert data["url"].startswith("http://127.0.0.1:")
        resp = requests.post(f"{data['url']}/v1/models/{name}:predict", json={"instances": [[1, 2.5]]}, timeout=30)
        assert resp.json() == {"predictions": [[2, 5.0]]}
        listed = json.loads(fair("list", "-o", "json", cwd=tmp_path, env=env, check=0).stdout)
        assert any(w["name"] == data["name"] and w["status"] == "Running" for w in listed)
    finally:
        d = fair("delete", data["name"], cwd=tmp_path, env=env)
    assert d.returncode == 0, d.stderr
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{data['url']}/v1/models/{name}:predict", json={"instances": [[1]]}, timeout=5)


def test_deploy_ships_model_files_with_file(tmp_path, engine, base_image):
    """The serve_sklearn example from the CLI: model.joblib (trained into a scratch dir) goes into
    the image with --file; the endpoint predicts, `fair status` sees it Ready, `fair delete` ends it."""
    from importlib.metadata import version

    example = EXAMPLES / "serve_sklearn"
    work = tmp_path / "iris"
    work.mkdir()
    for f in ("model.py", "train.py"):
        (work / f).write_text((example / f).read_text())
    subprocess.run([sys.executable, "train.py", str(work)], cwd=work, check=True, capture_output=True, timeout=300)
    reqs = ",".join(f"{d}=={version(d)}" for d in ("scikit-learn", "numpy", "scipy", "joblib"))
    env = clean_env(DOCKER_HOST=engine.docker_host)
    name = f"iris-{uuid.uuid4().hex[:6]}"
    # Run from tmp_path, so --file is a path from the current directory, not from model.py's.
    r = fair("deploy", "iris/model.py:IrisModel", "--deployer", "local", "--file", "iris/model.joblib",
             "--name", name, "--base-image", base_image.docker, "-r", reqs, "--timeout", "300",
             cwd=tmp_path, env=env, check=0)
    url = r.stdout.strip()
    try:
        assert url.startswith("http://127.0.0.1:"), r.stdout + r.stderr
        resp = requests.post(f"{url}/v1/models/{name}:predict", timeout=30,
                             json={"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
        assert resp.json() == {"predictions": [0, 2]}
        assert fair("status", name, cwd=tmp_path, env=env, check=0).stdout.split()[:2] == [name, "Ready"]
    finally:
        d = fair("delete", name, cwd=tmp_path, env=env)
    assert d.returncode == 0 and d.stdout.strip() == f"deleted {name}", d.stderr
    assert_one_error(fair("status", name, cwd=tmp_path, env=env), 4, f"no local workload named {name!r}")
    # Without the file the model cannot load: a missing --file path is a clear error before any build.
    assert_one_error(fair("deploy", "iris/model.py:IrisModel", "--deployer", "local", "--file", "nope.joblib",
                          "--base-image", base_image.docker, cwd=tmp_path, env=env), 2,
                     "model file nope.joblib does not exist")


def test_deploy_dry_run_renders_deployment_and_service_without_a_cluster(tmp_path):
    import yaml

    (tmp_path / "model.py").write_text(MODEL)
    r = fair("deploy", "model.py:Doubler", "--registry", "registry.example/team", "--deployer", "serving",
             "--cpu", "1", "--dry-run", cwd=tmp_path, check=0)
    assert r.stdout.startswith("# mode: serving on cluster")
    kinds = [d["kind"] for d in yaml.safe_load_all(r.stdout) if d and "kind" in d]
    assert "Deployment" in kinds and "Service" in kinds


def test_deploy_storage_uri_reaches_the_serving_pod(tmp_path):
    import yaml

    (tmp_path / "model.py").write_text(MODEL)
    r = fair("deploy", "model.py:Doubler", "--registry", "registry.example/team", "--deployer", "serving",
             "--storage-uri", "https://models.example/iris/model.joblib", "--dry-run", cwd=tmp_path, check=0)
    dep = next(d for d in yaml.safe_load_all(r.stdout) if d and d.get("kind") == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    assert env.get("FAIRING_STORAGE_URI") == "https://models.example/iris/model.joblib", env
    assert_one_error(fair("deploy", "model.py:Doubler", "--registry", "registry.example/team", "--deployer",
                          "serving", "--storage-uri", "s3://bucket/m", "--dry-run", cwd=tmp_path), 2, "storage_uri")


def test_deploy_errors(tmp_path):
    (tmp_path / "model.py").write_text(MODEL)
    assert_one_error(fair("deploy", "model.py:Doubler", "--deployer", "job", cwd=tmp_path), 2, "does not serve models")
    assert_one_error(fair("deploy", "model.py:Doubler", "--deployer", "serving", cwd=tmp_path), 2, "needs a registry")
    r = fair("deploy", "model.py:Nope", "--registry", "r.example/t", "--deployer", "serving", "--dry-run", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr and r.stderr.startswith("error: ")


def test_train_on_the_cluster_waits_for_the_job(tmp_path, kube, registry, base_image):
    r = fair("train", EXAMPLES / "train.py", "--registry", f"{registry.host}/fairing-cli", "--base-image",
             base_image.docker, "--namespace", kube.namespace, cwd=tmp_path, env=cluster_env(kube), check=0)
    assert "mode: job on cluster" in r.stderr
    name = r.stderr.strip().splitlines()[-1].split()[1]
    assert r.stderr.strip().endswith("Succeeded (job on cluster)")
    fair("delete", name, "-n", kube.namespace, cwd=tmp_path, env=cluster_env(kube), check=0)
