"""A connection that opens and then never sends a byte: the broker closes it once it has missed
its heartbeats. A test of a connection kept alive waits for the witness to be dropped, rather
than for a number of seconds: by then a connection that sent nothing for as long is gone too.

RabbitMQ checks what it received from a client every heartbeat interval and gives up after two
checks that saw nothing: between 2 and 3 intervals after the last byte. A witness whose
heartbeat is ``WITNESS_FACTOR`` times the watched one's (rounded up), opened after the watched
connection last had to send, is dropped no sooner than the watched connection would have been.
"""

import math
import select
import socket
import urllib.parse

from pika import frame, spec

#: A heartbeat for tests of connections kept alive: short enough for a test's time, long enough
#: that a connection thread stalled 4.5 s by a loaded machine still sends one in time.
HEARTBEAT_S = 3
#: The witness's heartbeat over the watched connection's: it is dropped at least 2 of its own
#: intervals after it opened, which is at least the 3 of the other's after which that would be.
WITNESS_FACTOR = 1.5


def witness_heartbeat(heartbeat: int) -> int:
    """The heartbeat of a witness for a connection with ``heartbeat`` seconds."""
    return math.ceil(heartbeat * WITNESS_FACTOR)


class SilentConnection:
    """An open AMQP connection to ``url`` that sends nothing after its handshake."""

    def __init__(self, url: str, heartbeat: int, name: str = "rabbitry-tests-heartbeat-witness"):
        parsed = urllib.parse.urlsplit(url)
        vhost = urllib.parse.unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
        user = urllib.parse.unquote(parsed.username or "guest")
        password = urllib.parse.unquote(parsed.password or "guest")
        self.heartbeat = heartbeat
        self._socket = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5672), timeout=30)
        self._received = b""
        self._socket.sendall(frame.ProtocolHeader().marshal())
        self._expect(spec.Connection.Start)
        self._send(
            spec.Connection.StartOk(
                client_properties={"connection_name": name}, mechanism="PLAIN", response=f"\0{user}\0{password}"
            )
        )
        tune = self._expect(spec.Connection.Tune)
        self._send(spec.Connection.TuneOk(tune.channel_max, tune.frame_max, heartbeat))
        self._send(spec.Connection.Open(virtual_host=vhost))
        self._expect(spec.Connection.OpenOk)
        self._socket.setblocking(False)

    def _send(self, method) -> None:
        self._socket.sendall(frame.Method(0, method).marshal())

    def _expect(self, kind):
        while True:
            used, decoded = frame.decode_frame(self._received)
            if decoded is not None:
                self._received = self._received[used:]
                if isinstance(decoded, frame.Method):
                    if not isinstance(decoded.method, kind):
                        raise AssertionError(f"the broker answered {decoded.method} instead of {kind.NAME}")
                    return decoded.method
                continue
            chunk = self._socket.recv(65536)
            if not chunk:
                raise AssertionError(f"the broker closed the witness before {kind.NAME}")
            self._received += chunk

    def dropped(self) -> bool:
        """Whether the broker has closed the connection (reading its heartbeats sends nothing)."""
        while select.select([self._socket], [], [], 0)[0]:
            try:
                if not self._socket.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
        return False

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> "SilentConnection":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
