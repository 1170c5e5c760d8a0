"""Broker restarts: publishers and workers reconnect by themselves and lose nothing.
Each test runs on an extra node of its own."""

import time

import pytest

from tests.fault_helpers import BackgroundSubmitter, NodeCommands, wait_for_all
from tests.helpers import wait_until

pytestmark = pytest.mark.slow
#: Workers must be consuming again this soon after the broker is back.
RESUME_WITHIN_S = 10.0


@pytest.fixture
def node(extra_broker):
    commands = NodeCommands(extra_broker.url)
    yield commands
    commands.stop_workers()


def consumers_on(node, queue):
    state = node.queue_state(queue)
    return state.consumers if state is not None else 0


def restart_by_stop_app(broker):
    broker.stop_app()
    time.sleep(2)  # down long enough for every connection to notice
    broker.start_app()


def restart_after_a_crash(broker):
    broker.kill()
    broker.start()


@pytest.mark.parametrize("restart", [restart_by_stop_app, restart_after_a_crash], ids=["stop_app", "kill"])
def test_a_broker_restart_mid_run_loses_none_of_1000_tasks(extra_broker, node, unique_name, restart):
    workers = [node.start_worker(unique_name, "--processes", "2", "--prefetch", "8") for _ in range(2)]
    submitter = BackgroundSubmitter(node.settings, unique_name, count=1000, rate=250, task="sleep",
                                    args=[0.002])
    submitter.start()
    wait_until(lambda: len(submitter.confirmed) >= 300, message="300 tasks confirmed")

    restart(extra_broker)
    back = time.monotonic()
    wait_until(lambda: consumers_on(node, unique_name) >= 4, RESUME_WITHIN_S, 0.2, "the workers to resume")
    resumed_after = time.monotonic() - back

    submitter.finish()
    wait_for_all(submitter.ids, workers)
    assert node.queue_state(unique_name).messages == 0
    assert all(w.events("connection_lost") for w in workers)  # the fault really hit them
    assert all(w.process.poll() is None for w in workers)
    print(f"workers resumed {resumed_after:.1f} s after the broker was back")
