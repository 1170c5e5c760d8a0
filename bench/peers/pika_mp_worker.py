"""Raw pika + multiprocessing baseline worker, as in the peers' anchor benchmark 5.

One consumer (BlockingConnection, prefetch 100, manual ack) dispatches each
message to multiprocessing.Pool(2) with apply_async; the pool's result
thread acks through add_callback_threadsafe. Stops on SIGTERM.
"""

import argparse
import functools
import multiprocessing
import signal

import pika

from bench.benchlib import AMQP_URL, COUNTER_PATH, mark_executed

QUEUE = "bench.pikamp"


def noop_task(counter_path):
    mark_executed(counter_path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--procs", type=int, default=2)
    args = parser.parse_args()
    pool = multiprocessing.Pool(args.procs)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare(queue=QUEUE, durable=True)
    channel.basic_qos(prefetch_count=args.prefetch)

    def on_message(ch, method, _properties, _body):
        ack = functools.partial(ch.basic_ack, method.delivery_tag)
        pool.apply_async(noop_task, (COUNTER_PATH,), callback=lambda _r: connection.add_callback_threadsafe(ack))

    def on_term(_signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    channel.basic_consume(queue=QUEUE, on_message_callback=on_message)
    try:
        channel.start_consuming()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        pool.terminate()
        pool.join()


if __name__ == "__main__":
    main()
