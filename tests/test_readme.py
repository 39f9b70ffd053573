"""The README's copy-paste examples run as written: the quick start, the dry-run command, the
error example (exact text) and the command table (every command exists in `fair --help`)."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

# Every test here runs the CLI in a subprocess (~1-2 s each): not the fast tier.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def fair(*args, env=None, cwd=ROOT):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FAIRING_", "KUBECONFIG", "DOCKER_HOST"))}
    # No cluster, no registry, no engine: the README's "fresh machine" situation.
    base.update({"HOME": str(cwd), "DOCKER_HOST": "unix:///nonexistent.sock"}, **(env or {}))
    return subprocess.run([sys.executable, "-m", "fairing.cli", *args], cwd=cwd, env=base,
                          capture_output=True, text=True, timeout=600)


def sh_commands(prefix):
    """`fair ...` lines from the README's ```sh blocks, comments stripped."""
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    lines = [ln.split("  #")[0].strip() for b in blocks for ln in b.splitlines()]
    return [ln for ln in lines if ln.startswith(prefix)]


def test_quick_start_runs_the_example_locally_and_says_how(tmp_path):
    first = sh_commands("./scripts/setup && fair train")[0]
    args = shlex.split(first.split("&&", 1)[1])[1:]
    r = fair(*args[:1], *[str(ROOT / a) for a in args[1:]], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "trained: w=2.00 b=1.00" in r.stdout
    assert "mode: local process" in r.stderr + r.stdout


def test_the_dry_run_example_prints_manifests_and_applies_nothing(tmp_path):
    cmd = next(c for c in sh_commands("fair train") if "--dry-run" in c)
    args = shlex.split(cmd)[1:]
    args = [str(ROOT / a) if a.startswith("examples/") else a for a in args]
    r = fair(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "kind: Job" in r.stdout and "app.kubernetes.io/managed-by: fairing" in r.stdout


def test_the_documented_error_is_what_the_cli_prints(tmp_path):
    m = re.search(r"\n    (error: .*)\n    (hint: .*)\n", README)
    assert m, "README lost its error example"
    r = fair("train", str(ROOT / "examples/train.py"), "--deployer", "jbo", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [m.group(1), m.group(2)]


def test_every_command_in_the_readme_table_exists():
    documented = set(re.findall(r"^\| `fair (\w+)", README, re.M))
    documented |= set(re.findall(r"`fair (status|logs|delete) NAME", README))
    assert documented >= {"train", "build", "deploy", "status", "logs", "delete", "list", "init", "config"}
    out = fair("--help").stdout
    for cmd in documented:
        assert re.search(rf"^\s*│?\s*{cmd}\s", out, re.M), f"`fair {cmd}` is in the README but not in fair --help"
