"""A tiny TCP load balancer (layer 4, TLS passes through untouched) in front of kube-apiservers,
as in an HA control plane: each new connection goes to the first backend that accepts it.
`backends` can be changed at any time; open connections stay where they are until their server
closes them. A real network part used to route a reconnecting client to another API server."""
from __future__ import annotations

import socket
import threading


class TcpBalancer:
    def __init__(self, backends: list[int]):
        self.backends = list(backends)  # ports on 127.0.0.1, tried in order
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="tcplb").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        for port in list(self.backends):
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
                upstream.settimeout(None)
                break
            except OSError:
                continue
        if upstream is None:  # no backend up: the client sees the connection close, like a real LB
            client.close()
            return
        self.connections += 1

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)
        client.close()
        upstream.close()

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
