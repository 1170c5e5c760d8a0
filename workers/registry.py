"""The task registry: the only code a message can make a worker run.

Each :func:`rabbitry.task` adds its :class:`~rabbitry.tasks.Task` here by name;
a worker imports its task modules (:func:`load_task_modules`), and runs a
message's task only if a module registered it.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from rabbitry.common.errors import ConfigurationError, DuplicateTask, UnknownTask

if TYPE_CHECKING:
    from rabbitry.tasks import Task

log = structlog.get_logger("rabbitry.worker")


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
    """Import the built-in tasks and each module in ``modules`` (which register theirs).

    A module that fails to import, or exits (``sys.exit()``) as it is imported, is a mistake in
    the worker's command line: raised as a ConfigurationError that names the file and line it
    failed at, and, unless the module is simply not there, logged as ``task_module_failed``
    with the traceback.
    """
    for module in (BUILTIN_MODULE, *modules):
        try:
            importlib.import_module(module)
        except ConfigurationError:
            raise
        except (Exception, SystemExit) as error:
            if not _is_missing(module, error):
                log.error("task_module_failed", module=module, exc_info=_without_import_frames(error))
            raise ConfigurationError(f"cannot import task module {module!r}: {_failure(error)}") from None


def _is_missing(module: str, error: BaseException) -> bool:
    """Whether ``error`` says that ``module`` itself (or a package of its path) does not exist."""
    missing = getattr(error, "name", None) if isinstance(error, ModuleNotFoundError) else None
    return bool(missing) and (module == missing or module.startswith(f"{missing}."))


def _without_import_frames(error: BaseException) -> BaseException:
    """``error`` with its traceback starting in the task module: without this file's frame and
    importlib's, as Python's own report of a failed import shows it."""
    frames = error.__traceback__
    while frames is not None and _is_import_machinery(frames.tb_frame.f_code.co_filename):
        frames = frames.tb_next
    return error.with_traceback(frames)


def _is_import_machinery(filename: str) -> bool:
    return filename == __file__ or filename.startswith("<frozen importlib") or filename == importlib.__file__


def _failure(error: BaseException) -> str:
    """What an import raised, and where: "NameError: name 'x' is not defined (at tasks.py, line 3)"."""
    if isinstance(error, SystemExit):
        what = f"it called sys.exit({error.code!r}) as it was imported"
    elif isinstance(error, SyntaxError):
        what = f"SyntaxError: {error.msg}"  # its str() names the file too
    else:
        what = f"{type(error).__name__}: {error}"
    where = _raised_at(error)
    return f"{what} (at {where[0]}, line {where[1]})" if where else what


def _raised_at(error: BaseException) -> tuple[str, int] | None:
    """The file and line an exception was raised at: for a SyntaxError, the bad line itself."""
    if isinstance(error, SyntaxError) and error.filename and error.lineno:
        return error.filename, error.lineno
    frames = traceback.extract_tb(error.__traceback__)
    if frames and not _is_import_machinery(frames[-1].filename):  # not where importlib found nothing
        return frames[-1].filename, frames[-1].lineno or 0
    return None
