"""RabbitMQ's management HTTP API (the ``rabbitmq_management`` plugin), read with the standard library.

AMQP 0-9-1 tells a queue's depth and consumers, but cannot list queues or
bindings, nor count what went through a queue; the management API can.
:class:`ManagementApi` reaches it with the AMQP URL's credentials and vhost,
on port 15672 of the broker's host unless a URL is given. Anything that
goes wrong is ManagementUnavailable, one line.
"""

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

from rabbitry.common.errors import ManagementUnavailable

#: The management API's port, where no URL is given.
MANAGEMENT_PORT = 15672
#: The option and variable that name it, in every command that reads it.
MANAGEMENT_URL_ENVVAR = "RABBITMQ_MANAGEMENT_URL"
_HTTP_TIMEOUT_S = 2.0


class ManagementApi:
    """The management API of one broker, for one vhost."""

    def __init__(self, url: str, vhost: str, username: str, password: str):
        self.url = url.rstrip("/")
        self.vhost = vhost
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}

    @classmethod
    def for_broker(cls, amqp_url: str, management_url: str | None = None) -> "ManagementApi":
        """The API of the broker at ``amqp_url``: at ``management_url``, or on port 15672 of the same
        host, with the AMQP URL's credentials and vhost."""
        parts = urllib.parse.urlsplit(amqp_url)
        vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        url = management_url or f"http://{parts.hostname}:{MANAGEMENT_PORT}"
        return cls(
            url, vhost, urllib.parse.unquote(parts.username or "guest"), urllib.parse.unquote(parts.password or "guest")
        )

    def check(self) -> None:
        """Raise ManagementUnavailable unless the API answers."""
        self.get("/api/overview")

    def queue_path(self, queue: str, *more: str) -> str:
        """``/api/queues/<vhost>/<queue>[/more]``, quoted."""
        return "/".join(["/api/queues", self._quoted(self.vhost), self._quoted(queue), *more])

    def queues(self) -> list[dict]:
        """Every queue of the vhost, as the API describes it."""
        return self.get(f"/api/queues/{self._quoted(self.vhost)}") or []

    def bindings_from(self, exchange: str) -> list[dict]:
        """Every binding whose source is ``exchange``."""
        return self.get(f"/api/exchanges/{self._quoted(self.vhost)}/{self._quoted(exchange)}/bindings/source") or []

    def binding_keys(self, exchange: str, queue: str) -> list[str]:
        """The keys ``queue`` is bound to ``exchange`` with."""
        found = (
            self.get(f"/api/bindings/{self._quoted(self.vhost)}/e/{self._quoted(exchange)}/q/{self._quoted(queue)}")
            or []
        )
        return [binding["routing_key"] for binding in found]

    def get(self, path: str):
        """The decoded JSON at ``path``, or None for 404."""
        request = urllib.request.Request(self.url + path, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise ManagementUnavailable(
                f"the management API at {self.url} answered {error.code} {error.reason}"
            ) from None
        except (OSError, ValueError) as error:
            raise ManagementUnavailable(
                f"the management API at {self.url} did not answer: {getattr(error, 'reason', None) or error}"
            ) from None

    @staticmethod
    def _quoted(name: str) -> str:
        return urllib.parse.quote(name, safe="")
