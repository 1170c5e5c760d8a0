"""Text that AMQP cannot carry in a header (lone surrogates from file names, control
characters, messages far over any limit) never keeps a task in a hot requeue loop:
every retry and dead letter is made encodable, or degraded to a bare letter."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.fault_tasks  # noqa: F401 - registers the tasks decoded here
from rabbitry.common.connect import connect
from rabbitry.common.messages import JSON_CONTENT_TYPE
from rabbitry.common.topology import dead_letter_queue_name, delay_level_names
from rabbitry.common.transport.contract import OutgoingMessage
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.execution import ERROR_HEADER, REASON_HEADER, decode, failure, header_text
from rabbitry.workers.ledger import CrashLedger
from rabbitry.workers.pool_process import PoolProcess
from tests.helpers import wait_until

TASKS = ("--tasks", "tests.fault_tasks")
MAX_RETRIES = 3

#: Any code point, lone surrogates and control characters included.
ANY_CHARACTER = st.characters(exclude_categories=())
ANY_TEXT = st.one_of(st.text(ANY_CHARACTER, max_size=50), st.text(ANY_CHARACTER, min_size=900, max_size=1500))


@given(st.text(ANY_CHARACTER, max_size=3000), st.integers(1, 2000))
def test_header_text_is_always_utf8_within_its_limit(text, limit):
    made = header_text(text, limit)

    assert len(made.encode()) <= limit
    if len(text.encode("utf-8", "surrogatepass")) <= limit and text.encode("utf-8", "ignore") == text.encode(
        "utf-8", "surrogatepass"
    ):
        assert made == text  # text that fits and is UTF-8 already is left alone


@pytest.fixture(scope="module")
def settling(_extra_broker_started):
    """A pool process's connection thread on a real connection, and the queues it settles into."""
    broker = _extra_broker_started
    config = WorkerConfig(
        settings=broker.settings(),
        queue="unencodable",
        queue_type="classic",
        max_retries=MAX_RETRIES,
        task_modules=("tests.fault_tasks",),
    )
    connection_thread = PoolProcess(config, 0, stop=None, ledger=CrashLedger(1)).connection_thread
    with connect(config.settings) as connection:
        connection.declare(config.topology)
        connection_thread.use(connection)
        yield connection_thread, connection
        for name in [config.queue, dead_letter_queue_name(config.queue)]:
            connection.delete_queue(name)


def _letters_sent(connection, config):
    queues = [dead_letter_queue_name(config.queue), *delay_level_names()]  # the node is this module's alone
    letters = []
    for queue in queues:
        while (letter := connection.get(queue)) is not None:
            letters.append((queue, letter))
            connection.ack(letter.delivery_tag)
    return letters


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    error=ANY_TEXT, args=st.lists(ANY_TEXT, max_size=3), attempt=st.integers(0, MAX_RETRIES), retryable=st.booleans()
)
def test_any_error_and_arguments_settle_once_and_leave_the_work_queue(settling, error, args, attempt, retryable):
    connection_thread, connection = settling
    config = connection_thread.config
    body = json.dumps({"task": "take_any_arguments", "args": args, "attempt": attempt})  # \ud800 travels escaped
    connection.publish(OutgoingMessage(config.queue, body.encode(), content_type=JSON_CONTENT_TYPE))
    assert not connection.wait_for_confirms(10)
    delivery = wait_until(lambda: connection.get(config.queue), message="the task")
    message, _task, rejected = decode(delivery, config)
    assert rejected is None

    connection_thread.publish_then_ack(failure(delivery, message, config, f"RuntimeError: {error}", retryable))

    assert connection.queue_state(config.queue).messages == 0  # acked, not requeued to fail again
    ((queue, letter),) = _letters_sent(connection, config)
    assert letter.message_id == delivery.message_id
    # Arguments with a lone surrogate came in escaped in JSON but cannot be encoded to go out again.
    resendable = all(text.encode("utf-8", "replace") == text.encode("utf-8", "surrogatepass") for text in args)
    retried = retryable and attempt < MAX_RETRIES
    sent, said = letter.headers[ERROR_HEADER], header_text(f"RuntimeError: {error}")  # escaped, cut at the limit
    if retried and resendable:
        assert queue in delay_level_names() and sent == said
    elif retried:  # dead-lettered instead, the error followed by why, all cut at the limit
        assert queue == dead_letter_queue_name(config.queue) and letter.headers[REASON_HEADER] == "not_retryable"
        assert sent.startswith(header_text(f"RuntimeError: {error} (cannot be retried: "))
    else:
        assert queue == dead_letter_queue_name(config.queue) and sent == said


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_an_error_naming_a_file_that_is_not_utf8_is_retried_then_dead_lettered_once(node, unique_name, queue_type):
    worker = node.start_worker(
        unique_name, "--processes", "1", "--queue-type", queue_type, "--max-retries", "1", *TASKS
    )
    (task_id,) = node.run(
        "new-task",
        "--task",
        "fail_on_a_file_name_that_is_not_utf8_then_retry",
        "--queue",
        unique_name,
        "--queue-type",
        queue_type,
        check=True,
    ).stdout.split()

    (dead,) = wait_until(lambda: worker.events("task_dead_lettered"), message="the dead letter")
    (letter,) = wait_until(lambda: node.drain(dead_letter_queue_name(unique_name)), message="the letter")

    assert dead["task_id"] == task_id and dead["reason"] == "retries_exhausted"
    assert len(worker.events("task_failed")) == 1  # one retry, not thousands of runs
    assert letter.message_id == task_id
    assert letter.headers[ERROR_HEADER] == "RuntimeError: cannot process /data/in-\\udcff"


def test_arguments_that_cannot_be_sent_again_are_dead_lettered_once_with_their_error(node, unique_name):
    worker = node.start_worker(unique_name, "--processes", "1", *TASKS)
    body = b'{"task": "fail_permanently", "args": ["\\ud800"], "attempt": 3}'
    with connect(node.settings) as connection:
        connection.publish(OutgoingMessage(unique_name, body, content_type=JSON_CONTENT_TYPE, message_id="surrogate"))
        assert not connection.wait_for_confirms(10)

    (letter,) = wait_until(lambda: node.drain(dead_letter_queue_name(unique_name)), message="the letter")

    assert letter.message_id == "surrogate" and letter.body == body
    assert letter.headers[REASON_HEADER] == "not_retryable"
    assert letter.headers[ERROR_HEADER] == "PermanentError: \\ud800"
    assert len(worker.events("task_dead_lettered")) == 1
