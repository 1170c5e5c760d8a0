"""Poison messages: 1,000 malformed or unknown-task bodies all end in the dead-letter
queue with their reason, while the worker keeps serving good tasks."""

from rabbitry.common.connect import connect
from rabbitry.common.messages import JSON_CONTENT_TYPE, TaskMessage
from rabbitry.common.topology import dead_letter_queue_name, work_queue
from rabbitry.common.transport.contract import OutgoingMessage
from tests.faults.helpers import wait_for_all
from tests.helpers import NodeCommands, wait_until

MALFORMED_BODIES = [
    (b"{not json", JSON_CONTENT_TYPE),
    (b"[1, 2]", JSON_CONTENT_TYPE),
    (b'{"args": []}', JSON_CONTENT_TYPE),  # no task
    (b'{"task": "echo", "attempt": -1}', JSON_CONTENT_TYPE),
    (b'{"v": 99, "task": "echo"}', JSON_CONTENT_TYPE),
    (b"\xff\xfe not utf-8", "text/plain"),
]


def poison(number: int, queue: str) -> tuple[OutgoingMessage, str]:
    """The ``number``-th poison message and the reason it must be dead-lettered for."""
    if number % 2:
        message = TaskMessage(f"no_such_task_{number}").to_outgoing(queue)
        message.message_id = f"poison-{number}"
        return message, "unknown_task"
    body, content_type = MALFORMED_BODIES[number // 2 % len(MALFORMED_BODIES)]
    return OutgoingMessage(queue, body, content_type=content_type, message_id=f"poison-{number}"), "malformed"


def test_1000_poison_messages_are_dead_lettered_with_reasons_and_good_tasks_still_run(extra_broker, unique_name):
    node = NodeCommands(extra_broker.url)
    worker = node.start_worker(unique_name, "--processes", "2")
    expected, good = {}, set()
    with connect(node.settings) as connection:
        connection.declare(work_queue(unique_name))
        for number in range(1000):
            message, reason = poison(number, unique_name)
            expected[message.message_id] = reason
            connection.publish(message, mandatory=True)
            if number % 10 == 0:
                task = TaskMessage("echo", [number])
                good.add(task.id)
                connection.publish(task.to_outgoing(unique_name), mandatory=True)
        assert connection.wait_for_confirms(30) == []

    wait_for_all(good, [worker])
    dlq = dead_letter_queue_name(unique_name)
    wait_until(lambda: node.queue_state(dlq).messages >= 1000, 60, 0.2, "1000 dead letters")
    letters = node.drain(dlq)

    reasons = {letter.message_id: letter.headers["x-rabbitry-reason"] for letter in letters}
    assert reasons == expected  # every one, by id, each with its reason
    assert all(letter.headers["x-rabbitry-error"] for letter in letters)
    assert node.queue_state(unique_name).messages == 0
    assert worker.process.poll() is None and worker.events("pool_process_died") == []
    node.stop_workers()
