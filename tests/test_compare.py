"""``rabbitry compare``: the same workloads on both transports, as a table and as JSON, and the
concurrency experiment's shape: the GIL for CPU-bound work, waiting for I/O-bound work.

Every figure is judged against another one measured in the same run, as an
inequality with room for a busy 2-core machine; no test asserts a time. What
a second core gains depends on who else keeps it busy, so processes are shown
to run CPU-bound tasks at the same time, and threads to use one core at most.
"""

import functools
import json
import os
import threading
import time

import pytest

from rabbitry.compare.concurrency import MODEL, NO_BROKER, RABBITMQ, rate
from rabbitry.compare.forms import FORMS, concurrency_levels, sweep
from rabbitry.compare.server import SlowServer
from rabbitry.compare.tasks import Workload, spin, spin_async, workloads
from tests.helpers import run_command

SMALL = [
    "--tasks",
    "200",
    "--messages",
    "100",
    "--subscribers",
    "2",
    "--seed-tasks",
    "100",
    "--cpu-tasks",
    "20",
    "--io-tasks",
    "40",
    "--sweep-tasks",
    "2",
]
#: The least of everything: for what the tables look like, not for their figures.
TINY = [
    *("--tasks", "100", "--messages", "10", "--subscribers", "1", "--seed-tasks", "100"),
    *("--cpu-tasks", "10", "--io-tasks", "10", "--sweep-tasks", "2"),
]
THREADS, PROCESSES = "concurrent.futures.ThreadPoolExecutor", "multiprocessing.Pool"
WORKER = "rabbitry worker --processes 2"


