"""``rabbitry demo``: rabbitry's main story in one command.

Tasks go through a worker pool with fair dispatch, and log messages go
through fanout, direct and topic exchanges to subscribers, and a late
subscriber reads what it missed from the topic exchange's history
(``subscribe --since``); then a short summary says what happened. It runs on RabbitMQ when one answers at
``AMQP_URL``, and otherwise on the in-process model, saying which. Every
name it declares is its own (``rabbitry.demo.<run>.…``) and is deleted at
the end, so it never disturbs other users of the broker.
"""

import json
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field

import click
import structlog

from rabbitry import plots
from rabbitry.common.cli import RabbitryCommand, broker_options, json_option
from rabbitry.common.connect import connect, probe
from rabbitry.common.errors import BrokerUnavailable, ExitCode
from rabbitry.common.logconfig import configure_logging
from rabbitry.common.logs.history import retain
from rabbitry.common.messages import TaskMessage
from rabbitry.common.retention import Retention
from rabbitry.common.settings import LOCAL_URL, BrokerSettings
from rabbitry.common.topology import Exchange, dead_letter_queue_name, history_stream_name
from rabbitry.common.transport.routing import binding_matches
from rabbitry.producers.log_emitter import LogEmitter
from rabbitry.producers.submitter import TaskSubmitter
from rabbitry.subscribers.history_subscriber import HistorySubscriber
from rabbitry.subscribers.log_subscriber import LogSubscriber
from rabbitry.subscribers.since import parse_since
from rabbitry.tasks import task
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.registry import load_task_modules
from rabbitry.workers.threaded import ThreadedWorkerPool

#: Task lengths: every 4th task is long, as in the fair-dispatch benchmark.
LONG_TASK_S = 0.4
SHORT_TASK_S = 0.05
TASKS = 16
POOL_SIZE = 2
#: The prefetch ``--plot`` draws beside prefetch 1: a fixed one, where a member takes tasks ahead.
UNFAIR_PREFETCH = 16
#: How long the demo waits for its tasks or messages before it calls the run failed.
PATIENCE_S = 20.0

#: The log story: who subscribes to what, and what is emitted (the tutorials' examples).
SUBSCRIPTIONS: dict[str, dict[str, list[str]]] = {
    "fanout": {"screen": [], "archive": []},
    "direct": {"errors only": ["error"], "info and up": ["info", "warning", "error"]},
    "topic": {
        "kern.*": ["kern.*"],
        "*.critical": ["*.critical"],
        "kern.* *.critical": ["kern.*", "*.critical"],
        "#": ["#"],
    },
}
EMITTED = {
    "fanout": ["hello all", "deploy started"],
    "direct": ["info", "warning", "error", "debug"],
    "topic": ["kern.critical", "kern.info", "app.critical", "app.info", "auth.warning"],
}


class TaskRecorder:
    """What the demo's task saw: which pool member ran which task, and when."""

    def __init__(self):
        self.runs: list[dict] = []
        self._lock = threading.Lock()

    def record(self, index: int, seconds: float, started: float, ended: float) -> None:
        """Note one finished task and the pool member that ran it."""
        pool_member = structlog.contextvars.get_contextvars().get("pool_process")
        with self._lock:
            self.runs.append(
                {"index": index, "seconds": seconds, "pool": pool_member, "started": started, "ended": ended}
            )


recorder = TaskRecorder()


@task(name="demo.work")
def demo_work(index: int, seconds: float) -> float:
    """Work ``seconds`` seconds (sleeping, like the tutorial's dots) and record it."""
    started = time.monotonic()
    time.sleep(seconds)
    recorder.record(index, seconds, started, time.monotonic())
    return seconds


@dataclass
class DemoNames:
    """The names one demo run declares, unique to it."""

    run: str = field(default_factory=lambda: secrets.token_hex(3))

    @property
    def task_queue(self) -> str:
        """The run's work queue."""
        return f"rabbitry.demo.{self.run}.tasks"

    def exchange(self, exchange_type: str) -> Exchange:
        """The run's log exchange of ``exchange_type``."""
        return Exchange(f"rabbitry.demo.{self.run}.{exchange_type}", exchange_type)


