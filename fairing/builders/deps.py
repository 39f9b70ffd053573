"""The dependency layer: requirements installed on the host with `pip install --target`, for the
base image's Python and CPU architecture, without running anything in the image.

The packages go to SITE_DIR (/opt/fairing/site-packages), which the image's config puts first on
PYTHONPATH (and its bin/ first on PATH). A separate directory, not the base's site-packages,
because we never look inside the base's layers; PYTHONPATH makes the pinned versions win over
anything the base already has.

Only wheels are used (`--only-binary=:all:`): building an sdist would run code for the host, not
the image. The layer is keyed by a hash of the requirements, Python version and platform tags,
cached locally by DiffID, and (being byte-for-byte reproducible) found in the registry by digest,
so a code-only change neither rebuilds nor re-uploads it."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import BuildError, ConfigError
from ..oci.cache import Cache, CachedLayer
from ..oci.layer import tree

SITE_DIR = "/opt/fairing/site-packages"
DEFAULT_GLIBC = "2.28"  # manylinux_2_28: Debian 10+, Ubuntu 18.10+, RHEL 8+
PYTHON_LABEL = "org.fairing.python"
GLIBC_LABEL = "org.fairing.glibc"
_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x", "386": "i686"}


def image_python(config: Mapping, given: str | None = None) -> str:
    """The base image's Python "X.Y": given, else label org.fairing.python, else Env PYTHON_VERSION."""
    from ..oci.image import env_of

    if given:
        value, where = given, "python_version"
    else:
        labels = (config.get("config") or {}).get("Labels") or {}
        value, where = labels.get(PYTHON_LABEL), f"label {PYTHON_LABEL}"
        if not value:
            value, where = env_of(config).get("PYTHON_VERSION"), "Env PYTHON_VERSION"
    if not value:
        raise BuildError(
            "cannot tell which Python the base image has, so cannot pick wheels for the dependency layer",
            hint=f"pass python_version='3.11' to the append builder, or give the base image a {PYTHON_LABEL} label",
        )
    m = re.match(r"^(\d+)\.(\d+)", str(value).strip())
    if not m:
        raise ConfigError(f"{where}={value!r} is not a Python version", hint="use a version like 3.11")
    return f"{m.group(1)}.{m.group(2)}"


def platform_tags(config: Mapping, glibc: str | None = None) -> list[str]:
    """pip --platform values for the image's architecture: manylinux_2_N down to 2_17 (+ the
    manylinux2014 alias, which pip widens to 2010/1)."""
    arch_name = config.get("architecture") or "amd64"
    if config.get("variant") == "v7" and arch_name == "arm":
        arch = "armv7l"
    else:
        arch = _ARCH.get(arch_name)
    if not arch:
        raise BuildError(f"no wheel platform known for architecture {arch_name!r}", hint="use the docker builder for this base image")
    glibc = glibc or ((config.get("config") or {}).get("Labels") or {}).get(GLIBC_LABEL) or DEFAULT_GLIBC
    m = re.match(r"^2\.(\d+)$", str(glibc))
    if not m:
        raise ConfigError(f"glibc version {glibc!r} is not like 2.28", hint="pass glibc='2.28' (the base image's glibc)")
    top = int(m.group(1))
    tags = [f"manylinux_2_{n}_{arch}" for n in range(top, 16, -1)]
    if arch not in ("armv7l",):
        tags.append(f"manylinux2014_{arch}")
    return tags


