"""What the broker refuses: a result larger than its ``max_message_size`` is dead-lettered with
its reason and its caller told, and the worker goes on consuming. Runs on an extra node whose
``max_message_size`` the test lowers, and puts back."""

import pytest

from rabbitry.common.errors import ExitCode
from rabbitry.common.topology import dead_letter_queue_name
from rabbitry.workers.broker_limits import RESULT_TOO_LARGE
from rabbitry.workers.execution import REASON_HEADER
from tests.helpers import json_lines, wait_until

TASKS = ("--tasks", "tests.refusal_tasks")
MAX_MESSAGE_SIZE = 8 * 1024 * 1024


@pytest.fixture
def small_max_message_size(extra_broker):
    """The node's max_message_size lowered to 8 MiB, for channels opened from now on."""
    was = extra_broker.ctl("eval", "application:get_env(rabbit, max_message_size).").strip()
    extra_broker.ctl("eval", f"application:set_env(rabbit, max_message_size, {MAX_MESSAGE_SIZE}).")
    yield MAX_MESSAGE_SIZE
    if was.startswith("{ok,"):
        extra_broker.ctl("eval", f"application:set_env(rabbit, max_message_size, {was[4:-1]}).")
    else:
        extra_broker.ctl("eval", "application:unset_env(rabbit, max_message_size).")


def test_a_result_over_the_brokers_max_message_size_is_dead_lettered_and_its_caller_told(
    node, unique_name, small_max_message_size
):
    worker = node.start_worker(unique_name, "--processes", "2", *TASKS)

    too_large = node.run(
        "new-task", "--task", "text_of", "--args", "[10000000]", "--wait", "--timeout", "60", "--queue", unique_name
    )
    after = node.run(
        "new-task", "--task", "echo", "--args", '["after"]', "--wait", "--timeout", "60", "--queue", unique_name
    )

    assert too_large.returncode == ExitCode.FAILURE, too_large.stderr
    [told] = json_lines(too_large.stdout)
    assert (told["status"], told["reason"]) == ("failed", RESULT_TOO_LARGE)
    assert f"max_message_size of {small_max_message_size} bytes" in told["error"]
    (letter,) = wait_until(lambda: node.drain(dead_letter_queue_name(unique_name)), message="the dead letter")
    assert letter.message_id == told["id"] and letter.headers[REASON_HEADER] == RESULT_TOO_LARGE
    assert [event["reason"] for event in worker.events("task_dead_lettered")] == [RESULT_TOO_LARGE]  # not looped
    assert worker.events("message_refused")  # the closed channel was noticed
    assert after.returncode == ExitCode.OK, after.stderr
    assert [line["result"] for line in json_lines(after.stdout)] == [["after"]]
    worker.wait_for_consumers(node.settings, 2)  # both pool processes consume still
    assert node.queue_state(unique_name).messages == 0
