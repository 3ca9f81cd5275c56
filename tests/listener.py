"""A local TCP server that records what reaches it: what a stage without network must not reach."""

from __future__ import annotations

import socket
import threading


class Listener:
    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                self.received.append(conn.recv(1024))

    def close(self) -> None:
        self.server.close()
