"""Bare pika peers for bench_producers: a latency consumer and the tutorial's RPC server.

``latency QUEUE QUEUE_TYPE``: consumes QUEUE (prefetch 16, manual ack, as
rabbitry's worker does) and appends, for each message, the nanoseconds from
the ``time.monotonic_ns()`` in its body to the callback's entry, one per
line, to $BENCH_LATENCY.

``rpc QUEUE QUEUE_TYPE``: the shape of the tutorials' rpc_server.py
(prefetch 1): replies to ``reply_to`` with the request's ``correlation_id``,
then acks.

Both declare QUEUE as rabbitry declares a work queue, and stop on SIGTERM.
"""

import os
import signal
import sys
import time

import pika

from bench.benchlib import AMQP_URL


def main():
    role, queue, queue_type = sys.argv[1:4]
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": queue_type})
    signal.signal(signal.SIGTERM, lambda *_: channel.stop_consuming())
    if role == "latency":
        out = os.open(os.environ["BENCH_LATENCY"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def on_message(ch, method, _properties, body):
            started = time.monotonic_ns()
            os.write(out, b"%d\n" % (started - int(body)))
            ch.basic_ack(method.delivery_tag)

        channel.basic_qos(prefetch_count=16)
    else:

        def on_message(ch, method, properties, body):
            ch.basic_publish(
                "", properties.reply_to, body, pika.BasicProperties(correlation_id=properties.correlation_id)
            )
            ch.basic_ack(method.delivery_tag)

        channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue, on_message)
    channel.start_consuming()
    connection.close()


if __name__ == "__main__":
    main()
