"""`fair`'s parameters: plain values coerced without pydantic (fairing/cliparams.py), with the same
results and error messages as typer's own coercion, which still handles everything else."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from fairing import cliparams
from fairing.cli import app

ROOT = Path(__file__).resolve().parents[1]
CMD = typer.main.get_command(app)


def _params():
    """(command path, parameter) for every parameter of every `fair` command."""
    todo = [("fair", CMD)]
    while todo:
        path, cmd = todo.pop()
        for p in cmd.params:
            yield path, cmd, p
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            todo.append((f"{path} {name}", sub))


def _outcome(runtime, value, param, ctx):
    try:
        return ("value", runtime.coerce(value, param=param, ctx=ctx))
    except Exception as e:  # noqa: BLE001 - the error itself is what is compared
        return ("error", type(e).__name__, str(e.format_message() if hasattr(e, "format_message") else e))


VALUES = [None, "7", "0", "-1", "007", "+3", " 5", "1.5", "abc", "", "a\udcffb", 3, -2, 2.5, True, False,
          ("a", "b"), ["x"], (), ("1", "2"), b"bytes", ".", "/", "/no/such/file", "/etc/hostname", "a\x00b"]


@pytest.mark.skipif(not getattr(typer.core, "build_runtime_param", None), reason="a typer that coerces with click's types")
def test_plain_values_coerce_as_typers_own_coercion_does():
    typers = typer.core.build_runtime_param.typers
    checked = 0
    for path, cmd, param in _params():
        d = getattr(param, "type_descriptor", None)
        if d is None:
            continue
        ctx = typer._click.Context(cmd, info_name=path)
        ours, theirs = cliparams.PlainFirst(d, typers), typers(d)
        for v in VALUES:
            assert _outcome(ours, v, param, ctx) == _outcome(theirs, v, param, ctx), (path, param.name, v)
            checked += 1
    assert checked > 300 * len(VALUES) // 2


def test_a_command_with_plain_options_does_not_import_pydantic(tmp_path):
    (tmp_path / "x.py").write_text("print('x')\n")
    (tmp_path / "team.yaml").write_text("cpu: 500m\n")
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "fairing.cli", "train", "x.py", "--dry-run",
                        "--gpus", "2", "-e", "A=1", "-e", "B=2", "--memory", "1Gi", "--config", "team.yaml",
                        "-o", "json"],
                       cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"memory": "1Gi"' in r.stdout and '"cpu": "500m"' in r.stdout and '"name": "B"' in r.stdout  # all reached the plan
    assert "fairing.cli" in r.stderr and "pydantic" not in r.stderr  # importtime lists every module imported


def test_other_values_still_get_typers_checks_and_messages(tmp_path):
    (tmp_path / "x.py").write_text("print('x')\n")
    r = subprocess.run([sys.executable, "-m", "fairing.cli", "train", "x.py", "--dry-run", "--gpus", "two"],
                       cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == ("error: Invalid value for '--gpus': Input should be a valid integer, "
                                        "unable to parse string as an integer")