@pytest.fixture(scope="module")
def report(broker_url):
    """One small ``rabbitry compare --json`` run on RabbitMQ, read by several tests."""
    result = run_command(
        ["rabbitry", "compare", "--json", *SMALL], env={**os.environ, "AMQP_URL": broker_url}, timeout=180
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compare_json_has_every_row_and_topic_routing_is_identical_on_both_sides(report):
    workloads = [row["workload"] for row in report["rows"]]
    assert [w.split(":")[0] for w in workloads] == [
        "work queue",
        "work queue",
        "fair dispatch",
        "fan-out",
        "topic routing",
    ]
    for row in report["rows"][:4]:
        assert row["model"] > 0 and row["rabbitmq"] > 0
        assert (row["model_vs_rabbitmq"] is not None) == row["unit"].endswith("/s")
    routing = report["rows"][4]
    assert routing["model"] is True and routing["rabbitmq"] is True
    assert routing["identical_on_both_sides"] is True
    assert report["model"]["topic_routing"]["routed"] == report["rabbitmq"]["topic_routing"]["routed"]
    for side in ("model", "rabbitmq"):
        assert report[side]["work_queue"]["left_in_queue"] == 0  # every task was acked


def test_every_concurrency_form_runs_every_workload_and_the_worker_runs_on_both_sides(report):
    concurrency = report["concurrency"]
    forms = {(row["form"], row["runs_on"]): row for row in concurrency["forms"]}
    assert {form for form, side in forms if side == NO_BROKER} == set(FORMS)
    assert {side for form, side in forms if form == WORKER} == {MODEL, RABBITMQ}
    for row in concurrency["forms"]:
        assert row["note"] is None and all(value > 0 for value in row["tasks_per_s"].values()), row
    # The worker's 2 processes wait for the server 2 at a time; 16 threads wait 16 at a time.
    assert rate(concurrency, THREADS, NO_BROKER, "io") >= 3 * rate(concurrency, WORKER, RABBITMQ, "io")
    assert rate(concurrency, WORKER, RABBITMQ, "io") <= 2 / 0.05 * 1.1
    # 2 processes x 16 coroutines wait for 32 calls at a time
    assert rate(concurrency, f"{WORKER} --concurrency 16", RABBITMQ, "io") >= 3 * rate(
        concurrency, WORKER, RABBITMQ, "io"
    )


def spin_and_record(path: str, _item=None) -> None:
    """The CPU-bound workload, then a line in ``path``: the process and thread that ran it, and when.

    Module-level, so that a process pool can pickle it; ``time.monotonic`` is one clock for every
    process of the machine."""
    began = time.monotonic()
    spin()
    ended = time.monotonic()
    with open(path, "a") as record:
        record.write(f"{os.getpid()} {threading.get_ident()} {began} {ended}\n")


def ran(form: str, folder, tasks: int, at_a_time: int) -> tuple[list[tuple], float, float]:
    """Run ``tasks`` CPU-bound tasks in ``form``: what each task recorded (runner, began, ended),
    and the CPU seconds this process used meanwhile, and the seconds that passed."""
    path = str(folder / f"{form.replace(' ', '_')}.runs")
    recorded = Workload("recorded CPU-bound", functools.partial(spin_and_record, path), spin_async, "compare.cpu")
    cpu, started = time.process_time(), time.perf_counter()
    FORMS[form][0](recorded, tasks, at_a_time)
    cpu, elapsed = time.process_time() - cpu, time.perf_counter() - started
    with open(path) as record:
        runs = [(f"{pid}/{thread}", float(began), float(ended)) for pid, thread, began, ended in map(str.split, record)]
    assert len(runs) == tasks
    return runs, cpu, elapsed


def at_the_same_time(runs: list[tuple]) -> bool:
    """Whether two tasks run by different runners were under way at one moment."""
    ordered = sorted(runs, key=lambda run: run[1])
    return any(
        later[1] < earlier[2] and later[0] != earlier[0]
        for i, earlier in enumerate(ordered)
        for later in ordered[i + 1 :]
    )


def test_cpu_bound_work_runs_in_processes_at_once_and_in_threads_one_core_at_most(tmp_path):
    tasks = 40
    for form in (PROCESSES, "concurrent.futures.ProcessPoolExecutor"):
        runs, _cpu, _elapsed = ran(form, tmp_path, tasks, 2)
        pids = {runner.split("/")[0] for runner, _began, _ended in runs}
        assert len(pids) == 2 and str(os.getpid()) not in pids, (form, pids)  # the pool's 2 processes ran them
        assert at_the_same_time(runs), (form, runs)  # each with an interpreter of its own

    for form in ("threads + queue.Queue", THREADS):
        runs, cpu, elapsed = ran(form, tmp_path, tasks, 8)
        assert len({runner for runner, _began, _ended in runs}) > 1, (form, runs)  # taken in turns
        # 8 threads run the loop under one interpreter lock: together they never use more than one core.
        assert cpu <= 1.25 * elapsed, (form, cpu, elapsed)


def test_io_bound_work_scales_with_threads_and_coroutines_far_past_the_process_count():
    with SlowServer() as server:
        io = workloads(server.port)["io"]
        by_processes = 40 / FORMS[PROCESSES][0](io, 40, 2)
        makespans = sweep(io, 16)

    for form, points in makespans.items():
        at = {point["concurrency"]: point["makespan_s"] for point in points}
        assert list(at) == concurrency_levels(16) == [1, 2, 4, 8, 16]
        assert at[1] >= 16 * 0.05  # each call really waits for the server
        assert at[16] <= at[1] / 4, (form, at)
        assert 16 / at[16] >= 3 * by_processes, (form, at, by_processes)


def test_compare_prints_its_tables_and_runs_the_model_alone_without_rabbitmq():
    nowhere = "amqp://guest:guest@127.0.0.1:1/"
    # --repeat 2 forks process pools after the in-process worker has run: they must still stop.
    result = run_command(
        ["rabbitry", "compare", *TINY, "--repeat", "2"], env={**os.environ, "AMQP_URL": nowhere}, timeout=180
    )

    assert result.returncode == 0, result.stderr
    assert "RabbitMQ: not reachable" in result.stderr
    header, rule, *lines = result.stdout.splitlines()
    assert "in-process model" in header and "RabbitMQ" in header
    assert set(rule.replace(" ", "")) == {"-"}
    assert any(line.startswith("topic routing") and " yes " in line for line in lines)
    forms = [line for line in lines if line.startswith(WORKER)]
    assert any("RabbitMQ not reachable" in line for line in forms)
    assert any("in-process model" in line and "not reachable" not in line and "needs" not in line for line in forms)
    assert any(line.lstrip().startswith("concurrency") for line in lines)
