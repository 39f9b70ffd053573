"""The fallback installer: pip installs the whole requirement set with `--target` into ONE
layer. Used only when a requirement does not resolve to plain wheel files (the per-package path
in layers.py needs a wheel URL and sha256 for every distribution), and for pip's error messages.

Only wheels are used (`--only-binary=:all:`): building an sdist would run code for the host, not
the image."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlsplit

from ...errors import BuildError
from ...oci.cache import Cache, CachedLayer
from ...oci.layer import GZIP, Compression, tree
from .target import SITE_DIR, deps_key


def pip_command(target: Path, requirements_file: Path, python: str, tags: Sequence[str]) -> list[str]:
    major, minor = python.split(".")
    cmd = [sys.executable, "-m", "pip", "install", "--target", str(target), "--python-version", python,
           "--implementation", "cp", "--abi", f"cp{major}{minor}"]
    for t in tags:
        cmd += ["--platform", t]
    return cmd + ["--only-binary=:all:", "--no-compile", "--no-warn-script-location", "--disable-pip-version-check",
                  "--no-input", "--progress-bar", "off", "-r", str(requirements_file)]


def fix_scripts(bin_dir: Path) -> None:
    """pip writes console scripts with the host's interpreter in the shebang; point them at the
    image's python3 instead (this also keeps the layer identical across machines)."""
    if not bin_dir.is_dir():
        return
    for f in sorted(bin_dir.iterdir()):
        if not f.is_file() or f.is_symlink():
            continue
        data = f.read_bytes()
        if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
            rest = data.split(b"\n", 1)[1] if b"\n" in data else b""
            f.write_bytes(b"#!/usr/bin/env python3\n" + rest)


# What pip and uv print when the index's certificate is not trusted (a child process's output is
# all there is to go on; pip then goes on to say "no matching distribution", which would mislead).
_UNTRUSTED = re.compile(r"invalid peer certificate|UnknownIssuer|CERTIFICATE_VERIFY_FAILED|certificate verify failed|"
                        r"problem confirming the ssl certificate", re.IGNORECASE)
# One hint for every way an untrusted index shows up (uv, pip, the wheel downloader).
UNTRUSTED_HINT = ("set PIP_CERT (or `cert` in pip.conf) to the CA that signs it, e.g. your company's or "
                  "mirror's CA; fairing adds it to the default roots")
_URL = re.compile(r"https://[^\s/'\"]+")


def untrusted_index(out: str) -> BuildError | None:
    """The one-line error for an index whose TLS certificate is not trusted, if `out` says so."""
    if not _UNTRUSTED.search(out):
        return None
    # Only host:port: an index URL may carry user:token@, which never goes into an error.
    url = next(iter(_URL.findall(out)), None)
    where = urlsplit(url).netloc.rpartition("@")[2] if url else "the package index"
    return BuildError(f"the TLS certificate of {where} is not trusted", hint=UNTRUSTED_HINT)


def pip_error(out: str, python: str, tags: Sequence[str]) -> BuildError:
    if tls := untrusted_index(out):
        return tls
    m = re.search(r"No matching distribution found for (\S+)", out) or re.search(r"satisfies the requirement (\S+)", out)
    if m:
        return BuildError(
            f"no wheel of {m.group(1)} for Python {python} on {tags[-1]} (the append builder installs wheels only)",
            hint="pin a version that ships a wheel for this platform, or use the docker builder, which can build sdists inside the image",
        )
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return BuildError("pip could not install the requirements: " + (lines[-1] if lines else "unknown error")[:300],
                      hint="run the pip command shown with --verbose to see why; check the requirement pins and network")


def run_pip(cmd: list[str], env: dict, python: str, tags: Sequence[str], *, doing: str) -> subprocess.CompletedProcess:
    """Run pip with the one timeout and the one translation of its failures (install and resolve)."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f"pip took more than 30 minutes to {doing} the requirements", hint="check the network or the package index") from None
    if p.returncode != 0:
        raise pip_error(p.stdout + "\n" + p.stderr, python, tags)
    return p


def dependency_layer(
    requirements: Sequence[str],
    *,
    python: str,
    tags: Sequence[str],
    cache: Cache,
    progress: Callable[[str], None] | None = None,
    compression: Compression = GZIP,
    timings: dict | None = None,
    env: dict | None = None,
) -> tuple[CachedLayer, bool]:
    """The dependency layer for `requirements`, from the cache or built now (`env`: pip's
    environment, os.environ by default). Returns (layer, built) where built says whether pip ran."""
    key = deps_key(requirements, python, tags)
    known = cache.get_key("deps", key)
    if known and (hit := cache.get_layer(known.get("diff_id", ""), compression)):
        return hit, False
    if progress:
        progress(f"installing {len(requirements)} requirement(s) for Python {python} ({tags[0]})")
    with cache.scratch_dir("deps") as work:
        reqs = work / "requirements.txt"
        reqs.write_text("\n".join(requirements) + "\n")
        site = work / "site"
        cmd = pip_command(site, reqs, python, tags)
        env = {**(env if env is not None else os.environ), "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        run_pip(cmd, env, python, tags, doing="install")
        if not site.exists():
            site.mkdir()
        fix_scripts(site / "bin")
        found = installed_in(site)
        layer = cache.build_layer(tree(site, SITE_DIR.lstrip("/")), compression=compression, timings=timings)
    cache.put_key("deps", key, {"diff_id": layer.diff_id, "requirements": list(requirements), "python": python,
                                "platforms": list(tags), "installed": found})
    return layer, True


def installed_in(site: Path) -> list[str]:
    """`name==version` of every distribution pip put in `site` (from each .dist-info's METADATA),
    sorted: the requirements as resolved, which run records keep."""
    found = []
    for meta in site.glob("*.dist-info/METADATA"):
        fields = {}
        for line in meta.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                break  # the headers end at the first blank line
            k, _, v = line.partition(":")
            if k in ("Name", "Version"):
                fields.setdefault(k, v.strip())
        if "Name" in fields and "Version" in fields:
            found.append(f"{fields['Name']}=={fields['Version']}")
    return sorted(found, key=str.lower)


def installed_packages(requirements: Sequence[str], python: str, tags: Sequence[str], cache: Cache) -> tuple[str, ...]:
    """What the pip layer for this requirement set holds, as recorded when it was made."""
    known = cache.get_key("deps", deps_key(requirements, python, tags)) or {}
    return tuple(known.get("installed") or ())
