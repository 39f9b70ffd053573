"""Helpers shared by the reliability suite: running `fair` as a user would, reading back what a
registry or the cluster holds, and checking that nothing was left behind."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
FAIR = shutil.which("fair") or ""
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


# --- running the CLI ---------------------------------------------------------------------------
def clean_env(**extra) -> dict:
    """This machine's environment minus anything pointing fair at a cluster, registry or engine;
    KUBECONFIG="" means "no kubeconfig" even if ~/.kube/config exists."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FAIRING_", "DOCKER_", "REGISTRY_AUTH")) and k not in ("KUBECONFIG",)}
    env["KUBECONFIG"] = ""
    env.update({k: str(v) for k, v in extra.items()})
    return env


def fair(*args, cwd: Path, env: dict | None = None, timeout: float = 300, prefix: list[str] | None = None):
    """Run `fair ARGS` in a subprocess. TMPDIR is a fresh directory next to `cwd`, so a test can
    tell whether this run leaked a temp dir without racing other tests on /tmp."""
    env = dict(env if env is not None else clean_env())
    tmp = Path(env.get("TMPDIR") or (Path(cwd).parent / f"{Path(cwd).name}-tmpdir"))
    tmp.mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp)
    cmd = [FAIR] if FAIR else [sys.executable, "-m", "fairing.cli"]
    return subprocess.run([*(prefix or []), *cmd, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def error_lines(r, code: int) -> tuple[str, str | None]:
    """The `error: ...` and `hint: ...` lines of a failed run, after checking the shape every error
    must have: the documented exit code, exactly one error line (then at most one hint line), no
    traceback anywhere."""
    out = f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert r.returncode == code, out
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, out
    lines = [l for l in r.stderr.splitlines() if l.startswith(("error:", "hint:"))]
    assert lines and lines[0].startswith("error: "), out
    assert [l.split(":")[0] for l in lines] in (["error"], ["error", "hint"]), out
    # The error is the last thing printed: nothing after the hint.
    assert r.stderr.rstrip().splitlines()[-1] == lines[-1], out
    return lines[0][len("error: "):], (lines[1][len("hint: "):] if len(lines) > 1 else None)


# --- registries --------------------------------------------------------------------------------
def _get(url: str, **kw):
    kw.setdefault("timeout", 30)
    return requests.get(url, **kw)


def tags(registry_url: str, repo: str, **kw) -> list[str] | None:
    """The repository's tags, or None if the registry has never heard of it."""
    r = _get(f"{registry_url}/v2/{repo}/tags/list", **kw)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return sorted(r.json().get("tags") or [])


@dataclass
class PulledImage:
    manifest_raw: bytes
    manifest: dict
    config_raw: bytes
    layers: list[bytes]  # compressed, as stored

    def layer_members(self) -> list[list[tarfile.TarInfo]]:
        return [tarfile.open(fileobj=io.BytesIO(gzip.decompress(b))).getmembers() for b in self.layers]


def pull(registry_url: str, repo: str, ref: str, **kw) -> PulledImage:
    """Fetch a manifest and every blob it names, checking each against its digest: an image that
    is tagged but incomplete fails here."""
    r = _get(f"{registry_url}/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT}, **kw)
    r.raise_for_status()
    raw = r.content
    if ref.startswith("sha256:"):
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == ref
    manifest = json.loads(raw)

    def blob(desc: dict) -> bytes:
        b = _get(f"{registry_url}/v2/{repo}/blobs/{desc['digest']}", **kw)
        assert b.status_code == 200, f"blob {desc['digest']} of {repo}:{ref} is missing ({b.status_code})"
        assert "sha256:" + hashlib.sha256(b.content).hexdigest() == desc["digest"], f"blob {desc['digest']} is corrupt"
        assert len(b.content) == desc["size"]
        return b.content

    return PulledImage(raw, manifest, blob(manifest["config"]), [blob(d) for d in manifest["layers"]])


def delete_tags(registry_url: str, repo: str) -> None:
    """Remove what a test pushed (the registry's storage has delete enabled)."""
    for t in tags(registry_url, repo) or []:
        d = manifest_digest(registry_url, repo, t)
        if d:
            requests.delete(f"{registry_url}/v2/{repo}/manifests/{d}", timeout=30)


def manifest_digest(registry_url: str, repo: str, ref: str, **kw) -> str | None:
    r = requests.head(f"{registry_url}/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT}, timeout=30, **kw)
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


# --- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def rel_cache(tmp_path_factory) -> Path:
    """One FAIRING_CACHE for the suite: base layers fetched once, never the user's cache."""
    return tmp_path_factory.mktemp("fairing-cache")


def training_dir(root: Path, *, data_bytes: int = 0, name: str = "proj", marker: str = "") -> Path:
    """A small training project: train.py (+ an incompressible data file of `data_bytes`)."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.py").write_text(f"import sys\nprint('training', sys.argv[1:], {marker!r})\n")
    if data_bytes:
        (d / "data.bin").write_bytes(os.urandom(data_bytes))
    return d
