"""The supervisor: starts the pool processes, replaces dead ones, stops them in order."""

import dataclasses
import multiprocessing
import signal
import threading
from typing import Protocol

import structlog

from rabbitry.common.connect import connect_with_retry
from rabbitry.common.errors import BrokerUnavailable, ExitCode
from rabbitry.workers import metrics
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.connection_thread import EXIT_TIME_LIMIT
from rabbitry.workers.ledger import CrashLedger
from rabbitry.workers.limits import check_time_limit
from rabbitry.workers.pool_process import run_pool_process

log = structlog.get_logger("rabbitry.worker")

#: Pool-process exit codes that no restart can fix: stop the whole worker.
_FATAL_EXIT_CODES = {ExitCode.USAGE, ExitCode.BROKER_REFUSED}
_SUPERVISE_EVERY_S = 0.2


class ProcessLike(Protocol):
    """What the supervisor needs of a pool member: a process, or a thread standing in for one."""

    @property
    def exitcode(self) -> int | None: ...

    def start(self) -> None: ...

    def is_alive(self) -> bool: ...

    def join(self, timeout: float | None = None) -> None: ...

    def kill(self) -> None: ...


class WorkerPool:
    """A supervisor and ``config.processes`` pool processes serving one work queue.

    The first SIGTERM or SIGINT stops the pool gracefully: each process stops
    taking work, finishes the task it runs and acks it, and its prefetched
    tasks go back to the queue. A second signal stops it at once; the broker
    requeues anything unacknowledged, so nothing is lost either way.
    """

    def __init__(self, config: WorkerConfig):
        self.config = config
        # fork: quick to start and replace; the supervisor holds no connection when
        # it forks, and its only other thread (the metrics endpoint, when on) shares
        # no lock with what a pool process does; each child connects by itself.
        self._context = multiprocessing.get_context("fork")
        self._stop = threading.Event()
        self._shared_stop = self._context.Event()
        self._ledger = CrashLedger(config.processes, self._context)
        self._processes: list[ProcessLike | None] = [None] * config.processes
        self._signals = 0
        self._signal: signal.Signals | None = None  # the last one received
        self._metrics_server: metrics.MetricsServer | None = None
        self.exit_code = ExitCode.OK

    def check_broker(self) -> None:
        """Connect once, retrying for ``config.connect_timeout`` seconds, and declare the topology,
        so a bad URL or a broker that stays down fails at start-up with one clear line instead of
        in every child. Settles the time limit of tasks that have none."""
        try:
            connection = connect_with_retry(
                self.config.settings, "rabbitry-worker-check", self._stop, give_up_after=self.config.connect_timeout
            )
        except BrokerUnavailable as error:
            raise BrokerUnavailable(f"{error} (gave up after {self.config.connect_timeout:g} s)") from None
        if connection is None:  # stopped while waiting
            return
        with connection:
            connection.declare(self.config.topology)
            default_time_limit = check_time_limit(self.config, connection)
        self.config = dataclasses.replace(self.config, default_time_limit=default_time_limit)

    def run(self) -> int:
        """Run until stopped by a signal (or :meth:`stop`); return the exit code. The SIGTERM
        and SIGINT handlers it installs are put back as they were when it returns."""
        handlers = {number: signal.signal(number, self._on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._run()
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)

    def _run(self) -> int:
        self.check_broker()
        if self._stop.is_set():  # by a signal, while waiting for the broker
            self._log_stopping()
            return int(self.exit_code)
        log.info(
            "worker_started",
            queue=self.config.queue,
            queue_type=self.config.queue_type,
            processes=self.config.processes,
            prefetch=self.config.prefetch or "adaptive",
            concurrency=self.config.concurrency,
            broker=self.config.settings.describe(),
        )
        self._serve_metrics()
        try:
            for index in range(self.config.processes):
                self._start(index)
            while not self._stop.wait(_SUPERVISE_EVERY_S):
                self._supervise()
            self._log_stopping()
            self._shutdown()
        finally:
            self._shared_stop.set()  # whatever went wrong here, the pool processes stop too
            if self._metrics_server is not None:
                self._metrics_server.close()
        log.info("worker_stopped", exit_code=int(self.exit_code))
        return int(self.exit_code)

    def stop(self) -> None:
        """Ask the pool to stop gracefully (thread-safe)."""
        self._stop.set()

    def _log_stopping(self) -> None:
        if self._signal is not None:
            log.info("worker_stopping", signal=self._signal.name)

    def _on_signal(self, signum, _frame) -> None:
        # Nothing is written here: a handler runs between two bytecodes of the main thread, maybe
        # in the middle of its own write to the same stream (a reentrant write raises, a second
        # take of the logger's lock never returns). The main thread logs the stop.
        self._signals += 1
        self._signal = signal.Signals(signum)
        self._stop.set()
        if self._signals > 1:
            for process in self._processes:
                if process is not None and process.is_alive():
                    process.kill()

    def _serve_metrics(self) -> None:
        """Serve Prometheus metrics, if asked, before any pool process is forked (they inherit the mode)."""
        config = self.config
        if config.metrics_port is None:
            return
        self._metrics_server = metrics.enable_metrics(
            config.queue,
            config.metrics_host,
            config.metrics_port,
            {
                "queue": config.queue,
                "queue_type": config.queue_type,
                "processes": str(config.processes),
                "prefetch": str(config.prefetch or "adaptive"),
                "pool": "threads" if config.settings.is_local else "processes",
            },
        )

    def _start(self, index: int) -> None:
        process = self._context.Process(
            target=run_pool_process,
            name=f"rabbitry-pool-{index}",
            args=(self.config, index, self._shared_stop, self._ledger),
        )
        process.start()
        self._processes[index] = process

    def _supervise(self) -> None:
        for index, process in enumerate(self._processes):
            if process is None or process.is_alive():
                continue
            process.join()
            code = process.exitcode
            if code in _FATAL_EXIT_CODES:
                log.error("worker_giving_up", pool_process=index, exit_code=code)
                self.exit_code = ExitCode(code)
                self._stop.set()
                return
            task_id = self._ledger.running(index)
            self._ledger.set_running(index, None)
            timed_out = code == EXIT_TIME_LIMIT  # the task's failure is recorded already: not a crash
            crashes = self._ledger.record_crash(task_id) if task_id and not timed_out else 0
            event = "pool_process_timed_out" if timed_out else "pool_process_died"
            log.warning(event, pool_process=index, exit_code=code, task_id=task_id, crashes=crashes or None)
            pid = getattr(process, "pid", None)  # threads have none
            if self._metrics_server is not None and pid:
                self._metrics_server.process_died(pid)
            metrics.recorder.pool_process_restarted("time_limit" if timed_out else "died")
            self._start(index)

    def _shutdown(self) -> None:
        self._shared_stop.set()
        told = False
        for process in self._processes:
            while process is not None and process.is_alive():
                process.join(_SUPERVISE_EVERY_S)
                if self._signals > 1 and not told:  # a second signal: the handler killed them
                    log.warning("worker_stopping_now", signal=self._signal.name if self._signal else None)
                    told = True
        for process in self._processes:
            if process is not None:
                process.join()