def deps_key(requirements: Sequence[str], python: str, tags: Sequence[str]) -> str:
    payload = {"requirements": sorted(r.strip() for r in requirements if r.strip()), "python": python, "platforms": list(tags), "v": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def pip_command(target: Path, requirements_file: Path, python: str, tags: Sequence[str]) -> list[str]:
    major, minor = python.split(".")
    cmd = [sys.executable, "-m", "pip", "install", "--target", str(target), "--python-version", python,
           "--implementation", "cp", "--abi", f"cp{major}{minor}"]
    for t in tags:
        cmd += ["--platform", t]
    return cmd + ["--only-binary=:all:", "--no-compile", "--no-warn-script-location", "--disable-pip-version-check",
                  "--no-input", "--progress-bar", "off", "-r", str(requirements_file)]


def _fix_scripts(bin_dir: Path) -> None:
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


def _pip_error(out: str, python: str, tags: Sequence[str]) -> BuildError:
    m = re.search(r"No matching distribution found for (\S+)", out) or re.search(r"satisfies the requirement (\S+)", out)
    if m:
        return BuildError(
            f"no wheel of {m.group(1)} for Python {python} on {tags[-1]} (the append builder installs wheels only)",
            hint="pin a version that ships a wheel for this platform, or use the docker builder, which can build sdists inside the image",
        )
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return BuildError("pip could not install the requirements: " + (lines[-1] if lines else "unknown error")[:300],
                      hint="run the pip command shown with --verbose to see why; check the requirement pins and network")


def dependency_layer(
    requirements: Sequence[str],
    *,
    python: str,
    tags: Sequence[str],
    cache: Cache,
    progress: Callable[[str], None] | None = None,
) -> tuple[CachedLayer, bool]:
    """The dependency layer for `requirements`, from the cache or built now.
    Returns (layer, built) where built says whether pip ran."""
    key = deps_key(requirements, python, tags)
    known = cache.get_key("deps", key)
    if known and (hit := cache.get_layer(known.get("diff_id", ""))):
        if "resolved" not in known:  # cached before versions were kept: read them once from the layer
            cache.put_key("deps", key, {**known, "resolved": _resolved_in_layer(hit.path)})
        return hit, False
    if progress:
        progress(f"installing {len(requirements)} requirement(s) for Python {python} ({tags[0]})")
    with cache.scratch_dir("deps") as work:
        reqs = work / "requirements.txt"
        reqs.write_text("\n".join(requirements) + "\n")
        site = work / "site"
        cmd = pip_command(site, reqs, python, tags)
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, check=False)
        except subprocess.TimeoutExpired:
            raise BuildError("pip took more than 30 minutes to install the requirements", hint="check the network or the package index") from None
        if p.returncode != 0:
            raise _pip_error(p.stdout + "\n" + p.stderr, python, tags)
        if not site.exists():
            site.mkdir()
        _fix_scripts(site / "bin")
        layer = cache.build_layer(tree(site, SITE_DIR.lstrip("/")))
        resolved = _resolved(p.name for p in site.iterdir())
    cache.put_key("deps", key, {"diff_id": layer.diff_id, "requirements": list(requirements), "python": python,
                                "platforms": list(tags), "resolved": resolved})
    return layer, True


def resolved_requirements(requirements: Sequence[str], *, python: str, tags: Sequence[str], cache: Cache) -> list[str]:
    """What pip installed for `requirements` ("name==version", sorted), once dependency_layer made
    the layer; [] when unknown. Run records keep it next to the requirements as given."""
    known = cache.get_key("deps", deps_key(requirements, python, tags)) or {}
    return list(known.get("resolved") or [])


def _resolved(names) -> list[str]:
    """"name==version" for each NAME-VERSION.dist-info among `names`."""
    out = []
    for n in names:
        if n.endswith(".dist-info") and "-" in n:
            name, _, version = n[: -len(".dist-info")].rpartition("-")
            out.append(f"{name}=={version}")
    return sorted(out, key=str.lower)


def _resolved_in_layer(path) -> list[str]:
    import tarfile

    top = set()
    try:
        with tarfile.open(path, "r:gz") as tar:
            for m in tar:
                parts = m.name.split("/")
                site = SITE_DIR.strip("/").split("/")
                if parts[: len(site)] == site and len(parts) > len(site):
                    top.add(parts[len(site)])
    except (OSError, tarfile.TarError):
        return []
    return _resolved(top)
