"""The `notebook` preprocessor: the converted script byte for byte, the errors, finding the
running notebook, and the script running for real."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fairing.errors import ConfigError
from fairing.preprocessors.notebook import PRELUDE, NotebookPreprocessor, NotebookWarning, find_notebook_path
from tests.test_preprocess_python import run_in_container, run_local

DATA = Path(__file__).parent / "data" / "preprocess"
HEADER = "\n".join(["# Converted by fairing from {name}; edit the notebook, not this file.", *PRELUDE, "", ""])
SHIM_FILES = [".fairing/nbshim/IPython/__init__.py", ".fairing/nbshim/IPython/core/__init__.py",
              ".fairing/nbshim/IPython/core/display.py", ".fairing/nbshim/IPython/core/display_functions.py",
              ".fairing/nbshim/IPython/core/getipython.py", ".fairing/nbshim/IPython/display.py",
              ".fairing/nbshim/fairing_nb.py"]


def prepare(name: str, **kw):
    return NotebookPreprocessor(**kw).prepare(DATA / name)


def test_magics_translated_script_byte_for_byte(caplog):
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left out, so nothing to warn about
        with caplog.at_level(logging.INFO, logger="fairing"):
            ctx = prepare("magics.ipynb")
    assert sorted(ctx.files) == [*sorted(SHIM_FILES), "magics.py"]
    assert ctx.files["magics.py"] == (DATA / "magics.expected.py").read_bytes()
    assert ctx.entrypoint == ("python3", "-u", "magics.py")
    assert ctx.kind == "notebook" and ctx.requirements == ("pandas==2.2.2",)
    assert [r.getMessage() for r in caplog.records] == [
        "notebook magics.ipynb: requirements from its install lines: pandas==2.2.2"]


def test_magic_lines_inside_blocks_keep_valid_python(tmp_path):
    import nbformat

    src = textwrap.dedent("""\
        def f():
            %timeit -n 3 x = 1
        class A:
            !echo a
            def g(self):
                return 1
        while False:
            !echo never
            !echo twice
        try:
            !true
        except Exception:
            %debug
        print(f(), A().g(), [1 !=
            2])""")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src)])
    nbformat.write(nb, tmp_path / "blocks.ipynb")
    ctx = NotebookPreprocessor().prepare(tmp_path / "blocks.ipynb")
    assert ctx.files["blocks.py"].decode() == HEADER.format(name="blocks.ipynb") + textwrap.dedent("""\
        # cell 1
        def f():
            _fairing_ip.timeit_start(); x = 1; _fairing_ip.timeit_stop()
        class A:
            _fairing_ip.system('echo a')
            def g(self):
                return 1
        while False:
            _fairing_ip.system('echo never')
            _fairing_ip.system('echo twice')
        try:
            _fairing_ip.system('true')
        except Exception:
            pass
        print(f(), A().g(), [1 !=
            2])
        """)
    r = run_local(ctx, tmp_path)
    assert r.returncode == 0, r.stderr
    a, timing, rest = r.stdout.split("\n", 2)
    assert (a, rest) == ("a", "None 1 [True]\n") and timing.endswith(" per loop (mean ± std. dev. of 1 run, 1 loop each)")


def test_only_tagged_cells_ship_when_any_is_tagged():
    ctx = prepare("tagged.ipynb")
    assert ctx.files["tagged.py"].decode() == HEADER.format(name="tagged.ipynb") + (
        "# cell 1\nimport json\n\n# cell 3\nprint(json.dumps({'ok': True}))\n"
    )


def test_requirements_and_include(tmp_path):
    import shutil

    shutil.copy(DATA / "tagged.ipynb", tmp_path / "nb.ipynb")
    (tmp_path / "helpers.py").write_text("X = 1\n")
    (tmp_path / "requirements.txt").write_text("numpy==1.26.4\n")
    ctx = NotebookPreprocessor(requirements="requirements.txt", include=["helpers.py"]).prepare(tmp_path / "nb.ipynb")
    assert sorted(ctx.files) == [*SHIM_FILES, "helpers.py", "nb.py"]
    assert ctx.requirements == ("numpy==1.26.4",)
    # A requirements.txt next to the notebook is used without being named.
    assert NotebookPreprocessor().prepare(tmp_path / "nb.ipynb").requirements == ("numpy==1.26.4",)


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
    with pytest.warns(NotebookWarning, match=r"cell 2 \(%%sql\)"):
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

TIMES = "CPU times: user <t>\nWall time: <t>\n"
EXPECTED_OUTPUT = ("only in IPython\n" + (TIMES + "step\n") * 3 + "never alone\ntotal 3\n"
                   "['!kept inside a string', '%also kept'] 1\ntimed cell keeps its body\n" + TIMES + "args []\ndone\n")


def test_script_runs_locally(tmp_path):
    from tests.test_notebook_anywhere import normalize

    ctx = prepare("magics.ipynb")
    r = run_local(ctx, tmp_path)
    assert (r.returncode, normalize(r.stdout)) == (0, EXPECTED_OUTPUT), r.stderr


def test_script_runs_in_container(engine, base_image, tmp_path):
    from tests.test_notebook_anywhere import normalize

    ctx = prepare("magics.ipynb")
    code, logs = run_in_container(engine, base_image, ctx, tmp_path)
    assert (code, normalize(logs)) == (0, EXPECTED_OUTPUT)


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
        # On a loaded machine the kernel takes seconds to import; until it beats, wait_for_ready
        # takes the silent heartbeat for a dead kernel ("Kernel died before replying"): ask again.
        ready_by = time.monotonic() + 90
        while True:
            try:
                kc.wait_for_ready(timeout=60)
                break
            except RuntimeError:
                if time.monotonic() > ready_by:
                    raise
                time.sleep(1)

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


# -- installs, IPython, ids -------------------------------------------------------------------------

def _nb(tmp_path, *sources, name="nb.ipynb"):
    import nbformat

    path = tmp_path / name
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources]), str(path))
    return path


def test_install_lines_become_requirements_as_written(tmp_path, caplog):
    import logging

    (tmp_path / "requirements.txt").write_text("numpy==1.26.4\n")
    nb = _nb(tmp_path, "%pip install -q 'pandas[excel]==2.2.2' numpy==2.0.0\n!pip install --upgrade 'scipy>=1.11'",
             "import sys\nif sys.version_info > (3,):\n    !{sys.executable} -m pip install requests==2.32.3")
    with pytest.warns(NotebookWarning) as caught, caplog.at_level(logging.INFO, logger="fairing"):
        ctx = NotebookPreprocessor().prepare(nb)
    # The user's own pin (requirements.txt) wins over the notebook's numpy==2.0.0.
    assert ctx.requirements == ("numpy==1.26.4", "pandas[excel]==2.2.2", "scipy>=1.11", "requests==2.32.3")
    assert [r.getMessage() for r in caplog.records] == [
        "notebook nb.ipynb: requirements from its install lines: pandas[excel]==2.2.2, numpy==2.0.0, scipy>=1.11, "
        "requests==2.32.3"]
    assert [str(w.message) for w in caught] == [
        "notebook nb.ipynb: unpinned installs scipy>=1.11: the image gets whatever version is newest when it is "
        "built; pin them (name==version) to make it reproducible"]
    # Install lines run when the image is built, not in the script.
    assert "pip" not in ctx.files["nb.py"].decode().split("_fairing_ip = get_ipython()", 1)[1]


def test_install_line_with_an_index_option_is_refused(tmp_path):
    nb = _nb(tmp_path, "x = 1", "%pip install -i https://user:pw@example.com/simple torch==2.3.0")
    with pytest.raises(ConfigError) as e:
        NotebookPreprocessor().prepare(nb)
    assert e.value.message == ("notebook nb.ipynb cell 2, line 1: pip option '-i' is not supported in a notebook "
                               "install line")


def test_ipython_in_the_requirements_means_the_real_one(tmp_path):
    nb = _nb(tmp_path, "%pip install ipython==8.12.3\nfrom IPython.display import display\ndisplay(1)")
    ctx = NotebookPreprocessor().prepare(nb)
    assert ctx.requirements == ("ipython==8.12.3",)
    assert sorted(f for f in ctx.files if f.startswith(".fairing/")) == [".fairing/nbshim/fairing_nb.py"]


def test_notebook_without_cell_ids_reads_without_a_warning(tmp_path):
    import json
    import warnings

    (tmp_path / "old.ipynb").write_text(json.dumps({
        "nbformat": 4, "nbformat_minor": 5, "metadata": {},
        "cells": [{"cell_type": "code", "metadata": {}, "source": "print('no id')", "outputs": [],
                   "execution_count": None}]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ctx = NotebookPreprocessor().prepare(tmp_path / "old.ipynb")
    assert ctx.files["old.py"].decode().endswith("# cell 1\nprint('no id')\n")


def test_cell_magics_keep_their_effect(tmp_path):
    nb = _nb(tmp_path,
             "%%capture cap\nprint('captured')\nvalue = 41",
             "%%timeit -n 1 -r 1\nvalue += 1",
             "%%writefile conf.txt\na=1",
             "%%script bash\necho \"bash got $((value))\"",
             "%%html\n<p>hello <b>html</b></p>",
             "%env MODE=test\nimport os\nprint(os.environ['MODE'], repr(cap.stdout), value)",
             "%%sh\nexit 3",
             "print('not reached')")
    ctx = NotebookPreprocessor().prepare(nb)
    r = run_local(ctx, tmp_path)
    assert r.returncode == 1
    timing, rest = r.stdout.split("\n", 1)
    # The body ran once (value 41 -> 42 below), and its timing says so, in IPython's format.
    assert re.fullmatch(r"[\d.]+ (s|ms|µs|ns) ± 0 ns per loop \(mean ± std. dev. of 1 run, 1 loop each\)", timing), timing
    assert rest == "Writing conf.txt\nbash got 0\nhello html\nenv: MODE=test\ntest 'captured\\n' 42\n"
    assert r.stderr.rstrip().splitlines()[-1] == (
        "subprocess.CalledProcessError: Command 'b'exit 3\\n'' returned non-zero exit status 3.")
    assert (tmp_path / "ctx/conf.txt").read_text() == "a=1\n"


def test_timeit_and_prun_report_statistics_and_keep_what_the_body_defines(tmp_path):
    nb = _nb(tmp_path,
             "%%prun -s cumulative -l 5 -T prof.txt\nordered = sorted([3, 1, 2])",
             "%timeit -n 10 squares = [i * i for i in range(4)]",
             "%prun -q -D prof.bin total = sum(ordered)",
             "print(ordered, squares, total)")
    r = run_local(NotebookPreprocessor().prepare(nb), tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    # %%prun: IPython's printout (a header, the order, the table naming what the body called).
    assert re.fullmatch(r"\s+2 function calls in [\d.]+ seconds", out[0]), out
    assert "Ordered by: cumulative time" in out[2]
    assert any(line.endswith("{built-in method builtins.sorted}") for line in out)
    assert not any("fairing_nb" in line for line in out), "the shim itself must not be in the profile"
    assert "*** Profile printout saved to text file 'prof.txt'." in out
    assert "builtins.sorted" in (tmp_path / "ctx/prof.txt").read_text()
    # %timeit: one run, said as such; -q prints no table, -D still writes the stats.
    assert sum(bool(re.fullmatch(r"[\d.]+ (s|ms|µs|ns) ± 0 ns per loop \(mean ± std. dev. of 1 run, 1 loop each\)", line))
               for line in out) == 1, out
    assert "*** Profile stats marshalled to file 'prof.bin'." in out
    import pstats

    assert any("sum" in str(k) for k in pstats.Stats(str(tmp_path / "ctx/prof.bin")).stats)
    assert out[-1] == "[1, 2, 3] [0, 1, 4, 9] 6"
