"""Extra RabbitMQ nodes for fault-injection tests, never the shared broker.

Each :class:`RabbitNode` is a real ``rabbitmq-server`` started as the
``rabbitmq`` user with its own node name, AMQP and distribution ports, and
its own data, log and pid files in a temporary directory, so a test may stop,
restart or kill it at will. :class:`RabbitCluster` joins three of them.

The nodes share the Erlang cookie of the ``rabbitmq`` user's home (read, never
written), so ``rabbitmqctl`` reaches them the same way it reaches the shared
broker. Every node is killed at teardown, and a node left behind by a test
run that was itself killed is reaped by the next run.

Fixtures (made available to every test module by ``conftest.py``):

- ``extra_broker``: a running node of the test module's own (started once per
  module; each test gets it running again, whatever the last test did).
- ``tls_broker``: the same, with a TLS listener and client certificates.
- ``management_broker``: the same, with the management plugin.

``tests/faults/conftest.py`` makes ``cluster3``, a 3-node cluster with every
node running at the start of each test, with :func:`module_resource`.
"""

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from rabbitry.common.connect import connect
from rabbitry.common.errors import RabbitryError
from rabbitry.common.settings import BrokerSettings, TlsSettings
from tests.prerequisites import missing

RABBITMQ_USER = "rabbitmq"
#: Where the server scripts live; the first that exists is used.
_SCRIPT_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin", "/opt/rabbitmq/sbin")
#: Every node's directory sits under here, so stale ones can be found and reaped.
NODES_ROOT = Path(tempfile.gettempdir()) / "rabbitry-test-nodes"
#: Ports for extra nodes are picked at random in this range (below the
#: ephemeral range, and away from the shared broker's 5672/15672/25672); each of
#: pytest-xdist's workers (gw0, gw1, ...) picks from a slice of its own.
_PORT_RANGE = (21000, 24999)
_PORT_SLICES = 4


