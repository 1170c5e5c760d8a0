"""rabbitry's own worker in ``rabbitry compare``'s concurrency experiment.

Two forms: ``worker --processes 2``, running the blocking tasks of
:mod:`rabbitry.compare.tasks`, and ``worker --processes 2 --concurrency N``,
awaiting the coroutine tasks of :mod:`rabbitry.compare.async_tasks`. On
RabbitMQ the worker is the ``worker`` command in a process of its own, as a
user starts it; on the in-process model it is the same pool as threads of
this process (:class:`~workers.threaded.ThreadedWorkerPool`), since another
process cannot reach the model. Either way the driver submits each
workload's tasks with a :class:`TaskSubmitter` and counts executions in a
file, as ``bench-peers/bench_e2e.py`` does: the clock runs from the first
submit to the last execution, the worker started and warmed up before it.
"""

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time

from rabbitry.common.connect import connect
from rabbitry.common.errors import RabbitryError
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import TLS_CA_ENVVAR, TLS_CERT_ENVVAR, TLS_KEY_ENVVAR, URL_ENVVAR, BrokerSettings
from rabbitry.common.topology import work_queue_names
from rabbitry.compare.tasks import Workload
from rabbitry.producers.submitter import TaskSubmitter
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.registry import load_task_modules
from rabbitry.workers.threaded import ThreadedWorkerPool

#: Pool processes of both worker forms: one per core of the 2-core VM.
POOL_PROCESSES = 2
BLOCKING_TASKS, COROUTINE_TASKS = "rabbitry.compare.tasks", "rabbitry.compare.async_tasks"
_WAIT_S = 120.0
WORKER = [sys.executable, "-c", "from rabbitry.workers.cli import main; main()"]


class WorkerFailed(RabbitryError):
    """The worker under measurement stopped, or did not run the tasks in time."""


class ExecutionCounter:
    """Executions counted as bytes appended to a file of its own (see ``mark_executed``)."""

    def __init__(self):
        descriptor, self.path = tempfile.mkstemp(prefix="rabbitry-compare-")
        os.close(descriptor)

    def reset(self) -> None:
        """Start counting from zero."""
        os.truncate(self.path, 0)

    def wait_for(self, count: int, worker_stopped=lambda: None) -> float:
        """Wait until ``count`` executions are marked; the moment they were, on perf_counter's clock."""
        deadline = time.perf_counter() + _WAIT_S
        while os.stat(self.path).st_size < count:
            if (reason := worker_stopped()) or time.perf_counter() > deadline:
                raise WorkerFailed(
                    reason or f"the worker ran {os.stat(self.path).st_size} of {count} tasks in {_WAIT_S:.0f} s"
                )
            time.sleep(0.002)
        return time.perf_counter()

    def remove(self) -> None:
        """Delete the file."""
        os.unlink(self.path)


def drive(
    settings: BrokerSettings,
    queue: str,
    workloads: dict[str, Workload],
    counts: dict[str, int],
    suffix: str = "",
    worker_stopped=lambda: None,
) -> dict[str, float]:
    """Submit each workload's tasks (named with ``suffix``) and time them: workload -> seconds."""
    counter, seconds = ExecutionCounter(), {}
    try:
        with TaskSubmitter(settings, queue, queue_type="classic") as submitter:
            for name, workload in {"warm-up": workloads["noop"], **workloads}.items():
                count = counts.get(name, 4 * POOL_PROCESSES)
                counter.reset()
                started = time.perf_counter()
                for _ in range(count):
                    submitter.submit(TaskMessage(workload.task + suffix, args=[*workload.task_args, counter.path]))
                seconds[name] = counter.wait_for(count, worker_stopped) - started
    finally:
        counter.remove()
    del seconds["warm-up"]
    return seconds


