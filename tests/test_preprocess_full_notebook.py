"""The `full_notebook` preprocessor: the shipped notebook and shim, parameter injection, and the
notebook executed for real with nbclient."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from fairing.context import OUTPUT_DIR
from fairing.errors import ConfigError
from fairing.preprocessors.full_notebook import SHIM, FullNotebookPreprocessor
from fairing.image_runtime import run_notebook
from tests.test_preprocess_python import run_in_container, run_local

DATA = Path(__file__).parent / "data" / "preprocess"


def test_context_ships_stripped_notebook_shim_and_runtime_requirements():
    ctx = FullNotebookPreprocessor(parameters={"epochs": 3}, timeout=600).prepare(DATA / "params.ipynb")
    assert sorted(ctx.files) == [".fairing/notebook.json", ".fairing/run_notebook.py", "params.ipynb"]
    assert ctx.entrypoint == ("python3", "-u", ".fairing/run_notebook.py")
    assert ctx.files[".fairing/run_notebook.py"] == SHIM.read_bytes()
    assert json.loads(ctx.files[".fairing/notebook.json"]) == {
        "notebook": "params.ipynb", "parameters": {"epochs": 3}, "output_dir": OUTPUT_DIR,
        "kernel": "python3", "timeout": 600}
    shipped = nbformat.reads(ctx.files["params.ipynb"].decode(), as_version=4)
    original = nbformat.read(DATA / "params.ipynb", as_version=4)
    assert [c.source for c in shipped.cells] == [c.source for c in original.cells]
    assert all(c.outputs == [] and c.execution_count is None for c in shipped.cells if c.cell_type == "code")
    assert b"old output" not in ctx.files["params.ipynb"]
    assert ctx.requirements == ("nbclient>=0.9", "ipykernel>=6.25")
    assert ctx.outputs == {"notebook": f"{OUTPUT_DIR}/params.executed.ipynb"}


def test_users_pins_win_and_per_call_parameters_merge():
    pre = FullNotebookPreprocessor(requirements=["ipykernel==6.29.5", "pandas==2.2.2"], parameters={"a": 1, "b": 2})
    ctx = pre.prepare(DATA / "params.ipynb", parameters={"b": 3})
    assert ctx.requirements == ("ipykernel==6.29.5", "pandas==2.2.2", "nbclient>=0.9")
    assert json.loads(ctx.files[".fairing/notebook.json"])["parameters"] == {"a": 1, "b": 3}


def test_bad_parameters_and_notebooks():
    with pytest.raises(ConfigError, match=r"^notebook parameter name 'not valid' is not a Python identifier"):
        FullNotebookPreprocessor(parameters={"not valid": 1}).prepare(DATA / "params.ipynb")
    with pytest.raises(ConfigError, match=r"^notebook parameter 'when' \(object\) is not JSON-serialisable"):
        FullNotebookPreprocessor().prepare(DATA / "params.ipynb", parameters={"when": object()})
    with pytest.raises(ConfigError, match=r"is not valid JSON: Expecting ',' delimiter \(line 3, column 3\)"):
        FullNotebookPreprocessor().prepare(DATA / "invalid_json.ipynb")


# -- the shim's logic -------------------------------------------------------------------------------

def test_inject_after_parameters_cell_or_first(monkeypatch):
    nb = nbformat.read(DATA / "params.ipynb", as_version=4)
    assert run_notebook.inject(nb, {}) is None and len(nb.cells) == 3
    assert run_notebook.inject(nb, {"name": "x", "epochs": 2, "flags": [True, None]}) == 2
    cell = nb.cells[2]
    assert cell.source == "# Parameters\nepochs = 2\nflags = [True, None]\nname = 'x'\n"
    assert cell.metadata["tags"] == ["injected-parameters"]
    untagged = nbformat.read(DATA / "fails.ipynb", as_version=4)
    assert run_notebook.inject(untagged, {"a": 1}) == 0
    nbformat.validate(nb)
    nbformat.validate(untagged)

    monkeypatch.setenv(run_notebook.PARAMS_ENV, '{"epochs": 9}')
    assert run_notebook.parameters({"epochs": 1, "name": "n"}) == {"epochs": 9, "name": "n"}
    monkeypatch.setenv(run_notebook.PARAMS_ENV, "[1]")
    with pytest.raises(ValueError, match="FAIRING_NOTEBOOK_PARAMETERS must be a JSON object"):
        run_notebook.parameters({})


# -- running ----------------------------------------------------------------------------------------
# nbclient and ipykernel are not in the stdlib-only base image (a builder installs them from the
# context's requirements), so these runs execute the entrypoint as a local subprocess with the host
# Python, which has both; the container test below checks the shim's message when they are missing.

@pytest.mark.slow
def test_notebook_executes_with_injected_parameters(tmp_path):
    ctx = FullNotebookPreprocessor(parameters={"epochs": 3}).prepare(DATA / "params.ipynb")
    out = tmp_path / "out"
    r = run_local(ctx, tmp_path, env={"FAIRING_OUTPUT_DIR": str(out),
                                      "FAIRING_NOTEBOOK_PARAMETERS": '{"name": "from-env"}'})
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("epochs 3 name from-env\nshell still works\n30\n"
                        f"fairing: executed notebook written to {out / 'params.executed.ipynb'}\n")
    executed = nbformat.read(out / "params.executed.ipynb", as_version=4)
    assert executed.cells[2].source == "# Parameters\nepochs = 3\nname = 'from-env'\n"
    assert executed.cells[3].outputs[0]["text"].startswith("epochs 3 name from-env\n")
    assert json.loads((tmp_path / "ctx/seen.json").read_text()) == {"epochs": 3}  # cwd is the context root


@pytest.mark.slow
def test_failing_cell_exits_1_and_still_writes_notebook(tmp_path):
    ctx = FullNotebookPreprocessor().prepare(DATA / "fails.ipynb")
    out = tmp_path / "out"
    r = run_local(ctx, tmp_path, env={"FAIRING_OUTPUT_DIR": str(out)})
    assert r.returncode == 1
    assert r.stdout == "before\n"
    assert "ZeroDivisionError" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1] == (
        f"fairing: a cell of fails.ipynb raised; the executed notebook is in {out / 'fails.executed.ipynb'}")
    executed = nbformat.read(out / "fails.executed.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["ename"] == "ZeroDivisionError"
    assert executed.cells[2].outputs == []


def test_shim_in_container_without_nbclient_says_what_to_install(engine, base_image, tmp_path):
    ctx = FullNotebookPreprocessor().prepare(DATA / "params.ipynb")
    code, logs = run_in_container(engine, base_image, ctx, tmp_path)
    assert (code, logs) == (2, "fairing: No module named 'nbformat'; add nbclient and ipykernel to the requirements\n")
