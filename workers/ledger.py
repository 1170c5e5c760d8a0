"""Which task each pool process is running, and which tasks crashed their process.

Shared memory between the supervisor and its pool processes. When a pool
process dies, the supervisor reads the task it was running and counts a
crash against that task id. A pool process that receives a redelivered task
checks the count and dead-letters the task once it has crashed too often,
instead of running it into the ground forever. (Quorum queues count
deliveries themselves, in ``x-delivery-count``; this covers classic queues
and names the task that crashed in the logs.)
"""

import multiprocessing
from multiprocessing.context import BaseContext

_ID_BYTES = 64
_CRASH_SLOTS = 256


class CrashLedger:
    """Shared slots: the running task id of each process, and recent crash counts."""

    def __init__(self, processes: int, context: BaseContext | None = None):
        context = context or multiprocessing.get_context()
        self._running = context.Array("c", processes * _ID_BYTES, lock=False)
        # set_running runs twice per task: a memoryview writes in a fraction of
        # the time a ctypes slice assignment takes.
        self._running_view = memoryview(self._running).cast("B")
        self._crashed_ids = context.Array("c", _CRASH_SLOTS * _ID_BYTES, lock=False)
        self._crash_counts = context.Array("i", _CRASH_SLOTS, lock=False)
        self._next_slot = 0  # only the supervisor writes crash slots

    def set_running(self, process_index: int, task_id: str | None) -> None:
        """Record the task ``process_index`` is running (None when idle)."""
        start = process_index * _ID_BYTES
        self._running_view[start : start + _ID_BYTES] = _padded(task_id or "")

    def running(self, process_index: int) -> str | None:
        """The task ``process_index`` was running, if any."""
        start = process_index * _ID_BYTES
        value = bytes(self._running[start : start + _ID_BYTES]).rstrip(b"\0")
        return value.decode() or None

    def record_crash(self, task_id: str) -> int:
        """Count one more crash of ``task_id`` (supervisor only); return its count."""
        encoded = _padded(task_id)
        slot = self._find(encoded)
        if slot is None:
            slot = self._next_slot
            self._next_slot = (self._next_slot + 1) % _CRASH_SLOTS
            self._crashed_ids[slot * _ID_BYTES : (slot + 1) * _ID_BYTES] = encoded
            self._crash_counts[slot] = 0
        self._crash_counts[slot] += 1
        return self._crash_counts[slot]

    def crashes(self, task_id: str) -> int:
        """How many times ``task_id`` crashed a pool process (recently)."""
        slot = self._find(_padded(task_id))
        return 0 if slot is None else self._crash_counts[slot]

    def _find(self, encoded: bytes) -> int | None:
        ids = bytes(self._crashed_ids)
        position = ids.find(encoded)
        while position != -1:
            if position % _ID_BYTES == 0:
                return position // _ID_BYTES
            position = ids.find(encoded, position + 1)
        return None


def _padded(task_id: str) -> bytes:
    """A task id as one fixed-size slot."""
    return task_id.encode()[:_ID_BYTES].ljust(_ID_BYTES, b"\0")
