"""The rig's private CA and the certificates it signs (made once with the openssl CLI, cached).

One CA signs both the TLS server certificate of the secure registry and the key the token server
signs JWTs with, so a client (or the registry) trusts exactly one file: `ca.crt`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .state import rig_dir, rig_lock, run


@dataclass(frozen=True)
class Certs:
    ca_cert: Path
    ca_key: Path
    server_cert: Path   # SAN IP:127.0.0.1, DNS:localhost
    server_key: Path
    token_cert: Path    # ECDSA P-256, signs registry bearer tokens
    token_key: Path


def _openssl(*args: str, what: str) -> None:
    run(["openssl", *args], what=what, timeout=60)


def _sign(d: Path, name: str, subject: str, key_args: list[str], ext: str) -> None:
    key, csr, crt, extf = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt", d / f"{name}.ext"
    _openssl("req", "-new", "-nodes", *key_args, "-keyout", str(key), "-subj", subject,
             "-out", str(csr), what=f"rig: key for {name}")
    extf.write_text(ext)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", str(extf),
             "-out", str(crt) + ".tmp", what=f"rig: certificate for {name}")
    os.replace(str(crt) + ".tmp", crt)
    csr.unlink(missing_ok=True)
    extf.unlink(missing_ok=True)


def ensure_certs() -> Certs:
    d = rig_dir() / "pki"
    certs = Certs(d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key",
                  d / "token.crt", d / "token.key")
    with rig_lock():
        d.mkdir(mode=0o700, exist_ok=True)
        if not certs.ca_cert.exists():
            _openssl("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-sha256",
                     "-days", "3650", "-subj", "/CN=fairing test rig CA",
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                     "-keyout", str(certs.ca_key), "-out", str(certs.ca_cert) + ".tmp",
                     what="rig: CA certificate")
            os.replace(str(certs.ca_cert) + ".tmp", certs.ca_cert)
            # A new CA invalidates anything signed by an old one.
            for stale in (certs.server_cert, certs.token_cert):
                stale.unlink(missing_ok=True)
        if not certs.server_cert.exists():
            _sign(d, "server", "/CN=127.0.0.1", ["-newkey", "rsa:2048"],
                  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                  "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
        if not certs.token_cert.exists():
            _sign(d, "token", "/CN=fairing rig token signer",
                  ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
                  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n")
        # Private keys stay private; certificates are world-readable for clients.
        for key in (certs.ca_key, certs.server_key, certs.token_key):
            key.chmod(0o600)
        certs.ca_cert.chmod(0o644)
    return certs