def on_model(
    settings: BrokerSettings, workloads: dict[str, Workload], counts: dict[str, int], concurrency: int | None = None
) -> dict[str, float]:
    """The worker form as pool threads on the in-process model: workload -> seconds."""
    queue = _queue_name()
    module = COROUTINE_TASKS if concurrency else BLOCKING_TASKS
    load_task_modules((module,))
    pool = ThreadedWorkerPool(
        WorkerConfig(
            settings=settings,
            queue=queue,
            queue_type="classic",
            processes=POOL_PROCESSES,
            task_modules=(module,),
            max_retries=0,
            log_level="critical",
            concurrency=concurrency or 1,
        )
    )
    outcome: dict = {}

    def drive_then_stop() -> None:
        try:
            outcome["seconds"] = drive(settings, queue, workloads, counts, "_async" if concurrency else "")
        except BaseException as error:  # raised again in the caller's thread
            outcome["error"] = error
        finally:
            pool.stop()

    driver = threading.Thread(target=drive_then_stop, name="rabbitry-compare-driver")
    driver.start()
    try:
        pool.run()  # in this thread: the supervisor handles the signals, and puts their handlers back
    finally:
        driver.join()
        _delete_queues(settings, queue)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["seconds"]


def on_rabbitmq(
    settings: BrokerSettings,
    url: str,
    workloads: dict[str, Workload],
    counts: dict[str, int],
    concurrency: int | None = None,
) -> dict[str, float]:
    """The worker form as the ``worker`` command, a process of its own, on RabbitMQ: workload -> seconds."""
    queue = _queue_name()
    command = [
        *WORKER,
        "--processes",
        str(POOL_PROCESSES),
        "--queue",
        queue,
        "--queue-type",
        "classic",
        "--max-retries",
        "0",
        "--log-level",
        "warning",
    ]
    command += (
        ["--tasks", COROUTINE_TASKS, "--concurrency", str(concurrency)] if concurrency else ["--tasks", BLOCKING_TASKS]
    )
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command,
            env=_worker_environment(settings, url),
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )

        def worker_stopped() -> str | None:
            if process.poll() is None:
                return None
            errors.seek(0)
            last = (errors.read().decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            return f"the worker exited with status {process.returncode}: {last}"

        try:
            _wait_for_consumers(settings, queue, POOL_PROCESSES, worker_stopped)
            return drive(settings, queue, workloads, counts, "_async" if concurrency else "", worker_stopped)
        finally:
            stop_worker(process)
            _delete_queues(settings, queue)


def _worker_environment(settings: BrokerSettings, url: str) -> dict[str, str]:
    """This process's environment, naming the broker at ``url`` and ``settings``' TLS files for the worker."""
    tls = {
        TLS_CA_ENVVAR: settings.tls.ca_file,
        TLS_CERT_ENVVAR: settings.tls.cert_file,
        TLS_KEY_ENVVAR: settings.tls.key_file,
    }
    return {**os.environ, URL_ENVVAR: url, **{name: path for name, path in tls.items() if path}}


def _queue_name() -> str:
    return f"rabbitry.compare.{secrets.token_hex(3)}.worker"


def _wait_for_consumers(settings: BrokerSettings, queue: str, consumers: int, worker_stopped) -> None:
    deadline = time.monotonic() + _WAIT_S
    with connect(settings, "rabbitry-compare-watch") as connection:
        while (state := connection.queue_state(queue)) is None or state.consumers < consumers:
            if (reason := worker_stopped()) or time.monotonic() > deadline:
                raise WorkerFailed(reason or f"the worker did not consume from {queue} in {_WAIT_S:.0f} s")
            time.sleep(0.05)


def stop_worker(process: subprocess.Popen) -> None:
    """SIGTERM, as a user stops a worker; SIGKILL to its process group if it does not end."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _delete_queues(settings: BrokerSettings, queue: str) -> None:
    with connect(settings, "rabbitry-compare-cleanup") as connection:
        for name in work_queue_names(queue):
            connection.delete_queue(name)
