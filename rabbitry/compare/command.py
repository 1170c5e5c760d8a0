"""``rabbitry compare``: the same workloads on the in-process model and on RabbitMQ, side by side.

Rows: work-queue throughput with no-op tasks, fair-dispatch makespan
against the ideal, fan-out to N subscribers, and topic routing (which must
be identical on both sides). Then the seed article's experiment
(:mod:`rabbitry.compare.concurrency`): no-op, CPU-bound and I/O-bound tasks
through threads, processes, coroutines and rabbitry's worker, and the I/O
makespan against concurrency. ``--json`` prints it for machines, ``--plot``
draws it. These are the numbers behind the README's performance section.
"""

import json
import secrets
import statistics
import sys

import click

from rabbitry import plots
from rabbitry.common.cli import RabbitryCommand, broker_options, json_option
from rabbitry.common.connect import probe
from rabbitry.common.errors import BrokerUnavailable, ExitCode
from rabbitry.common.logconfig import configure_logging
from rabbitry.common.settings import BrokerSettings
from rabbitry.compare import concurrency as compare_concurrency
from rabbitry.compare import workloads

MODEL, RABBITMQ = "in-process model", "RabbitMQ"

NOTES = """
How: each timed workload runs through the same code on both sides; the clock runs from the first
publish to the last ack, with messages built beforehand. Work queue: every task is acked on its own;
"JSON tasks" are decoded as the worker decodes them, "not decoded" are found by their AMQP type.
Fair dispatch: every 4th task sleeps 0.2 s, the others 0.01 s; ideal = max(sum / 2, longest).
With --repeat, each repetition runs the two sides back to back; figures are medians, and a
speed-up is the median of the repetitions' own ratios.
Forms: {seed_tasks:,} no-op, {cpu_tasks:,} CPU-bound and {io_tasks:,} I/O-bound tasks each, pools and workers
started before the clock; a worker's clock runs from the first submit to the last execution.
CPU-bound: a pure-Python loop, {cpu_task_ms} ms alone in one thread (measured now). I/O-bound: one request
to a local TCP server that answers after {io_answer_ms} ms. Makespans: {sweep_tasks} I/O-bound tasks;
ideal = ceil(tasks / concurrency) x {io_answer_ms} ms.
"""


def rabbitmq_settings(settings: BrokerSettings) -> tuple[BrokerSettings | None, str]:
    """``settings`` if the RabbitMQ they name answers, and a line saying whether it does."""
    try:
        settings = probe(settings, "rabbitry-compare-probe")
    except BrokerUnavailable as error:
        return None, f"RabbitMQ: not reachable ({error}); its column stays empty"
    return settings, f"RabbitMQ: {settings.describe()}"


def timed_workloads(options: dict) -> dict:
    """The timed workloads: name -> (run it on some settings, the rate or time it is judged by)."""
    tasks, subscribers, messages = options["tasks"], options["subscribers"], options["messages"]
    return {
        "work_queue": (lambda settings: workloads.work_queue_throughput(settings, tasks), "tasks_per_s"),
        "work_queue_dispatch_only": (
            lambda settings: workloads.work_queue_throughput(settings, tasks, decode=False),
            "tasks_per_s",
        ),
        "fair_dispatch": (workloads.fair_dispatch, "makespan_s"),
        "fan_out": (lambda settings: workloads.fan_out(settings, subscribers, messages), "messages_per_s"),
    }


