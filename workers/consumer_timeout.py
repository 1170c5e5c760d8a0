"""The broker's ``consumer_timeout``, which AMQP gives no way to read.

RabbitMQ closes a channel whose delivery stays unacknowledged longer than
``consumer_timeout`` (30 minutes by default), and the delivery is requeued.
A task that may run longer than that is run again and again. This module
finds the broker's setting where it can:

- The management API does not expose it (RabbitMQ 3.10), so it is not asked.
- When the broker runs on this machine, ``rabbitmqctl eval`` asks the node
  itself. Local nodes are found by name through epmd, and the right one is the
  node whose AMQP listener has the port we connected to.
- Otherwise RabbitMQ's default is assumed, and the result says so.
"""

import re
import shutil
import socket
import subprocess
import urllib.parse
from dataclasses import dataclass

#: RabbitMQ's default consumer_timeout (since 3.8.17).
DEFAULT_CONSUMER_TIMEOUT_S = 1800.0
_EPMD_PORT = 4369
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", socket.gethostname()}
_MAX_NODES_TRIED = 4
_CTL_TIMEOUT_S = 10.0
#: ``{ConsumerTimeoutEnv, ListenerPorts}`` of the node it runs on.
_QUERY = (
    "{application:get_env(rabbit, consumer_timeout), "
    "[element(6, L) || L <- rabbit_networking:active_listeners(), element(2, L) =:= node()]}."
)
_ANSWER = re.compile(r"\{(?:\{ok,(?P<value>\w+)\}|undefined),\[(?P<ports>[\d,]*)\]\}")


@dataclass(frozen=True)
class ConsumerTimeout:
    """The broker's consumer_timeout in seconds (None: disabled), and where it came from."""

    seconds: float | None
    source: str
    known: bool


def local_node_names(epmd_host: str = "127.0.0.1") -> list[str]:
    """Names of the Erlang nodes registered with this machine's epmd (empty if none answers)."""
    try:
        with socket.create_connection((epmd_host, _EPMD_PORT), timeout=2) as epmd:
            epmd.sendall(b"\x00\x01n")  # NAMES_REQ
            answer = b""
            while chunk := epmd.recv(4096):
                answer += chunk
    except OSError:
        return []
    names = re.findall(r"^name (\S+) at port \d+$", answer[4:].decode(errors="replace"), re.MULTILINE)
    return [name for name in names if not name.startswith("rabbitmqcli")]


def _ask_node(rabbitmqctl: str, node: str) -> tuple[float | None, list[int]] | None:
    try:
        result = subprocess.run(
            [rabbitmqctl, "-n", node, "eval", _QUERY], capture_output=True, text=True, timeout=_CTL_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _ANSWER.search(result.stdout.replace(" ", "").replace("\n", ""))
    if result.returncode != 0 or match is None:
        return None
    value = match["value"]
    seconds = int(value) / 1000 if value is not None and value.isdigit() else None
    return seconds, [int(port) for port in match["ports"].split(",") if port]


def read_consumer_timeout(url: str, server_properties: dict | None = None) -> ConsumerTimeout:
    """The consumer_timeout of the broker at ``url``; RabbitMQ's default when it cannot be read."""
    parsed = urllib.parse.urlsplit(url)
    port = parsed.port or (5671 if parsed.scheme == "amqps" else 5672)
    rabbitmqctl = shutil.which("rabbitmqctl")
    if parsed.hostname in _LOCAL_HOSTS and rabbitmqctl:
        # The cluster name is the first node's name unless renamed: try a node of that name first.
        hint = str((server_properties or {}).get("cluster_name", "")).split("@")[0]
        names = sorted(local_node_names(), key=lambda name: name != hint)
        hosts = dict.fromkeys(["localhost", socket.gethostname().split(".")[0]])
        for name in names[:_MAX_NODES_TRIED]:
            for host in hosts:
                answer = _ask_node(rabbitmqctl, f"{name}@{host}")
                if answer is None:
                    continue  # not under this host name
                if port in answer[1]:
                    return ConsumerTimeout(answer[0], f"rabbitmqctl on node {name}@{host}", known=True)
                break  # another node than the one we connected to
    return ConsumerTimeout(
        DEFAULT_CONSUMER_TIMEOUT_S, "RabbitMQ's default; it could not be read from the broker", known=False
    )
