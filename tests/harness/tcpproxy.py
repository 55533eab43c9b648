"""A TCP proxy on a loopback port that forwards to a real server and can cut every connection.

Fault injection for one client (say, one worker pointed at the proxy instead of PostgreSQL) while
every other client keeps using the server directly::

    with TcpProxy(5432) as proxy:          # forwards 127.0.0.1:<proxy.port> to 127.0.0.1:5432
        proxy.drop()                       # reset every open connection, refuse (reset) new ones
        proxy.restore()                    # accept and forward again
        proxy.flap(period=1.0, down=0.4, total=12.0)  # drop for 0.4 s of every second, in a thread

A dropped connection is shut down and reset on both sides, as a network failure or a killed server
looks to the client: the driver sees its connection fail mid-statement or at connect.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from typing import Any

from tests.harness.progress import say
from tests.harness.servers import free_port

#: SO_LINGER on, zero timeout: close() sends a reset instead of an orderly FIN.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    # shutdown() first: close() alone does not wake a pump thread blocked in recv() on this socket,
    # and the socket (so the connection) lives on until that recv() returns.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.drops = 0  #: how many times drop() cut the connections
        self._up = threading.Event()
        self._up.set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> TcpProxy:
        self._spawn(self._accept_loop, "proxy-accept")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def drop(self) -> None:
        """Reset every open connection and refuse new ones until :meth:`restore`."""
        self._up.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, set()
            self.drops += 1
        for client, server in pairs:
            _reset(client)
            _reset(server)

    def restore(self) -> None:
        self._up.set()

    def flap(self, *, period: float, down: float, total: float) -> threading.Thread:
        """In a background thread: every ``period`` seconds drop for ``down`` seconds, for ``total`` seconds."""

        def run() -> None:
            deadline = time.monotonic() + total
            while time.monotonic() < deadline and not self._stopping.is_set():
                self.drop()
                self._stopping.wait(down)
                self.restore()
                self._stopping.wait(period - down)
            self.restore()

        return self._spawn(run, "proxy-flap")

    def close(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop()
        for thread in self._threads:
            thread.join(5)

    def _spawn(self, target: Any, name: str, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        return thread

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError as err:
                if self._stopping.is_set():
                    return
                say(f"proxy: accept failed ({err}); still accepting")
                continue
            if not self._up.is_set():
                _reset(client)  # refused: the client sees its connection reset at once
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._pairs.add((client, server))
            self._spawn(self._pump, "proxy-pump", client, server)
            self._spawn(self._pump, "proxy-pump", server, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:  # one side ended: end both (a no-op when drop() already reset them)
            with self._lock:
                self._pairs = {pair for pair in self._pairs if source not in pair}
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
