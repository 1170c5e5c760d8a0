"""A worker's start-up: waiting for a broker that comes up second, and giving up on one that never does."""

import time

from rabbitry.common.errors import ExitCode
from tests.helpers import WorkerProcess, run_command, wait_until
from tests.nodes import RabbitNode

#: A port nothing listens on.
DOWN = "amqp://guest:guest@127.0.0.1:1/%2F"


def test_a_worker_started_10_s_before_its_broker_connects_and_serves(cli_env, unique_name):
    node = RabbitNode(prefix="late")
    worker = WorkerProcess(unique_name, ["--processes", "1", "--url", node.url], env=cli_env)
    try:
        started = time.monotonic()
        worker.start()
        wait_until(lambda: worker.events("broker_unreachable"), message="a first attempt to reach the broker")
        time.sleep(max(0.0, 10 - (time.monotonic() - started)))
        assert worker.process.poll() is None, worker.output()  # still waiting, 10 s on
        node.start()
        worker.wait_for_consumers(node.settings(), timeout=60)
        env = {**cli_env, "AMQP_URL": node.url}
        task_id = run_command(
            ["new-task", "--task", "echo", "--args", '["late"]', "--queue", unique_name], env=env, check=True
        ).stdout.strip()
        wait_until(
            lambda: [e for e in worker.events("task_succeeded") if e["task_id"] == task_id], message="the task's run"
        )
    finally:
        worker.stop()
        node.destroy()
    attempts = worker.events("broker_unreachable")
    assert len(attempts) >= 3 and all("retry_in_s" in attempt for attempt in attempts)
    assert worker.events("worker_started")


def test_a_worker_gives_up_with_exit_3_when_the_broker_stays_down_past_its_connect_timeout(run, unique_name):
    result = run("worker", "--queue", unique_name, "--url", DOWN, "--connect-timeout", "1", "--log-format", "json")

    assert result.returncode == ExitCode.BROKER_UNAVAILABLE
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "cannot reach the broker" in error and "gave up after 1 s" in error
    assert result.stdout.count('"broker_unreachable"') >= 2  # each attempt logged
    assert "Traceback" not in result.stdout + result.stderr


def test_a_tasks_own_time_limit_over_the_consumer_timeout_stops_the_worker_with_one_clear_line(
    run, work_queue_name, unique_name, tmp_path
):
    # The shared broker keeps RabbitMQ's default consumer_timeout of 30 minutes.
    (tmp_path / "long_tasks.py").write_text(
        f"from rabbitry import task\n\n@task(name={unique_name!r}, time_limit=100000)\ndef long():\n    pass\n"
    )

    result = run("worker", "--queue", work_queue_name, "--tasks", "long_tasks", "--processes", "1", cwd=str(tmp_path))

    assert result.returncode == ExitCode.USAGE, result.stdout
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert (
        f"the time_limit of task {unique_name!r}, 100000 s, does not fit under the broker's consumer_timeout" in error
    )
