"""TLS trust that adds CAs to the system's, never replaces it.

`requests` (and pip, and uv through SSL_CERT_FILE) take *one* CA bundle: pointing it at a private
registry's CA makes every public host, PyPI included, untrusted. A corporate or private CA is an
addition, so fairing hands the HTTP clients one bundle file holding the default roots (certifi, as
requests uses), the system's store (where a company installs its CA), and the extra CA files given
(`ca_file`, FAIRING_CA_FILE, PIP_CERT, $REQUESTS_CA_BUNDLE). The file is content-addressed under
the cache, written once, and never holds a private key: only certificates are copied.
"""
from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from pathlib import Path
from typing import Iterable

from .errors import ConfigError

_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"


def default_roots() -> list[Path]:
    """The bundles trusted when nothing is configured: certifi's and the system store's."""
    out: list[Path] = []
    try:
        import certifi

        out.append(Path(certifi.where()))
    except ImportError:  # requests depends on certifi; a trimmed environment may still lack it
        pass
    paths = ssl.get_default_verify_paths()
    for cafile in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt",
                   "/etc/pki/tls/certs/ca-bundle.crt"):
        if cafile and Path(cafile).is_file() and Path(cafile) not in out:
            out.append(Path(cafile))
            break
    return out


def _certificates(path: Path, what: str) -> bytes:
    """Only the PEM certificate blocks of `path` (a bundle may carry comments or, by mistake, a key)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist", hint="point it at a PEM file of CA certificates") from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}", hint="check the file's permissions") from None
    blocks, pos = [], 0
    while (start := data.find(_BEGIN, pos)) != -1:
        end = data.find(_END, start)
        if end == -1:
            break
        blocks.append(data[start:end + len(_END)])
        pos = end + len(_END)
    if not blocks:
        raise ConfigError(f"{what} {path} holds no PEM certificate", hint="give the CA certificate in PEM form "
                          "(-----BEGIN CERTIFICATE-----)")
    return b"\n".join(blocks) + b"\n"


def bundle(extra: Iterable[tuple[str, str | os.PathLike | None]], root: Path) -> str | None:
    """A CA bundle file: the default roots plus every `(what, path)` in `extra` whose path is set;
    None when none is (the clients' defaults are then right). `what` names the setting in errors."""
    added = [(what, Path(p).expanduser()) for what, p in extra if p]
    if not added:
        return None
    parts = [_certificates(p, what) for what, p in added]
    seen = {p.resolve() for _, p in added}
    for roots in default_roots():
        if roots.resolve() not in seen:
            parts.insert(0, _certificates(roots, "CA bundle"))
    data = b"".join(parts)
    dest = root / "trust" / f"ca-{hashlib.sha256(data).hexdigest()[:24]}.pem"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".ca-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return str(dest)
