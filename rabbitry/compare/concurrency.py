"""``rabbitry compare``'s concurrency experiment: every form on every workload, measured in one run.

The seed article's question, "compare the performance of synchronous and
asynchronous", asked of three workloads (no-op, CPU-bound, I/O-bound; see
:mod:`rabbitry.compare.tasks`) and of every form: the in-process forms of
:mod:`rabbitry.compare.forms`, with no broker, and rabbitry's worker with
processes and with coroutines (:mod:`rabbitry.compare.worker`), on the
in-process model and on RabbitMQ. Then the makespan of the I/O-bound
workload against concurrency, for the thread and coroutine forms. The
forms' figures are medians over ``repeat`` runs, each running every form
back to back; the makespans are measured once.
"""

import statistics
import time

from rabbitry.common.settings import BrokerSettings
from rabbitry.compare import worker as compare_worker
from rabbitry.compare.forms import COROUTINES, FORMS, PROCESSES, sweep
from rabbitry.compare.server import ANSWER_DELAY_S, SlowServer
from rabbitry.compare.tasks import spin, workloads

WORKLOADS = ("noop", "cpu", "io")
NO_BROKER, MODEL, RABBITMQ = "no broker", "in-process model", "RabbitMQ"


def at_a_time(kind: str, options: dict) -> tuple[int, str]:
    """How many tasks a form of ``kind`` runs at a time, and the words for it."""
    if kind == PROCESSES:
        return compare_worker.POOL_PROCESSES, f"{compare_worker.POOL_PROCESSES} processes"
    concurrency = options["concurrency"]
    return concurrency, f"{concurrency} {kind}" + (", 1 thread" if kind == COROUTINES else "")


def worker_forms(options: dict, model: BrokerSettings, rabbitmq: BrokerSettings | None, url: str) -> list[dict]:
    """rabbitry's worker forms on each side: label, side, what runs at a time, how to run it, or why not."""
    processes, concurrency = compare_worker.POOL_PROCESSES, options["concurrency"]
    forms = []
    for coroutines in (None, concurrency):
        label = f"rabbitry worker --processes {processes}" + (f" --concurrency {coroutines}" if coroutines else "")
        each = f" x {coroutines} coroutines" if coroutines else ""
        for side, settings in ((MODEL, model), (RABBITMQ, rabbitmq)):
            form = {
                "form": label,
                "runs_on": side,
                "at_a_time": processes * (coroutines or 1),
                "how": f"{processes} pool {'threads' if side == MODEL else 'processes'}{each}",
                "note": None,
            }
            if settings is None:
                form["note"] = "RabbitMQ not reachable"
            elif side == MODEL:
                form["run"] = lambda work, counts, c=coroutines: compare_worker.on_model(model, work, counts, c)
            else:
                form["run"] = lambda work, counts, c=coroutines, s=settings: compare_worker.on_rabbitmq(
                    s, url, work, counts, c
                )
            forms.append(form)
    return forms


def in_process_forms(options: dict) -> list[dict]:
    """The seed's forms with no broker, each with a way to run the workloads."""
    forms = []
    for label, (function, kind) in FORMS.items():
        count, how = at_a_time(kind, options)
        forms.append(
            {
                "form": label,
                "runs_on": NO_BROKER,
                "at_a_time": count,
                "how": how,
                "note": None,
                "run": lambda work, counts, f=function, c=count: {
                    name: f(workload, counts[name], c) for name, workload in work.items()
                },
            }
        )
    return forms


def cpu_task_ms(runs: int = 20) -> float:
    """The CPU-bound loop's own time in one thread, measured now: the median of ``runs``."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        spin()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def run_experiment(options: dict, model: BrokerSettings, rabbitmq: BrokerSettings | None, url: str) -> dict:
    """Every form on every workload, then the concurrency sweep: the report ``render`` and the plot read."""
    counts = {"noop": options["seed_tasks"], "cpu": options["cpu_tasks"], "io": options["io_tasks"]}
    forms = in_process_forms(options) + worker_forms(options, model, rabbitmq, url)
    with SlowServer() as server:
        work = workloads(server.port)
        runs: list[list[dict]] = [[] for _ in forms]
        for _ in range(options["repeat"]):
            for form, form_runs in zip(forms, runs, strict=True):
                if "run" in form:
                    seconds = form["run"](work, counts)
                    form_runs.append({name: counts[name] / seconds[name] for name in WORKLOADS})
        swept = sweep(work["io"], options["sweep_tasks"])
    rows = []
    for form, form_runs in zip(forms, runs, strict=True):
        rates = {
            name: round(statistics.median(r[name] for r in form_runs), 1) if form_runs else None for name in WORKLOADS
        }
        rows.append({key: value for key, value in form.items() if key != "run"} | {"tasks_per_s": rates})
    return {
        "tasks": counts,
        "cpu_task_ms": cpu_task_ms(),
        "io_answer_ms": round(ANSWER_DELAY_S * 1000),
        "forms": rows,
        "sweep": {
            "tasks": options["sweep_tasks"],
            "makespan_s": swept,
            "ideal_s": _ideal_makespans(options["sweep_tasks"], swept),
        },
    }


def _ideal_makespans(tasks: int, swept: dict) -> list[dict]:
    levels = [point["concurrency"] for point in next(iter(swept.values()))]
    return [{"concurrency": level, "makespan_s": round(-(-tasks // level) * ANSWER_DELAY_S, 4)} for level in levels]


def rate(report: dict, form: str, runs_on: str, workload: str) -> float | None:
    """The tasks/s of one form on one side and workload, from a report."""
    return next(
        row["tasks_per_s"][workload] for row in report["forms"] if row["form"] == form and row["runs_on"] == runs_on
    )