def _port_range() -> tuple[int, int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return _PORT_RANGE
    low, high = _PORT_RANGE
    size = (high - low + 1) // _PORT_SLICES
    start = low + (int(worker[2:]) % _PORT_SLICES) * size
    return start, start + size - 1


START_TIMEOUT_S = 60.0
_CTL_TIMEOUT_S = 60.0
_ports_lock = threading.Lock()
_ports_taken: set[int] = set()


#: Names the one folder to take the server scripts from, instead of the usual places and PATH:
#: an empty folder hides RabbitMQ from the tests (tests/test_prerequisites.py does).
SCRIPT_DIR_ENVVAR = "RABBITRY_TEST_RABBITMQ_BIN"


def _script(name: str) -> str:
    only = os.environ.get(SCRIPT_DIR_ENVVAR)
    for directory in (only,) if only else _SCRIPT_DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    found = None if only else shutil.which(name)
    if found is None:
        where = f" in {only}" if only else ""
        missing(f"{name} is not installed{where}: tests that start RabbitMQ nodes of their own need RabbitMQ installed")
    return found


def _rabbitmq_account() -> pwd.struct_passwd:
    try:
        account = pwd.getpwnam(RABBITMQ_USER)
    except KeyError:
        missing(f"no {RABBITMQ_USER!r} system user: fault-injection tests need a local RabbitMQ installation")
    if os.geteuid() not in (0, account.pw_uid):
        missing(f"extra RabbitMQ nodes are started as {RABBITMQ_USER!r}: run the tests as root or as that user")
    return account


def _as_rabbitmq(command: list[str], env: dict[str, str]) -> list[str]:
    """``command`` run as the rabbitmq user with exactly ``env`` added."""
    account = _rabbitmq_account()
    assignments = [f"{key}={value}" for key, value in {"HOME": account.pw_dir, **env}.items()]
    prefix = ["runuser", "-u", RABBITMQ_USER, "--"] if os.geteuid() != account.pw_uid else []
    return [*prefix, "env", *assignments, *command]


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on, not handed out before in this process."""
    with _ports_lock:
        while True:
            port = random.randint(*_port_range())
            if port not in _ports_taken and _port_is_free(port):
                _ports_taken.add(port)
                return port


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale_nodes() -> None:
    """Kill and remove nodes whose test run died without cleaning up."""
    if not NODES_ROOT.is_dir():
        return
    for directory in NODES_ROOT.iterdir():
        try:
            owner = int((directory / "owner").read_text())
        except (OSError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int((directory / "group").read_text()), signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class TlsFiles:
    """A CA, and a server and a client certificate it signed (PEM files)."""

    ca_file: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    @property
    def settings(self) -> TlsSettings:
        """Client settings that verify the node and present the client certificate."""
        return TlsSettings(ca_file=self.ca_file, cert_file=self.client_cert, key_file=self.client_key)


def make_tls_files(directory: Path) -> TlsFiles:
    """Generate a CA and certificates for ``localhost`` with openssl, in ``directory``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        missing("openssl is needed to make test certificates")
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args):
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=30)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=rabbitry test CA")
    (directory / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        run("req", *curve, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=rabbitry-{name}")
        extension = ["-extfile", "server.ext"] if name == "server" else []
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            *extension,
        )
    path = str(directory)
    return TlsFiles(
        f"{path}/ca.pem", f"{path}/server.pem", f"{path}/server.key", f"{path}/client.pem", f"{path}/client.key"
    )


class RabbitNode:
    """One extra RabbitMQ node on ports of its own, started as the rabbitmq user.

    ``config`` adds ``rabbitmq.conf`` lines (``{"consumer_timeout": 60000}``);
    ``rabbit_env`` sets ``rabbit`` application settings rabbitmq.conf has no key for, in
    ``advanced.config`` (``{"dead_letter_worker_publisher_confirm_timeout": 5000}``: integers);
    ``tls`` adds a TLS listener that requires a client certificate; ``management``
    enables the management plugin on a port of its own (``management_url``).
    """

    def __init__(
        self,
        prefix: str = "t",
        tls: bool = False,
        config: dict[str, object] | None = None,
        management: bool = False,
        rabbit_env: dict[str, int] | None = None,
    ):
        reap_stale_nodes()
        self.name = f"{prefix}-{uuid.uuid4().hex[:6]}@localhost"
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.tls_port = free_port() if tls else None
        self.management_port = free_port() if management else None
        self.config = dict(config or {})
        self.rabbit_env = dict(rabbit_env or {})
        self.directory = NODES_ROOT / self.name.split("@")[0]
        self.tls_files: TlsFiles | None = None
        self._process: subprocess.Popen | None = None
        self._prepare(tls)

    # -- addresses ---------------------------------------------------------
    @property
    def url(self) -> str:
        """The node's plain AMQP URL (guest/guest, default vhost)."""
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def tls_url(self) -> str:
        """The node's amqps:// URL; the host is ``localhost`` to match its certificate."""
        if self.tls_port is None:
            raise ValueError("this node has no TLS listener: create it with tls=True")
        return f"amqps://guest:guest@localhost:{self.tls_port}/%2F"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def settings(self, **kwargs) -> BrokerSettings:
        """Broker settings for this node (plain AMQP)."""
        return BrokerSettings.from_url(self.url, **kwargs)

    # -- life cycle --------------------------------------------------------
    def start(self, wait: bool = True) -> "RabbitNode":
        """Start the node (again, keeping its data, after :meth:`kill` or :meth:`stop`)."""
        if self.is_running:
            return self
        log = open(self.directory / "server.out", "ab")
        self._process = subprocess.Popen(
            _as_rabbitmq([_script("rabbitmq-server")], self._environment()),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        (self.directory / "group").write_text(str(self._process.pid))
        if wait:
            self.wait_until_ready()
        return self

    def wait_until_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until the node accepts an AMQP connection."""
        deadline = time.monotonic() + timeout
        settings = BrokerSettings.from_url(self.url)
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"RabbitMQ node {self.name} exited with {self._process.returncode}:\n" + self.log_tail()
                )
            with contextlib.suppress(RabbitryError):
                connect(settings, "rabbitry-tests-node-probe").close()
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ node {self.name} not ready after {timeout:g} s:\n" + self.log_tail())
            time.sleep(0.1)

    @property
    def is_running(self) -> bool:
        """True while the node's server process is alive (its app may be stopped)."""
        return self._process is not None and self._process.poll() is None

    def ctl(self, *args: str, timeout: float = _CTL_TIMEOUT_S, check: bool = True) -> str:
        """Run ``rabbitmqctl -n NODE ARGS`` and return its output."""
        result = subprocess.run(
            _as_rabbitmq([_script("rabbitmqctl"), "-n", self.name, *args], {}),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.name} failed: {result.stderr or result.stdout}")
        return result.stdout

    def stop_app(self) -> None:
        """Stop the RabbitMQ application (connections drop; the Erlang node stays up)."""
        self.ctl("stop_app")

    def start_app(self, wait: bool = True) -> None:
        """Start the RabbitMQ application again after :meth:`stop_app`."""
        self.ctl("start_app")
        if wait:
            self.wait_until_ready()

    def stop(self) -> None:
        """Stop the node gracefully and wait for its process to end."""
        if not self.is_running:
            return
        self.ctl("stop", check=False)
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        """Stop the whole node and start it again, as a broker restart does."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the node and every process it started: a crash, or the final clean-up."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(10)

    def ensure_running(self) -> None:
        """Bring the node back to serving, whatever a test did to it."""
        if not self.is_running:
            self.start()
            return
        try:
            self.wait_until_ready(timeout=0.5)
        except RuntimeError:
            self.ctl("start_app", check=False)
            self.wait_until_ready()

    def destroy(self) -> None:
        """Kill the node and delete its files."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the node's output, for failure messages."""
        try:
            text = (self.directory / "server.out").read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.destroy()

    def __repr__(self):
        return f"RabbitNode({self.name}, amqp={self.amqp_port})"

    # -- files -------------------------------------------------------------
    def _prepare(self, tls: bool) -> None:
        account = _rabbitmq_account()
        for sub in ("mnesia", "log"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        (self.directory / "owner").write_text(str(os.getpid()))
        lines = [
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}",
            "log.console = true",
            "log.console.level = warning",
            "log.file.level = info",
        ]
        if tls:
            self.tls_files = make_tls_files(self.directory / "tls")
            lines += [
                f"listeners.ssl.1 = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {self.tls_files.ca_file}",
                f"ssl_options.certfile = {self.tls_files.server_cert}",
                f"ssl_options.keyfile = {self.tls_files.server_key}",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = true",
            ]
        if self.management_port:
            lines += [f"management.tcp.port = {self.management_port}", "management.tcp.ip = 127.0.0.1"]
        lines += [f"{key} = {value}" for key, value in self.config.items()]
        (self.directory / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        settings = ", ".join(f"{{{key}, {int(value)}}}" for key, value in self.rabbit_env.items())
        (self.directory / "advanced.config").write_text(f"[{{rabbit, [{settings}]}}].\n")
        plugins = "rabbitmq_management" if self.management_port else ""
        (self.directory / "enabled_plugins").write_text(f"[{plugins}].\n")
        (self.directory / "rabbitmq-env.conf").write_text("")  # not the system's env file
        for path in [self.directory, *self.directory.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)
        self.directory.parent.chmod(0o1777)

    def _environment(self) -> dict[str, str]:
        base = str(self.directory)
        return {
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": f"{base}/mnesia",
            "RABBITMQ_LOG_BASE": f"{base}/log",
            "RABBITMQ_PID_FILE": f"{base}/node.pid",
            "RABBITMQ_CONFIG_FILE": f"{base}/rabbitmq.conf",
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{base}/advanced.config",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{base}/enabled_plugins",
            "RABBITMQ_CONF_ENV_FILE": f"{base}/rabbitmq-env.conf",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }


class RabbitCluster:
    """Three (or ``size``) extra nodes joined into one RabbitMQ cluster."""

    def __init__(self, size: int = 3, **node_options):
        self.nodes = [RabbitNode(prefix=f"c{index + 1}", **node_options) for index in range(size)]

    @property
    def urls(self) -> str:
        """Every node's URL, comma-separated, as ``AMQP_URL`` takes them."""
        return ",".join(node.url for node in self.nodes)

    def settings(self, **kwargs) -> BrokerSettings:
        """Broker settings listing every node, for failover."""
        return BrokerSettings.from_url(self.urls, **kwargs)

    def start(self) -> "RabbitCluster":
        """Start every node (in parallel), then join the others to the first."""
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_until_ready()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.stop_app()
            node.ctl("join_cluster", first.name)
            node.start_app()
        return self

    def running_nodes(self) -> list[str]:
        """Names of the nodes the cluster reports as running."""
        for node in self.nodes:
            if node.is_running:
                output = node.ctl("eval", "rabbit_nodes:all_running().", check=False)
                return [name for name in self.names if name in output]
        return []

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def ensure_running(self) -> None:
        """Every node running and back in the cluster."""
        for node in self.nodes:
            node.ensure_running()

    def destroy(self) -> None:
        for node in self.nodes:
            node.destroy()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc_info):
        self.destroy()


# -- fixtures -----------------------------------------------------------------
def module_resource(name: str, factory, doc: str):
    """Fixtures for a node or cluster started once per test module and running at each test's start."""

    @pytest.fixture(scope="module", name=f"_{name}_started")
    def started():
        with factory() as resource:
            yield resource

    @pytest.fixture(name=name)
    def running(request):
        resource = request.getfixturevalue(f"_{name}_started")
        resource.ensure_running()
        return resource

    running.__doc__ = doc
    return started, running


_extra_broker_started, extra_broker = module_resource(
    "extra_broker", RabbitNode, "A RabbitMQ node of this test module's own, running at the start of each test."
)
_tls_broker_started, tls_broker = module_resource(
    "tls_broker",
    lambda: RabbitNode(prefix="tls", tls=True),
    "A node with a TLS listener (``.tls_url``, ``.tls_files``) that requires a client certificate.",
)
_management_broker_started, management_broker = module_resource(
    "management_broker",
    lambda: RabbitNode(prefix="mgmt", management=True, config={"collect_statistics_interval": 500}),
    "A node with the management plugin (``.management_url``), its statistics refreshed twice a second.",
)
