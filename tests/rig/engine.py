"""Podman as the test container engine, through its Docker-compatible API on a unix socket.

Host configuration the rig owns (merged into existing files, never clobbering other settings):
- /etc/containers/containers.conf: runtime runc (crun fails on these machines) and default
  ulimits the sandbox permits (runc cannot raise RLIMIT_NOFILE/NPROC to the host defaults here);
- /etc/containers/registries.conf.d/50-fairing-rig.conf: the plain-HTTP rig registries insecure;
- /etc/containers/certs.d/127.0.0.1:5443/ca.crt: trust the rig CA for the TLS registry;
- storage driver: overlay when a real `podman run` works with it, else vfs;
- /etc/containers/fairing-rig/conmon (named first in `engine.conmon_path`): conmon, with an
  auto-removed container removed EXIT_DELAY seconds after its cleanup (see `conmon_wrapper`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .certs import ensure_certs
from .registry import PLAIN_PORT, SECURE_PORT, TOKEN_PORT
from .state import RigError, Service, rig_dir, rig_lock, run, run_dir, write_if_changed

CONTAINERS_CONF = Path(os.environ.get("FAIRING_RIG_CONTAINERS_DIR", "/etc/containers"))
ULIMITS = ["nofile=1024:1024", "nproc=1024:1024"]
INSECURE = [f"127.0.0.1:{PLAIN_PORT}", f"localhost:{PLAIN_PORT}", f"127.0.0.1:{TOKEN_PORT}"]
CONMON_WRAPPER = CONTAINERS_CONF / "fairing-rig" / "conmon"
EXIT_HELPER = CONTAINERS_CONF / "fairing-rig" / "exit-then-remove"
CONMON_PATHS = ["/usr/libexec/podman/conmon", "/usr/local/libexec/podman/conmon", "/usr/local/lib/podman/conmon",
                "/usr/bin/conmon", "/usr/sbin/conmon", "/usr/local/bin/conmon", "/usr/local/sbin/conmon"]
EXIT_DELAY = 5


@dataclass(frozen=True)
class Engine:
    docker_host: str      # "unix:///run/fairing/podman.sock"
    socket_path: str
    storage_driver: str

    def client(self, timeout: int = 300):
        """A docker.DockerClient talking to Podman's compat API."""
        import docker

        return docker.DockerClient(base_url=self.docker_host, version="auto", timeout=timeout)


