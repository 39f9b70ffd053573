"""What `fair` says, line by line: warnings as one `warning: ...` line, notices as `fair: ...`,
settings errors naming the option as typed, explicit options never silently ignored, local input
checked before any engine or cluster is contacted, and "where did it look" in every not-found.

Each test points DOCKER_HOST at a socket nobody listens on and KUBECONFIG at nothing, so the
messages are the same on every machine and "contacted nothing first" is observable."""
from __future__ import annotations

import warnings

import nbformat
import pytest

from tests.test_cli import clean_env, fair

NO_CLUSTER = "KUBECONFIG is set but empty"
HINT_CLUSTER = "pass --kubeconfig FILE to use a cluster, or --deployer local to run here without them"


@pytest.fixture
def env(tmp_path):
    return clean_env(DOCKER_HOST=f"unix://{tmp_path}/dead.sock")


def lines(r):
    return r.stderr.splitlines()


def error(r, code):
    assert r.returncode == code, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    return [line for line in lines(r) if line.startswith(("error:", "hint:"))]


def test_notebook_warnings_and_notice_are_one_line_each(tmp_path, env):
    cells = [nbformat.v4.new_code_cell("%pip install six\nprint('hi')"), nbformat.v4.new_code_cell("%%sql\nselect 1")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), str(tmp_path / "nb.ipynb"))
    r = fair("train", "nb.ipynb", "--local-mode", "process", "--dry-run", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert lines(r) == [
        "warning: notebook nb.ipynb: dropped cell-magic cells, they do not run outside IPython: cell 2 (%%sql)",
        "fair: notebook nb.ipynb: requirements from its install lines: six",
        "warning: notebook nb.ipynb: unpinned installs six: the image gets whatever version is newest when it is "
        "built; pin them (name==version) to make it reproducible",
    ]


def test_in_python_warnings_stay_warnings(tmp_path):
    from fairing.preprocessors.notebook import NotebookPreprocessor, NotebookWarning

    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%pip install six\nx = 1")]),
                   str(tmp_path / "nb.ipynb"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ResourceWarning)  # a socket an earlier test left to the GC
        NotebookPreprocessor().prepare(tmp_path / "nb.ipynb")
    assert [(w.category, w.filename.endswith("test_messages.py")) for w in caught] == [(NotebookWarning, True)]


@pytest.mark.parametrize("args,message,hint", [
    (["--schedule", "nightly"], "invalid --schedule 'nightly': expected a cron expression with 5 fields, "
     "e.g. \"0 3 * * *\", or @daily", "--schedule: cron schedule; makes the training a CronJob"),
    (["--env", "NOVALUE"], "invalid --env: 'NOVALUE' is not KEY=VALUE",
     "--env: environment variables for the workload"),
])
def test_settings_errors_name_the_option_as_typed(tmp_path, env, args, message, hint):
    (tmp_path / "x.py").write_text("print('x')\n")
    assert error(fair("train", "x.py", *args, cwd=tmp_path, env=env), 2) == [f"error: {message}", f"hint: {hint}"]


@pytest.mark.parametrize("args,message", [
    (["--registry", "r.example/team", "-n", "team-a"], f"--registry and --namespace need a cluster, but no kubeconfig "
                                                       f"was found ({NO_CLUSTER})"),
    (["--context", "dev"], f"--context needs a cluster, but no kubeconfig was found ({NO_CLUSTER})"),
    (["--registry", "r.example/team", "--local-mode", "process"],
     f"--registry needs a cluster, but no kubeconfig was found ({NO_CLUSTER})"),
    (["--queue", "team-q", "--nodes", "2"], f"--queue and --nodes need a cluster, but no kubeconfig was found ({NO_CLUSTER})"),
])
def test_cluster_options_without_a_cluster_are_an_error(tmp_path, env, args, message):
    (tmp_path / "x.py").write_text("print('ran')\n")
    r = fair("train", "x.py", *args, cwd=tmp_path, env=env)
    assert error(r, 2) == [f"error: {message}", f"hint: {HINT_CLUSTER}"]
    assert "ran" not in r.stdout


def test_cluster_options_from_the_environment_are_named_as_set(tmp_path, env):
    (tmp_path / "x.py").write_text("print('ran')\n")
    r = fair("train", "x.py", cwd=tmp_path, env={**env, "FAIRING_NAMESPACE": "team-a"})
    assert error(r, 2)[0] == f"error: FAIRING_NAMESPACE needs a cluster, but no kubeconfig was found ({NO_CLUSTER})"


@pytest.mark.parametrize("args,message,hint", [
    (["-n", "team-a"], "--namespace means nothing to the local deployer (it runs here, not on a cluster)",
     "drop --namespace, or use a cluster deployer (e.g. --deployer job) with a kubeconfig"),
    (["--registry", "r.example/team", "--local-mode", "process"],
     "--registry is not used by a local process run (nothing is built or pushed)",
     "drop --registry, or run in a container (--local-mode container, with Docker/Podman running) so the image is "
     "built and pushed there"),
])
def test_explicit_local_deployer_refuses_options_it_would_drop(tmp_path, env, args, message, hint):
    (tmp_path / "x.py").write_text("print('ran')\n")
    r = fair("train", "x.py", "--deployer", "local", *args, cwd=tmp_path, env=env)
    assert error(r, 2) == [f"error: {message}", f"hint: {hint}"]
    assert "ran" not in r.stdout
    # Without the dropped option the same run goes through.
    r = fair("train", "x.py", "--deployer", "local", "--local-mode", "process", cwd=tmp_path, env=env)
    assert r.returncode == 0 and "ran" in r.stdout, r.stderr


def test_mode_line_says_what_was_found(tmp_path, env):
    (tmp_path / "x.py").write_text("print('ran')\n")
    r = fair("train", "x.py", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert lines(r)[0] == (f"fair: mode: local process (no container engine: none answered at {env['DOCKER_HOST']}; "
                           f"no cluster: {NO_CLUSTER})")
    r = fair("train", "x.py", "--local-mode", "process", cwd=tmp_path, env=env)
    assert lines(r)[0] == f"fair: mode: local process (--local-mode process; no cluster: {NO_CLUSTER})"


def test_deploy_reports_the_missing_file_before_any_engine(tmp_path, env):
    r = fair("deploy", "missing.py:Model", cwd=tmp_path, env=env)
    assert error(r, 2) == ["error: model file missing.py does not exist",
                           "hint: check the path (relative to the current directory)"]
    (tmp_path / "model.py").write_text("class Other:\n    def predict(self, x):\n        return x\n")
    r = fair("deploy", "model.py:Model", cwd=tmp_path, env=env)
    assert error(r, 2) == ["error: model.py defines no 'Model'", "hint: classes in it: Other"]


def test_local_container_mode_reports_local_mistakes_before_the_missing_engine(tmp_path, env):
    # Explicitly asking for a container with no engine running: a missing file or a broken notebook
    # is still the first thing said; the engine comes up only once the entry is fine.
    r = fair("train", "missing.py", "--local-mode", "container", cwd=tmp_path, env=env)
    assert error(r, 2)[0] == "error: missing.py does not exist"
    (tmp_path / "broken.ipynb").write_text("{not json")
    r = fair("train", "broken.ipynb", "--local-mode", "container", cwd=tmp_path, env=env)
    assert error(r, 2)[0].startswith("error: notebook broken.ipynb is not valid JSON: ")
    (tmp_path / "x.py").write_text("print('ran')\n")
    r = fair("train", "x.py", "--local-mode", "container", cwd=tmp_path, env=env)
    assert error(r, 4)[0] == f"error: no Docker/Podman API answered ({env['DOCKER_HOST']})"
    assert "ran" not in r.stdout


@pytest.mark.parametrize("verb", ["status", "logs", "delete"])
def test_status_logs_delete_with_nothing_configured_say_where_they_looked(tmp_path, env, verb):
    r = fair(verb, "train-1", cwd=tmp_path, env=env)
    assert error(r, 2) == [
        f"error: cannot look for workload 'train-1': no cluster ({NO_CLUSTER}) and no container engine "
        f"(none answered at {env['DOCKER_HOST']})",
        "hint: pass --kubeconfig FILE (or --context) for a cluster workload, or set DOCKER_HOST for a local "
        "container; local process runs end with the command that started them"]
