"""Prometheus metrics of the producers, on a registry the application passes.

An application that already serves Prometheus metrics hands its registry to
:class:`SubmitterMetrics`, and the submitter to it::

    metrics = SubmitterMetrics(registry)        # prometheus_client's REGISTRY if None
    submitter = TaskSubmitter(settings, metrics=metrics)
    rabbitry.instrument(registry)               # or: the submitters behind task.delay()

Counted on the submitter's I/O thread as the broker answers: tasks
submitted, confirmed and refused (by why), and the time from ``submit()``
to the broker's confirm.
"""

#: Buckets of the confirm latency histogram, in seconds.
CONFIRM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class SubmitterMetrics:
    """The counters and histogram a :class:`~rabbitry.producers.submitter.TaskSubmitter` records into,
    labelled by work queue; one instance serves every submitter of a program."""

    def __init__(self, registry=None):
        from prometheus_client import REGISTRY, Counter, Histogram

        registry = REGISTRY if registry is None else registry
        self.submitted = Counter(
            "rabbitry_tasks_submitted", "Tasks handed to a submitter.", ["queue"], registry=registry
        )
        self.confirmed = Counter(
            "rabbitry_tasks_confirmed", "Tasks the broker confirmed.", ["queue"], registry=registry
        )
        self.refused = Counter(
            "rabbitry_tasks_refused", "Tasks the broker did not queue, by why.", ["queue", "reason"], registry=registry
        )
        self.confirm_latency = Histogram(
            "rabbitry_task_confirm_seconds",
            "From submit() to the broker's confirm.",
            ["queue"],
            buckets=CONFIRM_BUCKETS,
            registry=registry,
        )

    def for_queue(self, queue: str) -> "QueueMetrics":
        return QueueMetrics(self, queue)


class QueueMetrics:
    """A :class:`SubmitterMetrics`' children for one work queue, looked up once."""

    def __init__(self, metrics: SubmitterMetrics, queue: str):
        self._metrics, self.queue = metrics, queue
        self.submitted = metrics.submitted.labels(queue)
        self.confirmed = metrics.confirmed.labels(queue)
        self.confirm_latency = metrics.confirm_latency.labels(queue)

    def refused(self, reason: str) -> None:
        self._metrics.refused.labels(self.queue, reason).inc()
