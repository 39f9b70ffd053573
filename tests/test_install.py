"""fairing as users install it, where they already are.

- The distribution is built (`python -m build`: the sdist, then the wheel from the sdist) and the
  wheel is installed into a clean venv: `fair train` and an image build work from it, so it carries
  the templates, the notebook shim and the in-image runtime.
- One clean venv holds fairing-ml beside kfp 2.17.3, the Kubeflow SDK 0.5.0 and mlflow (the client
  pins meet at kubernetes 30), pip finds no conflict, and the fast tier, a real-node Job, a KFP export
  loaded by that kfp and a TrainJob read back through the SDK's TrainerClient all pass in it.
- The oldest supported kubernetes client (27.2) drives the API-client tests and a real-node Job;
  the main environment runs the newest.
Each venv is made by uv from the wheel; the tests inside run from this checkout against the same rig.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # builds and installs; never in the fast tier (which it runs inside)


def _uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def run(cmd, *, timeout=1200, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"{' '.join(map(str, p.args))}\nexit {p.returncode}\n{p.stdout[-6000:]}\n{p.stderr[-6000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    ok(run([sys.executable, "-m", "build", "--outdir", out, ROOT], cwd=out))
    wheels, sdists = list(out.glob("fairing_ml-*.whl")), list(out.glob("fairing_ml-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def make_venv(path: Path, *requirements: str) -> Path:
    """A clean venv (with pip, for `pip check`) holding `requirements`; returns its python."""
    ok(run([_uv(), "venv", "--seed", "--python", sys.executable, path]))
    python = path / "bin" / "python"
    ok(run([_uv(), "pip", "install", "--python", python, *requirements]))
    return python


def venv_env(python: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def version(python: Path, dist: str) -> tuple[int, ...]:
    v = ok(run([python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"])).strip()
    return tuple(int(x) for x in v.split(".")[:2])


def test_the_wheel_carries_what_runs_in_the_image(dist):
    names = set(zipfile.ZipFile(dist["wheel"]).namelist())
    for must in ("fairing/image_runtime/model_server.py", "fairing/image_runtime/nbshim/IPython/display.py",
                 "fairing/kube/compat.py"):
        assert must in names, must
    assert any(n.startswith("fairing/templates/") for n in names)
    meta = zipfile.ZipFile(dist["wheel"]).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Name: fairing-ml" in meta and "Requires-Dist: kubernetes>=27.2" in meta
    entry = zipfile.ZipFile(dist["wheel"]).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "fair = fairing.cli:main" in entry


def test_the_wheel_in_a_clean_venv_trains_and_builds(dist, registry, base_image, tmp_path):
    python = make_venv(tmp_path / "venv", str(dist["wheel"]))
    # fairing comes from the venv, not from this checkout
    where = ok(run([python, "-c", "import fairing; print(fairing.__file__)"], cwd=tmp_path)).strip()
    assert where.startswith(str(tmp_path / "venv")), where
    fair = tmp_path / "venv" / "bin" / "fair"
    env = venv_env(python, HOME=tmp_path / "home", KUBECONFIG="")
    for k in [k for k in env if k.startswith(("FAIRING_", "DOCKER_")) and k != "FAIRING_CACHE"]:
        del env[k]
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    r = run([fair, "train", "examples/train.py", "--local-mode", "process"], cwd=tmp_path, env=env, timeout=600)
    assert "Succeeded" in ok(r) + r.stderr, r.stderr
    # A notebook image: the nbshim and the in-image runtime come from the installed wheel.
    r = run([fair, "build", "examples/notebook.ipynb", "--registry", f"{registry.host}/wheel-test",
             "--base-image", base_image.docker, "-o", "json"], cwd=tmp_path, env=env, timeout=600)
    built = json.loads(ok(r))
    assert built["image"].startswith(f"{registry.host}/wheel-test/") and built["digest"].startswith("sha256:")


def test_beside_kfp_and_the_kubeflow_sdk_in_one_venv(dist, on_node, trainer, engine, tmp_path):
    python = make_venv(tmp_path / "venv", f"{dist['wheel']}[test]", "kfp==2.17.3", "kubeflow==0.5.0", "mlflow")
    ok(run([python, "-m", "pip", "check"]))  # no conflict among what the four require
    assert version(python, "kubernetes") < (31,), "kfp 2.17.3 pins kubernetes<31"
    env = venv_env(python)
    fast = run([python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "not service and not slow"],
               cwd=ROOT, env=env, timeout=1800)
    ok(fast)
    cluster = run([python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
                   "tests/test_node_job.py::test_fair_train_a_script_runs_it_in_a_pod_and_streams_its_real_log",
                   "tests/test_kfp.py::test_exported_functions_load_compile_and_run_pinned_by_digest",
                   "tests/test_kubeflow_sdk.py"], cwd=ROOT, env=env, timeout=2400)
    out = ok(cluster)
    assert "3 passed" in out and "skipped" not in out, out[-3000:]


def test_the_oldest_supported_kubernetes_client(dist, on_node, tmp_path):
    python = make_venv(tmp_path / "venv", f"{dist['wheel']}[test]", "kubernetes==27.2.0", "kfp==2.17.3")
    ok(run([python, "-m", "pip", "check"]))
    assert version(python, "kubernetes") == (27, 2)
    r = run([python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
             "tests/test_kube_client.py", "tests/test_kube_errors.py",
             "tests/test_node_job.py::test_fair_train_a_script_runs_it_in_a_pod_and_streams_its_real_log",
             "tests/test_node_job.py::test_a_failing_script_reports_its_exit_code_and_last_lines"],
            cwd=ROOT, env=venv_env(python), timeout=1800)
    out = ok(r)
    assert " passed" in out and "skipped" not in out, out[-3000:]
