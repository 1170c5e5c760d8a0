"""The submitter behind ``task.delay``: one per work queue and process, made when first needed.

Its settings are the ones the commands read: ``AMQP_URL`` and the
``AMQP_TLS_*`` files. It asks for results, so that ``task.delay(...).get()``
works. Every thread of the process shares it (a
:class:`~rabbitry.producers.submitter.TaskSubmitter` is safe to share), and so
do coroutines, through ``task.delay_async``; a forked child process makes
its own, and at exit each is closed.
"""

import asyncio
import atexit
import os
import threading

from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import DEFAULT_TASK_QUEUE
from rabbitry.producers.aio import AsyncTaskHandle, AsyncTaskSubmitter
from rabbitry.producers.handles import TaskHandle
from rabbitry.producers.metrics import SubmitterMetrics
from rabbitry.producers.submitter import TaskSubmitter

_lock = threading.Lock()
_submitters: dict[str, TaskSubmitter] = {}
_metrics: SubmitterMetrics | None = None


def submitter(queue: str | None = None) -> TaskSubmitter:
    """The process's submitter for ``queue`` (the default work queue if None), connected when first asked for."""
    queue = queue or DEFAULT_TASK_QUEUE
    with _lock:
        found = _submitters.get(queue)
        if found is None:
            found = _submitters[queue] = TaskSubmitter(
                BrokerSettings.from_environment(), queue, results=True, metrics=_metrics
            ).connect()
    return found


def instrument(registry=None) -> SubmitterMetrics:
    """Count what ``task.delay()`` submits, confirms and has refused on ``registry`` (prometheus_client's
    default registry if None), from now on; return the metrics. Call it once per registry."""
    global _metrics
    metrics = SubmitterMetrics(registry)
    with _lock:
        _metrics = metrics
        for opened in _submitters.values():
            opened.instrument(metrics)
    return metrics


def submit(message: TaskMessage, queue: str | None = None) -> TaskHandle:
    """Queue ``message`` on ``queue`` and wait for the broker's confirm; return its handle."""
    return submitter(queue).submit(message).wait_confirmed()


async def submit_async(message: TaskMessage, queue: str | None = None) -> AsyncTaskHandle:
    """:func:`submit` for coroutines: the event loop never waits on the broker."""
    shared = await asyncio.get_running_loop().run_in_executor(None, submitter, queue)
    handle = await AsyncTaskSubmitter.around(shared).submit(message)
    return await handle.wait_confirmed()


def close() -> None:
    """Close every default submitter (each is flushed after every task already)."""
    with _lock:
        submitters = list(_submitters.values())
        _submitters.clear()
    for opened in submitters:
        opened.close()


def _forget_in_child() -> None:
    """A forked child must not use its parent's connections: it opens its own when it needs one."""
    global _lock
    _lock = threading.Lock()
    _submitters.clear()


os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(close)
