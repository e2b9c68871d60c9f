"""A loopback server that accepts connections, reads what the client sends, and never answers (or, with
`drip`, answers one byte at a time, for ever).

For the "silent server" cases: each connection records when it opened and when the client gave
up on it (closed it), so a test can check, from the server's side, that a request was abandoned
and retried. Only the standard library is used.
"""
from __future__ import annotations

import socket
import threading
import time


class StallServer:
    def __init__(self, drip: float | None = None) -> None:
        self.drip = drip           # instead of silence: answer 200 and then one byte every `drip` seconds
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self.held: list[tuple[float, float | None]] = []    # (opened, closed by the client or None)
        self._stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
                index = len(self.held)
                self.held.append((time.monotonic(), None))
            threading.Thread(target=self._hold, args=(conn, index), daemon=True).start()

    def _hold(self, conn: socket.socket, index: int) -> None:
        try:
            if self.drip is not None:
                self._drip(conn)
            while conn.recv(65536):     # swallow the request; answer nothing
                pass
        except OSError:
            pass
        with self._lock:
            self.held[index] = (self.held[index][0], time.monotonic())

    def _drip(self, conn: socket.socket) -> None:
        """Read the request head, then answer it a byte at a time, each just inside a read timeout."""
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(65536)
            if not data:
                return
            head += data
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 100000\r\n\r\n")
        while not self._stopping:
            time.sleep(self.drip or 0)
            conn.sendall(b" ")

    def abandoned(self) -> list[float]:
        """How long the client held each connection it closed, in order."""
        with self._lock:
            return [closed - opened for opened, closed in self.held if closed is not None]

    def stop(self) -> None:
        self._stopping = True
        self._sock.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
