"""structlog configuration shared by every rabbitry command.

Pretty console lines on a TTY, one JSON object per line otherwise, or
whichever ``--log-format`` asks for. Each process configures its own logging
(pool children included): configured loggers do not survive a fork cleanly.
"""

import logging
import sys
from typing import IO

import structlog

from rabbitry.common.settings import mask_url

LOG_FORMATS = ("auto", "console", "json")


def _mask_secrets(_logger, _method, event_dict):
    """Never let a URL password reach a log line, whatever field carries it."""
    for key, value in event_dict.items():
        if isinstance(value, str) and "://" in value:
            event_dict[key] = mask_url(value)
    return event_dict


def configure_logging(log_format: str = "auto", level: str = "info", stream: IO[str] | None = None,
                      cache: bool = False) -> None:
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
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
    ]
    if log_format == "console":
        renderer = [structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    else:
        renderer = [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=shared + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write() per line: pool processes share the stream, and print()'s
        # separate write of the newline let their lines run together.
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=cache,
    )
    # pika logs through the stdlib; keep its chatter out unless it matters.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