def measure(sides: dict[str, BrokerSettings], options: dict) -> tuple[dict, dict]:
    """Every workload on every side: the median run of each, and the model's speed-ups.

    Each repetition runs the sides back to back, and a speed-up is the median
    of the repetitions' ratios, so that a slow spell on a shared machine
    lands on both sides of a ratio rather than on one.
    """
    results: dict[str, dict] = {side: {} for side in sides}
    speedups = {}
    for name, (run, key) in timed_workloads(options).items():
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        for _ in range(options["repeat"]):
            for side, settings in sides.items():
                runs[side].append(run(settings))
        for side, side_runs in runs.items():
            results[side][name] = sorted(side_runs, key=lambda result: result[key])[len(side_runs) // 2]
        if RABBITMQ in runs and key.endswith("_per_s"):
            speedups[name] = round(
                statistics.median(
                    model[key] / rabbitmq[key] for model, rabbitmq in zip(runs[MODEL], runs[RABBITMQ], strict=True)
                ),
                2,
            )
    for side, settings in sides.items():
        results[side]["topic_routing"] = workloads.topic_routing(settings)
    return results, speedups


def build_rows(model: dict, rabbitmq: dict | None, speedups: dict, options: dict) -> list[dict]:
    """The comparison as rows: workload, unit, one figure per side, and the model's speed-up."""

    def row(workload, unit, figure, name=None, **extra):
        return {
            "workload": workload,
            "unit": unit,
            "model": figure(model),
            "rabbitmq": figure(rabbitmq) if rabbitmq else None,
            "model_vs_rabbitmq": speedups.get(name),
            **extra,
        }

    tasks, subscribers, messages = options["tasks"], options["subscribers"], options["messages"]
    routing_same = rabbitmq is not None and model["topic_routing"]["routed"] == rabbitmq["topic_routing"]["routed"]
    return [
        row(
            f"work queue: {tasks:,} no-op JSON tasks, 2 consumers, prefetch 100",
            "tasks/s",
            lambda side: side["work_queue"]["tasks_per_s"],
            "work_queue",
        ),
        row(
            "work queue: same, not decoded (transport and dispatch)",
            "tasks/s",
            lambda side: side["work_queue_dispatch_only"]["tasks_per_s"],
            "work_queue_dispatch_only",
        ),
        row(
            "fair dispatch: 24 uneven tasks, 2 consumers, prefetch 1",
            "makespan / ideal",
            lambda side: side["fair_dispatch"]["makespan_over_ideal"],
        ),
        row(
            f"fan-out: {messages:,} messages to {subscribers} subscribers",
            "deliveries/s",
            lambda side: side["fan_out"]["deliveries_per_s"],
            "fan_out",
        ),
        row(
            f"topic routing: {model['topic_routing']['cases']} key pairs",
            "as topic_matches says",
            lambda side: side["topic_routing"]["agrees_with_topic_matches"],
            identical_on_both_sides=routing_same if rabbitmq else None,
        ),
    ]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def aligned(header: list[str], cells: list[list[str]], text_columns: int) -> str:
    """An aligned text table: the first ``text_columns`` columns to the left, figures to the right."""
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]

    def line(values):
        return "  ".join(
            v.ljust(w) if i < text_columns else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, cells)])


def render_table(rows: list[dict]) -> str:
    """The rows as an aligned text table."""
    header = ["workload", "unit", MODEL, RABBITMQ, "model vs RabbitMQ"]
    cells = [
        [
            r["workload"],
            r["unit"],
            _cell(r["model"]),
            _cell(r["rabbitmq"]),
            "" if r["model_vs_rabbitmq"] is None else f"{r['model_vs_rabbitmq']:,.1f}x",
        ]
        for r in rows
    ]
    return aligned(header, cells, 2)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render_forms(report: dict) -> str:
    """The concurrency experiment as two tables: tasks/s of every form, and the I/O makespans."""
    header = ["form", "runs on", "at a time", "no-op tasks/s", "CPU-bound tasks/s", "I/O-bound tasks/s", "note"]
    cells = [
        [
            row["form"],
            row["runs_on"],
            row["how"],
            *(_rate(row["tasks_per_s"][w]) for w in compare_concurrency.WORKLOADS),
            row["note"] or "",
        ]
        for row in report["forms"]
    ]
    sweep = report["sweep"]
    forms = list(sweep["makespan_s"])
    sweep_header = ["concurrency", *(f"{form} makespan s" for form in forms), "ideal s"]
    sweep_cells = [
        [
            str(ideal["concurrency"]),
            *(f"{sweep['makespan_s'][form][i]['makespan_s']:.3f}" for form in forms),
            f"{ideal['makespan_s']:.3f}",
        ]
        for i, ideal in enumerate(sweep["ideal_s"])
    ]
    return f"{aligned(header, cells, 3)}\n\n{aligned(sweep_header, sweep_cells, 0)}"


