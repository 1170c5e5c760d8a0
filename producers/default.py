"""The submitter behind ``task.delay``: one per work queue and process, made when first needed.

Its settings are the ones the commands read: ``AMQP_URL`` and the
``AMQP_TLS_*`` files. Every thread of the process shares it, one call at a
time; a forked child process makes its own, and at exit each is closed.
"""

import atexit
import os
import threading

from rabbitry.common.errors import BrokerUnavailable
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import DEFAULT_TASK_QUEUE
from rabbitry.producers.tasks import TaskSubmitter

_lock = threading.Lock()
_submitters: dict[str, TaskSubmitter] = {}


def submit(message: TaskMessage, queue: str | None = None) -> str:
    """Queue ``message`` on ``queue`` (the default work queue if None) and wait for the broker's
    confirm; return what the submitter's ``submit`` returns."""
    queue = queue or DEFAULT_TASK_QUEUE
    with _lock:
        submitter = _submitters.get(queue)
        if submitter is None:
            submitter = _submitters[queue] = TaskSubmitter(BrokerSettings.from_environment(), queue).connect()
        try:
            submitted = submitter.submit(message)
            submitter.flush()
        except BrokerUnavailable:
            del _submitters[queue]  # the next call connects afresh
            submitter.close()
            raise
    return submitted


def close() -> None:
    """Close every default submitter (each is flushed after every task already)."""
    with _lock:
        submitters = list(_submitters.values())
        _submitters.clear()
    for submitter in submitters:
        submitter.close()


def _forget_in_child() -> None:
    """A forked child must not use its parent's connections: it opens its own when it needs one."""
    global _lock
    _lock = threading.Lock()
    _submitters.clear()


os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(close)
