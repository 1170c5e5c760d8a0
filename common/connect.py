"""Opening connections: pick the transport by URL, and reconnect with backoff."""

import dataclasses
import random
import threading
import time

import structlog

from rabbitry.common.errors import BrokerRefused, BrokerUnavailable
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.transport.contract import Connection

log = structlog.get_logger("rabbitry.broker")

#: Reconnect delays grow from this, doubling, up to the cap.
BACKOFF_FIRST_S = 0.25
BACKOFF_CAP_S = 5.0


def connect(settings: BrokerSettings, name: str = "rabbitry") -> Connection:
    """One connection to the configured broker: RabbitMQ, or in-process for ``local://``.

    Raises BrokerUnavailable or BrokerRefused with a one-line reason.
    """
    if settings.is_local:
        from rabbitry.common.local.registry import connect_local

        return connect_local(settings)
    from rabbitry.common.amqp.opening import open_connection

    return open_connection(settings, name)


def probe(settings: BrokerSettings, name: str = "rabbitry-probe") -> BrokerSettings:
    """Whether the broker ``settings`` name answers: connect once, close at once.

    Returns ``settings`` with ``reconnect_for=0``, so that what runs on them
    fails at once if that broker goes away rather than waiting for it. Raises
    BrokerUnavailable (or BrokerRefused) with a one-line reason if it does not answer.
    """
    settings = dataclasses.replace(settings, reconnect_for=0)
    connect(settings, name).close()
    return settings


def backoff_delays(first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_CAP_S):
    """Capped exponential delays with full jitter: 0.25 s, 0.5 s, … up to ``cap``."""
    delay = first
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(delay * 2, cap)


def connect_with_retry(
    settings: BrokerSettings,
    name: str = "rabbitry",
    stop: threading.Event | None = None,
    give_up_after: float | None = None,
) -> Connection | None:
    """Connect, retrying with a capped backoff while the broker is unreachable.

    A refusal (bad login, for instance) is not retried: it raises at once.
    Returns None if ``stop`` is set while waiting; raises BrokerUnavailable
    once ``give_up_after`` seconds (default: ``settings.reconnect_for``) pass.
    """
    give_up_after = settings.reconnect_for if give_up_after is None else give_up_after
    deadline = time.monotonic() + give_up_after
    stop = stop or threading.Event()
    delays = backoff_delays()
    while not stop.is_set():
        try:
            return connect(settings, name)
        except BrokerRefused:
            raise
        except BrokerUnavailable as error:
            if time.monotonic() >= deadline:
                raise
            delay = next(delays)
            log.warning("broker_unreachable", error=str(error), retry_in_s=round(delay, 2))
            stop.wait(delay)
    return None
