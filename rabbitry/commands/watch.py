"""``rabbitry status --watch``: queue depths and rates, sampled every second.

Rates are differences between successive samples. AMQP itself tells only a
queue's depth and consumers (exactly, at once), so rates in and out come
from RabbitMQ's management API (the ``rabbitmq_management`` plugin) when it
answers: its counts of messages published into and delivered from each
queue. Without it, the view shows depths, consumers and the net change per
second. The
broker refreshes those counts every ``collect_statistics_interval`` (5 s by
default), so with the default a rate moves in steps of that length.
"""

import dataclasses
import time

from rabbitry.common.amqp.management import ManagementApi
from rabbitry.common.topology import work_queue_names


@dataclasses.dataclass(frozen=True, slots=True)
class QueueSample:
    """One queue at one moment. ``published`` and ``delivered`` are running totals (None: unknown)."""

    queue: str
    at: float
    exists: bool
    messages: int = 0
    consumers: int = 0
    unacknowledged: int | None = None
    published: int | None = None
    delivered: int | None = None


def rates(previous: QueueSample | None, current: QueueSample) -> dict:
    """What ``current`` says per second since ``previous``: into, out of and net change of the queue."""
    row = {
        "queue": current.queue,
        "exists": current.exists,
        "messages": current.messages,
        "unacknowledged": current.unacknowledged,
        "consumers": current.consumers,
        "in_per_s": None,
        "out_per_s": None,
        "net_per_s": None,
    }
    if previous is None or not (previous.exists and current.exists) or current.at <= previous.at:
        return row
    elapsed = current.at - previous.at

    def per_second(before, now):
        # A count that went down was reset (the queue deleted and declared again): no rate this once.
        return None if before is None or now is None or now < before else round((now - before) / elapsed, 1)

    row["in_per_s"] = per_second(previous.published, current.published)
    row["out_per_s"] = per_second(previous.delivered, current.delivered)
    row["net_per_s"] = round((current.messages - previous.messages) / elapsed, 1)
    return row


class AmqpSampler:
    """Samples over an AMQP connection: depth and consumers (passive declares)."""

    source = "amqp"

    def __init__(self, connection):
        self._connection = connection

    def sample(self, queue: str) -> QueueSample:
        state = self._connection.queue_state(queue)
        now = time.monotonic()
        if state is None:
            return QueueSample(queue, now, False)
        return QueueSample(queue, now, True, state.messages, state.consumers)


class ManagementSampler(AmqpSampler):
    """Depth and consumers over AMQP, as they are now, and from RabbitMQ's management HTTP API the
    running counts of messages published and delivered, and the unacknowledged ones."""

    source = "management"

    def __init__(self, connection, api: ManagementApi):
        super().__init__(connection)
        self.api = api
        self.url = api.url

    @classmethod
    def for_broker(cls, connection, amqp_url: str, management_url: str | None) -> "ManagementSampler":
        """The sampler of the broker at ``amqp_url`` (see :meth:`ManagementApi.for_broker`)."""
        return cls(connection, ManagementApi.for_broker(amqp_url, management_url))

    def check(self) -> None:
        """Raise ManagementUnavailable (a BrokerUnavailable) unless the API answers."""
        self.api.check()

    def sample(self, queue: str) -> QueueSample:
        found = self.api.get(self.api.queue_path(queue))
        sample = super().sample(queue)
        if found is None or not sample.exists:
            return sample
        # A queue's counts appear with the broker's first statistics after it was declared.
        stats = found.get("message_stats") or {}
        return dataclasses.replace(
            sample,
            unacknowledged=found.get("messages_unacknowledged"),
            published=stats.get("publish", 0),
            delivered=stats.get("deliver_get", 0),
        )


class QueueWatch:
    """Successive samples of work queues (each with its side queues), turned into rows with rates."""

    def __init__(self, sampler, queues: tuple[str, ...]):
        self.sampler = sampler
        self.names = [name for queue in queues for name in work_queue_names(queue)]
        self._main = set(queues)
        self._previous: dict[str, QueueSample] = {}

    def rows(self) -> list[dict]:
        """One row per queue that exists (and per work queue asked for, existing or not)."""
        rows = []
        for name in self.names:
            current = self.sampler.sample(name)
            if current.exists or name in self._main:
                rows.append(rates(self._previous.get(name), current))
            self._previous[name] = current
        return rows


def render(rows: list[dict], source: str) -> str:
    """The rows as a table for a terminal."""
    width = max([len("queue"), *(len(row["queue"]) for row in rows)])
    header = (
        f"{'queue':<{width}}  {'messages':>9}  {'unacked':>8}  {'in/s':>8}  {'out/s':>8}  {'net/s':>8}  "
        f"{'consumers':>9}"
    )

    def cell(value, size):
        return f"{'-' if value is None else format(value, ','):>{size}}"

    lines = [header]
    for row in rows:
        if not row["exists"]:
            lines.append(f"{row['queue']:<{width}}  {'(none)':>9}")
            continue
        lines.append(
            f"{row['queue']:<{width}}  {row['messages']:>9,}  {cell(row['unacknowledged'], 8)}  "
            f"{cell(row['in_per_s'], 8)}  {cell(row['out_per_s'], 8)}  {cell(row['net_per_s'], 8)}  "
            f"{row['consumers']:>9}"
        )
    if source == "amqp":
        lines.append("(rates in and out need RabbitMQ's management plugin: showing the net change)")
    return "\n".join(lines)
