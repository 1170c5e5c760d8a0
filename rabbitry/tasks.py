"""A task: a registered function, and the ways to have it run, here or by a worker.

:func:`task` registers a plain function under a name and returns a
:class:`Task`: call it to run the function here, or ``.delay(...)`` to have a
worker run it. This is where the two sides meet: a producer sends a task by
name (:mod:`rabbitry.producers`), a worker finds it by that name in the
registry (:mod:`rabbitry.workers.registry`) and runs it. Messages name a task;
they never carry code.
"""

import datetime
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rabbitry.common.delays import due_time
from rabbitry.common.errors import ConfigurationError
from rabbitry.common.messages import TaskMessage
from rabbitry.common.topology import DEFAULT_TASK_QUEUE, MOST_RETRIES, check_work_queue_name
from rabbitry.workers.registry import registry

if TYPE_CHECKING:
    from rabbitry.producers.aio import AsyncTaskHandle
    from rabbitry.producers.handles import TaskHandle

#: The argument shapes (counts and keyword names) a task remembers as fitting it.
_MOST_SHAPES = 64


class Task:
    """A registered function, its options, and the ways to send it to a worker.

    ``queue`` is the work queue ``delay`` sends it to (None: the default
    queue); ``max_retries``, ``time_limit`` and ``dont_retry`` (exception
    types that mean retrying cannot help) are honoured by the worker, unless
    its own command-line flags override them for every task.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        name: str | None = None,
        *,
        queue: str | None = None,
        max_retries: int | None = None,
        time_limit: float | None = None,
        dont_retry: tuple[type[BaseException], ...] = (),
    ):
        self.function = function
        self.name = name or function.__name__
        self.queue = queue
        self.max_retries = max_retries
        self.time_limit = time_limit
        self.dont_retry = tuple(dont_retry)
        self._shapes_that_fit: set = set()
        functools.update_wrapper(self, function)

    @functools.cached_property
    def is_coroutine(self) -> bool:
        """Whether the function is an ``async def``: the worker awaits it on its event loop."""
        return inspect.iscoroutinefunction(self.function)

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
        # Whether arguments fit depends on their count and keyword names alone, not their values:
        # a worker sees the same few shapes again and again.
        shape = (len(args), *kwargs) if kwargs else len(args)
        if shape in self._shapes_that_fit:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as error:
            parameters = self.signature.replace(return_annotation=inspect.Signature.empty)
            raise TypeError(f"{self.name}{parameters}: {error}") from None
        if len(self._shapes_that_fit) < _MOST_SHAPES:
            self._shapes_that_fit.add(shape)

    def __call__(self, *args, **kwargs):
        """Run the function here and now, as if it were not a task."""
        return self.function(*args, **kwargs)

    def delay(self, *args, **kwargs) -> "TaskHandle":
        """Queue the task for a worker; return its handle once the broker has confirmed it.

        ``handle.id`` (also ``str(handle)``, and the handle equals it) is the task
        id; ``handle.get(timeout)`` waits for the task's return value. A call that
        does not fit the function's signature raises TypeError here, and nothing
        is sent.
        """
        return self.send_with_options(args=args, kwargs=kwargs)

    #: Dramatiq's name for :meth:`delay`.
    send = delay

    async def delay_async(self, *args, **kwargs) -> "AsyncTaskHandle":
        """:meth:`delay` for coroutines: ``await task.delay_async(...)``, then ``await handle.get(timeout)``."""
        return await self.send_with_options_async(args=args, kwargs=kwargs)

    def send_with_options(
        self,
        *,
        args=(),
        kwargs=None,
        queue: str | None = None,
        task_id: str | None = None,
        delay: float | datetime.timedelta | None = None,
        eta: float | datetime.datetime | None = None,
    ) -> "TaskHandle":
        """Queue the task with per-call options: ``queue`` overrides the task's own, ``task_id``
        gives the task an id of the caller's choosing, and ``delay`` (seconds or a timedelta) or
        ``eta`` (a datetime, naive meaning UTC, or a POSIX time) has it run later, the broker
        holding it until then (to the nearest second, up to 97 days). Returns its handle once
        confirmed."""
        from rabbitry.producers import default  # the broker side, only for an application that sends

        return default.submit(self._message(args, kwargs, queue, task_id, due_time(delay, eta)), queue or self.queue)

    async def send_with_options_async(
        self,
        *,
        args=(),
        kwargs=None,
        queue: str | None = None,
        task_id: str | None = None,
        delay: float | datetime.timedelta | None = None,
        eta: float | datetime.datetime | None = None,
    ) -> "AsyncTaskHandle":
        """:meth:`send_with_options` for coroutines."""
        from rabbitry.producers import default

        message = self._message(args, kwargs, queue, task_id, due_time(delay, eta))
        return await default.submit_async(message, queue or self.queue)

    def _message(self, args, kwargs, queue: str | None, task_id: str | None, eta: float | None = None) -> TaskMessage:
        """The message for one call; raises TypeError or MessageError for a call that cannot be sent."""
        args, kwargs = list(args), dict(kwargs or {})
        self.check_arguments(args, kwargs)
        if queue is not None:
            check_work_queue_name(queue)
        # A task id that is not a short string, arguments that are not JSON or too big, a delay
        # past the longest: all are MessageErrors here, before anything connects.
        message = TaskMessage.from_dict({"task": self.name, "args": args, "kwargs": kwargs, "id": task_id, "eta": eta})
        message.to_outgoing(queue or self.queue or DEFAULT_TASK_QUEUE)
        return message

    def __repr__(self) -> str:
        return f"<Task {self.name!r} of {self.origin}>"


def task(
    function: Callable | None = None,
    *,
    name: str | None = None,
    queue: str | None = None,
    max_retries: int | None = None,
    time_limit: float | None = None,
    dont_retry: tuple[type[BaseException], ...] = (),
):
    """Register a function as a task: ``@task``, or ``@task(name=..., queue=..., max_retries=...,
    time_limit=..., dont_retry=(ValueError,))``. Returns the :class:`Task`."""
    if max_retries is not None and not 0 <= max_retries <= MOST_RETRIES:
        raise ConfigurationError(f"max_retries must be between 0 and {MOST_RETRIES}, not {max_retries!r}")
    if time_limit is not None and not time_limit > 0:
        raise ConfigurationError(f"time_limit must be a positive number of seconds, not {time_limit!r}")
    if queue is not None:
        check_work_queue_name(queue)

    def register(f: Callable) -> Task:
        return registry.add(
            Task(f, name, queue=queue, max_retries=max_retries, time_limit=time_limit, dont_retry=dont_retry)
        )

    return register(function) if function is not None else register
