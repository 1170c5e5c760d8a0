"""One pool process: a connection thread and a task thread, and how it starts and stops.

The main thread is the connection thread (:mod:`workers.connection_thread`):
it owns the connection, receives deliveries, acks, publishes retries and dead
letters, and keeps heartbeats flowing however long a task runs. The task
thread runs the tasks: one at a time (:mod:`workers.task_thread`), or on an
event loop (:mod:`workers.coroutines`). The two meet as rarely as they can,
through a :class:`~workers.handover.Handover`. This module builds the three,
installs the signal handlers, and starts and joins the two threads;
:mod:`workers.pool` forks a process into :func:`run_pool_process`.
"""

import ctypes
import multiprocessing
import os
import signal
import sys
import threading

import structlog

from rabbitry.common.errors import ConfigurationError, ExitCode
from rabbitry.common.logconfig import configure_logging
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.connection_thread import ConnectionThread
from rabbitry.workers.coroutines import CoroutineTasks
from rabbitry.workers.handover import Handover
from rabbitry.workers.ledger import CrashLedger
from rabbitry.workers.prefetch import AdaptivePrefetch
from rabbitry.workers.registry import load_task_modules
from rabbitry.workers.task_thread import TaskThread

log = structlog.get_logger("rabbitry.worker")

#: prctl(2) option: the signal this process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


class PoolProcess:
    """Consumes the work queue and runs tasks, until told to stop."""

    #: Whether a plain task over its time limit ends the process (threads cannot end alone).
    enforces_time_limits = True

    def __init__(self, config: WorkerConfig, index: int, stop, ledger: CrashLedger):
        self.config = config
        self.index = index
        self._stop = threading.Event()
        #: Where the two threads meet.
        self.handover = Handover()
        prefetch = AdaptivePrefetch(config.concurrency) if config.adapts_prefetch else None
        #: Runs plain tasks, on the task thread (or, with coroutines, on a thread beside the loop).
        self.tasks = TaskThread(config, index, self.handover, ledger, prefetch)
        #: The event loop side, when this process runs coroutines; None runs tasks one at a time.
        self.coroutines = (
            CoroutineTasks(config, index, self.handover, self.tasks, self.enforces_time_limits)
            if config.uses_coroutines
            else None
        )
        #: The main thread's work: the connection.
        self.connection_thread = ConnectionThread(
            config, self.handover, self.tasks, self.coroutines, prefetch, self._stop, stop, self.enforces_time_limits
        )

    def run(self) -> int:
        """Serve until stopped; return the process exit code."""
        self._install_signal_handlers()
        structlog.contextvars.bind_contextvars(pool_process=self.index)
        run_tasks = self.tasks.run if self.coroutines is None else self.coroutines.run
        task_thread = threading.Thread(target=run_tasks, name="rabbitry-tasks", daemon=True)
        task_thread.start()
        try:
            return self.connection_thread.run()
        finally:
            self.connection_thread.hand_over(None)
            if supervisor_died():
                log.warning("supervisor_died", detail="stopped taking work; the broker requeues what was held")

    def stop(self) -> None:
        """Ask this pool process to stop gracefully, as SIGTERM does (thread-safe)."""
        self._stop.set()

    def _install_signal_handlers(self) -> None:
        """A pool process ignores SIGINT (the supervisor coordinates shutdown) and stops on SIGTERM."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())


def stop_with_supervisor() -> None:
    """Have the kernel send this pool process SIGTERM, its graceful stop, when the supervisor dies.

    A pipe whose write end the supervisor holds would need every later-forked
    sibling to close its inherited copy of that end, or a sibling keeps it open;
    ``PR_SET_PDEATHSIG`` is state of this process alone, which a fork does not
    pass on. It fires when the thread that forked this process ends, and the
    supervisor forks from its main thread only. Where prctl is missing (not
    Linux), pool processes outlive a killed supervisor.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if supervisor_died():  # it died before prctl took effect
        raise SystemExit(ExitCode.OK)


def supervisor_died() -> bool:
    """True in a pool process whose supervisor is gone (it has been given another parent)."""
    parent = multiprocessing.parent_process()
    return parent is not None and os.getppid() != parent.pid


def run_pool_process(config: WorkerConfig, index: int, stop, ledger: CrashLedger) -> None:
    """Entry point of a pool process."""
    stop_with_supervisor()
    configure_logging(config.log_format, config.log_level, sys.stdout, cache=True)
    try:
        load_task_modules(config.task_modules)
    except ConfigurationError as error:
        log.error("worker_failed", error=str(error))
        raise SystemExit(ExitCode.USAGE) from None
    raise SystemExit(int(PoolProcess(config, index, stop, ledger).run()))
