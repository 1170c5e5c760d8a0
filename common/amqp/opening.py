"""Opening a connection to RabbitMQ: pika's parameters for a URL, TLS, and failover across URLs.

:func:`open_connection` tries each configured URL in turn and says in a few
words why each failed (:func:`_reason`), so that an unreachable broker is one
clear line, not pika's nested connection-workflow errors.
"""

import ssl
import urllib.parse

import pika
import pika.exceptions as pika_errors
from pika.adapters.utils.connection_workflow import AMQPConnectorException, AMQPConnectorStackTimeout

from rabbitry.common.amqp.connection import AmqpConnection
from rabbitry.common.amqp.translation import LOGIN_REFUSED
from rabbitry.common.errors import BrokerRefused, BrokerUnavailable
from rabbitry.common.settings import BrokerSettings, mask_url

#: Everything pika raises while a connection is being opened: its own errors, socket and
#: TLS errors, and the connection workflow's, such as a server that accepts TCP but never
#: completes the AMQP handshake (AMQPConnectorStackTimeout), which are not AMQPErrors.
_CONNECTING = (pika_errors.AMQPError, AMQPConnectorException, OSError)


def connection_parameters(settings: BrokerSettings, url: str, name: str) -> pika.URLParameters:
    """pika parameters for one of the configured URLs."""
    try:
        params = pika.URLParameters(url)
    except Exception as error:  # pika raises plain ValueError/TypeError/KeyError here
        raise BrokerUnavailable(f"bad broker URL {mask_url(url)!r}: {error}") from None
    if "heartbeat" not in urllib.parse.urlsplit(url).query:
        params.heartbeat = settings.heartbeat
    params.connection_attempts = settings.connection_attempts
    params.socket_timeout = 5
    # pika drops a connection blocked for longer (ConnectionBlockedTimeout, see translation.translate).
    blocked = settings.blocked_timeout
    params.blocked_connection_timeout = None if blocked is None or blocked == float("inf") else blocked
    params.client_properties = {"connection_name": name, "product": "rabbitry"}
    if urllib.parse.urlsplit(url).scheme == "amqps":
        tls = settings.tls
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        if not tls.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        params.ssl_options = pika.SSLOptions(context, params.host)
    return params


def open_connection(settings: BrokerSettings, name: str = "rabbitry") -> AmqpConnection:
    """Connect to the first configured URL that answers.

    Raises BrokerRefused when a broker answered but said no (bad login), and
    BrokerUnavailable when none answered.
    """
    failures = []
    for url in settings.urls:
        params = connection_parameters(settings, url, name)
        try:
            return AmqpConnection(pika.BlockingConnection(params), url)
        except LOGIN_REFUSED:
            raise BrokerRefused(
                f"the broker at {mask_url(url)} refused the login (check user, password and vhost)"
            ) from None
        except _CONNECTING as error:
            failures.append(f"{mask_url(url)} ({_reason(error, tls=params.ssl_options is not None)})")
    raise BrokerUnavailable("cannot reach the broker at " + ", ".join(failures))


def _reason(error: BaseException, tls: bool = False) -> str:
    """The root cause of a connection failure, in a few words."""
    while True:
        if (
            isinstance(error, pika_errors.AMQPConnectionError)
            and error.args
            and isinstance(error.args[0], BaseException)
        ):
            error = error.args[0]
        elif isinstance(cause := getattr(error, "exception", None), BaseException):
            error = cause  # pika's connection-workflow wrappers
        else:
            break
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    if isinstance(error, AMQPConnectorStackTimeout):
        return (
            "no AMQP handshake within the connection timeout: the server accepts TCP but does not "
            "answer as a broker (a frozen node, a stalled proxy, or not a RabbitMQ port)"
        )
    if isinstance(error, pika_errors.IncompatibleProtocolError) and tls:
        # TLS 1.3 reports a refused (or missing) client certificate only by closing.
        return (
            "the broker closed the connection during the handshake: check the client certificate "
            "and key (--tls-cert-file, --tls-key-file)"
        )
    if isinstance(error, pika_errors.IncompatibleProtocolError):
        return "not an AMQP 0-9-1 server, or it closed the connection during the handshake"
    text = str(error) or type(error).__name__
    return mask_url(text.replace("\n", " "))
