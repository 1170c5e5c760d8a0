"""``rabbitry compare``: the same workloads on the in-process model and on RabbitMQ, side by side.

Rows: work-queue throughput with no-op tasks, fair-dispatch makespan
against the ideal, fan-out to N subscribers, and topic routing (which must
be identical on both sides); then the seed article's in-process forms on the
same no-op task, with no broker at all. ``--json`` prints it for machines.
These are the numbers behind the README's performance section.
"""

import json
import secrets
import statistics

import click

from rabbitry.common.broker import connect
from rabbitry.common.cli import RabbitryCommand
from rabbitry.common.errors import BrokerUnavailable, ExitCode
from rabbitry.common.settings import DEFAULT_URL, URL_ENVVAR, BrokerSettings
from rabbitry import compare_workloads as workloads

MODEL, RABBITMQ = "in-process model", "RabbitMQ"

NOTES = """
How: each timed workload runs through the same code on both sides; the clock runs from the first
publish to the last ack, with messages built beforehand. Work queue: every task is acked on its own;
"JSON tasks" are decoded as the worker decodes them, "not decoded" are found by their AMQP type.
Fair dispatch: every 4th task sleeps 0.2 s, the others 0.01 s; ideal = max(sum / 2, longest).
With --repeat, each repetition runs the two sides back to back; figures are medians, and a
speed-up is the median of the repetitions' own ratios.
Seed forms: {seed_tasks:,} no-op tasks each, no broker, pools started before the clock.
"""


def rabbitmq_settings(url: str) -> tuple[BrokerSettings | None, str]:
    """Settings for RabbitMQ at ``url`` if it answers, and a line saying whether it does."""
    settings = BrokerSettings.from_url(url, reconnect_for=0)
    try:
        connect(settings, "rabbitry-compare-probe").close()
    except BrokerUnavailable as error:
        return None, f"RabbitMQ: not reachable ({error}); its column stays empty"
    return settings, f"RabbitMQ: {settings.describe()}"


def timed_workloads(options: dict) -> dict:
    """The timed workloads: name -> (run it on some settings, the rate or time it is judged by)."""
    tasks, subscribers, messages = options["tasks"], options["subscribers"], options["messages"]
    return {
        "work_queue": (lambda settings: workloads.work_queue_throughput(settings, tasks), "tasks_per_s"),
        "work_queue_dispatch_only": (
            lambda settings: workloads.work_queue_throughput(settings, tasks, decode=False), "tasks_per_s"),
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
            speedups[name] = round(statistics.median(
                model[key] / rabbitmq[key] for model, rabbitmq in zip(runs[MODEL], runs[RABBITMQ])), 2)
    for side, settings in sides.items():
        results[side]["topic_routing"] = workloads.topic_routing(settings)
    return results, speedups


def build_rows(model: dict, rabbitmq: dict | None, speedups: dict, seed: dict, options: dict) -> list[dict]:
    """The comparison as rows: workload, unit, one figure per side, and the model's speed-up."""

    def row(workload, unit, figure, name=None, **extra):
        return {"workload": workload, "unit": unit, "model": figure(model),
                "rabbitmq": figure(rabbitmq) if rabbitmq else None, "model_vs_rabbitmq": speedups.get(name),
                **extra}

    tasks, subscribers, messages = options["tasks"], options["subscribers"], options["messages"]
    routing_same = rabbitmq is not None and model["topic_routing"]["routed"] == rabbitmq["topic_routing"]["routed"]
    rows = [
        row(f"work queue: {tasks:,} no-op JSON tasks, 2 consumers, prefetch 100", "tasks/s",
            lambda side: side["work_queue"]["tasks_per_s"], "work_queue"),
        row("work queue: same, not decoded (transport and dispatch)", "tasks/s",
            lambda side: side["work_queue_dispatch_only"]["tasks_per_s"], "work_queue_dispatch_only"),
        row("fair dispatch: 24 uneven tasks, 2 consumers, prefetch 1", "makespan / ideal",
            lambda side: side["fair_dispatch"]["makespan_over_ideal"]),
        row(f"fan-out: {messages:,} messages to {subscribers} subscribers", "deliveries/s",
            lambda side: side["fan_out"]["deliveries_per_s"], "fan_out"),
        row(f"topic routing: {model['topic_routing']['cases']} key pairs", "as topic_matches says",
            lambda side: side["topic_routing"]["agrees_with_topic_matches"],
            identical_on_both_sides=routing_same if rabbitmq else None),
    ]
    for form, rate in seed.items():
        rows.append({"workload": f"seed: {form}", "unit": "tasks/s",
                     "model": rate, "rabbitmq": None, "model_vs_rabbitmq": None})
    return rows


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render_table(rows: list[dict]) -> str:
    """The rows as an aligned text table."""
    header = ["workload", "unit", MODEL, RABBITMQ, "model vs RabbitMQ"]
    cells = [[r["workload"], r["unit"], _cell(r["model"]), _cell(r["rabbitmq"]),
              "" if r["model_vs_rabbitmq"] is None else f"{r['model_vs_rabbitmq']:,.1f}x"] for r in rows]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for line in cells:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
    return "\n".join(lines)


@click.command(cls=RabbitryCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar=URL_ENVVAR, default=DEFAULT_URL, show_default=True,
              help=f"The RabbitMQ to compare with. [env: {URL_ENVVAR}]")
@click.option("--tasks", type=click.IntRange(100), default=50000, show_default=True,
              help="No-op tasks in the work-queue workload.")
@click.option("--subscribers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Subscribers in the fan-out workload.")
@click.option("--messages", type=click.IntRange(10), default=5000, show_default=True,
              help="Messages in the fan-out workload.")
@click.option("--seed-tasks", type=click.IntRange(100), default=10000, show_default=True,
              help="No-op tasks for each of the seed's in-process forms.")
@click.option("--repeat", type=click.IntRange(1, 9), default=1, show_default=True,
              help="Runs of each timed workload; the median is shown.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def compare(url, tasks, subscribers, messages, seed_tasks, repeat, as_json):
    """Run the same workloads on the in-process model and on RabbitMQ, side by side."""
    options = {"tasks": tasks, "subscribers": subscribers, "messages": messages, "seed_tasks": seed_tasks,
               "repeat": repeat}
    settings, notice = rabbitmq_settings(url)
    click.echo(notice, err=True)
    sides = {MODEL: BrokerSettings.from_url(f"local://compare-{secrets.token_hex(3)}")}
    if settings:
        sides[RABBITMQ] = settings
    results, speedups = measure(sides, options)
    model, rabbitmq = results[MODEL], results.get(RABBITMQ)
    seed = {form: round(seed_tasks / statistics.median(run(seed_tasks) for _ in range(repeat)))
            for form, run in workloads.SEED_FORMS.items()}
    rows = build_rows(model, rabbitmq, speedups, seed, options)
    routing_ok = model["topic_routing"]["agrees_with_topic_matches"] and (
        rabbitmq is None or rows[4]["identical_on_both_sides"])
    if as_json:
        click.echo(json.dumps({"options": options, "rows": rows, "model": model, "rabbitmq": rabbitmq}))
    else:
        click.echo(render_table(rows))
        click.echo(NOTES.format(**options))
        if rabbitmq:
            click.echo(f"Topic routing identical on both sides: {'yes' if routing_ok else 'NO'}.")
    raise SystemExit(ExitCode.OK if routing_ok else ExitCode.FAILURE)
