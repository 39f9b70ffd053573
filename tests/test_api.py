"""The Python API: TrainJob with every kind of entry point, the one-liner config API, runtime mode,
and `import fairing` staying light."""
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import fairing.config as config
from fairing.api import TrainJob
from fairing.errors import ConfigError, DeployError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_machine(monkeypatch, tmp_path):
    """No cluster, no registry, no engine, no config file: the embedded default."""
    for k in list(os.environ):
        if k.startswith(("FAIRING_", "DOCKER_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("KUBECONFIG", "")
    monkeypatch.chdir(tmp_path)
    config.reset()
    yield
    config.reset()


def square_plus(x, extra=0):
    return x * x + extra


def test_trainjob_with_a_function_returns_its_value():
    h = TrainJob(square_plus, args=(7,), kwargs={"extra": 1}).submit()
    assert h.mode == "process"
    h.wait()
    assert h.result() == 50
    h.delete()


def test_trainjob_with_a_file_a_directory_and_a_notebook(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    (tmp_path / "script.py").write_text("import sys\nprint('script', *sys.argv[1:])\n")
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "main.py").write_text("from helper import X\nprint('dir', X)\n")
    (tmp_path / "proj" / "helper.py").write_text("X = 41 + 1\n")
    nbformat.write(new_notebook(cells=[new_code_cell("%matplotlib inline\nx = 6 * 7"), new_code_cell("print('nb', x)")]),
                   tmp_path / "nb.ipynb")
    for entry, kw, expected in [("script.py", {"args": ["a", "b"]}, "script a b"), ("proj", {}, "dir 42"),
                                ("nb.ipynb", {}, "nb 42")]:
        h = TrainJob(tmp_path / entry, **kw).submit()
        assert h.wait() == "Succeeded"
        assert list(h.logs()) == [expected], entry
        with pytest.raises(ConfigError, match="has no return value"):
            h.result()
        h.delete()


def test_trainjob_failure_and_timeout(tmp_path):
    (tmp_path / "bad.py").write_text("raise RuntimeError('loss is NaN')\n")
    h = TrainJob(tmp_path / "bad.py").submit()
    with pytest.raises(DeployError, match="RuntimeError: loss is NaN"):
        h.wait()
    h.delete()
    (tmp_path / "slow.py").write_text("import time; time.sleep(30)\n")
    h = TrainJob(tmp_path / "slow.py", timeout=1).submit()
    with pytest.raises(DeployError, match="still running after 1s"):
        h.wait(timeout=1)
    h.delete()


def test_trainjob_rejects_bad_options_before_doing_anything(tmp_path):
    with pytest.raises(ConfigError, match="unknown resource 'disk'"):
        TrainJob("x.py", resources={"disk": "1Gi"})
    with pytest.raises(ConfigError, match="cron expression"):
        TrainJob("x.py", schedule="daily-ish")
    with pytest.raises(ConfigError, match="unknown deployer"):
        TrainJob(square_plus, deployer="slurm").submit()
    with pytest.raises(ConfigError, match="needs a registry"):
        TrainJob(square_plus, deployer="job").submit()


@pytest.mark.slow
def test_trainjob_schedule_renders_a_cronjob_pinned_by_digest(tmp_path):
    (tmp_path / "t.py").write_text("print(1)\n")
    plan = TrainJob(tmp_path / "t.py", registry="registry.example/team", schedule="0 3 * * *",
                    resources={"cpu": "2", "memory": "1Gi", "gpus": 1}).dry_run()
    [cron] = [m for m in plan["manifests"] if m["kind"] == "CronJob"]
    assert cron["spec"]["schedule"] == "0 3 * * *"
    tpl = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    main = next(c for c in tpl["containers"] if c["name"] == "main")
    assert "@sha256:" in main["image"] and main["image"].startswith("registry.example/team/")
    assert main["resources"]["limits"]["memory"] == "1Gi"
    assert str(main["resources"]["limits"]["nvidia.com/gpu"]) == "1"


def test_trainjob_on_the_cluster(kube, registry, base_image, tmp_path):
    (tmp_path / "t.py").write_text("print('on the cluster')\n")
    name = f"api-{uuid.uuid4().hex[:6]}"
    job = TrainJob(tmp_path / "t.py", registry=f"{registry.host}/fairing-api", base_image=base_image.docker,
                   kubeconfig=kube.kubeconfig, namespace=kube.namespace, name=name)
    h = job.submit()
    try:
        assert h.name == name and "@sha256:" in job.image.ref
        assert h.wait(timeout=300) == "Succeeded"
    finally:
        h.delete()


# --- the one-liner API -------------------------------------------------------------------------

def test_one_liner_run_with_set_preprocessor_options(tmp_path):
    (tmp_path / "job.py").write_text("print('one liner')\n")
    config.set_preprocessor("python", path=str(tmp_path / "job.py"))
    config.set_deployer("local")
    image, handle = config.run()
    assert image.ref.startswith("context:") and handle.wait() == "Succeeded"
    assert list(handle.logs()) == ["one liner"]
    handle.delete()


def test_one_liner_rejects_unknown_names():
    with pytest.raises(ConfigError, match="unknown builder 'kaniko9'"):
        config.set_builder("kaniko9")
    with pytest.raises(ConfigError, match="unknown preprocessor"):
        config.set_preprocessor("r-script")


def test_fn_runs_remotely_and_returns_the_value():
    assert config.fn(square_plus)(5, extra=2) == 27


def test_fn_propagates_the_remote_error():
    def boom():
        raise ValueError("remote failure 123")

    with pytest.raises(DeployError, match="ValueError: remote failure 123"):
        config.fn(boom)()


def test_runtime_mode_run_does_nothing_and_fn_calls_directly(monkeypatch):
    monkeypatch.setenv("FAIRING_RUNTIME", "1")
    res = config.run("does-not-matter.py")
    assert res.mode == "skipped (runtime)" and res.handle is None
    assert config.fn(square_plus)(3) == 9


@pytest.mark.slow
def test_a_notebook_that_calls_run_does_not_relaunch_itself(tmp_path):
    """Executed for real with nbclient: the notebook calls fairing.config.run() on itself (no
    exclude tags); the workload runs the same code with FAIRING_RUNTIME=1, so run() is a no-op
    there instead of launching a workload from the workload."""
    import nbclient
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[
        new_code_cell("import fairing.config"),
        new_code_cell("print('training step')"),
        new_code_cell("res = fairing.config.run('self.ipynb', wait=True)\nprint('run mode:', res.mode)\n"
                      "if res.handle is not None:\n    print('\\n'.join('child: ' + l for l in res.handle.logs()))\n"
                      "    res.handle.delete()"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "self.ipynb")
    nbclient.NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    assert "run mode: local process" in text
    assert "child: training step" in text
    assert "child: run mode: skipped (runtime)" in text  # the workload did not launch another one


# --- import weight -----------------------------------------------------------------------------

HEAVY = ("kubernetes", "docker", "nbconvert", "requests", "nbclient", "cloudpickle", "yaml", "rich", "typer")


@pytest.mark.parametrize("stmt,allowed", [
    ("import fairing", ()),
    ("import fairing.config", ("yaml",)),
    ("import fairing.api", ("yaml",)),
    ("import fairing.settings", ()),
    ("import fairing.cli", ("rich", "typer")),
])
def test_imports_stay_light(stmt, allowed):
    code = f"import sys\n{stmt}\nprint(__import__('json').dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = [m for m in json.loads(out) if m not in allowed]
    assert loaded == [], f"`{stmt}` imported {loaded}"


def test_top_level_names_resolve_lazily():
    code = textwrap.dedent("""
        import sys, fairing
        assert 'fairing.api' not in sys.modules
        assert fairing.TrainJob.__name__ == 'TrainJob'
        assert callable(fairing.config.run)
        assert fairing.PredictionEndpoint.__name__ == 'PredictionEndpoint'
        print('ok')
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr[-2000:]


def test_fairing_config_is_reachable_as_an_attribute_first():
    """`import fairing; fairing.config.run()` is how the README and notebooks start."""
    r = subprocess.run([sys.executable, "-c", "import fairing; print(fairing.config.__name__)"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "fairing.config", r.stderr[-500:]
