"""A soak: tasks through 2 workers on a node of the test's own behind a proxy, while the
test freezes the proxy, raises a memory alarm, SIGKILLs a pool process and a supervisor,
and restarts the node. Nothing confirmed is lost; duplicates are counted and reported.

``RABBITRY_SOAK_TASKS`` sets how many tasks (default 2,000: the suite's short form, about a
minute);
``RABBITRY_SOAK_TASKS=50000 pytest -s tests/faults/test_soak.py`` is the full soak.
"""

import json
import os
import signal
import threading
import time
from collections import Counter

import psutil
import pytest

from rabbitry.common.errors import ExitCode
from tests.faults.proxy import FreezableProxy
from tests.helpers import NodeCommands, wait_until

pytestmark = pytest.mark.timeout(600)

TASKS = int(os.environ.get("RABBITRY_SOAK_TASKS", "2000"))
#: Tasks are queued in this many new-task runs, spread over the faults.
BATCHES = 10
BATCH_INTERVAL_S = 2.0
#: Longer than a connection's handshake may take (pika's 15 s stack timeout): commands that
#: connect while the proxy is frozen give up with exit 3, and the publisher tries again.
FREEZE_S = 20
ALARM_S = 5


class BatchPublisher(threading.Thread):
    """Runs ``new-task --count`` batches one after another, each again if the broker could
    not be reached at all (exit 3 with nothing confirmed), as a user would."""

    def __init__(self, node: NodeCommands, queue: str, total: int):
        super().__init__(name="rabbitry-tests-soak-publisher", daemon=True)
        self.node, self.queue = node, queue
        self.sizes = [total // BATCHES + (1 if index < total % BATCHES else 0) for index in range(BATCHES)]
        self.ids: list[str] = []
        self.exit_codes: list[int] = []
        self.unexpected: list[str] = []

    def run(self) -> None:
        for size in self.sizes:
            started = time.monotonic()
            while True:
                result = self.node.run(
                    "new-task", "--task", "noop", "--count", str(size), "--queue", self.queue, timeout=600
                )
                self.exit_codes.append(result.returncode)
                confirmed = result.stdout.split()
                self.ids += confirmed
                if result.returncode == ExitCode.OK and len(confirmed) == size:
                    break
                errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
                if result.returncode != ExitCode.BROKER_UNAVAILABLE or confirmed or len(errors) != 1:
                    self.unexpected.append(f"exit {result.returncode}, {len(confirmed)} ids: {result.stderr[-500:]}")
                    break
                time.sleep(1)  # unreachable (frozen, or restarting): try the batch again
            time.sleep(max(0.0, started + BATCH_INTERVAL_S - time.monotonic()))


def succeeded(worker) -> Counter:
    """How often each task id succeeded in the worker's log."""
    counts = Counter()
    with open(worker._log.name) as log:
        for line in log:
            if '"task_succeeded"' in line:
                counts[json.loads(line)["task_id"]] += 1
    return counts


def test_a_soak_through_every_fault_loses_no_task(extra_broker, unique_name):
    with FreezableProxy(extra_broker.amqp_port) as proxy, NodeCommands(proxy.url()) as node:
        first = node.start_worker(unique_name, "--processes", "2")
        second = node.start_worker(unique_name, "--processes", "2", wait=False)
        node.workers[0].wait_for_consumers(node.settings, 4)
        publisher = BatchPublisher(node, unique_name, TASKS)
        publisher.start()
        wait_until(lambda: publisher.ids, timeout=120, message="a first batch")

        proxy.freeze()
        time.sleep(FREEZE_S)
        proxy.thaw()

        extra_broker.ctl("set_vm_memory_high_watermark", "0.000001")
        time.sleep(ALARM_S)
        extra_broker.ctl("set_vm_memory_high_watermark", "0.4")

        pool_process = psutil.Process(first.process.pid).children()[0]
        pool_process.kill()
        os.kill(second.process.pid, signal.SIGKILL)  # a supervisor: its pool processes stop by themselves
        second.process.wait()
        third = node.start_worker(unique_name, "--processes", "2", wait=False)

        extra_broker.restart()

        publisher.join(timeout=600)
        assert not publisher.is_alive()
        ids = set(publisher.ids)
        workers = [first, second, third]
        wait_until(
            lambda: ids <= set().union(*(succeeded(worker) for worker in workers)),
            timeout=300,
            interval=1,
            message=f"all {len(ids)} tasks to succeed",
        )
        exit_codes = [first.stop(), third.stop()]

    counts = sum((succeeded(worker) for worker in workers), Counter())
    duplicates = sum(count - 1 for count in counts.values() if count > 1)
    print(
        f"\nsoak: {len(ids)} tasks confirmed, {len(ids - counts.keys())} lost, {duplicates} duplicate runs "
        f"({len([c for c in counts.values() if c > 1])} tasks run more than once), new-task exit codes "
        f"{dict(Counter(publisher.exit_codes))}, worker exit codes {exit_codes}, "
        f"pool processes replaced {len(first.events('pool_process_died'))}, "
        f"orphans stopped {len(second.events('supervisor_died'))}"
    )
    assert len(ids) == TASKS and not publisher.unexpected, publisher.unexpected
    assert ids <= counts.keys()
    assert set(publisher.exit_codes) <= {ExitCode.OK, ExitCode.BROKER_UNAVAILABLE}
    assert exit_codes == [ExitCode.OK, ExitCode.OK]
    assert len(first.events("pool_process_died")) == 1
    assert len(second.events("supervisor_died")) == 2
