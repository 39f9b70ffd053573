"""Resolving a requirement set to the exact wheel files for the image's Python and platform.

`uv pip compile --format pylock.toml` does it (measured ~6x faster than pip's resolver on the
heavy ML set, bench/README.md); `pip install --dry-run --report` is the fallback when uv is not
installed or cannot target the platform. Both give, per distribution, the wheel's URL and sha256,
which is all the per-package layers need. The answer is cached by the requirement-set key, so a
rebuild with the same requirements asks no index at all."""
from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from ...errors import BuildError
from ...oci.cache import Cache
from . import index
from .index import Access
from .pip import pip_command, run_pip, untrusted_index
from .target import deps_key

log = logging.getLogger(__name__)
_UV_PLATFORM = re.compile(r"^manylinux_2_(\d+)_(x86_64|aarch64)$")


@dataclass(frozen=True)
class Wheel:
    name: str  # canonical project name ("scikit-learn")
    version: str
    filename: str  # the wheel's file name: name, version, Python and platform tags
    url: str
    sha256: str
    size: int | None = None


def uv_binary() -> str | None:
    """uv from the `uv` package (a wheel with the binary inside), else on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _from_pylock(text: str) -> list[Wheel] | None:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    out = []
    for pkg in tomllib.loads(text).get("packages", []):
        wheels = pkg.get("wheels") or []
        if len(wheels) != 1 or not wheels[0].get("url") or not (wheels[0].get("hashes") or {}).get("sha256"):
            return None  # an sdist, VCS or path requirement: not for the per-package path
        w = wheels[0]
        out.append(Wheel(_canonical(pkg["name"]), str(pkg["version"]), w["url"].rsplit("/", 1)[-1].split("#")[0],
                         w["url"], w["hashes"]["sha256"], w.get("size")))
    return out


def _uv(requirements_file: Path, work: Path, python: str, tags: Sequence[str], access: Access) -> list[Wheel] | None:
    """None when uv is missing or cannot do it (then pip does); BuildError when nothing fits."""
    uv = uv_binary()
    m = _UV_PLATFORM.match(tags[0])
    if not uv or not m:
        return None
    cmd = [uv, "pip", "compile", str(requirements_file), "--python-platform", f"{m.group(2)}-manylinux_2_{m.group(1)}",
           "--python-version", python, "--only-binary", ":all:", "--format", "pylock.toml", "--no-header",
           "--quiet", "--output-file", str(work / "pylock.toml"), *access.uv_args()]
    env = access.env()
    env.setdefault("UV_NO_PROGRESS", "1")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.info("uv failed (%s); resolving with pip", e)
        return None
    if p.returncode != 0:
        err = p.stderr
        if tls := untrusted_index(err):
            raise tls  # pip would fail the same way, and then call it a missing version
        m2 = re.search(r"there is no version of ([^\s,]+)", err) or re.search(r"no wheels with a matching [^\n]*?for ([^\s,]+)", err) \
            or re.search(r"only (\S+) is available and", err)
        if m2 or "No solution found" in err:
            what = m2.group(1) if m2 else "the requirements"
            raise BuildError(
                f"no wheel of {what} for Python {python} on {tags[-1]} (the append builder installs wheels only)",
                hint="pin a version that ships a wheel for this platform, or use the docker builder, which can build sdists inside the image",
            )
        log.info("uv pip compile failed; resolving with pip: %s", err.strip()[-500:])
        return None
    return _from_pylock((work / "pylock.toml").read_text())


def _pip(requirements_file: Path, work: Path, python: str, tags: Sequence[str], access: Access) -> list[Wheel] | None:
    report = work / "report.json"
    cmd = pip_command(work / "target", requirements_file, python, tags)
    cmd[cmd.index("install") + 1:cmd.index("install") + 1] = ["--dry-run", "--ignore-installed", "--report", str(report), "--quiet"]
    env = {**access.env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run_pip(cmd, env, python, tags, doing="resolve")
    out = []
    for item in json.loads(report.read_text()).get("install", []):
        info = item.get("download_info") or {}
        url = info.get("url", "")
        hashes = (info.get("archive_info") or {}).get("hashes") or {}
        sha = hashes.get("sha256") or ((info.get("archive_info") or {}).get("hash") or "").partition("sha256=")[2]
        if not url.split("#")[0].endswith(".whl") or not sha:
            return None
        meta = item["metadata"]
        out.append(Wheel(_canonical(meta["name"]), meta["version"], url.split("#")[0].rsplit("/", 1)[-1], url.split("#")[0], sha))
    return out


def resolve(requirements: Sequence[str], python: str, tags: Sequence[str], cache: Cache,
            access: Access | None = None) -> tuple[list[Wheel] | None, str]:
    """The wheels for `requirements` (sorted by name), and who resolved them ("cache", "uv",
    "pip"). None when some requirement is not a plain wheel (the caller falls back to pip).
    `access`: the package index as pip is configured (read now when not given)."""
    key = deps_key(requirements, python, tags)
    known = cache.get_key("resolved", key)
    if known and known.get("wheels") is not None:
        return [Wheel(**w) for w in known["wheels"]], "cache"
    with cache.scratch_dir("resolve") as work:
        reqs = work / "requirements.txt"
        reqs.write_text("\n".join(requirements) + "\n")
        access = access or index.access(cache.root)
        wheels, how = _uv(reqs, work, python, tags, access), "uv"
        if wheels is None:
            wheels, how = _pip(reqs, work, python, tags, access), "pip"
    if wheels is None:
        return None, how
    wheels.sort(key=lambda w: (w.name, w.version))
    remember(cache, requirements, python, tags, wheels)
    return wheels, how


def remember(cache: Cache, requirements: Sequence[str], python: str, tags: Sequence[str], wheels: Sequence[Wheel]) -> None:
    cache.put_key("resolved", deps_key(requirements, python, tags), {
        "requirements": list(requirements), "python": python, "platforms": list(tags),
        "wheels": [asdict(w) for w in wheels]})
