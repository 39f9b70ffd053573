"""The `notebook` preprocessor: the converted script byte for byte, the errors, finding the
running notebook, and the script running for real."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fairing.errors import ConfigError
from fairing.preprocessors.notebook import NotebookPreprocessor, NotebookWarning, find_notebook_path
from tests.test_preprocess_python import run_in_container, run_local

DATA = Path(__file__).parent / "data" / "preprocess"


def prepare(name: str, **kw):
    return NotebookPreprocessor(**kw).prepare(DATA / name)


def test_magics_dropped_script_byte_for_byte():
    with pytest.warns(NotebookWarning) as caught:
        ctx = prepare("magics.ipynb")
    assert list(ctx.files) == ["magics.py"]
    assert ctx.files["magics.py"] == (DATA / "magics.expected.py").read_bytes()
    assert ctx.entrypoint == ("python3", "-u", "magics.py")
    assert ctx.kind == "notebook" and ctx.requirements == ()
    messages = [str(w.message) for w in caught]
    assert messages == [
        "notebook magics.ipynb: dropped cell-magic cells, they do not run outside IPython: "
        "cell 3 (%%bash), cell 7 (%%time)",
        "notebook magics.ipynb: dropped install commands (cell 2: !pip install -q pandas==2.2.2); "
        "list those packages in requirements instead",
    ]


def test_magic_lines_inside_blocks_keep_valid_python(tmp_path):
    import nbformat

    src = textwrap.dedent("""\
        def f():
            %time x = 1
        class A:
            !echo a
            def g(self):
                return 1
        while False:
            !echo never
            !echo twice
        try:
            !risky
        except Exception:
            %debug
        print(f(), A().g(), [1 !=
            2])""")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src)])
    nbformat.write(nb, tmp_path / "blocks.ipynb")
    ctx = NotebookPreprocessor().prepare(tmp_path / "blocks.ipynb")
    assert ctx.files["blocks.py"].decode() == textwrap.dedent("""\
        # Converted by fairing from blocks.ipynb; edit the notebook, not this file.

        # cell 1
        def f():
            pass
        class A:
            def g(self):
                return 1
        while False:
            pass
        try:
            pass
        except Exception:
            pass
        print(f(), A().g(), [1 !=
            2])
        """)
    r = run_local(ctx, tmp_path)
    assert (r.returncode, r.stdout) == (0, "None 1 [True]\n"), r.stderr


def test_only_tagged_cells_ship_when_any_is_tagged():
    ctx = prepare("tagged.ipynb")
    assert ctx.files["tagged.py"] == (
        b"# Converted by fairing from tagged.ipynb; edit the notebook, not this file.\n\n"
        b"# cell 1\nimport json\n\n# cell 3\nprint(json.dumps({'ok': True}))\n"
    )


def test_requirements_and_include(tmp_path):
    import shutil

    shutil.copy(DATA / "tagged.ipynb", tmp_path / "nb.ipynb")
    (tmp_path / "helpers.py").write_text("X = 1\n")
    (tmp_path / "requirements.txt").write_text("numpy==1.26.4\n")
    ctx = NotebookPreprocessor(requirements="requirements.txt", include=["helpers.py"]).prepare(tmp_path / "nb.ipynb")
    assert sorted(ctx.files) == ["helpers.py", "nb.py"]
    assert ctx.requirements == ("numpy==1.26.4",)


# -- one clear error each ---------------------------------------------------------------------------

def test_invalid_json():
    with pytest.raises(ConfigError) as e:
        prepare("invalid_json.ipynb")
    assert e.value.message == f"notebook {DATA / 'invalid_json.ipynb'} is not valid JSON: Expecting ',' delimiter (line 3, column 3)"


def test_json_that_is_not_a_notebook(tmp_path):
    (tmp_path / "x.ipynb").write_text('{"cells": [], "nbformat": 4, "metadata": {}, "nbformat_minor": 5, "bogus": 1}')
    with pytest.raises(ConfigError, match=r"is not a valid notebook: "):
        NotebookPreprocessor().prepare(tmp_path / "x.ipynb")
    (tmp_path / "y.ipynb").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"is JSON but not a Jupyter notebook"):
        NotebookPreprocessor().prepare(tmp_path / "y.ipynb")


def test_syntax_error_names_cell_and_line():
    with pytest.raises(ConfigError) as e:
        prepare("syntax_error.ipynb")
    assert e.value.message == "notebook syntax_error.ipynb has a syntax error in cell 3, line 1: invalid syntax: def f(:"


def test_no_code_cells():
    with pytest.warns(NotebookWarning, match=r"cell 2 \(%%bash\)"):
        with pytest.raises(ConfigError) as e:
            prepare("no_code.ipynb")
    assert e.value.message == f"notebook {DATA / 'no_code.ipynb'} has no code cells to run"


def test_missing_notebook(tmp_path):
    with pytest.raises(ConfigError) as e:
        NotebookPreprocessor().prepare(tmp_path / "gone.ipynb")
    assert e.value.message == f"notebook {tmp_path / 'gone.ipynb'} does not exist"


# -- finding the running notebook -------------------------------------------------------------------

def test_find_notebook_path_explicit_and_env(tmp_path, monkeypatch):
    nb = tmp_path / "work.ipynb"
    nb.write_text("{}")
    assert find_notebook_path(nb) == nb
    for var in ("JPY_SESSION_NAME", "PAPERMILL_INPUT_PATH"):
        monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
        monkeypatch.delenv("PAPERMILL_INPUT_PATH", raising=False)
        monkeypatch.setenv(var, str(nb))
        assert find_notebook_path() == nb
    monkeypatch.setenv("PAPERMILL_INPUT_PATH", str(tmp_path / "gone.ipynb"))
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    with pytest.raises(ConfigError) as e:
        find_notebook_path()
    assert e.value.message == (f"cannot find the running notebook's path (tried PAPERMILL_INPUT_PATH="
                               f"{tmp_path / 'gone.ipynb'}, jupyter server sessions)")
    assert "prepare('train.ipynb')" in e.value.hint


@pytest.mark.slow
def test_find_notebook_path_from_ipython_namespace(tmp_path):
    # A real IPython shell (in a subprocess, so the singleton does not leak into other tests), with
    # the variables JupyterLab 4 (`__session__`) and VS Code (`__vsc_ipynb_file__`) set.
    nb = tmp_path / "lab.ipynb"
    nb.write_text("{}")
    for var in ("__session__", "__vsc_ipynb_file__"):
        code = textwrap.dedent(f"""
            import os
            os.environ.pop("JPY_SESSION_NAME", None)
            from IPython.core.interactiveshell import InteractiveShell
            InteractiveShell.instance().user_ns[{var!r}] = {str(nb)!r}
            from fairing.preprocessors.notebook import find_notebook_path
            print(find_notebook_path())
        """)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.stdout.strip() == str(nb), r.stderr


# -- running ----------------------------------------------------------------------------------------

EXPECTED_OUTPUT = "['!kept inside a string', '%also kept'] 1\nargs []\ndone\n"


def test_script_runs_locally(tmp_path):
    with pytest.warns(NotebookWarning):
        ctx = prepare("magics.ipynb")
    r = run_local(ctx, tmp_path)
    assert (r.returncode, r.stdout) == (0, EXPECTED_OUTPUT), r.stderr


def test_script_runs_in_container(engine, base_image, tmp_path):
    with pytest.warns(NotebookWarning):
        ctx = prepare("magics.ipynb")
    code, logs = run_in_container(engine, base_image, ctx, tmp_path)
    assert (code, logs) == (0, EXPECTED_OUTPUT)


@pytest.mark.slow
def test_find_notebook_path_in_a_real_jupyter_server(tmp_path):
    """A real jupyter_server with a real kernel: the path comes from `__session__` (what JupyterLab 4
    sets), and, with that and JPY_SESSION_NAME removed, from the kernel's connection file matched
    against the server's /api/sessions."""
    import os
    import socket
    import time

    import requests
    from jupyter_client import BlockingKernelClient

    root, runtime = tmp_path / "root", tmp_path / "runtime"
    (root / "sub").mkdir(parents=True)
    (root / "sub/work.ipynb").write_text((DATA / "tagged.ipynb").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    env.pop("JPY_SESSION_NAME", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", f"--ServerApp.root_dir={root}", f"--ServerApp.port={port}",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.open_browser=False", "--IdentityProvider.token=t0ken",
         "--ServerApp.port_retries=0", "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"))
    kc = None
    try:
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": "token t0ken"}
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/api/status", headers=headers, timeout=2).ok and list(runtime.glob("jpserver-*.json")):
                    break
            except requests.ConnectionError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                server.wait()
                pytest.fail("jupyter_server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
            time.sleep(0.3)
        session = requests.post(f"{url}/api/sessions", headers=headers, timeout=60, json={
            "path": "sub/work.ipynb", "type": "notebook", "name": "work.ipynb", "kernel": {"name": "python3"}}).json()
        kc = BlockingKernelClient(connection_file=str(runtime / f"kernel-{session['kernel']['id']}.json"))
        kc.load_connection_file()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)

        def run(code: str) -> str:
            out: list[str] = []

            def hook(msg):
                if msg["msg_type"] == "stream":
                    out.append(msg["content"]["text"])
                elif msg["msg_type"] == "error":
                    out.append("\n".join(msg["content"]["traceback"]))
            kc.execute_interactive(code, output_hook=hook, timeout=60)
            return "".join(out).strip()

        find = "from fairing.preprocessors.notebook import find_notebook_path\nprint(find_notebook_path().resolve())"
        assert run(f"print(repr(__session__))\n{find}").splitlines()[-1] == str((root / "sub/work.ipynb").resolve())
        only_api = "import os\nos.environ.pop('JPY_SESSION_NAME', None)\ndel __session__\n" + find
        assert run(only_api) == str((root / "sub/work.ipynb").resolve())
    finally:
        if kc is not None:
            kc.stop_channels()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
