"""The task registry: the only code a message can make a worker run.

Each :func:`rabbitry.task` adds its :class:`~rabbitry.tasks.Task` here by name;
a worker imports its task modules (:func:`load_task_modules`), and runs a
message's task only if a module registered it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from rabbitry.common.errors import ConfigurationError, DuplicateTask, UnknownTask

if TYPE_CHECKING:
    from rabbitry.tasks import Task


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
            raise DuplicateTask(
                f"task name {registered.name!r} is registered twice: by {existing.origin} and by "
                f"{registered.origin}; give one of them another with @task(name=...)"
            )
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


BUILTIN_MODULE = "rabbitry.workers.builtin_tasks"


def load_task_modules(modules: tuple[str, ...] | list[str]) -> None:
    """Import the built-in tasks and each module in ``modules`` (which register theirs)."""
    for module in (BUILTIN_MODULE, *modules):
        try:
            importlib.import_module(module)
        except ConfigurationError:
            raise
        except Exception as error:  # a module that fails to import is a mistake in the worker's command line
            raise ConfigurationError(f"cannot import task module {module!r}: {type(error).__name__}: {error}") from None
