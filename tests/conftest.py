"""Shared fixtures: a real RabbitMQ broker, unique names, and running rabbitry's commands.

The broker comes from ``RABBITMQ_URL`` when it is set, from testcontainers
(the image ``RABBITMQ_IMAGE`` names) when a Docker engine is available, and
otherwise the tests fail with a message that says how to get one. Nothing here
mocks pika or RabbitMQ.
"""

import contextlib
import inspect
import logging
import os
import sys
import uuid

import pytest

from rabbitry.common.connect import connect
from rabbitry.common.errors import RabbitryError
from rabbitry.common.local.registry import broker_name, forget_broker
from rabbitry.common.logconfig import configure_logging
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import DELAY_DELIVERY_EXCHANGE, DELAY_UNROUTED, dead_letter_queue_name, delay_level_names
from tests.helpers import WorkerProcess, rabbitmq_image, run_command
from tests.transport_helpers import Transport

#: extra_broker, tls_broker and management_broker: RabbitMQ nodes of a test module's own;
#: docker, rabbitry_image and compose_project: compose.yaml run for real.
pytest_plugins = ("tests.nodes", "tests.compose_project")


def pytest_configure(config):
    """rabbitry code run in the tests' own process (in-process pools, submitters) logs as its
    commands do, from info up: unconfigured, structlog prints every level, debug included, to
    the standard output it found when first imported, which a run of pytest shows."""
    configure_logging("console", "info", sys.stderr)


#: The fixtures that start RabbitMQ nodes or Docker containers of a test's own (tests/nodes.py,
#: tests/faults/conftest.py, tests/compose_project.py); the classes a test may start nodes with itself.
STARTS_ITS_OWN = frozenset({"extra_broker", "tls_broker", "management_broker", "node", "cluster3", "docker"})
STARTS_NODES_ITSELF = ("RabbitNode(", "RabbitCluster(")


def _starts_its_own(item: pytest.Item) -> bool:
    if STARTS_ITS_OWN.intersection(getattr(item, "fixturenames", ())):
        return True
    function = getattr(item, "function", None)
    try:
        source = inspect.getsource(function) if function is not None else ""
    except (OSError, TypeError):
        source = ""
    return any(start in source for start in STARTS_NODES_ITSELF)


def pytest_collection_modifyitems(config, items):
    """``slow`` means "starts RabbitMQ nodes or Docker containers of its own", exactly: every
    test that does is marked here, and one marked by hand that does not stops the run."""
    wrong = []
    for item in items:
        if _starts_its_own(item):
            item.add_marker(pytest.mark.slow)
        elif item.get_closest_marker("slow") is not None:
            wrong.append(item.nodeid)
    if wrong:
        raise pytest.UsageError("marked slow but starts no node or container:\n  " + "\n  ".join(wrong))


NO_BROKER = (
    "no RabbitMQ broker for the tests: set RABBITMQ_URL (for example "
    "RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/ with a local rabbitmq-server running; "
    "`rabbitmq-server -detached` starts one), or make a Docker engine available so that "
    "testcontainers can start RabbitMQ"
)


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:  # any failure means: no usable engine
        return False


@pytest.fixture(scope="session")
def broker_url():
    """The URL of a running RabbitMQ broker for the whole session."""
    url = os.environ.get("RABBITMQ_URL")
    if url:
        try:
            connect(BrokerSettings.from_url(url)).close()
        except RabbitryError as error:
            pytest.fail(f"RABBITMQ_URL is set but unusable: {error}", pytrace=False)
        yield url
        return
    if not _docker_available():
        pytest.fail(NO_BROKER, pytrace=False)
    with rabbitmq_container(rabbitmq_image()) as url:
        yield url


_DELAY_LEVELS_WERE_THERE = pytest.StashKey[bool]()


def _is_xdist_worker(config: pytest.Config) -> bool:
    """One of pytest-xdist's worker processes (``pytest -n``), which share the broker."""
    return hasattr(config, "workerinput")


def pytest_sessionstart(session):
    """Note whether the shared broker had the delay levels before the run (once, in the
    controller when pytest-xdist runs workers)."""
    url = os.environ.get("RABBITMQ_URL")
    if url and not _is_xdist_worker(session.config):
        with contextlib.suppress(RabbitryError):  # the broker_url fixture reports an unusable URL
            session.config.stash[_DELAY_LEVELS_WERE_THERE] = delay_levels_exist(url)


def pytest_sessionfinish(session):
    """The delay levels are shared by every work queue of the broker: the tests leave them while
    they run (on every worker), and they are removed once all have ended, unless they were there
    before the run (another run on the same broker may be using them)."""
    url = os.environ.get("RABBITMQ_URL")
    if url and session.config.stash.get(_DELAY_LEVELS_WERE_THERE, True) is False:
        with contextlib.suppress(RabbitryError):
            remove_delay_levels_if_empty(url)


def delay_levels_exist(url: str) -> bool:
    with connect(BrokerSettings.from_url(url), "rabbitry-tests-cleanup") as conn:
        return conn.queue_state(delay_level_names()[0]) is not None


