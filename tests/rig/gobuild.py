"""Go binaries the rig builds from the Go module proxy (controllers of Trainer, JobSet, Kueue,
Katib), cached under ~/.cache/fairing/<name>/<version>/<name>, one build per binary at a time."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .state import RigError, cache_dir, log_tail


def _build_log(name: str) -> Path:
    d = cache_dir() / "rig" / "kube"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"build-{name}.log"


def _go(argv: list[str], *, cwd: str, log, env: dict, what: str) -> None:
    try:
        rc = subprocess.run(["nice", "-n", "10", *argv], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            env=env, timeout=2400).returncode
    except FileNotFoundError:
        raise RigError(f"`go` is not installed; the rig builds {what} with it") from None
    if rc != 0:
        log.flush()
        raise RigError(f"building {what} failed at `{' '.join(argv[:3])}`\n{log_tail(Path(log.name))}")


def go_build(name: str, module: str, version: str, package: str, *, install: bool | str) -> Path:
    """One controller binary, cached by version. `go install pkg@version` where the module allows
    it; otherwise (replace directives, or a proxy that hides the version list) as a dependency of
    a throwaway module, as the rig does for etcd; or, with install="source", `go build` inside the
    module's own source tree (a module whose replace directives name a dependency the proxy no
    longer serves under its old path: only its own go.mod and go.sum resolve it)."""
    out = cache_dir() / name / version / name
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    # One build per binary at a time (several test sessions may start together); the others wait.
    with open(out.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.exists():
            _build_locked(out, name, module, version, package, install=install)
    return out


def _build_locked(out: Path, name: str, module: str, version: str, package: str, *, install: bool | str) -> None:
    env = dict(os.environ, CGO_ENABLED="0")
    with tempfile.TemporaryDirectory() as tmp, open(_build_log(name), "ab") as log:
        if install == "source":
            from .kube import module_source

            # The module cache is read-only, which suits a build that must not edit go.mod.
            pkg = "./" + package[len(module):].lstrip("/") if package != module else "."
            _go(["go", "build", "-mod=readonly", "-trimpath", "-ldflags=-s -w", "-o", str(out) + ".tmp", pkg],
                cwd=str(module_source(module, version)), log=log, env=dict(env, GOFLAGS="-buildvcs=false"),
                what=f"{name} {version}")
        elif install:
            _go(["go", "install", "-trimpath", "-ldflags=-s -w", f"{package}@{version}"], cwd=tmp, log=log,
                env=dict(env, GOBIN=tmp), what=f"{name} {version}")
            shutil.copy2(Path(tmp) / package.rsplit("/", 1)[-1], str(out) + ".tmp")
        else:
            env["GOFLAGS"] = "-mod=mod"
            for argv in (["go", "mod", "init", f"fairing.local/{name}build"],
                         ["go", "get", f"{module}@{version}"],
                         ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(out) + ".tmp", package]):
                _go(argv, cwd=tmp, log=log, env=env, what=f"{name} {version}")
    os.replace(str(out) + ".tmp", out)
