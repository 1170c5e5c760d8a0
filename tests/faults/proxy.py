"""A TCP proxy on 127.0.0.1 that a fault-injection test can freeze, and a server that
accepts TCP but never speaks: the network faults rabbitry must ride out.

While frozen, the proxy still accepts connections but passes no byte either
way, as a stalled network or a paused node does; thawed, it passes on what
waited. Connections to the upstream that drop (a node restart) are closed on
the client's side too.
"""

import contextlib
import socket
import threading

_CHUNK = 65536


class FreezableProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream_port`` until :meth:`close`."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="rabbitry-tests-proxy", daemon=True).start()

    def url(self, user: str = "guest", password: str = "guest") -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/%2F"

    def freeze(self) -> None:
        """Pass no more bytes, either way, until :meth:`thaw`."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def drop_connections(self) -> None:
        """Close every connection through the proxy, as a network reset does."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_connections()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._flowing.wait()  # a frozen network answers no new connection either
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets |= {client, upstream}
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(_CHUNK):
                self._flowing.wait()
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._sockets -= {source, target}


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never says a word: a frozen node, or a port
    that is not a broker's. Closed with the ``with`` block."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._listener.getsockname()[1]

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._listener.close()
