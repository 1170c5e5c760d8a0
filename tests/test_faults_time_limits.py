"""The worker checks at start-up that --time-limit fits under the broker's consumer_timeout,
read from a node of the test's own whose consumer_timeout is 20 s."""

import pytest

from rabbitry.common.consumer_timeout import DEFAULT_CONSUMER_TIMEOUT_S, read_consumer_timeout
from rabbitry.common.errors import ExitCode
from tests.fault_helpers import NodeCommands
from tests.helpers import wait_until
from tests.nodes import RabbitNode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def short_timeout_broker():
    with RabbitNode(prefix="timeout", config={"consumer_timeout": 20000}) as node:
        yield node


@pytest.fixture
def node(short_timeout_broker):
    with NodeCommands(short_timeout_broker.url) as commands:
        yield commands


def test_a_time_limit_over_the_consumer_timeout_stops_the_worker_with_one_clear_line(node, unique_name):
    result = node.run("worker", "--queue", unique_name, "--time-limit", "30", "--processes", "1")

    assert result.returncode == ExitCode.USAGE
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "--time-limit 30 s does not fit under the broker's consumer_timeout of 20 s" in error
    assert "rabbitmqctl on node timeout-" in error


def test_a_time_limit_that_fits_is_reported(node, unique_name):
    worker = node.start_worker(unique_name, "--time-limit", "5", "--prefetch", "1", "--processes", "1")

    (fits,) = wait_until(lambda: worker.events("time_limit_fits"))
    assert fits["consumer_timeout_s"] == 20 and fits["time_limit_s"] == 5


def test_prefetched_tasks_that_could_wait_too_long_get_a_warning(node, unique_name):
    worker = node.start_worker(unique_name, "--time-limit", "5", "--prefetch", "8", "--processes", "1")

    (warning,) = wait_until(lambda: worker.events("prefetched_tasks_may_time_out"))
    assert "--prefetch 8" in warning["problem"] and "40 s" in warning["problem"]


def test_a_remote_brokers_timeout_is_assumed_to_be_the_default():
    timeout = read_consumer_timeout("amqp://guest:guest@broker.example.invalid:5672/%2F")

    assert timeout.seconds == DEFAULT_CONSUMER_TIMEOUT_S and not timeout.known
    assert "default" in timeout.source
