"""The worker's Prometheus metrics: what a scrape says is what the log lines say, exactly."""

import json
import os
import re
import signal
import socket
import urllib.request
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import run_command, wait_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[tuple, float]:
    """Every sample of the endpoint, keyed by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: dict[tuple, float], name: str, **labels) -> float:
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and labels.items() <= dict(sample_labels).items())


def test_scraped_counters_equal_the_log_lines_through_failures_and_a_killed_pool_process(
        run, start_worker, work_queue_name):
    port = free_port()
    worker = start_worker(work_queue_name, "--processes", "2", "--max-retries", "0", "--metrics-port", str(port))
    run("new-task", "--queue", work_queue_name, "--task", "fail", "--count", "100", check=True)
    run("new-task", "--queue", work_queue_name, "--task", "noop", "--count", "10000", check=True)

    wait_until(lambda: len(worker.events("task_succeeded")) >= 3000, timeout=60, message="3000 tasks done")
    pool = psutil.Process(worker.process.pid).children()
    os.kill(pool[0].pid, signal.SIGKILL)  # mid-run: its prefetched tasks run again elsewhere

    def done():
        return (len({e["task_id"] for e in worker.events("task_succeeded")}) == 10000
                and len(worker.events("task_dead_lettered")) == 100
                and worker.events("pool_process_died"))

    wait_until(done, timeout=120, message="every task settled")

    def log_counts():
        return {"succeeded": len(worker.events("task_succeeded")),
                "dead_lettered": len(worker.events("task_dead_lettered")),
                "ran": len(worker.events("task_succeeded")) + len(worker.events("task_dead_lettered"))}

    def scraped_counts():
        samples = scrape(port)
        return {"succeeded": total(samples, "rabbitry_tasks_total", outcome="succeeded", task="noop"),
                "dead_lettered": total(samples, "rabbitry_tasks_total", outcome="dead_lettered",
                                       reason="retries_exhausted", task="fail"),
                "ran": total(samples, "rabbitry_task_duration_seconds_count")}

    wait_until(lambda: scraped_counts() == log_counts(), timeout=10, message="the scrape to catch up")
    samples = scrape(port)
    assert scraped_counts() == log_counts()
    assert total(samples, "rabbitry_pool_process_restarts_total", why="died") == 1
    assert total(samples, "rabbitry_tasks_in_flight") == 0  # the dead process's gauge is dropped
    assert total(samples, "rabbitry_worker_info", processes="2", queue=work_queue_name) == 1


def test_the_metrics_endpoint_listens_on_loopback_unless_told_otherwise(start_worker, work_queue_name):
    port = free_port()
    worker = start_worker(work_queue_name, "--processes", "1", "--metrics-port", str(port))

    [serving] = worker.events("metrics_serving")
    assert serving["url"] == f"http://127.0.0.1:{port}/metrics"
    assert total(scrape(port), "rabbitry_worker_info", processes="1") == 1


def test_a_metrics_port_in_use_is_one_clear_line_and_exit_2(cli_env, work_queue_name):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_command(["worker", "--queue", work_queue_name, "--processes", "1",
                              "--metrics-port", str(port)], cli_env, timeout=60)

    assert result.returncode == 2
    assert f"Error: cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_every_rabbitry_metric_the_dashboard_queries_is_one_the_worker_serves(run, start_worker, work_queue_name):
    dashboard = json.loads((Path(__file__).parent.parent / "monitoring/grafana/rabbitry.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\brabbitry_[a-z_]+", target["expr"])}
    port = free_port()
    worker = start_worker(work_queue_name, "--processes", "1", "--max-retries", "0", "--metrics-port", str(port))
    run("new-task", "--queue", work_queue_name, "--task", "fail", check=True)
    run("new-task", "--queue", work_queue_name, "--task", "noop", check=True)
    wait_until(lambda: worker.events("task_dead_lettered") and worker.events("task_succeeded"), timeout=30,
               message="both tasks settled")
    os.kill(psutil.Process(worker.process.pid).children()[0].pid, signal.SIGKILL)
    wait_until(lambda: worker.events("pool_process_died"), timeout=30, message="the pool process restarted")

    served = {name for name, _ in scrape(port)}
    assert queried and queried <= served, queried - served
