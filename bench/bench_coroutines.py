"""Coroutine tasks against plain ones, in one run: I/O-bound work, and the loop's own cost.

Usage (from the repository root, with the project installed):

    python -m bench.bench_coroutines [--reps 3] [--n 10000] [--io-n 1000] [--only noop,io]

- noop: N no-op tasks end to end (submitted while the worker runs, the
  peers' method: one O_APPEND byte per execution), ``worker --processes 2``
  with the plain task, then with the same task as ``async def`` at
  ``--concurrency 1`` and ``--concurrency 100``.
- io: tasks that each make one request to a server on 127.0.0.1 that answers
  after 100 ms (real sockets): IO_N of them as coroutines on ``worker
  --processes 2 --concurrency 100``, and IO_N / 10 as plain functions on
  ``worker --processes 2``; time from the first submit to the last
  execution, and how the tasks were shared between the two processes (from
  the worker's log lines).

It prints figures and never asserts a time.
"""

import argparse
import collections
import json
import os

from bench.bench_work_queue import LOG_DIR, Rabbitry, e2e_once, e2e_rates
from bench.benchlib import fmt, save, summarize
from rabbitry.compare.server import SlowServer

IO_DELAY_S = 0.1
ASYNC_TASKS = "bench.bench_async_tasks"


def noop_systems() -> dict:
    return {
        "sync": Rabbitry("quorum", name="coro-sync"),
        "async_c1": Rabbitry(
            "quorum", ("--concurrency", "1"), name="coro-async-c1", task="bench_count_async", tasks=ASYNC_TASKS
        ),
        "async_c100": Rabbitry(
            "quorum", ("--concurrency", "100"), name="coro-async-c100", task="bench_count_async", tasks=ASYNC_TASKS
        ),
    }


def bench_noop(reps: int, n: int) -> dict:
    rates = e2e_rates(noop_systems(), reps, n, "coro-noop")
    result = {name: summarize(values) for name, values in rates.items()}
    print(f"\nno-op tasks end to end, {n:,} tasks, worker --processes 2, median (min–max) of {reps}:")
    for name, summary in result.items():
        print(f"  {name:<11} {fmt(summary, ' tasks/s')}")
    for name in ("async_c1", "async_c100"):
        ratios = summarize(a / s for a, s in zip(rates[name], rates["sync"], strict=True))
        result[f"ratio_{name}_vs_sync"] = ratios
        print(f"  {name} / sync  {fmt(ratios, '×', 2)}")
    return result


def tasks_per_process(tag: str) -> dict[int, int]:
    """How many tasks each pool process ran, from the worker's JSON log."""
    counts = collections.Counter()
    with open(os.path.join(LOG_DIR, tag + ".log")) as log:
        for line in log:
            if '"task_succeeded"' in line:
                counts[json.loads(line)["pool_process"]] += 1
    return dict(counts)


def io_run(system: Rabbitry, n: int, tag: str) -> dict:
    makespan_s = n / e2e_once(system, n, tag, warmup=4)
    shares = tasks_per_process(tag)
    return {
        "makespan_s": makespan_s,
        "per_process": shares,
        "largest_share": max(shares.values()) / sum(shares.values()),
    }  # the warm-up's 4 included


def bench_io(reps: int, n: int) -> dict:
    runs = {"async_p2_c100": [], "sync_p2": []}
    with SlowServer(IO_DELAY_S) as server:
        coroutines = Rabbitry(
            "quorum",
            ("--concurrency", "100"),
            name="coro-io-async",
            task="bench_io",
            args=(server.port,),
            tasks=ASYNC_TASKS,
        )
        plain = Rabbitry("quorum", name="coro-io-sync", task="bench_io_blocking", args=(server.port,))
        try:
            for rep in range(reps):
                runs["async_p2_c100"].append(io_run(coroutines, n, f"coro-io-async-{rep}"))
                runs["sync_p2"].append(io_run(plain, n // 10, f"coro-io-sync-{rep}"))
                a, s = runs["async_p2_c100"][-1], runs["sync_p2"][-1]
                print(
                    f"rep {rep} async {n:,} tasks in {a['makespan_s']:.2f} s (per process {a['per_process']}); "
                    f"sync {n // 10:,} tasks in {s['makespan_s']:.2f} s",
                    flush=True,
                )
        finally:
            coroutines.cleanup()
            plain.cleanup()
    async_s = summarize(run["makespan_s"] for run in runs["async_p2_c100"])
    sync_s = summarize(run["makespan_s"] * 10 for run in runs["sync_p2"])
    shares = summarize(run["largest_share"] for run in runs["async_p2_c100"])
    print(f"\n{n:,} tasks of {IO_DELAY_S * 1000:.0f} ms of real I/O each, median (min–max) of {reps}:")
    print(
        f"  worker --processes 2 --concurrency 100, async def: {fmt(async_s, ' s', 2)}; "
        f"the busier process ran {fmt(shares, '', 3)} of them"
    )
    print(f"  worker --processes 2, plain functions ({n // 10:,} run, times 10): {fmt(sync_s, ' s', 1)}")
    print(f"  speed-up {sync_s['median'] / async_s['median']:.1f}×")
    return {"async_makespan_s": async_s, "sync_makespan_s_for_n": sync_s, "largest_share": shares, "runs": runs}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--io-n", type=int, default=1_000)
    parser.add_argument("--only", default="noop,io")
    args = parser.parse_args()
    chosen = args.only.split(",")
    results = {"args": vars(args)}
    if "io" in chosen:
        results["io"] = bench_io(args.reps, args.io_n)
    if "noop" in chosen:
        results["noop"] = bench_noop(args.reps, args.n)
    print("saved", save("coroutines", results))


if __name__ == "__main__":
    main()
