"""The package index as pip is configured: index URLs, the CA to trust, hosts trusted without TLS.

A company mirror of PyPI behind a corporate CA is the normal case. fairing resolves with uv (or
pip) and downloads wheels itself, so all three must see what the user told pip: `PIP_INDEX_URL`,
`PIP_EXTRA_INDEX_URL`, `PIP_CERT`, `PIP_TRUSTED_HOST` and the same keys in pip's configuration
files (global, user, site, then $PIP_CONFIG_FILE; the [global] section, then [install]), as pip
reads them. uv reads only its own UV_* variables, so they are translated here; a UV_* variable the
user set wins. The CA is *added* to the default roots (trust.bundle), never substituted for them.
"""
from __future__ import annotations

import configparser
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from ... import trust

PYPI = "https://pypi.org/simple"


def config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's configuration files, lowest precedence first (pip's `configuration.py` order)."""
    xdg_dirs = environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep)
    files = [Path(d) / "pip" / "pip.conf" for d in reversed(xdg_dirs) if d] + [Path("/etc/pip.conf")]
    home = Path(environ.get("HOME") or Path.home())
    files += [home / ".pip" / "pip.conf",
              Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf"]
    files.append(Path(sys.prefix) / "pip.conf")
    explicit = environ.get("PIP_CONFIG_FILE")
    if explicit == os.devnull:
        return []  # pip: PIP_CONFIG_FILE=os.devnull means "load no configuration file"
    if explicit:
        files.append(Path(explicit))
    return files


@dataclass(frozen=True)
class Index:
    index_url: str = PYPI
    extra_urls: tuple[str, ...] = ()
    cert: str | None = None             # pip's `cert`: a CA bundle for the index
    trusted_hosts: tuple[str, ...] = ()  # pip's `trusted-host`: no TLS verification for these
    sources: dict = field(default_factory=dict, compare=False)  # key -> where it was set

    def is_trusted(self, url: str) -> bool:
        """True when pip would skip TLS verification for `url` (trusted-host, host or host:port)."""
        parts = urlsplit(url)
        return any(h in (parts.hostname, parts.netloc) for h in self.trusted_hosts)


def read(environ: Mapping[str, str] | None = None) -> Index:
    """The effective index configuration, as `pip install` would use it."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for path in config_files(environ):
        if not path.is_file():
            continue
        cp = configparser.RawConfigParser()
        try:
            cp.read(path)
        except configparser.Error:
            continue  # pip would fail on it too, with its own message, when it runs
        for section in ("global", "install"):
            if cp.has_section(section):
                for key, value in cp.items(section):
                    values[key.replace("_", "-")] = value
                    sources[key.replace("_", "-")] = str(path)
    for key in ("index-url", "extra-index-url", "cert", "trusted-host"):
        env = "PIP_" + key.upper().replace("-", "_")
        if environ.get(env):
            values[key], sources[key] = environ[env], f"${env}"
    return Index(index_url=(values.get("index-url") or PYPI).strip(),
                 extra_urls=tuple(values.get("extra-index-url", "").split()),
                 cert=values.get("cert", "").strip() or None,
                 trusted_hosts=tuple(values.get("trusted-host", "").split()),
                 sources=sources)


def ca_bundle(index: Index, cache_root: Path, ca_file: str | None = None,
              environ: Mapping[str, str] | None = None) -> str | None:
    """The bundle the index is verified with: the default roots plus pip's `cert`, fairing's
    `ca_file` and $REQUESTS_CA_BUNDLE (which requests would otherwise trust *instead of* PyPI's
    CA). None: nothing added, the defaults are right."""
    environ = os.environ if environ is None else environ
    return trust.bundle([(f"pip's cert ({index.sources.get('cert', 'cert')})", index.cert),
                         ("ca_file", ca_file),
                         ("REQUESTS_CA_BUNDLE", environ.get("REQUESTS_CA_BUNDLE"))], cache_root)


@dataclass(frozen=True)
class Access:
    """How to reach the index: its configuration and the CA bundle (None: the defaults)."""
    index: Index
    bundle: str | None

    def verify(self, url: str) -> str | bool:
        """`requests`' verify= for `url`: explicit on every call, since a session-level value
        loses to $REQUESTS_CA_BUNDLE inside requests."""
        if self.index.is_trusted(url):
            return False
        return self.bundle or _default_verify()

    def uv_args(self) -> list[str]:
        return uv_args(self.index)

    def env(self) -> dict[str, str]:
        return child_env(self.bundle)


def _default_verify() -> str | bool:
    """requests' own default (certifi), named explicitly so $REQUESTS_CA_BUNDLE cannot replace it."""
    roots = trust.default_roots()
    return str(roots[0]) if roots else True


def access(cache_root: Path, ca_file: str | None = None) -> Access:
    """The index configuration and the bundle to verify it with, read now from pip's settings."""
    index = read()
    return Access(index, ca_bundle(index, cache_root, ca_file))


def uv_args(index: Index, environ: Mapping[str, str] | None = None) -> list[str]:
    """uv's flags for pip's index settings (uv's own UV_* variables, when set, win)."""
    environ = os.environ if environ is None else environ
    args: list[str] = []
    if index.index_url != PYPI and not (environ.get("UV_INDEX_URL") or environ.get("UV_DEFAULT_INDEX")):
        args += ["--index-url", index.index_url]
    if not environ.get("UV_EXTRA_INDEX_URL"):
        for url in index.extra_urls:
            args += ["--extra-index-url", url]
    if not environ.get("UV_INSECURE_HOST"):
        for host in index.trusted_hosts:
            args += ["--allow-insecure-host", host]
    return args


def child_env(bundle: str | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a uv or pip child: the bundle as its CA file (adding to the defaults,
    as computed above), so neither distrusts PyPI because $REQUESTS_CA_BUNDLE names a registry CA."""
    env = dict(os.environ if environ is None else environ)
    if bundle:
        env["SSL_CERT_FILE"] = bundle          # uv (and OpenSSL-based tools)
        env["PIP_CERT"] = bundle               # pip's fallback resolver
        env["REQUESTS_CA_BUNDLE"] = bundle     # anything requests-based pip or a backend runs
    return env
