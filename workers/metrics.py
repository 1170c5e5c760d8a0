"""The worker's Prometheus metrics, served by the supervisor for the whole pool.

Pool processes are separate processes, so the metrics use prometheus_client's
multiprocess mode: each process writes its values to files of its own (named
by its pid) in a folder the supervisor makes, and the supervisor's endpoint
adds them up when scraped. A pool process that dies leaves its files behind,
so its counts stay in the sums: a restart neither resets nor doubles a
counter. Its in-flight gauge is dropped (``livesum``) once the supervisor
marks it dead.

prometheus_client picks multiprocess mode when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``: :func:`enable_metrics` sets that before the
import, in the supervisor, before any pool process is forked. Without
``--metrics-port`` nothing is imported and every call is a no-op.

Each count is taken where its JSON log line is written (workers/execution.py),
so the scraped counters and the log lines agree exactly.
"""

import os
import shutil
import socket
import tempfile

import structlog

from rabbitry.common.errors import ConfigurationError

log = structlog.get_logger("rabbitry.worker")

#: Buckets of the task duration histogram, in seconds: from a no-op to a long task.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: The ``outcome`` label of ``rabbitry_tasks_total``.
SUCCEEDED, RETRIED, DEAD_LETTERED = "succeeded", "retried", "dead_lettered"
#: The addresses that listen on every interface of the machine, IPv4 and IPv6.
EVERY_INTERFACE = ("0.0.0.0", "::", "")


class NoMetrics:
    """What the worker records into when metrics are off: nothing, at the cost of a call."""

    def task_started(self) -> None:
        pass

    def task_ended(self) -> None:
        pass

    def task_ran(self, task: str, duration_s: float) -> None:
        pass

    def task_settled(self, task: str | None, outcome: str, reason: str = "") -> None:
        pass

    def connection_lost(self) -> None:
        pass

    def pool_process_restarted(self, why: str) -> None:
        pass


class WorkerMetrics(NoMetrics):
    """The worker's metrics, in prometheus_client's multiprocess mode (see the module's docstring)."""

    def __init__(self, queue: str):
        from prometheus_client import Counter, Gauge, Histogram  # after PROMETHEUS_MULTIPROC_DIR is set

        self.queue = queue
        self._tasks = Counter(
            "rabbitry_tasks",
            "Tasks settled, by task and outcome (and why, if dead-lettered).",
            ["queue", "task", "outcome", "reason"],
        )
        self._duration = Histogram(
            "rabbitry_task_duration_seconds",
            "How long each run of a task took.",
            ["queue", "task"],
            buckets=DURATION_BUCKETS,
        )
        self._in_flight = Gauge(
            "rabbitry_tasks_in_flight", "Tasks running now.", ["queue"], multiprocess_mode="livesum"
        ).labels(queue)
        self._connection_losses = Counter(
            "rabbitry_connection_losses", "Connections to the broker lost by pool processes.", ["queue"]
        ).labels(queue)
        self._restarts = Counter(
            "rabbitry_pool_process_restarts", "Pool processes started again after they ended, by why.", ["queue", "why"]
        )
        self._counters: dict[tuple, Counter] = {}  # (task, outcome, reason) -> its counter
        self._histograms: dict[str, Histogram] = {}  # task -> its duration histogram

    def task_started(self) -> None:
        self._in_flight.inc()

    def task_ended(self) -> None:
        self._in_flight.dec()

    def task_ran(self, task: str, duration_s: float) -> None:
        histogram = self._histograms.get(task)
        if histogram is None:
            histogram = self._histograms[task] = self._duration.labels(self.queue, task)
        histogram.observe(duration_s)

    def task_settled(self, task: str | None, outcome: str, reason: str = "") -> None:
        key = (task, outcome, reason)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self._tasks.labels(self.queue, task or "", outcome, reason)
        counter.inc()

    def connection_lost(self) -> None:
        self._connection_losses.inc()

    def pool_process_restarted(self, why: str) -> None:
        self._restarts.labels(self.queue, why).inc()


#: What the worker records into: :class:`NoMetrics` unless :func:`enable_metrics` was called.
#: Read it as ``metrics.recorder`` at each use: enabling metrics replaces it.
recorder: NoMetrics = NoMetrics()


#: The listening sockets of the endpoints this process serves, which no process forked from it keeps.
_listening: list[socket.socket] = []


def _close_inherited_endpoints() -> None:
    """In a process just forked (a pool process): close its copies of the endpoints' listening
    sockets. Kept, they would outlive a killed supervisor in pool processes still finishing their
    tasks: the port could not be bound again, and scrapes would wait, never answered, in a
    backlog nobody reads."""
    for listening in _listening:
        listening.close()
    _listening.clear()


os.register_at_fork(after_in_child=_close_inherited_endpoints)


def serves_every_interface(host: str) -> bool:
    """Whether an endpoint on ``host`` can be reached from every network this machine is on."""
    return host.strip("[]") in EVERY_INTERFACE


class MetricsServer:
    """The supervisor's side: the multiprocess folder, and the HTTP endpoint that sums it."""

    def __init__(self, folder: str, server, thread):
        self.folder = folder
        self._server, self._thread = server, thread
        _listening.append(server.socket)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def process_died(self, pid: int) -> None:
        """Drop a dead pool process's live gauges (its counters stay in the sums)."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.folder)

    def close(self) -> None:
        if self._server.socket in _listening:
            _listening.remove(self._server.socket)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        _remove_folder(self.folder)


def _remove_folder(folder: str) -> None:
    """Multiprocess mode off for later forks, and its files gone."""
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    shutil.rmtree(folder, ignore_errors=True)


def enable_metrics(queue: str, host: str, port: int, info: dict[str, str]) -> MetricsServer:
    """Turn metrics on for this process and the pool processes it forks from now on, and serve
    them on ``host:port`` (port 0: any free port). ``info`` labels ``rabbitry_worker_info``."""
    global recorder
    folder = tempfile.mkdtemp(prefix="rabbitry-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import InfoMetricFamily
    from prometheus_client.multiprocess import MultiProcessCollector

    class WorkerInfo:
        """``rabbitry_worker_info``: the supervisor's settings (Info cannot be multiprocess)."""

        def collect(self):
            family = InfoMetricFamily("rabbitry_worker", "The worker's settings.")
            family.add_metric([], info)
            yield family

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    registry.register(WorkerInfo())
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        _remove_folder(folder)
        raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {error.strerror or error}") from None
    recorder = WorkerMetrics(queue)
    serving = MetricsServer(folder, server, thread)
    log.info("metrics_serving", url=f"http://{host}:{serving.port}/metrics")
    if serves_every_interface(host):
        log.warning(
            "metrics_on_every_interface",
            host=host,
            port=serving.port,
            detail="anyone who can reach this machine can read the metrics (queue and task names); "
            "--metrics-host 127.0.0.1 keeps them to this machine",
        )
    return serving
