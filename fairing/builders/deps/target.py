"""Where and for which Python the dependency layers are made: the image's Python version and
the key of a requirement set (the wheel platform tags are builders/platforms.py's)."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Mapping, Sequence

from ...errors import BuildError, ConfigError

SITE_DIR = "/opt/fairing/site-packages"
PYTHON_LABEL = "org.fairing.python"


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


def deps_key(requirements: Sequence[str], python: str, tags: Sequence[str]) -> str:
    payload = {"requirements": sorted(r.strip() for r in requirements if r.strip()), "python": python, "platforms": list(tags), "v": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
