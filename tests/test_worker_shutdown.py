"""A worker's shutdown when its output has gone: Ctrl-C on ``worker 2>&1 | tee log`` kills ``tee`` too."""

import os
import select
import signal
import subprocess

import psutil

from rabbitry.common.connect import connect
from tests.helpers import command_path, wait_until

TASKS = 20


def record_tasks(folder, name: str) -> None:
    """A task module in ``folder``: task ``name`` sleeps a little, then notes its run in a file."""
    (folder / "record_tasks.py").write_text(
        "import time\n\nfrom rabbitry import task\n\n\n"
        f"@task(name={name!r})\n"
        "def record(marker: str) -> None:\n"
        "    time.sleep(0.5)\n"
        "    with open(marker, 'a') as runs:\n"
        "        runs.write('x\\n')\n"
    )


def runs(marker) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_ctrl_c_with_the_reader_of_its_output_gone_stops_the_worker_and_its_pool_losing_no_task(
    run, cli_env, broker_settings, work_queue_name, unique_name, tmp_path
):
    record_tasks(tmp_path, unique_name)
    marker = tmp_path / "runs"
    run(
        "new-task", "--task", unique_name, "--args", f'["{marker}"]', "--count", str(TASKS), "--queue", work_queue_name,
        check=True,
    )  # fmt: skip
    reader, writer = os.pipe()
    worker = subprocess.Popen(
        [command_path("worker"), "--queue", work_queue_name, "--tasks", "record_tasks", "--processes", "2"],
        env={**cli_env, "RABBITRY_LOG_FORMAT": "console"},
        cwd=str(tmp_path),
        stdout=writer,
        stderr=writer,  # 2>&1
        start_new_session=True,  # a process group of its own, as a shell gives a pipeline
    )
    os.close(writer)
    try:
        wait_until(lambda: len(psutil.Process(worker.pid).children()) == 2, message="two pool processes")
        pool = psutil.Process(worker.pid).children()

        def read_until_tasks_run():  # what the worker wrote so far, as tee would
            if select.select([reader], [], [], 0)[0] and not os.read(reader, 65536):
                raise AssertionError(f"the worker closed its output (exit {worker.poll()})")
            return runs(marker) >= 2

        wait_until(read_until_tasks_run, timeout=60, message="tasks running")
        os.close(reader)  # tee is gone: every later write to the pipe fails
        reader = None
        os.killpg(worker.pid, signal.SIGINT)  # Ctrl-C: the worker and its pool processes, all at once

        assert worker.wait(timeout=60) == 0
        wait_until(lambda: not any(process.is_running() for process in pool), 30, message="the pool processes' end")
    finally:
        if reader is not None:
            os.close(reader)
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

    def accounted_for():
        with connect(broker_settings, "rabbitry-tests-count") as connection:
            state = connection.queue_state(work_queue_name)
        return state is not None and state.messages + runs(marker) >= TASKS

    wait_until(accounted_for, 30, 0.1, "every task run or back in the queue")
    assert runs(marker) < TASKS  # stopped in the middle
