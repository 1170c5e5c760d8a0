"""``new-task --wait``: each task's result as one JSON line beside its id."""

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from rabbitry.common.errors import RabbitryError
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.producers.handles import TaskFailed, TaskHandle
from rabbitry.producers.submitter import TaskSubmitter


@dataclass
class Waited:
    """How the waited-for tasks ended."""

    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0

    @property
    def all_succeeded(self) -> bool:
        return not (self.failed or self.timed_out)

    def summary(self) -> str:
        return f"{self.succeeded} succeeded, {self.failed} failed, {self.timed_out} timed out"


def result_line(handle: TaskHandle, timeout: float) -> tuple[str, dict]:
    """Wait up to ``timeout`` for ``handle``'s result: ("succeeded" | "failed" | "timed_out", its JSON line)."""
    try:
        return "succeeded", {"id": handle.id, "status": "succeeded", "result": handle.get(timeout)}
    except TaskFailed as failed:
        return "failed", {
            "id": handle.id,
            "status": "failed",
            "reason": failed.reason,
            "error_type": failed.error_type,
            "error": failed.error_message,
        }
    except TimeoutError:
        return "timed_out", {"id": handle.id, "status": "timed_out"}
    except RabbitryError as error:  # not queued, or its reply can no longer come
        return "failed", {"id": handle.id, "status": "failed", "reason": type(error).__name__, "error": str(error)}


def print_results(handles: Iterable[TaskHandle], timeout: float, out: TextIO) -> Waited:
    """Print each task's result in submission order, waiting ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    waited = Waited()
    for handle in handles:
        status, line = result_line(handle, max(0.0, deadline - time.monotonic()))
        setattr(waited, status, getattr(waited, status) + 1)
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        out.flush()
    return waited


def queue_and_wait(
    settings: BrokerSettings, queue: str, queue_type: str, messages: Iterable[TaskMessage], timeout: float, out: TextIO
) -> Waited:
    """Queue every task asking for its result, then print each result as it is had."""
    with TaskSubmitter(settings, queue, queue_type, results=True) as submitter:
        handles = list(submitter.submit_many(messages))
        return print_results(handles, timeout, out)  # inside the block: replies come over its connection