# --- TOML text merge -----------------------------------------------------------------------------
_TABLE = re.compile(r"^\s*\[([A-Za-z0-9_.\-]+)\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(r"^\s*\[\[([A-Za-z0-9_.\-]+)\]\]\s*(#.*)?$")


def _value_end(lines: list[str], i: int) -> int:
    """Index after the last line of the key/value starting at line i (multi-line arrays)."""
    depth, j = 0, i
    while j < len(lines):
        code = re.sub(r'"(\\.|[^"\\])*"|\'[^\']*\'', '""', lines[j]).split("#", 1)[0]
        depth += code.count("[") - code.count("]")
        j += 1
        if depth <= 0:
            break
    return j


def merge_toml(text: str, settings: dict[str, dict[str, str]]) -> str:
    """Set `table.key = <toml literal>` in `text`, keeping every other line and comment."""
    lines = text.splitlines()
    for table, values in settings.items():
        for key, literal in values.items():
            new = f"{key} = {literal}"
            start = next((i for i, l in enumerate(lines)
                          if (m := _TABLE.match(l)) and m.group(1) == table), None)
            if start is None:
                lines += ["", f"[{table}]", new]
                continue
            end = next((i for i in range(start + 1, len(lines))
                        if _TABLE.match(lines[i]) or _ARRAY_TABLE.match(lines[i])), len(lines))
            keyre = re.compile(rf"^\s*{re.escape(key)}\s*=")
            at = next((i for i in range(start + 1, end) if keyre.match(lines[i])), None)
            if at is None:
                lines.insert(start + 1, new)
            else:
                lines[at:_value_end(lines, at)] = [new]
    out = "\n".join(lines) + "\n"
    tomllib.loads(out)  # never write a file podman cannot parse
    return out


def _real_conmon() -> str | None:
    return next((p for p in CONMON_PATHS if os.access(p, os.X_OK)), None) or shutil.which("conmon")


def conmon_wrapper(real: str) -> str:
    """conmon, with the exit command of an auto-removed container replaced by EXIT_HELPER.

    Why: kfp.local's DockerRunner (kfp 2.x) runs every task with `auto_remove=True`, then asks
    for the container's logs (docker-py inspects it first) and waits for its exit code. Podman 4.3
    (Debian 12) has conmon run `podman container cleanup --rm ID` the moment such a container
    exits, and its Docker-compatible `wait` answers only once that cleanup ran (the "stopped" state
    before it does not count as not running), so:
    - a task that exits before kfp asks for its logs fails with `500 ... container ... does not
      exist in database` (the inspect races the removal; kfp catches only a 404);
    - every wait finds the container removed, so a failed task reads as exit code 0 (kfp's
      fallback for a 404; after a 200 Podman sends `{"StatusCode": 0, "Error": ...}`).
    EXIT_HELPER cleans up at once (the container becomes "exited": wait returns its real exit
    code, logs and inspect work) and removes it EXIT_DELAY seconds later. Other containers (all
    of fairing's; docker-py's `remove=True`, which the client removes; exec sessions, which
    already have their own delay) keep conmon's own exit command."""
    return (f"#!/bin/sh\n# Written by fairing's test rig (tests/rig/engine.py): conmon, with the exit command of\n"
            f"# auto-removed containers run through {EXIT_HELPER.name} (see conmon_wrapper() there).\n"
            f'case " $* " in\n'
            f'  *" --exit-command-arg --exec "*) ;;\n'
            f'  *" --exit-command-arg --rm "*)\n'
            f"    n=$# prev=\n"
            f'    while [ "$n" -gt 0 ]; do\n'
            f'      a=$1; shift; n=$((n - 1))\n'
            f'      if [ "$prev" = --exit-command ]; then set -- "$@" {shlex.quote(str(EXIT_HELPER))} '
            f'--exit-command-arg "$a"; else set -- "$@" "$a"; fi\n'
            f"      prev=$a\n"
            f"    done ;;\n"
            f"esac\n"
            f'exec {shlex.quote(real)} "$@"\n')


def exit_helper() -> str:
    """Run by conmon when an auto-removed container exits, with podman's exit command as its
    arguments (`podman ... container cleanup --rm ID`): the cleanup now, the removal later."""
    return (f"#!/bin/sh\n# Written by fairing's test rig (tests/rig/engine.py): clean up an auto-removed\n"
            f"# container now and remove it {EXIT_DELAY}s later (see conmon_wrapper() there).\n"
            f"without_rm() {{\n"
            f"  n=$#\n"
            f'  while [ "$n" -gt 0 ]; do\n'
            f'    a=$1; shift; n=$((n - 1))\n'
            f'    [ "$a" = --rm ] || set -- "$@" "$a"\n'
            f"  done\n"
            f'  "$@"\n'
            f"}}\n"
            f'without_rm "$@"\n'
            f"sleep {EXIT_DELAY}\n"
            f'exec "$@"\n')


def configure_host() -> bool:
    """Write the podman configuration; True if anything changed (the service must restart)."""
    changed = False
    engine = {"runtime": '"runc"'}
    real = _real_conmon()
    if real:
        changed |= write_if_changed(EXIT_HELPER, exit_helper(), mode=0o755)
        changed |= write_if_changed(CONMON_WRAPPER, conmon_wrapper(real), mode=0o755)
        # The wrapper first; podman takes the first path that exists, so the stock ones follow.
        engine["conmon_path"] = json.dumps([str(CONMON_WRAPPER)] + CONMON_PATHS)
    conf = CONTAINERS_CONF / "containers.conf"
    old = conf.read_text() if conf.exists() else ""
    changed |= write_if_changed(conf, merge_toml(old, {
        "engine": engine,
        "containers": {"default_ulimits": json.dumps(ULIMITS)},
    }))
    dropin = "# Written by fairing's test rig (tests/rig/engine.py): local plain-HTTP registries.\n"
    for loc in INSECURE:
        dropin += f'\n[[registry]]\nlocation = "{loc}"\ninsecure = true\n'
    changed |= write_if_changed(CONTAINERS_CONF / "registries.conf.d" / "50-fairing-rig.conf",
                                 dropin)
    ca = ensure_certs().ca_cert.read_text()
    for host in (f"127.0.0.1:{SECURE_PORT}", f"localhost:{SECURE_PORT}"):
        changed |= write_if_changed(CONTAINERS_CONF / "certs.d" / host / "ca.crt", ca)
    return changed


# --- storage driver ------------------------------------------------------------------------------
def _probe_tar(dest: Path) -> Path:
    """A tiny image from host binaries (/usr/bin/true and its libraries) to test `podman run`."""
    from .tarball import write_tree

    root = dest / "rootfs"
    exe = Path(shutil.which("true") or "/usr/bin/true").resolve()
    out = run(["ldd", str(exe)], what="rig: ldd for the podman probe image").stdout.decode()
    files = [exe] + [Path(p) for p in re.findall(r"(/\S+)\s+\(0x", out)]
    for f in files:
        target = root / f.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f.resolve(), target)
    path = dest / "probe.tar"
    with open(path, "wb") as f:
        write_tree(root, f)
    return path


def _probe_driver(driver: str, work: Path) -> str | None:
    """None if a real container runs with `driver` in a scratch store, else the error."""
    store = work / driver
    base = ["podman", "--root", str(store / "root"), "--runroot", str(store / "run"),
            "--storage-driver", driver]
    real = _real_conmon()
    if real:  # not the wrapper: its delayed removal would recreate the store after it is deleted
        base += ["--conmon", real]
    try:
        run(base + ["import", "-q", str(_probe_tar(work)), "localhost/fairing-rig/probe:1"],
            what=f"rig: podman import ({driver} probe)", timeout=120)
        p = run(base + ["run", "--rm", "--net=none", "localhost/fairing-rig/probe:1",
                        "/usr/bin/true"], what=f"rig: podman run ({driver} probe)", timeout=120,
                check=False)
        return None if p.returncode == 0 else (p.stderr or p.stdout).decode(errors="replace")
    except RigError as e:
        return str(e)
    finally:
        _remove_store(base, store)


def _remove_store(base: list[str], store: Path) -> None:
    # Not `podman system reset`: that also deletes host-wide state (networks) beyond this store.
    run(base + ["rmi", "-af"], what="rig: clean probe store", check=False)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(str(store) + "/")), reverse=True):
        run(["umount", "-l", m], what="rig: unmount probe store", check=False)
    shutil.rmtree(store, ignore_errors=True)


