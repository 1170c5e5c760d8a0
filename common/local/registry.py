"""The process's in-process brokers, by name, and connecting to the one a ``local://`` URL names.

``local://`` is the unnamed broker and ``local://name`` another, so one process
can hold several (tests use one each). A broker is created on first use and
lives until :func:`forget_broker` drops it, as a server restart that keeps
nothing on disk would.
"""

import threading
import urllib.parse

from rabbitry.common.local.broker import LocalBroker
from rabbitry.common.local.connection import LocalConnection
from rabbitry.common.settings import BrokerSettings

_brokers: dict[str, LocalBroker] = {}
_brokers_lock = threading.Lock()


def broker_named(name: str = "") -> LocalBroker:
    """The process's in-process broker called ``name``, created on first use."""
    with _brokers_lock:
        broker = _brokers.get(name)
        if broker is None:
            broker = _brokers[name] = LocalBroker(name)
        return broker


def forget_broker(name: str = "") -> None:
    """Drop the broker called ``name`` with everything it holds, as a restart of a
    server that keeps nothing on disk would: the next connection to ``name`` finds a new,
    empty broker. Connections already open keep the dropped one (its expiry of messages
    stops), so close them first to model a restart."""
    with _brokers_lock:
        broker = _brokers.pop(name, None)
    if broker is not None:
        broker.close()


def broker_name(url: str) -> str:
    """The broker name in a ``local://name`` URL ('' for plain ``local://``)."""
    parsed = urllib.parse.urlsplit(url)
    return parsed.netloc or parsed.path.strip("/")


def connect_local(settings: BrokerSettings, name: str = "rabbitry") -> LocalConnection:
    """A connection to the in-process broker that ``settings`` names."""
    return LocalConnection(broker_named(broker_name(settings.urls[0])), name)
