"""The built-in tasks: the tutorial's ``dots``, and small tools for demos and tests."""

import time

from rabbitry.tasks import task


class TaskFailed(Exception):
    """Raised by the ``fail`` task."""


@task
def dots(text: str = "") -> int:
    """The tutorial's task: work one second for every dot in ``text``."""
    seconds = text.count(".")
    time.sleep(seconds)
    return seconds


@task
def sleep(seconds: float = 0.0) -> float:
    """Sleep ``seconds`` seconds."""
    time.sleep(float(seconds))
    return seconds


@task
def echo(*args, **kwargs):
    """Return the arguments; the worker logs the result."""
    return {"args": list(args), "kwargs": kwargs} if kwargs else list(args)


@task
def fail(message: str = "failed on purpose"):
    """Always raise, to see retries and dead-lettering at work."""
    raise TaskFailed(message)


@task
def noop() -> None:
    """Do nothing: for measuring the system's own overhead."""
