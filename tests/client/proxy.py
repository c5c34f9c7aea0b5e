"""A TCP proxy the tests can cut: the network between a client and a real server.

It forwards bytes both ways, one thread per direction. ``cut()`` severs every
connection now; ``cut_on(pattern)`` forwards the next request containing
``pattern`` to the server, then severs the connection before the reply reaches
the client — the server acted, the client never heard.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Proxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._pattern: bytes | None = None
        self._swallow = False
        self.swallowed = 0  # replies the server sent that the client never got
        self.cuts = 0
        self.refusing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        try:
            while data := source.recv(65536):
                if upstream:
                    pattern = self._pattern
                    if pattern is not None and pattern in data:
                        self._pattern = None
                        self._swallow = True  # the server answers; the client never hears
                elif self._swallow:
                    self._swallow = False
                    self.swallowed += 1
                    break
                target.sendall(data)
        except OSError:
            pass
        self._sever(source, target)

    def _sever(self, *sockets: socket.socket) -> None:
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        """Sever every open connection."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            self._sever(*pair)
        self.cuts += 1

    def cut_on(self, pattern: bytes) -> None:
        self._pattern = pattern

    def close(self) -> None:
        self.listener.close()
        self.cut()
