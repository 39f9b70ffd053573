"""The `function` preprocessor: the shipped pickle and shim, the errors for things that cannot
travel, the Python version guard, and the result coming back through the log and the file."""
from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import cloudpickle
import pytest

from fairing.context import OUTPUT_DIR, RESULT_MARKER, write_context
from fairing.errors import BuildError, FairingError
from fairing.preprocessors.function import SHIM, FunctionPreprocessor, parse_result
from tests.test_preprocess_python import run_in_container, run_local

HOST_PY = "%d.%d" % sys.version_info[:2]
SCALE = 10  # a module global the shipped function reads: pickled by value with it


def train(n, *, offset=0):
    import platform

    print("training", n)
    return {"total": sum(range(n)) * SCALE + offset, "python": platform.python_version_tuple()[:2]}


def explode():
    print("about to fail")
    return 1 / 0


def run_shim(root: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-u", ".fairing/run_function.py"], cwd=root, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "FAIRING_OUTPUT_DIR": str(out)})


# -- the context ------------------------------------------------------------------------------------

def test_context_files_and_header():
    ctx = FunctionPreprocessor().prepare(train, args=(4,), kwargs={"offset": 1})
    assert sorted(ctx.files) == [".fairing/function.pkl", ".fairing/run_function.py"]
    assert ctx.files[".fairing/run_function.py"] == SHIM.read_bytes()
    assert ctx.entrypoint == ("python3", "-u", ".fairing/run_function.py")
    assert ctx.requirements == (f"cloudpickle=={cloudpickle.__version__}",)
    assert ctx.python == HOST_PY and ctx.kind == "function"
    assert ctx.outputs == {"result": f"{OUTPUT_DIR}/result.pkl"}
    head, _, payload = ctx.files[".fairing/function.pkl"].partition(b"\n")
    assert json.loads(head) == {"format": 1, "python": HOST_PY, "cloudpickle": cloudpickle.__version__,
                                "function": "train", "output_dir": OUTPUT_DIR, "marker": RESULT_MARKER,
                                "log_limit": 4 << 20}
    fn, args, kwargs = cloudpickle.loads(payload)
    assert (args, kwargs) == ((4,), {"offset": 1})
    assert fn(4, offset=1)["total"] == 61


def test_users_cloudpickle_pin_wins():
    ctx = FunctionPreprocessor(requirements=["numpy==1.26.4", "CloudPickle==3.0.0"]).prepare(train)
    assert ctx.requirements == ("numpy==1.26.4", "CloudPickle==3.0.0")


# -- running ----------------------------------------------------------------------------------------

def test_result_comes_back_through_log_and_file(tmp_path):
    ctx = FunctionPreprocessor().prepare(train, args=(4,), kwargs={"offset": 1})
    r = run_local(ctx, tmp_path, env={"FAIRING_OUTPUT_DIR": str(tmp_path / "out")})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "training 4" and lines[1].startswith(RESULT_MARKER) and len(lines) == 2
    expected = {"total": 61, "python": tuple(HOST_PY.split("."))}
    assert parse_result(r.stdout) == expected
    assert cloudpickle.loads((tmp_path / "out/result.pkl").read_bytes()) == expected


def test_exception_prints_traceback_and_exits_1(tmp_path):
    ctx = FunctionPreprocessor().prepare(explode)
    r = run_local(ctx, tmp_path, env={"FAIRING_OUTPUT_DIR": str(tmp_path / "out")})
    assert r.returncode == 1
    assert r.stdout == "about to fail\n"
    assert r.stderr.startswith("Traceback (most recent call last):")
    assert r.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert not (tmp_path / "out/result.pkl").exists()
    with pytest.raises(FairingError) as e:
        parse_result(r.stdout + r.stderr)
    assert e.value.message == "the function raised ZeroDivisionError: division by zero"


def test_python_version_mismatch_is_one_line_before_unpickling(tmp_path):
    ctx = FunctionPreprocessor().prepare(train, args=(1,))
    root = write_context(ctx, tmp_path / "ctx")
    pkl = root / ".fairing/function.pkl"
    head = json.loads(pkl.read_bytes().partition(b"\n")[0])
    head["python"] = "3.99"
    # Garbage instead of a pickle: any attempt to unpickle would fail differently.
    pkl.write_bytes(json.dumps(head).encode() + b"\nnot a pickle")
    r = run_shim(root, tmp_path / "out")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (f"fairing: function was pickled with Python 3.99 but the image runs Python {HOST_PY}; "
                        "use a base image with Python 3.99\n")
    with pytest.raises(FairingError) as e:
        parse_result(r.stderr)
    assert e.value.message == r.stderr.strip()


def test_function_from_main_script(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from fairing.context import write_context
        from fairing.preprocessors.function import FunctionPreprocessor
        BASE = 100
        def helper(x):
            return x + BASE
        def main_fn(x):
            return helper(x) * 2
        ctx = FunctionPreprocessor().prepare(main_fn, args=(1,))
        write_context(ctx, {str(tmp_path / 'ctx')!r})
    """))
    subprocess.run([sys.executable, str(script)], check=True, timeout=60)
    r = run_shim(tmp_path / "ctx", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert parse_result(r.stdout) == 202


@pytest.mark.slow
def test_function_defined_in_ipython_cell(tmp_path):
    # What a notebook does: the function lives in the kernel's __main__ namespace.
    code = textwrap.dedent(f"""
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        res = shell.run_cell('''
        import collections
        counts = collections.Counter("abracadabra")
        def top(n):
            return counts.most_common(n)
        from fairing.context import write_context
        from fairing.preprocessors.function import FunctionPreprocessor
        write_context(FunctionPreprocessor().prepare(top, args=(2,)), {str(tmp_path / 'ctx')!r})
        ''')
        res.raise_error()
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    r = run_shim(tmp_path / "ctx", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert parse_result(r.stdout) == [("a", 5), ("b", 2)]


def test_local_module_travels_by_value(tmp_path, monkeypatch):
    # A helper module importable here but absent in the image is pickled with the function.
    mod_dir = tmp_path / "src"
    mod_dir.mkdir()
    (mod_dir / "fairing_test_localmod.py").write_text("FACTOR = 7\ndef work(x):\n    return x * FACTOR\n")
    monkeypatch.syspath_prepend(str(mod_dir))
    import fairing_test_localmod

    ctx = FunctionPreprocessor().prepare(fairing_test_localmod.work, args=(6,))
    assert "fairing_test_localmod" not in cloudpickle.list_registry_pickle_by_value()  # registry restored
    root = write_context(ctx, tmp_path / "ctx")
    r = run_shim(root, tmp_path / "out")  # cwd and sys.path do not contain src/
    assert r.returncode == 0, r.stderr
    assert parse_result(r.stdout) == 42


# -- things that cannot travel ----------------------------------------------------------------------

DB = sqlite3.connect(":memory:")
LOCK = threading.Lock()
CONFIG = {"retries": 3, "conn": DB}


def uses_db():
    return DB.execute("select 1").fetchone()


def uses_lock():
    with LOCK:
        return 1


def via_helper():
    return reads_config()


def reads_config():
    return CONFIG["retries"]


def test_unpicklable_db_connection_is_named():
    with pytest.raises(BuildError) as e:
        FunctionPreprocessor().prepare(uses_db)
    assert e.value.message == ("cannot ship function uses_db: it captures 'DB' (a sqlite3.Connection), which "
                               "cannot be pickled; open it inside the function instead")


def test_unpicklable_lock_closure_file_socket_and_arguments(tmp_path):
    with pytest.raises(BuildError, match=r"^cannot ship function uses_lock: it captures 'LOCK' \(a threading.Lock\), "
                                         r"which cannot be pickled; create it inside the function instead"):
        FunctionPreprocessor().prepare(uses_lock)

    with open(tmp_path / "log.txt", "w") as log:
        def writes():
            log.write("x")
        with pytest.raises(BuildError) as e:
            FunctionPreprocessor().prepare(writes)
    assert e.value.message == (f"cannot ship function test_unpicklable_lock_closure_file_socket_and_arguments.<locals>"
                               f".writes: it captures 'log' (an open file '{tmp_path / 'log.txt'}'), which cannot be "
                               "pickled; open it inside the function instead")

    with socket.socket() as sock:
        with pytest.raises(BuildError, match=r"it captures argument 2 \(a socket.socket\), which cannot be pickled; "
                                             r"connect inside the function instead"):
            FunctionPreprocessor().prepare(train, args=(1, sock))
        with pytest.raises(BuildError, match=r"it captures keyword argument 'offset' \(a socket.socket\)"):
            FunctionPreprocessor().prepare(train, args=(1,), kwargs={"offset": sock})

        def with_default(s=sock):
            return s
        with pytest.raises(BuildError, match=r"it captures default of 's' \(a socket.socket\)"):
            FunctionPreprocessor().prepare(with_default)


def test_unpicklable_inside_a_container_reached_through_a_helper():
    with pytest.raises(BuildError) as e:
        FunctionPreprocessor().prepare(via_helper)
    assert e.value.message == ("cannot ship function via_helper: it captures 'CONFIG'['conn'] (via reads_config) "
                               "(a sqlite3.Connection), which cannot be pickled; open it inside the function instead")


BIG = b"\1" * 300_000


def uses_big(n):
    return len(BIG) + n


def test_oversized_pickle_names_the_captured_data():
    with pytest.raises(BuildError) as e:
        FunctionPreprocessor(max_context_bytes=100_000).prepare(uses_big, args=(b"\2" * 50_000,))
    # The total includes the pickled code, which varies a little between Python versions.
    assert re.fullmatch(r"function uses_big pickles to 34\d\.\d KiB, over the 97\.7 KiB limit; "
                        r"biggest captured: 'BIG' \(293\.0 KiB\), argument 1 \(48\.8 KiB\)", e.value.message), e.value.message
    assert e.value.hint.startswith("load large data inside the function instead of capturing it")


# -- parse_result -----------------------------------------------------------------------------------

def test_parse_result_edge_cases():
    import base64

    blob = base64.b64encode(cloudpickle.dumps([1, 2])).decode()
    # kubectl --timestamps style prefixes; the last marker wins.
    log = f"2024-01-01T00:00:00Z {RESULT_MARKER}{base64.b64encode(cloudpickle.dumps(0)).decode()}\n" \
          f"2024-01-01T00:00:01Z {RESULT_MARKER}{blob}\n"
    assert parse_result(log) == [1, 2]
    assert parse_result(log.encode()) == [1, 2]
    with pytest.raises(FairingError) as e:
        parse_result(f"{RESULT_MARKER}too-large:99999999:/tmp/fairing-output/result.pkl\n")
    # Too large for the log: the run handle reads it from the run's outputs (ResultInOutputs).
    assert e.value.message == "the function's result (99999999 bytes) is kept in the run's outputs, not in its log"
    assert "fair runs outputs RUN_ID --path result.pkl" in e.value.hint and e.value.name == "result.pkl"
    with pytest.raises(FairingError, match=r"^cannot read the function's result from the log"):
        parse_result(f"{RESULT_MARKER}{blob[:-6]}\n")
    with pytest.raises(FairingError) as e:
        parse_result("training 1\n")
    assert e.value.message == "the workload's log has no function result (the run did not finish)"


# -- in a container ---------------------------------------------------------------------------------

def _cloudpickle_dir() -> dict[str, Path]:
    # The base image has only the stdlib; a builder installs the cloudpickle requirement, here we
    # put the host's cloudpickle package next to the shim (the shim puts the context root on sys.path).
    return {"cloudpickle": Path(cloudpickle.__file__).parent}


def test_function_runs_in_container(engine, base_image, tmp_path):
    ctx = FunctionPreprocessor().prepare(train, args=(5,), kwargs={"offset": 2})
    code, logs = run_in_container(engine, base_image, ctx, tmp_path, env={"FAIRING_OUTPUT_DIR": "/app/out"},
                                  extra=_cloudpickle_dir())
    assert code == 0, logs
    assert logs.splitlines()[0] == "training 5"
    expected = {"total": 102, "python": ("3", "11")}
    assert parse_result(logs) == expected
    assert cloudpickle.loads((tmp_path / "mounted/out/result.pkl").read_bytes()) == expected


def test_version_mismatch_in_container(engine, base_image, tmp_path):
    ctx = FunctionPreprocessor().prepare(train, args=(1,))
    pkl = ctx.files[".fairing/function.pkl"]
    head, _, payload = pkl.partition(b"\n")
    claimed = dict(json.loads(head), python="3.12")
    ctx = type(ctx)(**{**ctx.__dict__, "files": {**ctx.files, ".fairing/function.pkl": json.dumps(claimed).encode() + b"\n" + payload}})
    code, logs = run_in_container(engine, base_image, ctx, tmp_path, extra=_cloudpickle_dir())
    assert (code, logs) == (2, "fairing: function was pickled with Python 3.12 but the image runs Python 3.11; "
                               "use a base image with Python 3.12\n")
