"""Registered tasks: the only code a message can make a worker run.

A task is a plain Python callable registered under a name with
:func:`task`. Messages name a task; they never carry code, so only what a
module registered can run.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rabbitry.common.errors import ConfigurationError, UnknownTask


@dataclass(frozen=True)
class Task:
    """A registered task and how failures of it are handled."""

    name: str
    function: Callable[..., Any]
    #: Exception types that mean retrying cannot help: they dead-letter at once.
    dont_retry: tuple[type[BaseException], ...] = ()

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)


class TaskRegistry:
    """Task names to tasks."""

    def __init__(self):
        self._tasks: dict[str, Task] = {}

    def register(self, function: Callable, name: str | None = None,
                 dont_retry: tuple[type[BaseException], ...] = ()) -> Task:
        """Register ``function`` under ``name`` (its own name by default)."""
        registered = Task(name or function.__name__, function, tuple(dont_retry))
        self._tasks[registered.name] = registered
        return registered

    def get(self, name: str) -> Task:
        """The task called ``name``; raises UnknownTask if none is."""
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(f"unknown task {name!r}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._tasks

    def names(self) -> list[str]:
        """Every registered task name, sorted."""
        return sorted(self._tasks)


#: The registry that :func:`task` fills and workers run from.
registry = TaskRegistry()


def task(function: Callable | None = None, *, name: str | None = None,
         dont_retry: tuple[type[BaseException], ...] = ()):
    """Register a function as a task: ``@task`` or ``@task(name=..., dont_retry=(ValueError,))``."""

    def register(f: Callable) -> Callable:
        registry.register(f, name=name, dont_retry=dont_retry)
        return f

    return register(function) if function is not None else register


BUILTIN_MODULE = "rabbitry.workers.builtin_tasks"


def load_task_modules(modules: tuple[str, ...] | list[str]) -> None:
    """Import the built-in tasks and each module in ``modules`` (which register theirs)."""
    for module in (BUILTIN_MODULE, *modules):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigurationError(f"cannot import task module {module!r}: {error}") from None
