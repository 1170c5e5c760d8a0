"""Tasks with options of their own, for tests/test_api.py (``--tasks tests.api_tasks``)."""

import time

from rabbitry import task


def _count_run(marker: str) -> int:
    """Note one run in the file ``marker``; return how many runs it holds now."""
    with open(marker, "a") as runs:
        runs.write("x")
    with open(marker) as runs:
        return len(runs.read())


@task(max_retries=0)
def fail_with_no_retry(marker: str):
    """Fail on every run; the task allows no retry."""
    raise RuntimeError(f"run {_count_run(marker)} fails on purpose")


@task(max_retries=1)
def raise_type_error_inside(marker: str):
    """A TypeError from inside the task: an ordinary failure, retried."""
    raise TypeError(f"run {_count_run(marker)} raises a TypeError of its own")


@task(time_limit=1, max_retries=0)
def outlive_the_time_limit(seconds: float) -> None:
    """Sleep past the task's own one-second time limit."""
    time.sleep(seconds)
