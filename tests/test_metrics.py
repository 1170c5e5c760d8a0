"""The worker's Prometheus metrics: what a scrape says is what the log lines say, but for the one
task a SIGKILL may catch between its count and its line."""

import json
import os
import re
import signal
import socket
import urllib.request
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from rabbitry.common.messages import TaskMessage
from rabbitry.common.transport.contract import Delivery
from rabbitry.tasks import Task
from rabbitry.workers import execution, metrics
from rabbitry.workers.config import WorkerConfig
from tests.helpers import run_command, wait_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[tuple, float]:
    """Every sample of the endpoint, keyed by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple, float], name: str, **labels) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


def test_scraped_counters_equal_the_log_lines_through_failures_and_a_killed_pool_process(
    run, start_worker, work_queue_name
):
    port = free_port()
    worker = start_worker(work_queue_name, "--processes", "2", "--max-retries", "0", "--metrics-port", str(port))
    run("new-task", "--queue", work_queue_name, "--task", "fail", "--count", "100", check=True)
    run("new-task", "--queue", work_queue_name, "--task", "noop", "--count", "10000", check=True)

    wait_until(lambda: len(worker.events("task_succeeded")) >= 3000, timeout=60, message="3000 tasks done")
    pool = psutil.Process(worker.process.pid).children()
    os.kill(pool[0].pid, signal.SIGKILL)  # mid-run: its prefetched tasks run again elsewhere

    def done():
        return (
            len({e["task_id"] for e in worker.events("task_succeeded")}) == 10000
            and len(worker.events("task_dead_lettered")) == 100
            and worker.events("pool_process_died")
        )

    wait_until(done, timeout=120, message="every task settled")

    def log_counts():
        return {
            "succeeded": len(worker.events("task_succeeded")),
            "dead_lettered": len(worker.events("task_dead_lettered")),
            "ran": len(worker.events("task_succeeded")) + len(worker.events("task_dead_lettered")),
        }

    def scraped_counts():
        samples = scrape(port)
        return {
            "succeeded": total(samples, "rabbitry_tasks_total", outcome="succeeded", task="noop"),
            "dead_lettered": total(
                samples, "rabbitry_tasks_total", outcome="dead_lettered", reason="retries_exhausted", task="fail"
            ),
            "ran": total(samples, "rabbitry_task_duration_seconds_count"),
        }

    def counted_beyond_the_lines():
        scraped, logged = scraped_counts(), log_counts()
        return {name: scraped[name] - logged[name] for name in logged}

    # A task is counted, then its line written (see test_a_task_is_counted_before_its_line_is_written):
    # the kill may fall between the two for the one task the killed process was settling, and only there.
    wait_until(
        lambda: all(0 <= beyond <= 1 for beyond in counted_beyond_the_lines().values()),
        timeout=10,
        message="the scrape to catch up",
    )
    samples = scrape(port)
    beyond = counted_beyond_the_lines()
    assert all(0 <= n <= 1 for n in beyond.values()), beyond
    assert beyond["succeeded"] + beyond["dead_lettered"] <= beyond["ran"], beyond  # one task at most
    assert total(samples, "rabbitry_pool_process_restarts_total", why="died") == 1
    assert total(samples, "rabbitry_tasks_in_flight") == 0  # the dead process's gauge is dropped
    assert total(samples, "rabbitry_worker_info", processes="2", queue=work_queue_name) == 1


def test_the_metrics_endpoint_listens_on_loopback_unless_told_otherwise(start_worker, work_queue_name):
    port = free_port()
    worker = start_worker(work_queue_name, "--processes", "1", "--metrics-port", str(port))

    [serving] = worker.events("metrics_serving")
    assert serving["url"] == f"http://127.0.0.1:{port}/metrics"
    assert not worker.events("metrics_on_every_interface")
    assert total(scrape(port), "rabbitry_worker_info", processes="1") == 1


def test_a_metrics_port_in_use_is_one_clear_line_and_exit_2(cli_env, work_queue_name):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_command(
            ["worker", "--queue", work_queue_name, "--processes", "1", "--metrics-port", str(port)], cli_env, timeout=60
        )

    assert result.returncode == 2
    assert f"Error: cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_every_rabbitry_metric_the_dashboard_queries_is_one_the_worker_serves(run, start_worker, work_queue_name):
    dashboard = json.loads((Path(__file__).parent.parent / "monitoring/grafana/rabbitry.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\brabbitry_[a-z_]+", target["expr"])
    }
    port = free_port()
    worker = start_worker(work_queue_name, "--processes", "1", "--max-retries", "0", "--metrics-port", str(port))
    run("new-task", "--queue", work_queue_name, "--task", "fail", check=True)
    run("new-task", "--queue", work_queue_name, "--task", "noop", check=True)
    wait_until(
        lambda: worker.events("task_dead_lettered") and worker.events("task_succeeded"),
        timeout=30,
        message="both tasks settled",
    )
    os.kill(psutil.Process(worker.process.pid).children()[0].pid, signal.SIGKILL)
    wait_until(lambda: worker.events("pool_process_died"), timeout=30, message="the pool process restarted")

    served = {name for name, _ in scrape(port)}
    assert queried and queried <= served, queried - served


class OrderRecorder(metrics.NoMetrics):
    """Notes, at each count, how many of the task's lines (debug aside) had been written by then."""

    def __init__(self, lines):
        self.lines, self.counted_after = lines, []

    def written(self):
        return sum(line["log_level"] != "debug" for line in self.lines)

    def task_ran(self, task, duration_s):
        self.counted_after.append(("ran", self.written()))

    def task_settled(self, task, outcome, reason=""):
        self.counted_after.append((outcome, self.written()))


