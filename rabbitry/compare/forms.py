"""The seed article's concurrency forms, each running a workload without any broker.

Threads with a ``queue.Queue``, ``multiprocessing.Pool``, both executors of
``concurrent.futures`` and asyncio coroutines, as in
``bench-peers/bench_inprocess.py``: pools are started before the clock, and
the clock runs from the first task handed over to the last one finished.
Each function returns the seconds; nothing here asserts a time.
"""

import asyncio
import concurrent.futures
import multiprocessing
import queue
import threading
import time

from rabbitry.compare.tasks import Workload, noop

#: What runs a form's tasks.
THREADS, PROCESSES, COROUTINES = "threads", "processes", "coroutines"


def threads_and_queue(workload: Workload, tasks: int, threads: int) -> float:
    """Seconds for ``tasks`` runs of the workload through a ``queue.Queue`` and worker threads."""
    work: queue.Queue = queue.Queue()

    def worker() -> None:
        while (item := work.get()) is not None:
            workload.blocking(item)
            work.task_done()
        work.task_done()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    started = time.perf_counter()
    for item in range(tasks):
        work.put(item)
    work.join()
    seconds = time.perf_counter() - started
    for _ in workers:
        work.put(None)
    for thread in workers:
        thread.join()
    return seconds


def thread_pool_executor(workload: Workload, tasks: int, threads: int) -> float:
    """Seconds for ``tasks`` runs submitted one by one to a ``ThreadPoolExecutor``."""
    with concurrent.futures.ThreadPoolExecutor(threads) as executor:
        return _submit_all(executor, workload, tasks, threads)


def multiprocessing_pool(workload: Workload, tasks: int, processes: int) -> float:
    """Seconds for ``tasks`` runs through ``multiprocessing.Pool.imap_unordered`` (chunksize 1)."""
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        pool.map(noop, range(processes * 2))  # start the workers before the clock
        started = time.perf_counter()
        for _ in pool.imap_unordered(workload.blocking, range(tasks)):
            pass
        return time.perf_counter() - started


def process_pool_executor(workload: Workload, tasks: int, processes: int) -> float:
    """Seconds for ``tasks`` runs submitted one by one to a ``ProcessPoolExecutor``."""
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as executor:
        return _submit_all(executor, workload, tasks, processes)


def _submit_all(executor: concurrent.futures.Executor, workload: Workload, tasks: int, workers: int) -> float:
    list(executor.map(noop, range(workers * 2)))  # start the workers before the clock
    started = time.perf_counter()
    concurrent.futures.wait([executor.submit(workload.blocking, i) for i in range(tasks)])
    return time.perf_counter() - started


def asyncio_coroutines(workload: Workload, tasks: int, concurrency: int) -> float:
    """Seconds for ``tasks`` awaits of the workload's coroutine, ``concurrency`` at a time, on one loop."""

    async def run_all() -> float:
        items = iter(range(tasks))  # shared: each item is taken by one coroutine

        async def worker() -> None:
            for _ in items:
                await workload.coroutine()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started

    return asyncio.run(run_all())


#: The forms: label -> (the function that runs a workload, what runs its tasks).
FORMS = {
    "threads + queue.Queue": (threads_and_queue, THREADS),
    "concurrent.futures.ThreadPoolExecutor": (thread_pool_executor, THREADS),
    "asyncio coroutines": (asyncio_coroutines, COROUTINES),
    "multiprocessing.Pool": (multiprocessing_pool, PROCESSES),
    "concurrent.futures.ProcessPoolExecutor": (process_pool_executor, PROCESSES),
}

#: The forms whose makespan is drawn against their concurrency on the I/O-bound workload.
SWEPT_FORMS = ("concurrent.futures.ThreadPoolExecutor", "asyncio coroutines")
MOST_CONCURRENCY = 64


def concurrency_levels(tasks: int) -> list[int]:
    """1, 2, 4, ... up to 64, and never more than there are tasks."""
    levels, level = [], 1
    while level <= min(MOST_CONCURRENCY, tasks):
        levels.append(level)
        level *= 2
    return levels


def sweep(workload: Workload, tasks: int) -> dict[str, list[dict]]:
    """Makespan of ``tasks`` runs against concurrency, for the thread and coroutine forms."""
    return {
        form: [
            {"concurrency": level, "makespan_s": round(FORMS[form][0](workload, tasks, level), 4)}
            for level in concurrency_levels(tasks)
        ]
        for form in SWEPT_FORMS
    }
