"""Connection settings: which broker, how to reach it, and how to show it safely.

Settings are plain data. A child process receives them and connects by
itself; a live connection never crosses a process boundary.
"""

import os
import re
import urllib.parse
from dataclasses import dataclass, field

from rabbitry.common.errors import ConfigurationError

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
LOCAL_URL = "local://"
URL_ENVVAR = "AMQP_URL"
#: The files of TlsSettings, from the environment.
TLS_CA_ENVVAR, TLS_CERT_ENVVAR, TLS_KEY_ENVVAR = "AMQP_TLS_CA_FILE", "AMQP_TLS_CERT_FILE", "AMQP_TLS_KEY_FILE"
SCHEMES = ("amqp", "amqps", "local")

_PASSWORD = re.compile(r"(?P<scheme>[a-z]+://[^:/@]*:)(?P<password>[^@]*)(?P<at>@)")


def mask_url(text: str) -> str:
    """Replace every URL password in ``text`` with ``***``."""
    return _PASSWORD.sub(r"\g<scheme>***\g<at>", text)


def split_urls(value: str) -> tuple[str, ...]:
    """Split a comma-separated ``AMQP_URL`` into its URLs, checking each one."""
    urls = tuple(part.strip() for part in value.split(",") if part.strip())
    if not urls:
        raise ConfigurationError("no broker URL given")
    for url in urls:
        try:
            url.encode()
        except UnicodeEncodeError:  # a lone surrogate: a byte of a command line that is not UTF-8
            raise ConfigurationError(f"bad broker URL {mask_url(url)!r}: not valid UTF-8") from None
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in SCHEMES:
            raise ConfigurationError(
                f"bad broker URL {mask_url(url)!r}: the scheme must be one of " + ", ".join(f"{s}://" for s in SCHEMES)
            )
        if parsed.scheme != "local":
            try:
                parsed.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError:
                raise ConfigurationError(f"bad broker URL {mask_url(url)!r}: invalid port") from None
            if not parsed.hostname:
                raise ConfigurationError(f"bad broker URL {mask_url(url)!r}: no host")
    if any(u.startswith("local:") for u in urls) and len(urls) > 1:
        raise ConfigurationError("local:// cannot be combined with other broker URLs")
    return urls


@dataclass(frozen=True)
class TlsSettings:
    """Files for ``amqps://`` connections; all optional."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to talk to it.

    ``urls`` holds one URL, or several nodes of a cluster to fail over between.
    """

    urls: tuple[str, ...] = (DEFAULT_URL,)
    tls: TlsSettings = field(default_factory=TlsSettings)
    heartbeat: int = 30
    connection_attempts: int = 1
    #: How long to keep trying to reconnect after a connection was lost.
    reconnect_for: float = 300.0
    #: How long a connection may stay blocked by the broker (a memory or disk alarm)
    #: before it is given up; None waits as long as the alarm lasts.
    blocked_timeout: float | None = 60.0

    @classmethod
    def from_url(cls, url: str | None = None, **kwargs) -> "BrokerSettings":
        """Settings from ``url``, else ``$AMQP_URL``, else the default URL."""
        value = url or os.environ.get(URL_ENVVAR) or DEFAULT_URL
        return cls(urls=split_urls(value), **kwargs)

    @classmethod
    def from_environment(cls, **kwargs) -> "BrokerSettings":
        """Settings from ``$AMQP_URL`` and the ``$AMQP_TLS_*`` files, as the commands read them."""
        tls = TlsSettings(
            ca_file=os.environ.get(TLS_CA_ENVVAR),
            cert_file=os.environ.get(TLS_CERT_ENVVAR),
            key_file=os.environ.get(TLS_KEY_ENVVAR),
        )
        return cls.from_url(tls=tls, **kwargs)

    @property
    def is_local(self) -> bool:
        """True when the in-process broker is selected (``local://``)."""
        return self.urls[0].startswith("local:")

    def describe(self) -> str:
        """The URLs, passwords masked, for logs and messages."""
        return ",".join(mask_url(u) for u in self.urls)
