"""A real MLflow tracking server on loopback for tests: sqlite backend, artifacts served by the
server, telemetry off. Started per test (it is cheap and tests stop it on purpose)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MlflowServer:
    uri: str
    proc: subprocess.Popen
    root: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The server is a process group (uvicorn workers): stop all of it.
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(30)

    def log(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")


def start(root: Path, timeout: float = 120) -> MlflowServer:
    import requests

    root.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("mlflow") or ""
    cmd = [exe] if exe else [sys.executable, "-m", "mlflow"]
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([*cmd, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                             "--artifacts-destination", str(root / "artifacts")],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    server = MlflowServer(f"http://127.0.0.1:{port}", proc, root)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{server.log()[-3000:]}")
        try:
            if requests.get(server.uri + "/health", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"mlflow server did not answer within {timeout:g}s:\n{server.log()[-3000:]}")
