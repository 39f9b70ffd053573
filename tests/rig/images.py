"""Tiny single-binary images the rig builds itself (no public registry is reachable): a static Go
program in a FROM-scratch image, pushed to the rig's plain registry.

The pause image is the first user: containerd needs a sandbox image to start any pod, and
registry.k8s.io/pause cannot be pulled here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

from . import netutil
from .state import RigError, cache_dir, log_tail

MT_OCI = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

# The pause container's only jobs: hold the pod's namespaces, reap zombies (it is PID 1 when the
# pod shares its PID namespace) and exit on SIGINT/SIGTERM.
PAUSE_GO = """package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
"""


def go_binary(name: str, source: str, log: Path) -> Path:
    """Build a stdlib-only Go program statically, once (cached by its source's hash)."""
    key = hashlib.sha256(source.encode()).hexdigest()[:12]
    out = cache_dir() / "rig-bin" / f"{name}-{key}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, open(log, "ab") as f:
        (Path(tmp) / "go.mod").write_text(f"module fairing.local/{name}\n\ngo 1.22\n")
        (Path(tmp) / "main.go").write_text(source)
        try:
            rc = subprocess.run(["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(out) + ".tmp", "."],
                                cwd=tmp, stdout=f, stderr=subprocess.STDOUT, timeout=600,
                                env=dict(os.environ, CGO_ENABLED="0", GOFLAGS="")).returncode
        except FileNotFoundError:
            raise RigError("`go` is not installed (./scripts/setup installs it)") from None
    if rc != 0:
        raise RigError(f"building {name} failed\n{log_tail(log)}")
    os.replace(str(out) + ".tmp", out)
    return out


def _layer(files: dict[str, tuple[bytes, int]]) -> tuple[bytes, str]:
    """(gzipped tar, diff_id), byte-for-byte reproducible (fixed mtimes, owners, order)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            data, mode = files[path]
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as z:
        z.write(raw.getvalue())
    return gz.getvalue(), diff_id


def _blob(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _push_blob(url: str, repo: str, data: bytes) -> None:
    digest = _blob(data)
    if netutil.request(f"{url}/v2/{repo}/blobs/{digest}", method="HEAD").status == 200:
        return
    r = netutil.request(f"{url}/v2/{repo}/blobs/uploads/", method="POST", data=b"")
    if r.status != 202:
        raise RigError(f"registry {url} refused a blob upload to {repo}: HTTP {r.status}")
    loc = r.headers["location"]
    loc = loc if loc.startswith("http") else url + loc
    sep = "&" if "?" in loc else "?"
    r = netutil.request(f"{loc}{sep}digest={digest}", method="PUT", data=data,
                        headers={"Content-Type": "application/octet-stream"})
    if r.status != 201:
        raise RigError(f"registry {url} refused blob {digest} for {repo}: HTTP {r.status}")


def push_scratch_image(url: str, repo: str, tag: str, files: dict[str, tuple[bytes, int]],
                       entrypoint: list[str]) -> str:
    """Push a FROM-scratch image holding `files` ({path: (bytes, mode)}); returns its digest.
    A second call with the same content finds the manifest and pushes nothing."""
    layer, diff_id = _layer(files)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Entrypoint": entrypoint, "WorkingDir": "/"},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}},
                        sort_keys=True, separators=(",", ":")).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI,
                           "config": {"mediaType": MT_CONFIG, "digest": _blob(config), "size": len(config)},
                           "layers": [{"mediaType": MT_LAYER, "digest": _blob(layer), "size": len(layer)}]},
                          sort_keys=True, separators=(",", ":")).encode()
    digest = _blob(manifest)
    have = netutil.request(f"{url}/v2/{repo}/manifests/{tag}", method="HEAD", headers={"Accept": MT_OCI})
    if have.status == 200 and have.headers.get("docker-content-digest") == digest:
        return digest
    _push_blob(url, repo, layer)
    _push_blob(url, repo, config)
    r = netutil.request(f"{url}/v2/{repo}/manifests/{tag}", method="PUT", data=manifest,
                        headers={"Content-Type": MT_OCI})
    if r.status != 201:
        raise RigError(f"registry {url} refused the manifest {repo}:{tag}: HTTP {r.status} {r.body[:200]!r}")
    return digest


def ensure_pause_image(url: str, host: str, log: Path) -> str:
    """host/fairing-rig/pause:3.10 (a static Go pause), pushed once; returns the image reference."""
    binary = go_binary("pause", PAUSE_GO, log)
    push_scratch_image(url, "fairing-rig/pause", "3.10", {"pause": (binary.read_bytes(), 0o755)}, ["/pause"])
    return f"{host}/fairing-rig/pause:3.10"
