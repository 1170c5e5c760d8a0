"""``--plot FILE`` of ``rabbitry compare`` and ``rabbitry demo``: their figures, drawn.

matplotlib is an optional extra (``pip install 'rabbitry[plot]'``), imported
only when a picture is asked for, with its Agg backend, which needs no
display. The file's suffix picks the format, PNG or SVG; it is checked
before anything runs, and a missing matplotlib is one line, after the
command has printed its tables.
"""

import os

import click

from rabbitry.common.errors import ExtraMissing, RabbitryError

FORMATS = {".png": "png", ".svg": "svg"}
WORKLOAD_TITLES = {"noop": "no-op", "cpu": "CPU-bound (~5 ms loop)", "io": "I/O-bound (50 ms server)"}


class PlotFailed(RabbitryError):
    """The picture could not be written."""


def check_plot_path(ctx, param, value: str | None) -> str | None:
    """A click callback: ``value`` must end in .png or .svg, in a folder that exists."""
    if value is None:
        return None
    suffix = os.path.splitext(value)[1].lower()
    if suffix not in FORMATS:
        raise click.BadParameter(
            f"{value!r} must end in .png or .svg (the suffix picks the format)", ctx=ctx, param=param
        )
    folder = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(folder):
        raise click.BadParameter(
            f"there is no folder {folder!r} to write {os.path.basename(value)!r} in", ctx=ctx, param=param
        )
    return value


#: The words of --plot in every command; each command then says what it draws.
PLOT_HELP = "Also draw a chart to FILE (.png or .svg; needs pip install 'rabbitry[plot]')"


def plot_option(what: str):
    """The ``--plot FILE`` option, drawing ``what``."""
    return click.option("--plot", metavar="FILE", callback=check_plot_path, default=None, help=f"{PLOT_HELP}: {what}.")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ExtraMissing("--plot needs matplotlib, which is not installed: pip install 'rabbitry[plot]'") from None
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: smaller, and searchable
    import matplotlib.pyplot as pyplot

    return pyplot


def _save(figure, path: str) -> None:
    file_format = FORMATS[os.path.splitext(path)[1].lower()]
    # No date in an SVG, so that a picture kept in docs/ changes only when its figures do.
    metadata = {"Date": None} if file_format == "svg" else {}
    try:
        figure.savefig(path, format=file_format, bbox_inches="tight", metadata=metadata)
    except OSError as error:
        raise PlotFailed(f"cannot write {path}: {error.strerror or error}") from None


def draw_compare(report: dict, path: str) -> None:
    """``rabbitry compare``'s concurrency experiment: tasks/s of each form per workload, and the
    I/O-bound makespan against concurrency."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(2, 2, figsize=(13, 9))
    measured = [row for row in report["forms"] if not row["note"]]
    labels = [f"{row['form']}\n{row['runs_on']}, {row['how']}" for row in measured]
    sides = list(dict.fromkeys(row["runs_on"] for row in report["forms"]))  # no broker, the model, RabbitMQ
    colours = [f"C{sides.index(row['runs_on'])}" for row in measured]
    for axis, workload in zip(axes.flat, WORKLOAD_TITLES, strict=False):  # 4 axes, 3 workloads: one is left empty
        rates = [row["tasks_per_s"][workload] for row in measured]
        axis.barh(range(len(rates)), rates, color=colours)
        axis.set_yticks(range(len(rates)), labels if workload != "cpu" else [""] * len(rates), fontsize=7)
        axis.invert_yaxis()
        axis.set_title(f"{WORKLOAD_TITLES[workload]}: tasks/s")
        for index, value in enumerate(rates):
            axis.annotate(f" {value:,.0f}", (value, index), va="center", fontsize=7)
        axis.margins(x=0.2)
        if workload == "noop":  # from thousands (processes) to a million (coroutines) a second
            axis.set_xscale("log")
    sweep, axis = report["sweep"], axes[1][1]
    for index, (form, points) in enumerate(sweep["makespan_s"].items()):
        axis.plot(
            [p["concurrency"] for p in points],
            [p["makespan_s"] for p in points],
            marker="o",
            label=form,
            color=f"C{4 + index}",
        )  # not the sides' colours of the bars
    ideal = sweep["ideal_s"]
    axis.plot(
        [p["concurrency"] for p in ideal],
        [p["makespan_s"] for p in ideal],
        linestyle="--",
        color="grey",
        label="ideal: ceil(tasks / concurrency) x 50 ms",
    )
    axis.set_xscale("log", base=2)
    axis.set_xticks([p["concurrency"] for p in ideal], [str(p["concurrency"]) for p in ideal])
    axis.set_yscale("log")
    axis.set_xlabel("concurrency (threads or coroutines)")
    axis.set_ylabel("makespan, s")
    axis.set_title(f"I/O-bound: makespan of {sweep['tasks']} tasks against concurrency")
    axis.legend(fontsize=8)
    figure.legend(
        handles=[pyplot.Rectangle((0, 0), 1, 1, color=f"C{i}") for i in range(len(sides))],
        labels=sides,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.965),
        ncol=len(sides),
        fontsize=8,
        frameon=False,
    )
    figure.suptitle("rabbitry compare: threads, processes, coroutines and rabbitry's worker", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    _save(figure, path)
    pyplot.close(figure)


def draw_timeline(timelines: dict[int, dict], path: str) -> None:
    """``rabbitry demo``'s fair dispatch: which task ran on which pool member, when, for each prefetch."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(len(timelines), 1, figsize=(10, 2.2 * len(timelines)), sharex=True, squeeze=False)
    for axis, (prefetch, tasks) in zip(axes[:, 0], sorted(timelines.items()), strict=True):
        # every member, the idle ones too: with a large prefetch one of them may get nothing
        members = sorted({str(i) for i in range(tasks["pool_size"])} | {run["pool"] for run in tasks["timeline"]})
        for run in tasks["timeline"]:
            row = members.index(run["pool"])
            axis.broken_barh(
                [(run["start_s"], run["end_s"] - run["start_s"])],
                (row - 0.4, 0.8),
                color="C3" if run["long"] else "C0",
                edgecolor="white",
            )
            axis.annotate(
                str(run["index"]),
                ((run["start_s"] + run["end_s"]) / 2, row),
                ha="center",
                va="center",
                fontsize=7,
                color="white",
            )
        axis.set_yticks(range(len(members)), [f"pool {member}" for member in members])
        axis.set_ylim(-0.6, len(members) - 0.4)
        axis.set_title(
            f"prefetch {prefetch}: makespan {tasks['makespan_s']:.2f} s against an ideal of "
            f"{tasks['ideal_s']:.2f} s (red: long tasks)",
            fontsize=9,
        )
    axes[-1, 0].set_xlabel("seconds since the first task started")
    figure.tight_layout()
    _save(figure, path)
    pyplot.close(figure)
