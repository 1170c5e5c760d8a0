"""``rabbitry status --watch``: samples with rates, JSON on a pipe, a redrawn table on a terminal."""

import json
import os
import pty
import select
import signal
import subprocess
import time

from rabbitry.commands.watch import QueueSample, rates
from tests.helpers import command_path, run_command


def test_rates_are_differences_between_successive_samples():
    before = QueueSample("q", at=10.0, exists=True, messages=100, published=1000, delivered=400)
    after = QueueSample("q", at=12.0, exists=True, messages=60, published=1200, delivered=680)

    row = rates(before, after)

    assert (row["in_per_s"], row["out_per_s"], row["net_per_s"]) == (100.0, 140.0, -20.0)
    assert rates(None, after)["in_per_s"] is None  # the first sample has nothing to compare with
    reset = QueueSample("q", at=14.0, exists=True, messages=0, published=3, delivered=0)  # declared again
    assert rates(after, reset)["in_per_s"] is None


def test_on_a_pipe_each_sample_is_one_json_object_with_the_net_change(run, cli_env, work_queue_name):
    run("new-task", "--queue", work_queue_name, "--task", "noop", "--count", "10", check=True)
    watch = subprocess.Popen(
        [
            command_path("rabbitry"),
            "status",
            "--watch",
            "--interval",
            "0.5",
            "--count",
            "4",
            "--queue",
            work_queue_name,
            "--management-url",
            "",
        ],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = json.loads(watch.stdout.readline())
    run("new-task", "--queue", work_queue_name, "--task", "noop", "--count", "50", check=True)
    rest = [json.loads(line) for line in watch.stdout]
    assert watch.wait(30) == 0, watch.stderr.read()

    [queue] = [row for row in first["queues"] if row["queue"] == work_queue_name]
    assert first["source"] == "amqp" and queue["messages"] == 10 and queue["net_per_s"] is None
    later = [row for sample in rest for row in sample["queues"] if row["queue"] == work_queue_name]
    assert len(rest) == 3 and later[-1]["messages"] == 60
    assert any(row["net_per_s"] > 0 for row in later) and all(row["in_per_s"] is None for row in later)


def test_with_the_management_api_rates_in_and_out_are_shown(management_broker, unique_name):
    env = dict(os.environ, AMQP_URL=management_broker.url)
    queue = f"{unique_name}.watched"
    try:
        worker = subprocess.Popen(
            [command_path("worker"), "--queue", queue, "--processes", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        watch = subprocess.Popen(
            [
                command_path("rabbitry"),
                "status",
                "--watch",
                "--interval",
                "1",
                "--count",
                "8",
                "--queue",
                queue,
                "--management-url",
                management_broker.management_url,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        run_command(
            ["new-task", "--queue", queue, "--task", "sleep", "--args", "[0.01]", "--count", "300"], env, check=True
        )
        samples = [json.loads(line) for line in watch.stdout]
        assert watch.wait(30) == 0, watch.stderr.read()
    finally:
        worker.terminate()
        worker.wait(30)
        run_command(["rabbitry", "queue", "delete", queue, "--force"], env)

    rows = [row for sample in samples for row in sample["queues"] if row["queue"] == queue]
    assert {sample["source"] for sample in samples} == {"management"}
    assert max(row["in_per_s"] or 0 for row in rows) > 0
    assert max(row["out_per_s"] or 0 for row in rows) > 0
    assert rows[-1]["consumers"] == 1, json.dumps(rows)


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
    deadline = time.monotonic() + 20
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