def remove_delay_levels_if_empty(url: str) -> None:
    """Remove the delay levels unless something still waits in them."""
    with connect(BrokerSettings.from_url(url), "rabbitry-tests-cleanup") as conn:
        levels = [*delay_level_names(), DELAY_UNROUTED]
        if any(
            (state := conn.queue_state(name)) is not None and (state.messages or state.consumers) for name in levels
        ):
            return
        for name in levels:
            conn.delete_queue(name)
            conn.delete_exchange(name)
        conn.delete_exchange(DELAY_DELIVERY_EXCHANGE)


@contextlib.contextmanager
def rabbitmq_container(image: str):
    """A RabbitMQ broker in a container that testcontainers starts from ``image``; its URL.

    Ryuk, testcontainers' reaper of containers left by a killed run, runs only
    where its image is already there: where no registry answers it cannot be
    pulled, and leaving this ``with`` removes the container all the same.
    """
    import docker
    from testcontainers.community.rabbitmq import RabbitMqContainer
    from testcontainers.core.config import testcontainers_config

    try:
        docker.from_env().images.get(testcontainers_config.ryuk_image)
    except docker.errors.ImageNotFound:
        testcontainers_config.ryuk_disabled = True
    with RabbitMqContainer(image) as container:
        params = container.get_connection_params()
        creds = params.credentials
        yield f"amqp://{creds.username}:{creds.password}@{params.host}:{params.port}/%2F"


@pytest.fixture(scope="session")
def broker_settings(broker_url) -> BrokerSettings:
    """Settings for the session's broker, failing fast rather than reconnecting for minutes."""
    return BrokerSettings.from_url(broker_url, reconnect_for=30.0)


@pytest.fixture
def connection(broker_settings):
    """A connection of the test's own to the broker, closed afterwards."""
    with connect(broker_settings, "rabbitry-tests") as conn:
        yield conn


@pytest.fixture(params=["local", "amqp"])
def either_broker(request):
    """Settings for a fresh in-process broker (``[local]``) or for the session's RabbitMQ
    (``[amqp]``): a test that asks for it, or for a fixture built on it, runs on both.

    The one fixture that runs a behaviour on both transports; ``either_work_queue`` and
    ``transport`` are built on it.
    """
    if request.param == "local":
        chosen = BrokerSettings.from_url(f"local://{uuid.uuid4().hex}")
        yield chosen
        forget_broker(broker_name(chosen.urls[0]))
    else:
        yield request.getfixturevalue("broker_settings")


@pytest.fixture
def either_work_queue(either_broker, unique_name):
    """A work queue name of the test's own on ``either_broker``; on RabbitMQ its queues are deleted afterwards."""
    yield unique_name
    if not either_broker.is_local:
        with connect(either_broker, "rabbitry-tests-cleanup") as connection:
            for name in [unique_name, dead_letter_queue_name(unique_name)]:
                connection.delete_queue(name)


@pytest.fixture
def transport(either_broker, unique_name):
    """A Transport on ``either_broker``: connections of the test's own, closed afterwards, and
    what the test declared removed."""
    chosen = Transport(either_broker, unique_name)
    yield chosen
    chosen.cleanup()


@pytest.fixture
def unique_name(request) -> str:
    """A name no other test uses, for queues and exchanges."""
    return f"test.{request.node.name[:40]}.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def work_queue_name(unique_name, broker_settings):
    """A work queue name of the test's own; its queues are deleted afterwards."""
    yield unique_name
    with connect(broker_settings, "rabbitry-tests-cleanup") as conn:
        for name in [unique_name, dead_letter_queue_name(unique_name)]:
            conn.delete_queue(name)


@pytest.fixture
def cli_env(broker_url):
    """Environment for running rabbitry's commands against the test broker."""
    env = dict(os.environ, AMQP_URL=broker_url, RABBITRY_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def run(cli_env):
    """Run a rabbitry command to completion: ``run("new-task", "x", "--queue", q)``."""

    def runner(*args, **kwargs):
        return run_command(list(args), env=cli_env, **kwargs)

    return runner


@pytest.fixture
def start_worker(cli_env, broker_settings, work_queue_name):
    """Start ``worker`` processes (in folder ``cwd``, from the console script ``command``, if
    given); each is stopped (SIGTERM) at the end of the test.

    It asks for ``work_queue_name`` so that the workers stop before that fixture deletes the
    queues: a worker whose queue is deleted under it reconnects and declares it again.
    """
    workers = []

    def starter(queue, *args, consumers=None, env=None, cwd=None, command=None):
        process = WorkerProcess(queue, list(args), env={**cli_env, **(env or {})}, cwd=cwd, command=command)
        process.start()
        workers.append(process)
        process.wait_for_consumers(broker_settings, consumers)
        return process

    yield starter
    for process in workers:
        process.stop()


@pytest.fixture
def make_logger(request):
    """A stdlib logger of the test's own, with the given handler; detached and closed afterwards."""
    attached = []

    def maker(name: str, handler: logging.Handler) -> logging.Logger:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)
        attached.append((logger, handler))
        return logger

    yield maker
    for logger, handler in attached:
        logger.removeHandler(handler)
        handler.close()