def choose_broker(broker: str, settings: BrokerSettings) -> tuple[BrokerSettings, str]:
    """The settings to run on and a one-line notice saying which broker that is: with ``broker`` 'auto',
    RabbitMQ at ``settings`` if it answers, else the in-process model."""
    if settings.is_local:  # --broker local, or --url local://
        return settings, f"rabbitry demo: running on the in-process model ({settings.describe()})"
    try:
        settings = probe(settings, "rabbitry-demo-probe")
    except BrokerUnavailable as error:
        if broker == "amqp":
            raise
        return (
            BrokerSettings.from_url(LOCAL_URL),
            f"rabbitry demo: no RabbitMQ reachable ({error}); running on the in-process model (local://)",
        )
    return settings, f"rabbitry demo: running on RabbitMQ at {settings.describe()}"


def run_tasks(settings: BrokerSettings, names: DemoNames, prefetch: int = 1) -> dict:
    """Submit uneven tasks and one failing task; run them in a pool with ``prefetch`` (1: fair dispatch)."""
    config = WorkerConfig(
        settings=settings,
        queue=names.task_queue,
        queue_type="classic",
        prefetch=prefetch,
        processes=POOL_SIZE,
        max_retries=0,
        log_level="critical",
    )
    pool = ThreadedWorkerPool(config)
    durations = [LONG_TASK_S if i % 4 == 0 else SHORT_TASK_S for i in range(TASKS)]
    recorder.runs.clear()
    with TaskSubmitter(settings, names.task_queue, queue_type="classic") as submitter:
        for index, seconds in enumerate(durations):
            submitter.submit(TaskMessage("demo.work", args=[index, seconds]))
        submitter.submit(TaskMessage("fail", args=["the demo's failing task"]))
    outcome: dict[str, int] = {}
    watcher = threading.Thread(target=_stop_when_done, args=(pool, settings, names, outcome), daemon=True)
    watcher.start()
    pool.run()
    watcher.join()
    runs = recorder.runs
    first_start = min((r["started"] for r in runs), default=0.0)
    makespan = max(r["ended"] for r in runs) - first_start if runs else 0.0
    ideal = max(sum(durations) / POOL_SIZE, max(durations))
    members: dict[object, dict[str, float]] = {}
    for run in runs:
        member = members.setdefault(run["pool"], {"tasks": 0, "long_tasks": 0, "busy_s": 0.0})
        member["tasks"] += 1
        member["long_tasks"] += run["seconds"] == LONG_TASK_S
        member["busy_s"] = round(member["busy_s"] + run["ended"] - run["started"], 3)
    return {
        "queue": names.task_queue,
        "submitted": TASKS + 1,
        "succeeded": len(runs),
        "dead_lettered": outcome.get("dead_lettered", 0),
        "pool_size": POOL_SIZE,
        "prefetch": prefetch,
        "makespan_s": round(makespan, 3),
        "ideal_s": round(ideal, 3),
        "makespan_over_ideal": round(makespan / ideal, 3) if runs else None,
        "pool_members": {str(k): v for k, v in sorted(members.items(), key=lambda kv: str(kv[0]))},
        "timeline": [
            {
                "index": r["index"],
                "pool": str(r["pool"]),
                "long": r["seconds"] == LONG_TASK_S,
                "start_s": round(r["started"] - first_start, 4),
                "end_s": round(r["ended"] - first_start, 4),
            }
            for r in sorted(runs, key=lambda r: r["started"])
        ],
    }


def _stop_when_done(pool: ThreadedWorkerPool, settings: BrokerSettings, names: DemoNames, outcome: dict) -> None:
    """Stop the pool once every task ran and the failing one reached the dead-letter queue."""
    deadline = time.monotonic() + PATIENCE_S
    with connect(settings, "rabbitry-demo-watch") as connection:
        while time.monotonic() < deadline:
            state = connection.queue_state(dead_letter_queue_name(names.task_queue))
            outcome["dead_lettered"] = state.messages if state else 0
            if len(recorder.runs) >= TASKS and outcome["dead_lettered"] >= 1:
                break
            time.sleep(0.02)
    pool.stop()


