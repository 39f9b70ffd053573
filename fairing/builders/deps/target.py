"""Where and for which Python/platform the dependency layers are made: the image's Python
version, its wheel platform tags, and the key of a requirement set."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Mapping, Sequence

from ...errors import BuildError, ConfigError

SITE_DIR = "/opt/fairing/site-packages"
DEFAULT_GLIBC = "2.28"  # manylinux_2_28: Debian 10+, Ubuntu 18.10+, RHEL 8+
PYTHON_LABEL = "org.fairing.python"
GLIBC_LABEL = "org.fairing.glibc"
_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x", "386": "i686"}


def image_python(config: Mapping, given: str | None = None) -> str:
    """The base image's Python "X.Y": given, else label org.fairing.python, else Env PYTHON_VERSION."""
    from ...oci.image import env_of

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
