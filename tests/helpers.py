"""Helpers for tests that run rabbitry's commands as real processes."""

import contextlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time

import pika
from pika import spec

from rabbitry.common.connect import connect
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import Binding, Queue, Topology, log_exchange

BIN = os.path.dirname(sys.executable)

#: The repository's folder: on a worker's PYTHONPATH (or its cwd) so that it can import the task
#: modules of tests/, such as ``tests.fault_tasks``.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rabbitmq_image() -> str:
    """The image tests start RabbitMQ containers from: ``$RABBITMQ_IMAGE``, else the official one."""
    return os.environ.get("RABBITMQ_IMAGE", "rabbitmq:3.13-management")


def command_path(name: str) -> str:
    """The installed console script ``name``, next to this Python."""
    return os.path.join(BIN, name)


def run_command(
    args: list[str],
    env: dict,
    input: str | None = None,
    timeout: float = 60,
    check: bool = False,
    cwd: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a rabbitry command (in folder ``cwd``, if given) and capture its output. Past
    ``timeout`` the command and every process it started are killed, and TimeoutExpired raised."""
    with subprocess.Popen(
        [command_path(args[0]), *args[1:]],
        env=env,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except BaseException:  # a timeout, or the test's own bound (pytest-timeout) interrupting it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
    return result


def assert_one_line_error(result, status, *fragments):
    """The command exited ``status`` with one ``Error:`` line holding every fragment, and no traceback."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0]


def json_lines(text: str) -> list[dict]:
    """The JSON objects among the lines of ``text``."""
    objects = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                objects.append(json.loads(line))
            except ValueError:
                pass
    return objects


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class WorkerProcess:
    """A ``worker`` command running in the background, its log in a temporary file."""

    def __init__(self, queue: str, args: list[str], env: dict, cwd: str | None = None, command: str | None = None):
        self.queue = queue
        self.args = args
        self.env = env
        self.cwd = cwd
        self.command = command or command_path("worker")
        self.process: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile("w+", prefix="rabbitry-worker-", suffix=".log", delete=False)

    def start(self) -> "WorkerProcess":
        self.process = subprocess.Popen(
            [self.command, "--queue", self.queue, "--log-format", "json", *self.args],
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_for_consumers(self, settings, consumers: int | None = None, timeout: float = 30.0) -> None:
        """Wait until the broker shows this worker's consumers on its queue."""
        expected = consumers or self.consumers

        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}: {self.output()}")
            with connect(settings, "rabbitry-tests-wait") as conn:
                state = conn.queue_state(self.queue)
            return state is not None and state.consumers >= expected

        wait_until(ready, timeout, 0.1, f"{expected} consumers on {self.queue}")

    @property
    def consumers(self) -> int:
        """How many consumers this worker opens: one per pool process."""
        for flag in ("--processes", "-p"):
            if flag in self.args:
                return int(self.args[self.args.index(flag) + 1])
        return min(os.cpu_count() or 1, 8)

    def output(self) -> str:
        with open(self._log.name) as log:
            return log.read()

    def events(self, name: str | None = None) -> list[dict]:
        """The worker's JSON log lines, those with ``event == name`` if given."""
        lines = json_lines(self.output())
        return [e for e in lines if name is None or e.get("event") == name]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill_all(self) -> None:
        """SIGKILL the worker and its pool processes at once."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL if it will not stop)."""
        return stop_process(self.process, timeout)


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM ``process`` and wait; returns the exit code (SIGKILL to its group if it will not stop)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


class NodeCommands:
    """rabbitry's commands and a connection, aimed at ``url`` (an extra node or a cluster)."""

    def __init__(self, url: str, **env):
        self.url = url
        self.settings = BrokerSettings.from_url(url, reconnect_for=60.0)
        self.env = dict(
            os.environ, AMQP_URL=url, RABBITRY_LOG_FORMAT="json", PYTHONUNBUFFERED="1", PYTHONPATH=REPOSITORY, **env
        )
        self.workers: list[WorkerProcess] = []

    def run(self, *args, **kwargs):
        """Run a command to completion."""
        return run_command(list(args), env=self.env, **kwargs)

    def start_worker(self, queue: str, *args, wait: bool = True) -> WorkerProcess:
        """Start ``worker`` on ``queue``; it is stopped by :meth:`stop_workers`.

        ``wait`` waits until every running worker of ``queue`` consumes, this one included.
        """
        worker = WorkerProcess(queue, list(args), env=self.env).start()
        self.workers.append(worker)
        if wait:
            serving = [other for other in self.workers if other.queue == queue and other.process.poll() is None]
            worker.wait_for_consumers(self.settings, sum(other.consumers for other in serving))
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop_workers()

    def queue_state(self, queue: str):
        with connect(self.settings, "rabbitry-tests-inspect") as connection:
            return connection.queue_state(queue)

    def drain(self, queue: str) -> list:
        """Take (and ack) every message of ``queue``."""
        letters = []
        with connect(self.settings, "rabbitry-tests-drain") as connection:
            while (delivery := connection.get(queue)) is not None:
                letters.append(delivery)
                connection.ack(delivery.delivery_tag)
        return letters


def succeeded_ids(*workers) -> set[str]:
    """Ids of the tasks the workers logged as succeeded."""
    return {event["task_id"] for worker in workers for event in worker.events("task_succeeded")}


def bind_everything(connection, exchange: str, queue: str, durable: bool = False) -> None:
    """A queue that takes every message of the topic exchange ``exchange``."""
    connection.declare(
        Topology(
            exchanges=(log_exchange("topic", exchange, durable),),
            queues=(Queue(queue, durable=durable),),
            bindings=(Binding(exchange, queue, "#"),),
        )
    )


def drain(connection, queue: str) -> list:
    """Get and ack every message waiting in ``queue``; return the deliveries."""
    deliveries = []
    while (delivery := connection.get(queue)) is not None:
        connection.ack(delivery.delivery_tag)
        deliveries.append(delivery)
    return deliveries


def raw_header(name: str, kind: bytes, value: bytes) -> bytes:
    """One field of an AMQP header table, encoded: its name, its type tag, its value."""
    return bytes([len(name)]) + name.encode() + kind + value


#: A timestamp header past the year 9999, which the broker takes and pika cannot decode.
TIMESTAMP_PAST_9999 = raw_header("sent", b"T", struct.pack(">Q", 2**63))


def array_of_bytes(name: str, count: int) -> bytes:
    """An array of ``count`` one-byte integers, which pika decodes as ints and encodes back 2.5 times larger."""
    return raw_header(name, b"A", struct.pack(">I", 2 * count) + b"b\x01" * count)


class RawHeaderProperties(spec.BasicProperties):
    """Properties whose header table is given encoded, as a client other than pika may send it."""

    def __init__(self, table: bytes, content_type: str, message_id: str):
        super().__init__(content_type=content_type, message_id=message_id, delivery_mode=2)
        self._table = table

    def encode(self):
        flags = self.FLAG_CONTENT_TYPE | self.FLAG_HEADERS | self.FLAG_DELIVERY_MODE | self.FLAG_MESSAGE_ID
        content_type, message_id = self.content_type.encode(), self.message_id.encode()
        return [
            struct.pack(">H", flags),
            bytes([len(content_type)]),
            content_type,
            struct.pack(">I", len(self._table)),
            self._table,
            bytes([2]),
            bytes([len(message_id)]),
            message_id,
        ]


def publish_with_raw_headers(
    url: str, queue: str, body: bytes, table: bytes, message_id: str, content_type: str = "application/json"
) -> None:
    """Publish to ``queue`` with a confirm, and headers given as encoded fields (see :func:`raw_header`)."""
    with pika.BlockingConnection(pika.URLParameters(url)) as raw:
        channel = raw.channel()
        channel.confirm_delivery()
        channel.basic_publish("", queue, body, RawHeaderProperties(table, content_type, message_id))


def summary_counts(stderr: str) -> dict[str, int]:
    """The numbers of new-task's summary, the last line of its standard error: {"queued": 3, "not_sent": 0, ...}."""
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("summary: "), stderr
    return {
        word.replace(" ", "_"): int(number)
        for number, word in re.findall(r"(\d+) (queued|refused|unconfirmed|not sent)", last)
    }


#: The long ones of queue_uneven_tasks: fair dispatch gives each process every other long task
#: only while the other runs the 3 short tasks between two of them in less time than this.
LONG_TASK_S = 1.0


def queue_uneven_tasks(run, queue: str, folder) -> int:
    """Queue 24 sleep tasks, every 4th LONG_TASK_S long and the others 0.01 s; return how many."""
    tasks = folder / "tasks.jsonl"
    tasks.write_text(
        "".join(json.dumps({"task": "sleep", "args": [LONG_TASK_S if i % 4 == 0 else 0.01]}) + "\n" for i in range(24))
    )
    run("new-task", "--file", str(tasks), "--queue", queue, check=True)
    return 24


def long_tasks_per_process(events: list[dict]) -> list[int]:
    """How many of the long tasks each pool process ran, fewest first."""
    counts = {}
    for event in events:
        if event["duration_s"] >= LONG_TASK_S:
            counts[event["pool_process"]] = counts.get(event["pool_process"], 0) + 1
    return sorted(counts.values())
