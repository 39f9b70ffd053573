"""Where the rig keeps its state, how it locks, and how it runs long-lived service processes.

Services outlive the pytest process that started them (the next run reuses them), so they are
spawned detached with a pidfile and a log under ~/.cache/fairing/rig/, and every `ensure_*`
checks "pid alive *and* port healthy" before deciding to (re)start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence


class RigError(RuntimeError):
    """A rig service could not be provided; the message says which and shows its log tail."""


def cache_dir() -> Path:
    # Same variable scripts/build-k8s honours, so one knob moves the whole cache.
    return Path(os.environ.get("FAIRING_CACHE") or Path.home() / ".cache" / "fairing")


def rig_dir() -> Path:
    d = cache_dir() / "rig"
    d.mkdir(parents=True, exist_ok=True)
    return d


def run_dir() -> Path:
    d = Path(os.environ.get("FAIRING_RIG_RUN_DIR", "/run/fairing"))
    d.mkdir(parents=True, exist_ok=True)
    return d


# --- locking -------------------------------------------------------------------------------------
# flock is per open file description: a second open+flock in the same process would deadlock, so
# the process holds one descriptor and counts nested users (thread-safe via an RLock).
_lock_guard = threading.RLock()
_lock_depth = 0
_lock_fd: int | None = None


@contextlib.contextmanager
def rig_lock() -> Iterator[None]:
    """Exclusive, re-entrant lock shared by every process that touches the rig."""
    global _lock_depth, _lock_fd
    with _lock_guard:
        if _lock_depth == 0:
            fd = os.open(rig_dir() / "lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            _lock_fd = fd
        _lock_depth += 1
        try:
            yield
        finally:
            _lock_depth -= 1
            if _lock_depth == 0 and _lock_fd is not None:
                fcntl.flock(_lock_fd, fcntl.LOCK_UN)
                os.close(_lock_fd)
                _lock_fd = None


# --- small utilities -----------------------------------------------------------------------------
def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write `text` atomically unless the file already holds it; True when it changed (a running
    service must then restart to read it)."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".fairing-tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)
    return True


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text[-lines:]) or "(log is empty)"


def run(argv: Sequence[str], *, what: str, timeout: float = 600, input: bytes | None = None,
        env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, turning failure into a RigError naming `what` and showing stderr's tail."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, timeout=timeout, input=input,
                              env=env)
    except FileNotFoundError:
        raise RigError(f"{what}: `{argv[0]}` is not installed (run ./scripts/setup)") from None
    except subprocess.TimeoutExpired:
        raise RigError(f"{what}: `{' '.join(argv[:3])} ...` did not finish in {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        tail = "\n  ".join(err[-15:]) or "(no output)"
        raise RigError(f"{what} failed (exit {proc.returncode}): {' '.join(argv[:4])} ...\n  {tail}")
    return proc


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, log: Path | None = None,
               alive: Callable[[], bool] | None = None) -> None:
    """Poll `check` until true; fail early (with the log tail) if the process died meanwhile."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if alive is not None and not alive():
            break  # checked first: a dead service's port may still hang a probe (someone else's)
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    state = "exited" if alive is not None and not alive() else f"not ready after {timeout:.0f}s"
    tail = f"\n--- last lines of {log} ---\n{log_tail(log)}" if log else ""
    raise RigError(f"{what} {state}{tail}")


def service_env() -> dict[str, str]:
    """A clean environment for services: a test's REGISTRY_* / CONTAINERS_* / DOCKER_* variables
    must not leak into the shared registries or podman (both read such overrides)."""
    return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
            "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}


# --- detached services ---------------------------------------------------------------------------
def _proc_info(pid: int) -> tuple[list[str], str] | None:
    """(argv, start time in clock ticks) of a live process, None if gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    if fields[0] in ("Z", "X"):  # a zombie is as dead as it gets
        return None
    return raw.decode(errors="replace").split("\0"), fields[19]


def _cmdline(pid: int) -> list[str]:
    info = _proc_info(pid)
    return info[0] if info else []


class Service:
    """A long-lived process the rig owns, identified by its pidfile (never by name)."""

    def __init__(self, name: str, argv: Sequence[str], *, cwd: Path | None = None,
                 env: dict | None = None):
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.env = env
        self.pidfile = rig_dir() / f"{name}.pid"
        self.log = rig_dir() / f"{name}.log"

    def pid(self) -> int | None:
        """The pid if our process is alive, else None.

        The pidfile holds "pid starttime": a recycled pid (same number, later start) is not ours,
        and neither is the interpreter path it was started with part of the identity.
        """
        try:
            recorded = self.pidfile.read_text().split()
            pid = int(recorded[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        info = _proc_info(pid)
        if info is None:
            return None
        if len(recorded) > 1:
            return pid if info[1] == recorded[1] else None
        return pid if info[0][1:len(self.argv)] == self.argv[1:] else None  # older pidfile

    def alive(self) -> bool:
        return self.pid() is not None

    def start(self) -> int:
        if self.log.exists() and self.log.stat().st_size > 5 << 20:
            os.replace(self.log, self.log.with_name(self.log.name + ".1"))  # keep logs bounded
        with open(self.log, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: {self.argv[0]}\n".encode())
        # Double fork through sh: the service is re-parented away from us, so it survives this
        # Python process and never lingers as our zombie.
        script = '"$@" >>"$FAIRING_RIG_LOG" 2>&1 </dev/null & echo $!'
        env = dict(self.env if self.env is not None else service_env(), FAIRING_RIG_LOG=str(self.log))
        # A service outlives the checkout that started it: by default it runs in the rig's state
        # dir, never in the caller's cwd (a deleted cwd made Podman fail with "write child: broken pipe").
        out = subprocess.run(["sh", "-c", script, "sh", *self.argv], cwd=self.cwd or rig_dir(), env=env,
                             capture_output=True, start_new_session=True, check=True)
        pid = int(out.stdout.split()[0])
        info = _proc_info(pid)
        self.pidfile.write_text(f"{pid} {info[1] if info else ''}\n")
        return pid

    def stop(self, timeout: float = 10) -> bool:
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _cmdline(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _cmdline(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        return True

    def ensure(self, healthy: Callable[[], bool], *, port: int | None = None,
               timeout: float = 30, grace: float = 10) -> None:
        """Leave a healthy instance running: reuse, restart if unhealthy, or start fresh."""
        if self.alive():
            # A busy service can miss one probe; only restart one that stays unhealthy (restarting
            # a shared service breaks whoever is using it).
            deadline = time.monotonic() + grace
            while self.alive():
                try:
                    if healthy():
                        return
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            self.stop()
        if port is not None and port_open(port):
            raise RigError(
                f"{self.name}: port 127.0.0.1:{port} is taken by a process the rig did not start "
                f"(see `ss -ltnp 'sport = :{port}'`); stop it or free the port")
        self.start()
        wait_until(healthy, timeout=timeout, what=f"rig service {self.name}", log=self.log,
                   alive=self.alive)