@click.command(cls=RabbitryCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--tasks",
    type=click.IntRange(100),
    default=50000,
    show_default=True,
    help="No-op tasks in the work-queue workload.",
)
@click.option(
    "--subscribers",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Subscribers in the fan-out workload.",
)
@click.option(
    "--messages", type=click.IntRange(10), default=5000, show_default=True, help="Messages in the fan-out workload."
)
@click.option(
    "--seed-tasks",
    type=click.IntRange(100),
    default=10000,
    show_default=True,
    help="No-op tasks for each concurrency form.",
)
@click.option(
    "--cpu-tasks",
    type=click.IntRange(10),
    default=400,
    show_default=True,
    help="CPU-bound tasks (a ~5 ms loop) for each concurrency form.",
)
@click.option(
    "--io-tasks",
    type=click.IntRange(10),
    default=160,
    show_default=True,
    help="I/O-bound tasks (a 50 ms request to a local server) for each concurrency form.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=16,
    show_default=True,
    help="Threads and coroutines of the thread and coroutine forms, and coroutines per pool process "
    "of worker --concurrency.",
)
@click.option(
    "--sweep-tasks",
    type=click.IntRange(1, 10000),
    default=64,
    show_default=True,
    help="I/O-bound tasks whose makespan is measured at concurrency 1, 2, 4, ... 64.",
)
@click.option(
    "--repeat",
    type=click.IntRange(1, 9),
    default=1,
    show_default=True,
    help="Runs of each timed workload; the median is shown.",
)
@json_option()
@plots.plot_option("throughput per form and workload, and the I/O makespan against concurrency")
@broker_options
def compare(
    settings,
    tasks,
    subscribers,
    messages,
    seed_tasks,
    cpu_tasks,
    io_tasks,
    concurrency,
    sweep_tasks,
    repeat,
    as_json,
    plot,
):
    """Run the same workloads on the in-process model and on RabbitMQ, side by side; then threads,
    processes, coroutines and rabbitry's worker on no-op, CPU-bound and I/O-bound tasks."""
    if settings.is_local:  # the model beside itself would tell nothing, and its worker rows would wait in vain
        raise click.UsageError(
            "compare runs the in-process model beside RabbitMQ: give a RabbitMQ --url, not the in-process model itself"
        )
    options = {
        "tasks": tasks,
        "subscribers": subscribers,
        "messages": messages,
        "seed_tasks": seed_tasks,
        "cpu_tasks": cpu_tasks,
        "io_tasks": io_tasks,
        "concurrency": concurrency,
        "sweep_tasks": sweep_tasks,
        "repeat": repeat,
    }
    configure_logging("auto", "critical", sys.stderr)  # the in-process worker's task lines would drown the table
    url = ",".join(settings.urls)  # for the worker command, a process of its own
    settings, notice = rabbitmq_settings(settings)
    click.echo(notice, err=True)
    sides = {MODEL: BrokerSettings.from_url(f"local://compare-{secrets.token_hex(3)}")}
    if settings:
        sides[RABBITMQ] = settings
    results, speedups = measure(sides, options)
    model, rabbitmq = results[MODEL], results.get(RABBITMQ)
    forms = compare_concurrency.run_experiment(options, sides[MODEL], settings, url)
    rows = build_rows(model, rabbitmq, speedups, options)
    routing_ok = model["topic_routing"]["agrees_with_topic_matches"] and (
        rabbitmq is None or rows[4]["identical_on_both_sides"]
    )
    if as_json:
        click.echo(
            json.dumps({"options": options, "rows": rows, "model": model, "rabbitmq": rabbitmq, "concurrency": forms})
        )
    else:
        click.echo(render_table(rows))
        click.echo()
        click.echo(render_forms(forms))
        click.echo(NOTES.format(**options, cpu_task_ms=forms["cpu_task_ms"], io_answer_ms=forms["io_answer_ms"]))
        if rabbitmq:
            click.echo(f"Topic routing identical on both sides: {'yes' if routing_ok else 'NO'}.")
    if plot:
        plots.draw_compare(forms, plot)
        click.echo(f"Drawn to {plot}.", err=True)
    raise SystemExit(ExitCode.OK if routing_ok else ExitCode.FAILURE)
