"""Which wheels fit an image: pip's `--platform` values for the image's CPU and C library.

pip cannot look inside the image, so the builders say what it is. This is the one list both
wheel-installing builders use (append: `pip install --target`; docker/cluster: `pip download`),
following packaging.tags: manylinux_2_N for a glibc 2.N image, from N down to 2_17 plus the
manylinux2014 alias (pip widens that alias to manylinux2010/manylinux1 itself, but never widens
manylinux_2_N, hence the list), or musllinux_1_N down to musllinux_1_0 for a musl image (Alpine).
`linux_<arch>` is never offered: such wheels were built for one machine, not for an image."""
from __future__ import annotations

import re
from typing import Mapping

from ..errors import BuildError, ConfigError

DEFAULT_GLIBC = "2.28"  # manylinux_2_28: Debian 10+, Ubuntu 18.10+, RHEL 8+
GLIBC_LABEL = "org.fairing.glibc"
MUSL_LABEL = "org.fairing.musl"  # e.g. "1.2" on an Alpine base
# OCI architecture (and Python's platform.machine() spelling) -> the wheel tag's.
_ARCH = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64",
         "ppc64le": "ppc64le", "s390x": "s390x", "386": "i686", "i686": "i686"}
# PEP 599's legacy name for glibc 2.17, for the CPUs it covers.
_MANYLINUX2014 = {"x86_64", "i686", "aarch64", "armv7l", "ppc64le", "s390x"}


def wheel_arch(architecture: str, variant: str | None = None) -> str:
    """The wheel tag's CPU name for an image's architecture ("amd64" -> "x86_64")."""
    if architecture == "arm" and variant in (None, "v7"):
        return "armv7l"
    arch = _ARCH.get(architecture)
    if not arch:
        raise BuildError(f"no wheel platform known for architecture {architecture!r}",
                         hint="use the docker builder for this base image")
    return arch


def _minor(version: str, major: int, what: str, example: str) -> int:
    m = re.match(rf"^{major}\.(\d+)$", str(version).strip())
    if not m:
        raise ConfigError(f"{what} version {version!r} is not like {example}", hint=f"pass {what}='{example}' (the base image's {what})")
    return int(m.group(1))


def platform_tags(config: Mapping, glibc: str | None = None, *, musl: str | None = None) -> list[str]:
    """pip --platform values for an image, most specific first. `config` is the image config
    (its `architecture`/`variant` and the labels org.fairing.glibc / org.fairing.musl are read);
    `glibc` ("2.36") or `musl` ("1.2") override the labels."""
    arch = wheel_arch(config.get("architecture") or "amd64", config.get("variant"))
    labels = (config.get("config") or {}).get("Labels") or {}
    musl = musl or (None if glibc else labels.get(MUSL_LABEL))
    if musl:
        top = _minor(musl, 1, "musl", "1.2")
        return [f"musllinux_1_{n}_{arch}" for n in range(top, -1, -1)]
    top = _minor(glibc or labels.get(GLIBC_LABEL) or DEFAULT_GLIBC, 2, "glibc", "2.28")
    tags = [f"manylinux_2_{n}_{arch}" for n in range(top, 16, -1)]
    if top >= 17 and arch in _MANYLINUX2014:
        tags.append(f"manylinux2014_{arch}")
    return tags
