"""What becomes of a settlement the broker would refuse: a result over its ``max_message_size``.

RabbitMQ refuses a message whose body is over its ``max_message_size`` by
closing the channel it came on, which requeues every delivery the channel
held: a worker that sent such a result again would loop. The worker learns
the limit from the refusal (see :class:`~rabbitry.common.errors.MessageRefused`),
and from then on checks each reply against it before sending: a result over
it is dead-lettered as :data:`RESULT_TOO_LARGE`, and its caller gets a small
failure reply saying so. These are the pure decisions; the connection thread
carries them out.
"""

import dataclasses

from rabbitry.common.errors import MessageError
from rabbitry.common.messages import TaskMessage
from rabbitry.common.replies import failure_reply
from rabbitry.common.transport.wire_limits import RABBITMQ_MAX_MESSAGE_SIZE
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.execution import ERROR_HEADER, REASON_HEADER, Disposition, dead_letter

#: The reason of a task dead-lettered because its result is too large for the broker to carry.
RESULT_TOO_LARGE = "result_too_large"
#: The limit assumed until the broker refuses a message: the most any RabbitMQ takes.
ASSUMED_MAX_MESSAGE_SIZE = RABBITMQ_MAX_MESSAGE_SIZE


def within_limit(disposition: Disposition, config: WorkerConfig, max_size: int) -> Disposition:
    """``disposition``, or what to do instead if its reply is over ``max_size`` bytes: dead-letter
    a task whose result is, and answer a dead letter's caller with the reason without the error."""
    reply = disposition.reply
    if reply is None or len(reply.body) <= max_size:
        return disposition
    delivery = disposition.delivery
    error = (
        f"ResultTooLarge: the reply is {len(reply.body)} bytes, more than the broker's "
        f"max_message_size of {max_size} bytes"
    )
    if disposition.publish is None:  # a success: its result cannot be sent
        return dead_letter(delivery, config, RESULT_TOO_LARGE, error, _task_name(delivery), reply.message_id)
    headers = disposition.own_headers or disposition.publish.headers or {}
    reason = str(headers.get(REASON_HEADER, RESULT_TOO_LARGE))
    told = f"{headers.get(ERROR_HEADER, '')} ({error}: the rest of the error is in the dead letter's headers)"
    return dataclasses.replace(disposition, reply=failure_reply(delivery, reply.message_id, reason, told))


def _task_name(delivery) -> str | None:
    try:
        return TaskMessage.from_delivery(delivery).task
    except MessageError:
        return None
