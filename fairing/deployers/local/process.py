"""Local process runs: the build context written to a temp dir, its entrypoint run as a child
process, with a virtualenv for its requirements (cached by requirements; none when the running
interpreter already has them). The temp dir goes away on delete() or at interpreter exit.
Processes end with the command that started them: there is nothing to attach to later."""
from __future__ import annotations

import atexit
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from ...context import OUTPUT_DIR, RESULT_MARKER, BuildContext, BuiltImage, write_context
from ...errors import BuildError, ConfigError, DeployError, WaitTimeout
from ..base import Handle
from . import spec

# Live runs of this interpreter, cleaned up at exit (a Ctrl-C must not leave temp dirs behind).
_live_dirs: set[str] = set()
_live_procs: dict[int, subprocess.Popen] = {}
_registered = False


def _track() -> None:
    """Register the exit cleanup on the first run, not at import (no import-time side effects)."""
    global _registered
    if not _registered:
        atexit.register(_cleanup_at_exit)
        _registered = True


def _cleanup_at_exit() -> None:
    for proc in list(_live_procs.values()):
        _kill_group(proc)
    for d in list(_live_dirs):
        shutil.rmtree(d, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    _live_procs.pop(proc.pid, None)


def venv_for(requirements: Sequence[str], python: str, log: io.TextIOBase | None = None) -> Path:
    """A virtualenv with `requirements` installed, cached by (python, requirements) so a second
    local run with the same requirements starts at once. Built aside, then renamed into place, so
    a failed install never leaves a half-made venv in the cache."""
    key = hashlib.sha256("\n".join([python, *requirements]).encode()).hexdigest()[:16]
    from ...oci.cache import cache_root  # the one $FAIRING_CACHE root

    root = cache_root() / "venvs"
    final = root / key
    if (final / ".complete").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=root))
    try:
        subprocess.run([python, "-m", "venv", str(work)], check=True, capture_output=True)
        reqs = work / "requirements.txt"
        reqs.write_text("\n".join(requirements) + "\n")
        proc = subprocess.run([str(work / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                               "-q", "-r", str(reqs)], capture_output=True, text=True)
        if log is not None:
            log.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            last = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()][-1:] or ["?"]
            raise BuildError(f"installing requirements for the local run failed: {last[0][:300]}",
                             hint=f"check the requirements ({', '.join(requirements)[:200]}) install with pip here")
        (work / ".complete").write_text("")
        # Venvs hard-code their path in scripts; `python -m ...` with the moved dir still works because
        # we only ever run bin/python, which resolves its prefix from pyvenv.cfg next to it.
        try:
            work.rename(final)
        except OSError:  # a concurrent run finished first: use theirs
            shutil.rmtree(work, ignore_errors=True)
        return final
    except subprocess.CalledProcessError as e:
        shutil.rmtree(work, ignore_errors=True)
        raise BuildError(f"creating a virtualenv with {python} failed: {(e.stderr or b'').decode()[-200:]}",
                         hint="install the venv module (Debian: apt install python3-venv)") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def satisfied(requirements: Sequence[str], python: str) -> bool:
    """True when every requirement is an exact `name==version` pin that this interpreter already
    has (e.g. the function preprocessor's cloudpickle pin): then no virtualenv is needed."""
    import re
    from importlib import metadata

    if os.path.realpath(python) != os.path.realpath(sys.executable):
        return False
    for req in requirements:
        m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)\s*", req)
        if not m:
            return False
        try:
            if metadata.version(m.group(1)) != m.group(2):
                return False
        except metadata.PackageNotFoundError:
            return False
    return True


