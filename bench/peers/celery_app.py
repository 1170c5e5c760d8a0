"""Celery peer (optional extra): no-op task, acks_late, no result backend, as in the anchor benchmark 3."""

from celery import Celery

from bench.benchlib import AMQP_URL, COUNTER_PATH, mark_executed

QUEUE = "bench.celery"

app = Celery("bench_celery", broker=AMQP_URL)
app.conf.update(
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop():
    mark_executed(COUNTER_PATH)
