"""structlog configuration shared by every rabbitry command.

Pretty console lines on a TTY, one JSON object per line otherwise, or
whichever ``--log-format`` asks for. Each process configures its own logging
(pool children included): configured loggers do not survive a fork cleanly.
"""

import errno
import functools
import json
import logging
import os
import sys
import time
from typing import TextIO

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer

from rabbitry.common.settings import mask_url

LOG_FORMATS = ("auto", "console", "json")


def _timestamp(_logger, _method, event_dict):
    """``timestamp``: now in UTC, ISO 8601 with microseconds and a ``Z``, as structlog's
    ``TimeStamper(fmt="iso", utc=True)`` writes it, in a third of its time."""
    now = time.time()
    whole = int(now)
    event_dict["timestamp"] = f"{_utc_second(whole)}.{int((now - whole) * 1_000_000):06d}Z"
    return event_dict


@functools.lru_cache(maxsize=4)
def _utc_second(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def _to_json(event_dict, default=None) -> str:
    """One JSON line from orjson, a tenth of the json module's time; from the json module for
    what orjson refuses (integers past 64 bits, keys that are not strings, lone surrogates)."""
    try:
        return orjson.dumps(event_dict, default=default).decode()
    except TypeError:
        return json.dumps(event_dict, default=default)


def _mask_secrets(_logger, _method, event_dict):
    """Never let a URL password reach a log line, whatever field carries it."""
    for key, value in event_dict.items():
        if isinstance(value, str) and "://" in value:
            event_dict[key] = mask_url(value)
    return event_dict


class _OutputLogger(structlog.WriteLogger):
    """structlog's WriteLogger, which a lost output cannot stop.

    Writing to a pipe whose reader is gone (Ctrl-C on ``worker | tee log`` kills ``tee`` too)
    raises BrokenPipeError, and a terminal that went away EIO: raised in whatever code logged,
    that would end a signal handler, a task thread or a shutdown half-way. The line is dropped
    instead, and a stream whose reader is gone is pointed at /dev/null for good (see
    :func:`discard_output`), so nothing written to it later fails either.
    """

    def msg(self, message: str) -> None:
        with self._lock:
            try:
                self._write(message + "\n")
                self._flush()
            except (OSError, ValueError) as error:  # ValueError: the stream was closed
                if isinstance(error, BrokenPipeError) or getattr(error, "errno", None) == errno.EIO:
                    discard_output(self._file)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def discard_output(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at /dev/null, and drop what its buffer still holds."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
        stream.flush()  # the lines the reader never took, into /dev/null
    except (OSError, ValueError):  # no descriptor (not a real file), or closed: it takes no more writes anyway
        pass


#: An ``exc_info`` as a structured ``exception``: type, value and frames (file, line, function),
#: without the frames' local variables, which may hold a task's arguments and secrets.
_DICT_TRACEBACKS = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))


def configure_logging(
    log_format: str = "auto", level: str = "info", stream: TextIO | None = None, cache: bool = False
) -> None:
    """Configure structlog for this process.

    ``log_format`` is ``console``, ``json`` or ``auto`` (console on a TTY).
    Logs go to ``stream`` (standard error by default, so standard output stays
    free for a command's data). ``cache`` makes each logger cheaper after its
    first use, for a process that configures logging once and logs in a hot
    loop (a pool process); such loggers ignore any later configuration.
    """
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _timestamp,
        _mask_secrets,
    ]
    if log_format == "console":
        renderer: list[structlog.typing.Processor] = [structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    else:
        renderer = [_DICT_TRACEBACKS, structlog.processors.JSONRenderer(serializer=_to_json)]
    structlog.configure(
        processors=shared + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write() per line: pool processes share the stream, and print()'s
        # separate write of the newline let their lines run together.
        logger_factory=lambda *_name: _OutputLogger(stream),
        cache_logger_on_first_use=cache,
    )
    # pika logs through the stdlib; keep its chatter out unless it matters.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