class ProcessHandle(Handle):
    """A local child process running a materialised build context."""

    mode = "process"

    def __init__(self, name: str, root: Path, proc: subprocess.Popen, ctx: BuildContext | None,
                 output_dir: Path):
        super().__init__(name)
        self.root, self.proc, self.context, self.output_dir = root, proc, ctx, output_dir
        self.log_path = root / "output.log"
        self._deleted = False

    @classmethod
    def start(cls, name: str, image: BuiltImage, template: dict, *, python: str) -> "ProcessHandle":
        ctx = image.context
        if ctx is None:
            raise DeployError("a local process run needs the build context", hint="report this as a bug")
        _, c = spec.main_container(template)
        root = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        _track()
        _live_dirs.add(str(root))
        try:
            app = write_context(ctx, root / "app")
            output_dir = root / "output"
            output_dir.mkdir()
            log = open(root / "output.log", "w", buffering=1)
            exe = python
            if ctx.requirements and not satisfied(ctx.requirements, python):
                exe = str(venv_for(list(ctx.requirements), python, log) / "bin" / "python")
            argv = [str(a) for a in list(c.get("command") or ctx.entrypoint) + list(c.get("args", []))]
            if argv and (Path(argv[0]).name in ("python", "python3") or argv[0].startswith("python3.")):
                argv[0] = exe
            # Paths inside the image's workdir/output dir map to the temp dir.
            workdir = c.get("workingDir") or ctx.workdir
            argv = [_remap(a, workdir, str(app), OUTPUT_DIR, str(output_dir)) for a in argv]
            env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRING_")}
            env.update({k: _remap(v, workdir, str(app), OUTPUT_DIR, str(output_dir))
                        for k, v in spec.env(c).items()})
            env.update({"FAIRING_RUNTIME": "1", "FAIRING_OUTPUT_DIR": str(output_dir),
                        "PYTHONUNBUFFERED": "1", "FAIRING_NAME": name})
            try:
                proc = subprocess.Popen(argv, cwd=app, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as e:
                raise DeployError(f"cannot start {argv[0]}: {e.strerror}",
                                  hint="check the entry point's command") from None
            finally:
                log.close()
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            _live_dirs.discard(str(root))
            raise
        _live_procs[proc.pid] = proc
        return cls(name, root, proc, ctx, output_dir)

    def status(self) -> str:
        if self._deleted:
            return "Deleted"
        rc = self.proc.poll()
        if rc is None:
            return "Running"
        return "Succeeded" if rc == 0 else "Failed"

    def wait(self, timeout: float | None = None) -> str:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(f"{self.name} is still running after {timeout:g}s",
                              hint="wait longer (--timeout) or stop it with handle.delete()") from None
        _live_procs.pop(self.proc.pid, None)
        if rc != 0:
            raise DeployError(f"{self.name} failed with exit code {rc}: {self._last_line()}",
                              hint="its whole output is printed above (in Python: handle.logs()); a local process keeps no logs "
                                   "after it ends, so `fair logs` cannot show it again")
        return "Succeeded"

    def _last_line(self) -> str:
        lines = [l for l in self._read().splitlines() if l.strip() and not l.startswith(RESULT_MARKER)]
        return lines[-1][:300] if lines else "(no output)"

    def _read(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def logs(self, follow: bool = False) -> Iterator[str]:
        """Lines of output; with follow, until the process ends."""
        try:
            f = open(self.log_path, errors="replace")
        except FileNotFoundError:
            return
        with f:
            buf = ""
            while True:
                chunk = f.read(65536)
                if chunk:
                    buf += chunk
                    *lines, buf = buf.split("\n")
                    yield from lines
                    continue
                if not follow or self.proc.poll() is not None:
                    rest = f.read()
                    buf += rest
                    if rest:
                        continue
                    if buf:
                        yield buf
                    return
                time.sleep(0.05)

    def result(self) -> Any:
        return read_result(self.context, self.output_dir, self._read())

    def delete(self) -> None:
        _kill_group(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)
        _live_dirs.discard(str(self.root))
        self._deleted = True


def _remap(s: str, workdir: str, app: str, out_in: str, out_local: str) -> str:
    if s == workdir or s.startswith(workdir.rstrip("/") + "/"):
        return app + s[len(workdir.rstrip("/")):]
    if s == out_in or s.startswith(out_in + "/"):
        return out_local + s[len(out_in):]
    return s


def read_result(ctx: BuildContext | None, output_dir: Path | None, log_text: str) -> Any:
    """The function's return value: the result.pkl the shim wrote, else its FAIRING_RESULT log line
    (the format is fairing.results)."""
    from ...results import parse_result

    if ctx is not None and ctx.kind != "function":
        raise ConfigError(f"a {ctx.kind} workload has no return value", hint="read its output with logs()")
    if output_dir is not None and (output_dir / "result.pkl").is_file():
        import cloudpickle

        return cloudpickle.loads((output_dir / "result.pkl").read_bytes())
    return parse_result(log_text)