def ensure_storage_driver() -> str:
    decided = rig_dir() / "engine.json"
    if decided.exists():
        return json.loads(decided.read_text())["storage_driver"]
    conf = CONTAINERS_CONF / "storage.conf"
    with tempfile.TemporaryDirectory(prefix="fairing-rig-probe-") as tmp:
        errors = {}
        for driver in ("overlay", "vfs"):
            err = _probe_driver(driver, Path(tmp))
            if err is None:
                break
            errors[driver] = err.strip().splitlines()[-1:] if err.strip() else ["?"]
        else:
            raise RigError("podman cannot run a container with the overlay or vfs storage driver: "
                           + "; ".join(f"{d}: {e[0]}" for d, e in errors.items()))
    effective = run(["podman", "info", "--format", "{{.Store.GraphDriverName}}"],
                    what="rig: podman info", check=False).stdout.decode().strip()
    if effective != driver:
        if conf.exists():
            text = merge_toml(conf.read_text(), {"storage": {"driver": json.dumps(driver)}})
        else:  # podman has compiled-in defaults only; a new file must name the paths too
            text = merge_toml("", {"storage": {"driver": json.dumps(driver),
                                               "runroot": '"/run/containers/storage"',
                                               "graphroot": '"/var/lib/containers/storage"'}})
        write_if_changed(conf, text)
    decided.write_text(json.dumps({"storage_driver": driver}))
    return driver


# --- the API service -----------------------------------------------------------------------------
def _ping(sock: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(3)
        s.connect(sock)
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0] and data.endswith(b"OK")


def ensure_engine() -> Engine:
    if not shutil.which("podman"):
        raise RigError("podman is not installed (./scripts/setup installs it)")
    with rig_lock():
        changed = configure_host()
        driver = ensure_storage_driver()
        sock = str(run_dir() / "podman.sock")
        svc = Service("podman", ["podman", "system", "service", "--time=0", f"unix://{sock}"])
        if changed:
            svc.stop()  # a running service would keep the old configuration
        if not svc.alive() and os.path.exists(sock):
            os.unlink(sock)  # stale socket from a dead service
        svc.ensure(lambda: _ping(sock), timeout=60)
    return Engine(docker_host=f"unix://{sock}", socket_path=sock, storage_driver=driver)


def stop_engine() -> bool:
    with rig_lock():
        return Service("podman", ["podman"]).stop()
