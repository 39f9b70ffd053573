"""A small Docker registry token server (the "realm" of `WWW-Authenticate: Bearer ...`).

Implements the distribution token spec closely enough for real clients:
- GET /token?service=..&scope=repository:NAME:pull,push (HTTP Basic credentials), as docker,
  podman/containers-image and most libraries do;
- POST /token with an OAuth2 form (grant_type=password or refresh_token), as containerd does.
Bad or missing credentials get 401 (clients must not receive anonymous push tokens). Each user
has a list of allowed actions, so "pull-only" identities can be tested too. Tokens are ES256 JWTs
whose header carries the signing certificate (`x5c`), which the registry verifies against its
`rootcertbundle` (the rig CA), plus a libtrust-style `kid` for verifiers that look keys up by id.

Run: python -m tests.rig.tokenserver CONFIG.json   (config written by tests/rig/registry.py)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TOKEN_TTL = 300


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_kid(public_key_der: bytes) -> str:
    """docker/libtrust key id: base32 of the first 240 bits of sha256(SPKI DER), in 4-char groups."""
    b32 = base64.b32encode(hashlib.sha256(public_key_der).digest()[:30]).decode()
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


def parse_scope(scope: str) -> dict | None:
    """`repository:team/app:pull,push` -> access entry. The name may itself contain ':'."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


class Signer:
    def __init__(self, key_pem: bytes, cert_pem: bytes):
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        self._key = serialization.load_pem_private_key(key_pem, password=None)
        cert = x509.load_pem_x509_certificate(cert_pem)
        spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        self.header = {
            "typ": "JWT",
            "alg": "ES256",
            "kid": libtrust_kid(spki),
            "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
        }

    def sign(self, claims: dict) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        signing_input = (b64url(json.dumps(self.header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)  # JWS wants raw r||s, not DER
        return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


class TokenServer:
    def __init__(self, config: dict):
        self.issuer = config["issuer"]
        self.service = config["service"]
        self.users = config["users"]  # name -> {"password": ..., "actions": [...]}
        with open(config["key"], "rb") as k, open(config["cert"], "rb") as c:
            self.signer = Signer(k.read(), c.read())
        self.refresh: dict[str, str] = {}  # refresh token -> user

    def check(self, user: str | None, password: str | None) -> bool:
        entry = self.users.get(user or "")
        return bool(entry) and password is not None and hmac.compare_digest(
            entry["password"].encode(), password.encode())

    def issue(self, user: str, scopes: list[str]) -> dict:
        allowed = set(self.users[user]["actions"])
        access = []
        for scope in scopes:
            for part in scope.split(" "):
                entry = parse_scope(part)
                if entry is None:
                    continue
                granted = [a for a in entry["actions"] if a in allowed or "*" in allowed]
                if granted:
                    access.append({**entry, "actions": granted})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "iat": now,
                  "nbf": now - 5, "exp": now + TOKEN_TTL, "jti": secrets.token_hex(12),
                  "access": access}
        token = self.signer.sign(claims)
        return {"token": token, "access_token": token, "expires_in": TOKEN_TTL,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}


def make_handler(server: TokenServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # never log Authorization headers or forms
            sys.stderr.write("%s %s\n" % (self.command, urlsplit(self.path).path))

        def _send(self, code: int, body: dict, extra: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _deny(self, why: str) -> None:
            self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": why}]},
                       {"WWW-Authenticate": 'Basic realm="fairing-rig-token"'})

        def _basic(self) -> tuple[str | None, str | None]:
            auth = self.headers.get("Authorization", "")
            if not auth.lower().startswith("basic "):
                return None, None
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None, None
            return user, password

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path == "/healthz":
                return self._send(200, {"ok": True})
            if url.path != "/token":
                return self._send(404, {"errors": [{"code": "NOT_FOUND"}]})
            query = parse_qs(url.query)
            if query.get("service", [server.service])[0] != server.service:
                return self._send(400, {"errors": [{"code": "DENIED", "message": "unknown service"}]})
            user, password = self._basic()
            if not server.check(user, password):
                return self._deny("invalid or missing credentials")
            body = server.issue(user, query.get("scope", []))
            if query.get("offline_token", ["false"])[0] == "true":
                body["refresh_token"] = secrets.token_urlsafe(24)
                server.refresh[body["refresh_token"]] = user
            self._send(200, body)

        def do_POST(self):
            if urlsplit(self.path).path != "/token":
                return self._send(404, {"errors": [{"code": "NOT_FOUND"}]})
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode(errors="replace"))
            grant = form.get("grant_type", [""])[0]
            if grant == "password":
                user = form.get("username", [""])[0]
                if not server.check(user, form.get("password", [None])[0]):
                    return self._deny("invalid credentials")
            elif grant == "refresh_token":
                user = server.refresh.get(form.get("refresh_token", [""])[0])
                if user is None:
                    return self._deny("unknown refresh token")
            else:
                return self._send(400, {"error": "unsupported_grant_type"})
            body = server.issue(user, form.get("scope", []))
            refresh = secrets.token_urlsafe(24)
            server.refresh[refresh] = user
            self._send(200, {**body, "refresh_token": refresh})

    return Handler


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.rig.tokenserver CONFIG.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        config = json.load(f)
    server = TokenServer(config)
    httpd = ThreadingHTTPServer(("127.0.0.1", int(config["port"])), make_handler(server))
    print(f"token server for {server.service} on 127.0.0.1:{config['port']}", file=sys.stderr,
          flush=True)
    httpd.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
