"""A TCP proxy that can also stall: stop forwarding bytes, keep every socket open.

:class:`~tests.integration.tcp_proxy.TcpProxy` cuts the network (``drop()``:
sockets closed, new connections refused). A stall is the other way a network
fails: nothing arrives any more, yet no socket is closed, so neither peer hears
of it until its heartbeats (or a timeout) tell it. ``stall()`` stops both
directions of every connection, the ones that are open and the ones opened
while stalled (accepted, but silent); ``resume()`` forwards again whatever was
held and what comes next.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.integration.tcp_proxy import TcpProxy


class StallingProxy(TcpProxy):
    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        super().__init__(target)
        self._flowing = threading.Event()
        self._flowing.set()
        self._dropping = False

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def stall(self) -> None:
        """Stop forwarding, both ways; sockets stay open."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again (what was read while stalled first)."""
        self._flowing.set()

    def _wait_flowing(self) -> bool:
        """Wait while stalled; False once the proxy is being dropped."""
        self._flowing.wait()
        return not self._dropping

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while self._wait_flowing():
                data = source.recv(65536)
                if not data or not self._wait_flowing():
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def start(self) -> None:
        self._dropping = False
        super().start()

    def drop(self) -> None:
        self._dropping = True
        self._flowing.set()  # wake the stalled pipes: they end without forwarding
        super().drop()
        self._flowing.set()
