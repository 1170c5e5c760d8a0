"""Why a pool process's event loop did not run: what ``event_loop_blocked`` tells the user.

The loop's beat notes when it last ran, and how much CPU time its own thread
and the thread of plain tasks had used by then (each thread's own CPU clock).
When the connection thread finds the loop stalled, those clocks, and whether
the connection thread itself was kept from running, say what the stall was:
one thread keeping the interpreter lock (a long call in C, such as encoding a
large result), in a plain task or on the loop, so that no thread could run;
an async task computing without awaiting; or, with neither, the loop's thread
waiting in a blocking call made by an async task. Only that last one is "an
async task made a blocking call".
"""

import threading
import time
from dataclasses import dataclass

#: The watcher (the connection thread) was held up too when it could not run for this share of the
#: stall: then one thread kept the interpreter lock, rather than the loop's thread waiting alone.
HELD_SHARE = 0.5
#: A thread kept the lock when it used at least this share of the stall in CPU time (on a loaded
#: machine a process gets only part of the wall-clock time, so far from all of it).
BUSY_SHARE = 0.1


def this_thread_clock() -> int | None:
    """The CPU-time clock of the calling thread, to read from any thread; None where there is none."""
    try:
        return time.pthread_getcpuclockid(threading.get_ident())
    except (AttributeError, OSError):  # not a POSIX system
        return None


def cpu_seconds(clock: int | None) -> float | None:
    """The CPU time used so far by the thread of ``clock``; None if unknown (or the thread has ended)."""
    if clock is None:
        return None
    try:
        return time.clock_gettime(clock)
    except OSError:
        return None


def used(now: float | None, then: float | None) -> float:
    """CPU seconds used between two readings of one clock: all of it when the thread had not
    started at the first (``then`` None), 0 when it cannot be read now."""
    return 0.0 if now is None else now - (then or 0.0)


@dataclass(frozen=True)
class StallCause:
    """What kept the loop from running, as logged."""

    cause: str
    hint: str


def stall_cause(
    blocked_s: float,
    watcher_held_s: float,
    loop_cpu_s: float,
    plain_cpu_s: float,
    coroutines: list[str],
    plain_task: str | None,
) -> StallCause:
    """Why the loop did not run for ``blocked_s``: from how long the watcher could not run
    meanwhile, the CPU time the loop's thread and the plain tasks' thread used, and the async
    tasks that were running on the loop."""
    busy = BUSY_SHARE * blocked_s
    if watcher_held_s >= HELD_SHARE * blocked_s and max(plain_cpu_s, loop_cpu_s) >= busy:
        if plain_cpu_s > loop_cpu_s:
            return StallCause(
                "plain_task_held_the_interpreter",
                f"the plain task {plain_task!r} kept the interpreter lock (a long call in C, such as "
                "encoding a large result) and no other thread could run; no async task was at fault. "
                "Run such tasks in a worker without --concurrency or async def tasks",
            )
        return StallCause(
            "loop_thread_held_the_interpreter",
            "the loop's thread kept the interpreter lock (a long call in C: an async task computing, or "
            "the encoding of a large result)"
            + (", and no other thread could run" if coroutines else "; no async task was running"),
        )
    if loop_cpu_s >= busy and coroutines:
        return StallCause(
            "async_task_computed",
            "an async task computed without awaiting: move the computing to a plain task, or "
            "`await asyncio.to_thread(...)` it",
        )
    if coroutines:
        return StallCause(
            "async_task_blocked",
            "an async task made a blocking call: await an async library, or "
            "`await asyncio.to_thread(...)` the blocking part",
        )
    return StallCause(
        "loop_starved",
        "the loop's thread could not run, and no async task was running on it: the machine may be overloaded",
    )
