"""The worker pool as threads of one process, for the in-process broker.

Pool processes cannot share an in-process broker: a forked child would get
a copy of it, not the broker itself. With ``local://`` the supervisor runs
the very same :class:`~workers.pool_process.PoolProcess` logic in threads
instead. Each pool thread keeps its own connection and task thread, so
prefetch, fair dispatch, acks, retries and dead-lettering behave as they do
in a process pool. What threads cannot do is die alone or be killed:
``--time-limit``, which ends a process, is refused here, and plain tasks'
own time limits are not enforced (a coroutine's is: it is cancelled).
"""

import threading

import structlog

from rabbitry.common.errors import ConfigurationError
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.pool import WorkerPool
from rabbitry.workers.pool_process import PoolProcess
from rabbitry.workers.registry import registry

log = structlog.get_logger("rabbitry.worker")


class PoolThread(PoolProcess):
    """A pool member running in a thread; the supervisor's thread handles signals."""

    #: Ending the process would end every thread of it: tasks' own time limits are not enforced.
    enforces_time_limits = False

    def _install_signal_handlers(self) -> None:
        pass  # only the main thread may install them, and the supervisor has


class PoolMember(threading.Thread):
    """A thread that looks to the supervisor like a pool process: alive, exit code, kill."""

    def __init__(self, pool_thread: PoolThread):
        super().__init__(name=f"rabbitry-pool-{pool_thread.index}")
        self.pool_thread = pool_thread
        self.exitcode: int | None = None

    def run(self) -> None:
        self.exitcode = int(self.pool_thread.run())

    def kill(self) -> None:
        """A thread cannot be killed; its pool thread is asked to stop instead."""
        self.pool_thread.stop()


class ThreadedWorkerPool(WorkerPool):
    """A :class:`WorkerPool` whose ``config.processes`` members are threads of this process."""

    def __init__(self, config: WorkerConfig):
        if config.time_limit is not None:
            raise ConfigurationError(
                "--time-limit needs pool processes, which the in-process broker "
                "cannot serve: leave it out with --broker local"
            )
        limited = sorted(task.name for task in registry if task.time_limit is not None and not task.is_coroutine)
        if limited:
            log.warning(
                "time_limits_not_enforced",
                tasks=limited,
                detail="the in-process broker runs tasks in threads, which cannot be stopped",
            )
        super().__init__(config)

    def _start(self, index: int) -> None:
        member = PoolMember(PoolThread(self.config, index, self._shared_stop, self._ledger))
        member.start()
        self._processes[index] = member


def worker_pool(config: WorkerConfig) -> WorkerPool:
    """The pool that can serve ``config``'s broker: threads for local://, processes otherwise."""
    return ThreadedWorkerPool(config) if config.settings.is_local else WorkerPool(config)
