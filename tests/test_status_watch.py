"""``rabbitry status --watch``: samples with rates, JSON on a pipe, a redrawn table on a terminal."""

import json
import os
import pty
import queue
import select
import signal
import subprocess
import threading
import time

from rabbitry.commands.watch import QueueSample, rates
from tests.helpers import WorkerProcess, command_path, run_command


def test_rates_are_differences_between_successive_samples():
    before = QueueSample("q", at=10.0, exists=True, messages=100, published=1000, delivered=400)
    after = QueueSample("q", at=12.0, exists=True, messages=60, published=1200, delivered=680)

    row = rates(before, after)

    assert (row["in_per_s"], row["out_per_s"], row["net_per_s"]) == (100.0, 140.0, -20.0)
    assert rates(None, after)["in_per_s"] is None  # the first sample has nothing to compare with
    reset = QueueSample("q", at=14.0, exists=True, messages=0, published=3, delivered=0)  # declared again
    assert rates(after, reset)["in_per_s"] is None


class Lines:
    """The lines a process writes to a pipe, read by a thread of their own, so that a wait for the
    next one has a bound: a watch that hangs fails the test instead of holding it."""

    def __init__(self, stream):
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(stream,))
        self._reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)  # the end of the stream

    def next(self, timeout: float = 60) -> str | None:
        """The next line, or None at the end of the stream; fail after ``timeout`` seconds of silence."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line in {timeout} s") from None

    def samples_until(self, done, timeout: float = 60) -> list[dict]:
        """The JSON samples read until those read make ``done(samples)`` true; fail after ``timeout`` seconds."""
        samples: list[dict] = []
        deadline = time.monotonic() + timeout
        while not samples or not done(samples):
            line = self.next(max(0.0, deadline - time.monotonic()))
            assert line is not None, f"the stream ended before the awaited sample: {samples}"
            samples.append(json.loads(line))
        return samples

    def close(self) -> None:
        """Wait for the reader: call it once the process has ended."""
        self._reader.join(30)


def rows_of(samples: list[dict], queue_name: str) -> list[dict]:
    return [row for sample in samples for row in sample["queues"] if row["queue"] == queue_name]


def test_on_a_pipe_each_sample_is_one_json_object_with_the_net_change(run, cli_env, work_queue_name):
    run("new-task", "--queue", work_queue_name, "--task", "noop", "--count", "10", check=True)
    watch = ["status", "--watch", "--queue", work_queue_name, "--management-url", ""]
    counted = run("rabbitry", *watch, "--interval", "0.1", "--count", "3", check=True)
    samples = [json.loads(line) for line in counted.stdout.splitlines()]
    assert [row["net_per_s"] for row in rows_of(samples, work_queue_name)] == [None, 0.0, 0.0]  # --count 3: 3 lines

    # Until Ctrl-C: the test reads samples as they come, and publishes once it has read the first.
    following = subprocess.Popen(
        [command_path("rabbitry"), *watch, "--interval", "0.2"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = Lines(following.stdout)
    try:
        [first] = lines.samples_until(lambda samples: True)
        run("new-task", "--queue", work_queue_name, "--task", "noop", "--count", "50", check=True)
        rest = lines.samples_until(lambda samples: rows_of(samples[-1:], work_queue_name)[0]["messages"] == 60)
        following.send_signal(signal.SIGINT)
        assert following.wait(30) == 0, following.stderr.read()
    finally:
        following.kill()
        following.wait()
        lines.close()

    [queue_row] = rows_of([first], work_queue_name)
    assert first["source"] == "amqp" and queue_row["messages"] == 10 and queue_row["net_per_s"] is None
    later = rows_of(rest, work_queue_name)
    # The depth went from 10 to 60 between samples: some sample saw it grow.
    assert any(row["net_per_s"] > 0 for row in later) and all(row["in_per_s"] is None for row in later)


def test_with_the_management_api_rates_in_and_out_are_shown(management_broker, unique_name):
    env = dict(os.environ, AMQP_URL=management_broker.url)
    queue_name = f"{unique_name}.watched"
    worker = WorkerProcess(queue_name, ["--processes", "1"], env).start()
    watch = None
    try:
        worker.wait_for_consumers(management_broker.settings(), 1, timeout=60)
        watch = subprocess.Popen(
            [
                command_path("rabbitry"),
                "status",
                "--watch",
                "--interval",
                "0.5",
                "--queue",
                queue_name,
                "--management-url",
                management_broker.management_url,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = Lines(watch.stdout)
        # The first sample is taken before any task is published: every task counts in a later rate.
        samples = lines.samples_until(lambda samples: True)
        run_command(["new-task", "--queue", queue_name, "--task", "noop", "--count", "100"], env, check=True)

        def rates_shown(later: list[dict]) -> bool:
            rows = rows_of(later, queue_name)
            return max(row["in_per_s"] or 0 for row in rows) > 0 and max(row["out_per_s"] or 0 for row in rows) > 0

        samples += lines.samples_until(rates_shown, timeout=120)
        watch.send_signal(signal.SIGINT)
        assert watch.wait(30) == 0, watch.stderr.read()
    finally:
        if watch is not None:
            watch.kill()
            watch.wait()
            lines.close()
        worker.stop()
        run_command(["rabbitry", "queue", "delete", queue_name, "--force"], env)

    rows = rows_of(samples, queue_name)
    assert {sample["source"] for sample in samples} == {"management"}
    assert rows[0]["in_per_s"] is None and rows[0]["out_per_s"] is None  # nothing to compare the first with
    # Before any task, the worker's one consumer; a change of its prefetch later is a new consumer,
    # and a sample may fall between the old one's end and the new one's start.
    assert rows[0]["consumers"] == 1 and all(row["consumers"] <= 1 for row in rows), json.dumps(rows)


def test_on_a_terminal_the_table_is_redrawn_and_ctrl_c_ends_it_cleanly(broker_url, work_queue_name):
    controller, terminal = pty.openpty()
    watch = subprocess.Popen(
        [
            command_path("rabbitry"),
            "status",
            "--watch",
            "--interval",
            "0.2",
            "--queue",
            work_queue_name,
            "--management-url",
            "",
        ],
        env=dict(os.environ, AMQP_URL=broker_url),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + 60
    while screen.count(b"consumers") < 3 and time.monotonic() < deadline:
        if select.select([controller], [], [], 0.5)[0]:
            screen += os.read(controller, 65536)
    watch.send_signal(signal.SIGINT)
    code = watch.wait(10)
    try:
        while select.select([controller], [], [], 0.2)[0]:
            screen += os.read(controller, 65536)
    except OSError:
        pass  # the terminal closed with the program
    os.close(controller)

    text = screen.decode(errors="replace")
    assert code == 0
    assert text.count("consumers") >= 3 and "\x1b[" in text  # redrawn, not scrolled
    assert work_queue_name in text and "Traceback" not in text