def run_logs(settings: BrokerSettings, names: DemoNames) -> dict:
    """Subscribe to each log exchange, emit the tutorials' messages, and see who got what."""
    report: dict[str, dict[str, dict]] = {}
    with connect(settings, "rabbitry-demo-subscribers") as connection:
        inboxes: dict[tuple[str, str], list[str]] = {}
        for exchange_type, subscriptions in SUBSCRIPTIONS.items():
            for subscriber, keys in subscriptions.items():
                # LogSubscriber checks the keys and lays out its queue; the demo consumes them all
                # on one connection, so that every queue exists before anything is emitted.
                subscription = LogSubscriber(settings, names.exchange(exchange_type), keys)
                queue = connection.declare(subscription.topology())[""]
                received = inboxes[exchange_type, subscriber] = []
                connection.consume(queue, _receiver(connection, received), prefetch=100)
        # The topic exchange keeps its history, so that a subscriber who comes late can look back.
        retain(connection, names.exchange("topic"), Retention(max_age="1h"))
        unroutable = []
        for exchange_type, routing_keys in EMITTED.items():
            with LogEmitter(settings, names.exchange(exchange_type), app_id="rabbitry-demo") as emitter:
                for key in routing_keys:
                    emitter.emit(key if exchange_type != "fanout" else "", key)
                unroutable += [f"{exchange_type}:{f.message.routing_key}" for f in emitter.flush(10)]
        expected = {
            (kind, name): [
                key
                for key in EMITTED[kind]
                if any(binding_matches(kind, b, key) for b in SUBSCRIPTIONS[kind][name] or [""])
            ]
            for kind, name in inboxes
        }
        deadline = time.monotonic() + PATIENCE_S
        while any(len(inboxes[k]) < len(expected[k]) for k in inboxes) and time.monotonic() < deadline:
            connection.process_events(0.02)
        connection.process_events(0.05)  # anything extra would show up now
        for (exchange_type, subscriber), received in inboxes.items():
            report.setdefault(exchange_type, {})[subscriber] = {
                "binding_keys": SUBSCRIPTIONS[exchange_type][subscriber],
                "received": received,
                "as_expected": sorted(received) == sorted(expected[exchange_type, subscriber]),
            }
    return {
        "exchanges": report,
        "emitted": sum(len(v) for v in EMITTED.values()),
        "unroutable": unroutable,
        "history": replay_history(settings, names),
    }


def replay_history(settings: BrokerSettings, names: DemoNames) -> dict:
    """A late subscriber to ``kern.*``: ``subscribe --since 1m`` replays what it missed."""
    keys, exchange = LATE_SUBSCRIPTION, names.exchange("topic")
    expected = [key for key in EMITTED["topic"] if any(binding_matches("topic", b, key) for b in keys)]
    replayed = []
    subscriber = HistorySubscriber(settings, exchange, keys, start=parse_since("1m", time.time()))
    subscriber.run(
        lambda delivery: replayed.append(delivery.body.decode()), count=len(expected), idle_timeout=PATIENCE_S
    )
    return {"since": "1m", "binding_keys": keys, "replayed": replayed, "as_expected": replayed == expected}


#: The subscriber who comes after the messages were emitted, and reads them from the history.
LATE_SUBSCRIPTION = ["kern.*"]


def _receiver(connection, received: list[str]):
    def on_delivery(delivery):
        received.append(delivery.body.decode())
        connection.ack(delivery.delivery_tag)

    return on_delivery


def clean_up(settings: BrokerSettings, names: DemoNames) -> None:
    """Delete everything the run declared."""
    with connect(settings, "rabbitry-demo-cleanup") as connection:
        for queue in (names.task_queue, dead_letter_queue_name(names.task_queue)):
            connection.delete_queue(queue)
        connection.delete_queue(history_stream_name(names.exchange("topic").name))
        for exchange_type in SUBSCRIPTIONS:
            connection.delete_exchange(names.exchange(exchange_type).name)


def draw_fair_dispatch(settings: BrokerSettings, fair: dict, path: str) -> str:
    """Run the tasks again with a large prefetch, draw both timelines to ``path``, and say how it went."""
    names = DemoNames()
    try:
        hoarded = run_tasks(settings, names, prefetch=UNFAIR_PREFETCH)
    finally:
        clean_up(settings, names)
    plots.draw_timeline({1: fair, UNFAIR_PREFETCH: hoarded}, path)
    counts = ", ".join(f"pool {member} ran {figures['tasks']}" for member, figures in hoarded["pool_members"].items())
    return (
        f"With prefetch {UNFAIR_PREFETCH}: makespan {hoarded['makespan_s']:.2f} s against an ideal of "
        f"{hoarded['ideal_s']:.2f} s ({hoarded['makespan_over_ideal']}x; {counts}). Drawn to {path}."
    )


