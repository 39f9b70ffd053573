"""A TLS-terminating TCP proxy in front of the rig's API server, for the attach tests: it relays
every connection both ways, except an attach websocket (a first request `GET .../attach?` with
`Upgrade: websocket`), which it can make fail the way a real middlebox does:

- "stall": after the 101 answer and the session's first stdout data frame, no more bytes reach
  the client, and the client's socket stays open (no close frame, no FIN, no RST) until the
  client itself closes it or the proxy is closed;
- "refuse": the upgrade is answered 502 Bad Gateway and the connection closed (a proxy or node
  that does not pass websockets although RBAC allows attach).

Its server certificate (127.0.0.1) is made here, signed by the rig's cluster CA with the
`cryptography` package, so a kubeconfig that trusts that CA trusts the proxy; upstream it
presents the rig admin's client certificate (a TLS-terminating proxy cannot pass the client's
own on). Nothing is written under the rig's directory."""
from __future__ import annotations

import datetime
import select
import socket
import ssl
import threading
from pathlib import Path
from urllib.parse import urlsplit

STDOUT = 1  # v4.channel.k8s.io: the first byte of a message is its channel


def make_server_cert(ca_crt: Path, ca_key: Path, out: Path) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 signed by the CA: (cert, key) under `out`."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    ca_private = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fairing test attach proxy")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_private, hashes.SHA256()))
    crt_path, key_path = out / "proxy.crt", out / "proxy.key"
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return crt_path, key_path


def frame_size(buf: bytes) -> tuple[int, int] | None:
    """(header length, whole length) of the websocket frame at the start of `buf`, or None while
    it is not all there."""
    if len(buf) < 2:
        return None
    n, head = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, head = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, head = int.from_bytes(buf[2:10], "big"), 10
    if buf[1] & 0x80:
        head += 4  # a masking key (a server's frames have none)
    return (head, head + n) if len(buf) >= head + n else None


class AttachProxy:
    def __init__(self, pki, upstream: str, workdir: Path, mode: str = "relay"):
        assert mode in ("relay", "stall", "refuse"), mode
        self.mode = mode
        self.stalled = 0   # attach sessions held after their first stdout frame
        self.refused = 0   # attach upgrades answered 502
        self.stdout_frames = 0  # stdout data frames passed to clients on attach sessions
        self.passed: list[bytes] = []  # what those frames said
        u = urlsplit(upstream)
        self.upstream = (u.hostname, u.port or 443)
        crt, key = make_server_cert(Path(pki.ca_crt), Path(pki.ca_key), workdir)
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_ctx.load_cert_chain(str(crt), str(key))
        self.client_ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
        self.client_ctx.load_cert_chain(str(pki.admin_crt), str(pki.admin_key))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def kubeconfig(self, admin_kubeconfig: Path, path: Path) -> Path:
        """The admin kubeconfig with its server pointed at this proxy."""
        import yaml

        doc = yaml.safe_load(Path(admin_kubeconfig).read_text())
        for c in doc["clusters"]:
            c["cluster"]["server"] = self.url
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the relay ---------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _keep(self, s: socket.socket) -> socket.socket:
        with self._lock:
            self._socks.append(s)
        return s

    def _serve(self, raw: socket.socket) -> None:
        client = up = None
        try:
            client = self._keep(self.server_ctx.wrap_socket(raw, server_side=True))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            first = head.split(b"\r\n", 1)[0]
            attach = b"/attach?" in first and b"upgrade: websocket" in head.lower()
            if attach and self.mode == "refuse":
                self.refused += 1
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            up = self._keep(self.client_ctx.wrap_socket(socket.create_connection(self.upstream, timeout=10),
                                                        server_hostname=self.upstream[0]))
            up.sendall(head)
            self._pump(client, up, watch=attach and self.mode in ("stall", "relay"))
        except (OSError, ValueError):  # ValueError: select on a socket close() closed meanwhile
            pass
        finally:
            for s in (client, up):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _pump(self, client: ssl.SSLSocket, up: ssl.SSLSocket, *, watch: bool) -> None:
        """Both directions in one thread (an SSL socket is not to be read and written from two),
        non-blocking reads: a TLS record that is no data (a session ticket) must not block the
        other direction. `watch`: an attach session, whose frames from the server are counted
        (and, in "stall" mode, held back after the first stdout one)."""
        for s in (client, up):
            s.setblocking(False)
        answer = b""        # the upgrade's answer, until its end
        frames = None       # bytes of frames from the server not yet passed on (after a 101)
        stalled = False
        up_open = True
        while not self._closed:
            readable = [s for s in ((client, up) if up_open else (client,)) if s.pending()]
            if not readable:
                readable = select.select([client, up] if up_open else [client], [], [], 1.0)[0]
            for s in readable:
                try:
                    data = s.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    continue
                except (OSError, ssl.SSLError):
                    data = b""
                if s is client:
                    if not data:
                        return  # the client closed: so does everything
                    _send(up, data)
                    continue
                if not data:
                    if stalled:
                        up_open = False  # the server ended the session: the client is not told
                        continue
                    return
                if not watch:
                    _send(client, data)
                    continue
                if frames is None:
                    answer += data
                    if b"\r\n\r\n" not in answer:
                        continue
                    head, rest = answer.split(b"\r\n\r\n", 1)
                    _send(client, head + b"\r\n\r\n")
                    if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
                        watch = False  # no session: the rest is an error body
                        if rest:
                            _send(client, rest)
                        continue
                    frames, data = b"", rest
                if stalled:
                    continue  # held: read and dropped, the client hears nothing more
                frames += data
                while (size := frame_size(frames)) is not None:
                    head_len, whole = size
                    frame, frames = frames[:whole], frames[whole:]
                    _send(client, frame)
                    payload = frame[head_len:]
                    if frame[0] & 0x0F in (1, 2) and len(payload) > 1 and payload[0] == STDOUT:
                        self.stdout_frames += 1
                        self.passed.append(payload[1:])
                        if self.mode == "stall":
                            self.stalled += 1
                            stalled = True
                            break


def _send(s: ssl.SSLSocket, data: bytes) -> None:
    s.setblocking(True)
    try:
        s.sendall(data)
    finally:
        s.setblocking(False)
