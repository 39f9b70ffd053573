"""The layering and the seams that keep it, checked by machine (issue 19, part 5): the import
contracts in pyproject.toml (import-linter), no private name imported across modules, every
FAIRING_* variable read in fairing/settings.py, and decisions taken on exception types, not on
their words (TLS, SQLite busy, RBAC forbidden). No services needed."""
from __future__ import annotations

import ast
import importlib.util
import os
import sqlite3
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fairing"
IN_IMAGE = PACKAGE / "image_runtime"  # runs where fairing is not installed: reads its own env


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        if IN_IMAGE not in path.parents:
            yield path, ast.parse(path.read_text(), str(path))


# `lint-imports` as scripts/test runs it: the interpreter's own import-linter, in this checkout.
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def test_import_contracts_are_kept():
    if importlib.util.find_spec("importlinter") is None:  # a missing checker must not pass as kept
        pytest.fail("import-linter is missing: it is a test extra (./scripts/setup installs it)")
    r = subprocess.run([sys.executable, "-c", LINT, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_no_private_name_is_imported_across_modules():
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("fairing")):
                found += [f"{path.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


def test_fairing_variables_are_read_in_settings_only():
    """`os.environ.get("FAIRING_X")`, `os.environ["FAIRING_X"]`, `os.getenv("FAIRING_X")` outside
    settings.py. Building a child's environment (filtering, setting) is not a read."""
    found = []
    for path, tree in _sources():
        if path == PACKAGE / "settings.py":
            continue
        # Names bound to a FAIRING_* string in the module (MAX_CONTEXT_ENV = "FAIRING_...") count too.
        names = {t.id for node in tree.body if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                 and str(node.value.value).startswith("FAIRING_") for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            key = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args \
                    and node.func.attr in ("get", "getenv", "pop") and "environ" in ast.unparse(node.func) + node.func.attr:
                key = node.args[0]
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and ast.unparse(node.value).endswith("environ"):
                key = node.slice
            if key is not None and ("FAIRING_" in ast.unparse(key) or ast.unparse(key) in names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    # tune/trialfn.py is pickled by value into the image and reads the trial's FAIRING_PARAM_*
    # there (through a variable name, so not seen here either).
    assert found == []


# --- decisions on types ----------------------------------------------------------------------------

def _chain(outer_factory):
    """An exception wrapped the way urllib3 and requests wrap a failed handshake."""
    try:
        try:
            raise ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
        except ssl.SSLError as e:
            raise outer_factory(e) from e
    except Exception as wrapped:  # noqa: BLE001 - the value is what the test looks at
        return wrapped


def test_tls_failures_are_recognised_by_type_through_the_wrappers():
    import requests
    import urllib3

    from fairing.errors import tls_failure, tls_untrusted

    ssl_error = _chain(urllib3.exceptions.SSLError)
    max_retry = urllib3.exceptions.MaxRetryError(None, "https://x/", reason=ssl_error)
    via_requests = requests.exceptions.SSLError(max_retry)
    for e in (ssl_error, max_retry, via_requests):
        assert tls_failure(e) and tls_untrusted(e), type(e)
    # A TLS error that is not about the certificate (a proxy's hiccup) is worth a retry.
    hiccup = requests.exceptions.SSLError(urllib3.exceptions.SSLError("EOF occurred in violation of protocol"))
    assert tls_failure(hiccup) and not tls_untrusted(hiccup)
    # Words are not enough any more: a refused connection that mentions certificates is not TLS.
    refused = requests.exceptions.ConnectionError("CERTIFICATE_VERIFY_FAILED? no: connection refused")
    assert not tls_failure(refused) and not tls_untrusted(refused)


def test_a_locked_run_store_is_busy_by_its_sqlite_code(tmp_path):
    from fairing.runs.store import busy

    holder = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(tmp_path / "runs.db", timeout=0.01, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as e:
        other.execute("INSERT INTO t VALUES (1)")
    assert busy(e.value)
    assert not busy(sqlite3.OperationalError("attempt to write a readonly database"))
    holder.close()
    other.close()


class _Kube:
    """Just enough of fairing.kube.client.Kube for TrainJobDeployer.preflight."""

    namespace = "team-a"
    server = "https://kube.example"

    def __init__(self, error):
        self.error = error

    def group_version_served(self, res) -> bool:
        return True

    def get(self, *a, **kw):
        raise self.error


def test_trainjob_preflight_goes_on_when_runtimes_are_forbidden_to_read():
    from fairing.deployers.k8s.trainjob import TRAINER_JOB, TrainJobDeployer
    from fairing.errors import DeployError
    from fairing.kube.errors import Forbidden

    d = TrainJobDeployer(kube=_Kube(Forbidden("forbidden: you cannot get clustertrainingruntimes")))
    d.preflight()  # the controller judges the runtime; the trainer step is the default one
    assert d.trainer_job == TRAINER_JOB
    # Any other failure stops, whatever its words.
    d = TrainJobDeployer(kube=_Kube(DeployError("forbidden words in an unrelated failure")))
    with pytest.raises(DeployError, match="unrelated"):
        d.preflight()


def test_the_pod_template_is_the_deployers_and_the_image_value_derives_none():
    from fairing.context import BuildContext, BuiltImage
    from fairing.deployers.template import template_of

    ctx = BuildContext(files={}, entrypoint=("python3", "main.py"), env={"A": "1"})
    image = BuiltImage(ref="r.example/t@sha256:" + "1" * 64, digest="sha256:" + "1" * 64, context=ctx)
    assert image.pod_template == {}  # a value: nothing computed behind the caller's back
    main = template_of(image)["spec"]["containers"][0]
    assert (main["name"], main["image"], main["command"], main["env"]) == \
        ("main", image.ref, ["python3", "main.py"], [{"name": "A", "value": "1"}])
    handed_in = {"spec": {"containers": [{"name": "main", "image": "x"}]}}
    assert template_of(BuiltImage(ref="r", digest="", pod_template=handed_in, context=ctx)) is handed_in
    assert template_of(BuiltImage(ref="r", digest="")) == {}
