"""What a person debugging a task sees: the traceback of a failing task, and of a task module
that does not import, readable on a console and as frames in JSON."""

import pytest

from rabbitry.common.errors import ExitCode
from tests.helpers import assert_one_line_error, json_lines, wait_until

FAILING_TASKS = """\
from rabbitry import task


def check_the_order(order):
    raise ValueError(f"order {{order}} has no lines")


@task(name={name!r}, max_retries=1)
def ship(order):
    check_the_order(order)
"""


def failing_tasks(folder, name: str) -> str:
    """A task module in ``folder`` whose task ``name`` raises, once retried; returns its path."""
    path = folder / "failing_tasks.py"
    path.write_text(FAILING_TASKS.format(name=name))
    return str(path)


def test_the_json_line_of_a_failing_task_carries_its_traceback_as_frames_of_the_tasks_file_and_functions(
    run, start_worker, work_queue_name, unique_name, tmp_path
):
    path = failing_tasks(tmp_path, unique_name)
    worker = start_worker(work_queue_name, "--tasks", "failing_tasks", "--processes", "1", cwd=str(tmp_path))

    run("new-task", "--task", unique_name, "--args", "[7]", "--queue", work_queue_name, check=True)

    wait_until(lambda: worker.events("task_dead_lettered"), message="the retry's failure")
    (failed,) = worker.events("task_failed")  # the first attempt, at warning level
    (dead,) = worker.events("task_dead_lettered")  # the second, at error level
    for line in (failed, dead):
        (exception,) = line["exception"]
        assert exception["exc_type"] == "ValueError" and exception["exc_value"] == "order 7 has no lines"
        ours = [(frame["filename"], frame["name"], frame["lineno"]) for frame in exception["frames"]]
        assert ours[-2:] == [(path, "ship", 10), (path, "check_the_order", 5)]
        assert all("locals" not in frame for frame in exception["frames"])  # a task's arguments stay out
    assert failed["level"] == "warning" and dead["level"] == "error"
    assert "task_traceback" not in worker.output()


def test_the_console_line_of_a_failing_task_shows_its_traceback_with_file_and_line(
    run, start_worker, work_queue_name, unique_name, tmp_path
):
    path = failing_tasks(tmp_path, unique_name)
    worker = start_worker(
        work_queue_name, "--tasks", "failing_tasks", "--processes", "1", "--log-format", "console", cwd=str(tmp_path)
    )

    run("new-task", "--task", unique_name, "--args", "[7]", "--queue", work_queue_name, check=True)

    wait_until(lambda: "task_dead_lettered" in worker.output(), message="the retry's failure")
    output = worker.output()
    failed = output[output.index("task_failed") :]
    assert "Traceback (most recent call last):" in failed
    assert f'File "{path}", line 10, in ship' in failed
    assert f'File "{path}", line 5, in check_the_order' in failed
    assert "ValueError: order 7 has no lines" in failed


@pytest.mark.parametrize(
    "source, error, line",
    [
        ("from rabbitry import task\n\n\nundefined_name.register()\n", "NameError: name 'undefined_name'", 4),
        ("import sys\n\nsys.exit(0)\n", "it called sys.exit(0) as it was imported", 3),
        ("import sys\n\nsys.exit()\n", "it called sys.exit(None) as it was imported", 3),
    ],
    ids=["name_error", "exit_0", "exit"],
)
def test_a_task_module_that_fails_or_exits_at_import_is_one_error_line_naming_its_file_and_line(
    run, work_queue_name, tmp_path, source, error, line
):
    (tmp_path / "broken_tasks.py").write_text(source)
    path = str(tmp_path / "broken_tasks.py")

    result = run(
        "worker", "--queue", work_queue_name, "--tasks", "broken_tasks", "--log-format", "json", cwd=str(tmp_path)
    )

    assert_one_line_error(result, ExitCode.USAGE, "broken_tasks", error, f"(at {path}, line {line})")
    (logged,) = [e for e in json_lines(result.stdout) if e["event"] == "task_module_failed"]
    (exception,) = logged["exception"]
    assert (exception["frames"][0]["filename"], exception["frames"][0]["lineno"]) == (path, line)