def print_summary(summary: dict) -> None:
    """The summary for a person: who ran and received what, and how fair the pool was."""
    tasks, logs = summary["tasks"], summary["logs"]
    echo = click.echo
    echo(
        f"\nTasks: {tasks['submitted']} submitted to {tasks['queue']}, "
        f"{tasks['pool_size']} pool threads, prefetch {tasks['prefetch']}"
    )
    for member, figures in tasks["pool_members"].items():
        echo(
            f"  pool {member}: {figures['tasks']:2d} tasks ({figures['long_tasks']} long), "
            f"busy {figures['busy_s']:.2f} s"
        )
    # Fair dispatch shows as a makespan close to the ideal; a busy machine can stretch it.
    verdict = (
        "fair: no pool thread sat idle while a task waited"
        if tasks["makespan_over_ideal"] <= 1.1
        else "slower than fair dispatch allows: is the machine busy?"
    )
    echo(
        f"  makespan {tasks['makespan_s']:.2f} s against an ideal of {tasks['ideal_s']:.2f} s "
        f"({tasks['makespan_over_ideal']}x): {verdict}"
    )
    echo(
        f"  {tasks['succeeded']} succeeded; {tasks['dead_lettered']} failing task dead-lettered "
        f"to {dead_letter_queue_name(tasks['queue'])}"
    )
    echo(f"\nLogs: {logs['emitted']} messages emitted")
    for exchange_type, subscribers in logs["exchanges"].items():
        echo(f"  {exchange_type}:")
        for subscriber, result in subscribers.items():
            mark = "ok" if result["as_expected"] else "UNEXPECTED"
            echo(
                f"    {subscriber:<18} got {len(result['received'])}: {', '.join(result['received']) or '-'}  [{mark}]"
            )
    history = logs["history"]
    echo(
        f"  history: a late subscriber to {' '.join(history['binding_keys'])} with --since {history['since']} "
        f"replayed {len(history['replayed'])}: {', '.join(history['replayed']) or '-'}"
        f"  [{'ok' if history['as_expected'] else 'UNEXPECTED'}]"
    )
    if logs["unroutable"]:
        echo(f"  unroutable (no queue bound, reported by the broker): {', '.join(logs['unroutable'])}")
    echo(f"\n{'Done' if summary['ok'] else 'FAILED'} in {summary['seconds']:.1f} s on {summary['broker']}.")


@click.command(cls=RabbitryCommand, context_settings={"help_option_names": ["-h", "--help"]})
@json_option(": the summary")
@click.option("--verbose", is_flag=True, help="Show the worker's log line for every task.")
@plots.plot_option(
    f"the fair-dispatch timeline, prefetch 1 against prefetch {UNFAIR_PREFETCH} (which runs the tasks once more)"
)
@broker_options(auto=True)
def demo(settings, broker, as_json, verbose, plot):
    """Run tasks through a worker pool and logs through three exchanges, then summarise."""
    configure_logging("auto", "info" if verbose else "critical", sys.stderr)
    started = time.monotonic()
    settings, notice = choose_broker(broker, settings)
    click.echo(notice, err=as_json)
    load_task_modules(())
    names = DemoNames()
    try:
        tasks = run_tasks(settings, names)
        logs = run_logs(settings, names)
    finally:
        clean_up(settings, names)
    ok = (
        tasks["succeeded"] == TASKS
        and tasks["dead_lettered"] == 1
        and all(r["as_expected"] for s in logs["exchanges"].values() for r in s.values())
        and logs["history"]["as_expected"]
    )
    summary = {
        "broker": "RabbitMQ" if not settings.is_local else "the in-process model",
        "ok": ok,
        "seconds": round(time.monotonic() - started, 2),
        "tasks": tasks,
        "logs": logs,
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        print_summary(summary)
    if plot:
        click.echo(draw_fair_dispatch(settings, tasks, plot), err=as_json)
    raise SystemExit(ExitCode.OK if ok else ExitCode.FAILURE)
