"""The slow server behind ``rabbitry compare``'s I/O-bound workload, and its two clients.

The seed article compares synchronous and asynchronous forms on tasks that
wait for web pages; here the page is a local TCP server the comparison
starts itself on 127.0.0.1, which answers each request after a fixed delay.
A call is real I/O (connect, send, wait for the answer, close), so a thread
or a coroutine that waits for it gives the interpreter lock away as it
would for a distant server, without the network's noise.
"""

import asyncio
import collections
import socket
import threading

#: How long the server holds each request before it answers.
ANSWER_DELAY_S = 0.05
#: A request is one line, its kind (``work`` unless a caller names another); the answer is one line.
DEFAULT_KIND, ANSWER = "work", b"done\n"


class SlowServer:
    """A TCP server on 127.0.0.1 that answers every request after ``delay_s``, on an asyncio
    loop in a thread of its own; ``with SlowServer() as server:`` serves at ``server.port``.

    It counts, by kind, the requests it answered (``served``) and the most it held at once
    (``most_at_once``): how many callers really waited on it together.
    """

    def __init__(self, delay_s: float = ANSWER_DELAY_S):
        self.delay_s = delay_s
        self.port = 0
        self.served: collections.Counter = collections.Counter()
        self.most_at_once: collections.Counter = collections.Counter()
        self._held: collections.Counter = collections.Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="rabbitry-compare-server")
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None

    def __enter__(self) -> "SlowServer":
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc_info) -> None:
        assert self._stopped is not None  # made by the server's thread before it was ready
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join()
        self._loop.close()

    def _serve(self) -> None:
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        # A wide backlog: the thread forms open 64 connections at once.
        server = await asyncio.start_server(self._answer, "127.0.0.1", 0, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stopped.wait()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            kind = (await reader.readline()).decode(errors="replace").strip()
            self._held[kind] += 1
            self.most_at_once[kind] = max(self.most_at_once[kind], self._held[kind])
            try:
                await asyncio.sleep(self.delay_s)
            finally:
                self._held[kind] -= 1  # before the answer, so no caller has it while it still counts
                self.served[kind] += 1
            writer.write(ANSWER)
            await writer.drain()
        except ConnectionError:
            pass  # the client went away; nothing to answer
        finally:
            writer.close()


def call(port: int, kind: str = DEFAULT_KIND) -> bytes:
    """One request to the slow server, with a blocking socket: for threads and processes."""
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(f"{kind}\n".encode())
        return _read_all(connection)


def _read_all(connection: socket.socket) -> bytes:
    chunks = []
    while chunk := connection.recv(64):
        chunks.append(chunk)
    return b"".join(chunks)


async def call_async(port: int, kind: str = DEFAULT_KIND) -> bytes:
    """One request to the slow server, with asyncio streams: for coroutines."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{kind}\n".encode())
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