def _fails():
    raise RuntimeError("no")


@pytest.mark.parametrize(
    "function, max_retries, event",
    [
        (lambda: None, 0, "task_succeeded"),
        (_fails, 3, "task_failed"),
        (_fails, 0, "task_dead_lettered"),
    ],
)
def test_a_task_is_counted_before_its_line_is_written(monkeypatch, function, max_retries, event):
    """A pool process killed between a count and its line must leave the count, not the line:
    a line is what the task's rerun elsewhere writes again, a count is never taken back."""
    delivery = Delivery(body=b"{}", routing_key="q", exchange="", delivery_tag=1)
    message = TaskMessage(task="t")
    config = WorkerConfig(queue="q", max_retries=max_retries)
    with capture_logs() as lines:
        recorder = OrderRecorder(lines)
        monkeypatch.setattr(metrics, "recorder", recorder)
        run = execution.run_task(delivery, message, Task(function, "t"))
        if run.error:
            disposition = execution.failure(delivery, message, config, run.error)
            assert disposition.announce is not None
            disposition.announce()  # as the connection thread does, once the broker confirmed it

    assert [line["event"] for line in lines if line["log_level"] != "debug"] == [event]
    assert recorder.counted_after and all(written == 0 for _, written in recorder.counted_after), recorder.counted_after


def listens_on(process: psutil.Process, port: int) -> bool:
    """Whether ``process`` holds a socket listening on ``port``."""
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in process.net_connections("tcp"))


def test_the_pool_processes_do_not_hold_the_metrics_endpoints_socket(start_worker, work_queue_name):
    port = free_port()
    worker = start_worker(work_queue_name, "--processes", "2", "--metrics-port", str(port))

    supervisor = psutil.Process(worker.process.pid)
    pool = supervisor.children()
    assert len(pool) == 2 and listens_on(supervisor, port)
    assert not any(listens_on(process, port) for process in pool)


def test_metrics_served_on_every_interface_are_logged_as_a_warning(start_worker, work_queue_name):
    port = free_port()
    worker = start_worker(work_queue_name, "--processes", "1", "--metrics-host", "0.0.0.0", "--metrics-port", str(port))

    [warning] = worker.events("metrics_on_every_interface")
    assert warning["level"] == "warning" and warning["host"] == "0.0.0.0" and warning["port"] == port
    assert total(scrape(port), "rabbitry_worker_info", processes="1") == 1


@pytest.mark.parametrize(
    "host, every",
    [("0.0.0.0", True), ("::", True), ("[::]", True), ("", True), ("127.0.0.1", False), ("10.0.0.5", False)],
)
def test_only_a_wildcard_address_counts_as_every_interface(host, every):
    assert metrics.serves_every_interface(host) is every
