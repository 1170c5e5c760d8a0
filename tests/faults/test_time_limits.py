"""The worker's time limit and the broker's consumer_timeout, read from a node of the test's
own whose consumer_timeout is 8 s (30 s for a worker given no time limit): --time-limit must
fit under it, a worker given none takes a limit below it, and a channel closed for an
acknowledgement timeout is named as such."""

import pytest

from rabbitry.common.errors import ExitCode
from rabbitry.common.topology import dead_letter_queue_name
from rabbitry.workers.consumer_timeout import DEFAULT_CONSUMER_TIMEOUT_S, read_consumer_timeout
from tests.faults.helpers import wait_for_all
from tests.helpers import NodeCommands, succeeded_ids, wait_until
from tests.nodes import RabbitNode

CONSUMER_TIMEOUT_S = 8
#: The consumer_timeout under which a worker's default time limit is tested. That limit is 90% of
#: it, and the other 10%, 3 s, must hold a loaded machine's start of the task after its delivery
#: and the failure's dead letter and ack after its time limit.
LONGER_CONSUMER_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def short_timeout_broker():
    with RabbitNode(prefix="timeout", config={"consumer_timeout": CONSUMER_TIMEOUT_S * 1000}) as node:
        # Channels check their consumer_timeout on a tick, once a minute by default: every
        # second here, so that a timed-out delivery closes its channel within the test.
        node.ctl("eval", "application:set_env(rabbit, channel_tick_interval, 1000).")
        yield node


def set_consumer_timeout(node: RabbitNode, seconds: float) -> None:
    """The consumer_timeout of channels opened from now on."""
    node.ctl("eval", f"application:set_env(rabbit, consumer_timeout, {round(seconds * 1000)}).")


@pytest.fixture
def longer_consumer_timeout(short_timeout_broker):
    """The node's consumer_timeout at LONGER_CONSUMER_TIMEOUT_S during the test, then back."""
    set_consumer_timeout(short_timeout_broker, LONGER_CONSUMER_TIMEOUT_S)
    yield LONGER_CONSUMER_TIMEOUT_S
    set_consumer_timeout(short_timeout_broker, CONSUMER_TIMEOUT_S)


@pytest.fixture
def node(short_timeout_broker):
    with NodeCommands(short_timeout_broker.url) as commands:
        yield commands


def test_a_time_limit_over_the_consumer_timeout_stops_the_worker_with_one_clear_line(node, unique_name):
    result = node.run("worker", "--queue", unique_name, "--time-limit", "30", "--processes", "1")

    assert result.returncode == ExitCode.USAGE
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert f"--time-limit 30 s does not fit under the broker's consumer_timeout of {CONSUMER_TIMEOUT_S} s" in error
    assert "rabbitmqctl on node timeout-" in error


def test_a_time_limit_that_fits_is_reported(node, unique_name):
    worker = node.start_worker(unique_name, "--time-limit", "5", "--prefetch", "1", "--processes", "1")

    (fits,) = wait_until(lambda: worker.events("time_limit_fits"))
    assert fits["consumer_timeout_s"] == CONSUMER_TIMEOUT_S and fits["time_limit_s"] == 5


def test_prefetched_tasks_that_could_wait_too_long_get_a_warning(node, unique_name):
    worker = node.start_worker(unique_name, "--time-limit", "5", "--prefetch", "8", "--processes", "1")

    (warning,) = wait_until(lambda: worker.events("prefetched_tasks_may_time_out"))
    assert "--prefetch 8" in warning["problem"] and "40 s" in warning["problem"]


def test_a_remote_brokers_timeout_is_assumed_to_be_the_default():
    timeout = read_consumer_timeout("amqp://guest:guest@broker.example.invalid:5672/%2F")

    assert timeout.seconds == DEFAULT_CONSUMER_TIMEOUT_S and not timeout.known
    assert "default" in timeout.source


def test_a_worker_without_a_time_limit_stops_a_task_before_the_consumer_timeout(
    longer_consumer_timeout, node, unique_name
):
    worker = node.start_worker(unique_name, "--max-retries", "0", "--processes", "1")
    (task_id,) = node.run(
        "new-task", "--task", "sleep", "--args", "[600]", "--queue", unique_name, check=True
    ).stdout.split()

    (dead,) = wait_until(lambda: worker.events("task_dead_lettered"), timeout=120, message="the dead letter")
    assert worker.stop() == 0  # a channel the broker closed meanwhile is noticed and logged by then

    (defaulted,) = worker.events("time_limit_defaulted")
    assert defaulted["consumer_timeout_s"] == longer_consumer_timeout
    assert 0 < defaulted["time_limit_s"] < longer_consumer_timeout
    assert dead["task_id"] == task_id and "TimeLimitExceeded" in dead["error"]
    assert worker.events("delivery_acknowledgement_timed_out") == []
    (letter,) = node.drain(dead_letter_queue_name(unique_name))
    assert letter.message_id == task_id
    assert node.queue_state(unique_name).messages == 0  # acked, not put back by a closed channel


def test_a_channel_closed_for_an_acknowledgement_timeout_is_logged_by_that_cause(node, unique_name):
    # Each task fits its time limit, but the last of the prefetched ones waits unacknowledged
    # behind the others for longer than the consumer_timeout.
    worker = node.start_worker(unique_name, "--time-limit", "5", "--prefetch", "4", "--processes", "1")
    ids = set(
        node.run(
            "new-task", "--task", "sleep", "--args", "[3]", "--count", "4", "--queue", unique_name, check=True
        ).stdout.split()
    )

    (closed,) = wait_until(
        lambda: worker.events("delivery_acknowledgement_timed_out")[:1],
        timeout=90,
        message="the channel closed for an acknowledgement timeout",
    )
    wait_for_all(ids, [worker], timeout=90)

    assert "consumer_timeout" in closed["error"] and "PRECONDITION_FAILED" in closed["error"]
    assert succeeded_ids(worker) == ids
