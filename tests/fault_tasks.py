"""Tasks that misbehave on purpose, for the fault-injection tests (``--tasks tests.fault_tasks``)."""

import os
import signal
import time

from rabbitry.tasks import task


class PermanentError(Exception):
    """An error retrying cannot fix."""


@task
def kill_my_process():
    """Die as a segfault or the OOM killer would end the process: SIGKILL, no clean-up."""
    os.kill(os.getpid(), signal.SIGKILL)


@task
def kill_my_process_once(marker: str) -> str:
    """SIGKILL the process the first time (leaving ``marker`` behind), succeed after."""
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


@task(dont_retry=(PermanentError,))
def fail_permanently(message: str = "cannot work"):
    """Raise an error the task declares not retryable."""
    raise PermanentError(message)


@task
def fail_until(marker: str, failures: int) -> int:
    """Fail the first ``failures`` runs (counted in ``marker``), then succeed."""
    with open(marker, "a+") as runs:
        runs.seek(0)
        done = len(runs.read())
        runs.write("x")
    if done < failures:
        raise RuntimeError(f"run {done + 1} fails on purpose")
    return done


@task(dont_retry=(PermanentError,))
def fail_on_a_file_name_that_is_not_utf8():
    """Raise an error naming a file whose name is not UTF-8, as ``os.listdir`` hands it over."""
    raise PermanentError(f"cannot process {os.fsdecode(b'/data/in-' + bytes([0xFF]))}")


@task
def fail_on_a_file_name_that_is_not_utf8_then_retry():
    """As above, but retryable: the retry carries the error too."""
    raise RuntimeError(f"cannot process {os.fsdecode(b'/data/in-' + bytes([0xFF]))}")


@task
def take_any_arguments(*args, **kwargs):
    """Accept whatever it is given (tests that decide the outcome themselves)."""


@task
def hold_until_released(folder: str) -> str:
    """Leave ``started`` in ``folder``, then block its thread until a file ``release`` appears there."""
    open(os.path.join(folder, "started"), "w").close()
    while not os.path.exists(os.path.join(folder, "release")):
        time.sleep(0.05)
    return "released"
