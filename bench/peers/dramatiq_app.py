"""Dramatiq peer (optional extra): no-op actor, default middleware, as in the anchor benchmark 4."""

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench.benchlib import AMQP_URL, COUNTER_PATH, mark_executed

QUEUE = "bench_dramatiq"

broker = RabbitmqBroker(url=AMQP_URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop():
    mark_executed(COUNTER_PATH)
