"""Registered tasks: the only code a message can make a worker run.

A task is a plain Python function registered under a name with
:func:`task`, which returns a :class:`Task`: call it to run the function
here, or ``.delay(...)`` to have a worker run it. Messages name a task; they
never carry code, so only what a module registered can run.
"""

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from rabbitry.common.errors import ConfigurationError, DuplicateTask, UnknownTask
from rabbitry.common.messages import TaskMessage
from rabbitry.common.topology import MOST_RETRIES, check_work_queue_name


class Task:
    """A registered function, its options, and the ways to send it to a worker.

    ``queue`` is the work queue ``delay`` sends it to (None: the default
    queue); ``max_retries``, ``time_limit`` and ``dont_retry`` (exception
    types that mean retrying cannot help) are honoured by the worker, unless
    its own command-line flags override them for every task.
    """

    def __init__(self, function: Callable[..., Any], name: str | None = None, *, queue: str | None = None,
                 max_retries: int | None = None, time_limit: float | None = None,
                 dont_retry: tuple[type[BaseException], ...] = ()):
        self.function = function
        self.name = name or function.__name__
        self.queue = queue
        self.max_retries = max_retries
        self.time_limit = time_limit
        self.dont_retry = tuple(dont_retry)
        functools.update_wrapper(self, function)

    @property
    def origin(self) -> str:
        """Where the function is defined, as ``module:qualname``."""
        return f"{self.function.__module__}:{self.function.__qualname__}"

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        """The function's signature, which every call and every message must fit."""
        return inspect.signature(self.function)

    def check_arguments(self, args, kwargs) -> None:
        """Raise TypeError, as a call would, if the function cannot take these arguments."""
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as error:
            parameters = self.signature.replace(return_annotation=inspect.Signature.empty)
            raise TypeError(f"{self.name}{parameters}: {error}") from None

    def __call__(self, *args, **kwargs):
        """Run the function here and now, as if it were not a task."""
        return self.function(*args, **kwargs)

    def delay(self, *args, **kwargs) -> str:
        """Queue the task for a worker; return its task id once the broker has confirmed it.

        A call that does not fit the function's signature raises TypeError here,
        and nothing is sent.
        """
        return self.send_with_options(args=args, kwargs=kwargs)

    #: Dramatiq's name for :meth:`delay`.
    send = delay

    def send_with_options(self, *, args=(), kwargs=None, queue: str | None = None,
                          task_id: str | None = None) -> str:
        """Queue the task with per-call options: ``queue`` overrides the task's own, ``task_id``
        gives the task an id of the caller's choosing. Returns the task id once confirmed."""
        from rabbitry.producers import default  # the broker side, only for an application that sends

        args, kwargs = list(args), dict(kwargs or {})
        self.check_arguments(args, kwargs)
        if queue is not None:
            check_work_queue_name(queue)
        # A task id that is not a short string, arguments that are not JSON or too big: all are
        # MessageErrors here, before anything connects.
        message = TaskMessage.from_dict({"task": self.name, "args": args, "kwargs": kwargs, "id": task_id})
        message.encode()
        return default.submit(message, queue or self.queue)

    def __repr__(self) -> str:
        return f"<Task {self.name!r} of {self.origin}>"


def _defined_at(function: Callable) -> tuple[str, str]:
    """The source file and qualified name of a function: the same for a module imported
    twice (as ``__main__`` and by its name, or reloaded)."""
    code = getattr(function, "__code__", None)
    return getattr(code, "co_filename", function.__module__), function.__qualname__


class TaskRegistry:
    """Task names to tasks."""

    def __init__(self):
        self._tasks: dict[str, Task] = {}

    def add(self, registered: Task) -> Task:
        """Register ``registered`` under its name; raise DuplicateTask if another function has it."""
        existing = self._tasks.get(registered.name)
        if existing is not None and _defined_at(existing.function) != _defined_at(registered.function):
            raise DuplicateTask(f"task name {registered.name!r} is registered twice: by {existing.origin} and by "
                                f"{registered.origin}; give one of them another with @task(name=...)")
        self._tasks[registered.name] = registered
        return registered

    def get(self, name: str) -> Task:
        """The task called ``name``; raises UnknownTask if none is."""
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(f"unknown task {name!r}") from None

    def find(self, name: str) -> Task | None:
        """The task called ``name``, or None."""
        return self._tasks.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._tasks

    def __iter__(self):
        return iter(list(self._tasks.values()))

    def names(self) -> list[str]:
        """Every registered task name, sorted."""
        return sorted(self._tasks)


#: The registry that :func:`task` fills and workers run from.
registry = TaskRegistry()


def task(function: Callable | None = None, *, name: str | None = None, queue: str | None = None,
         max_retries: int | None = None, time_limit: float | None = None,
         dont_retry: tuple[type[BaseException], ...] = ()):
    """Register a function as a task: ``@task``, or ``@task(name=..., queue=..., max_retries=...,
    time_limit=..., dont_retry=(ValueError,))``. Returns the :class:`Task`."""
    if max_retries is not None and not 0 <= max_retries <= MOST_RETRIES:
        raise ConfigurationError(f"max_retries must be between 0 and {MOST_RETRIES}, not {max_retries!r}")
    if time_limit is not None and not time_limit > 0:
        raise ConfigurationError(f"time_limit must be a positive number of seconds, not {time_limit!r}")
    if queue is not None:
        check_work_queue_name(queue)

    def register(f: Callable) -> Task:
        return registry.add(Task(f, name, queue=queue, max_retries=max_retries, time_limit=time_limit,
                                 dont_retry=dont_retry))

    return register(function) if function is not None else register


BUILTIN_MODULE = "rabbitry.workers.builtin_tasks"


def load_task_modules(modules: tuple[str, ...] | list[str]) -> None:
    """Import the built-in tasks and each module in ``modules`` (which register theirs)."""
    for module in (BUILTIN_MODULE, *modules):
        try:
            importlib.import_module(module)
        except ConfigurationError:
            raise
        except Exception as error:  # a module that fails to import is a mistake in the worker's command line
            raise ConfigurationError(f"cannot import task module {module!r}: "
                                     f"{type(error).__name__}: {error}") from None
