"""What the fault-injection tests share: waiting for every task of a set, and a publisher that
keeps going through a fault."""

import threading
import time

from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.producers.submitter import TaskSubmitter
from tests.helpers import succeeded_ids, wait_until


def wait_for_all(expected: set[str], workers, timeout: float = 120.0) -> None:
    """Wait until every id in ``expected`` succeeded; report the missing ids if not."""
    try:
        wait_until(lambda: succeeded_ids(*workers) >= expected, timeout, 0.2, f"{len(expected)} tasks")
    except AssertionError:
        missing = expected - succeeded_ids(*workers)
        raise AssertionError(
            f"{len(missing)} of {len(expected)} tasks never succeeded, e.g. {sorted(missing)[:5]}"
        ) from None


#: How long a BackgroundSubmitter waits for its last confirms when it is done submitting.
CONFIRM_PATIENCE_S = 60.0


class BackgroundSubmitter(threading.Thread):
    """Submits ``count`` tasks at about ``rate`` per second, through faults.

    ``ids`` is every task id it made, ``confirmed`` those the broker confirmed.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        queue: str,
        count: int,
        rate: float,
        task: str = "noop",
        args: list | None = None,
        queue_type: str = "quorum",
    ):
        super().__init__(name="rabbitry-tests-submitter", daemon=True)
        self.messages = [TaskMessage(task, list(args or [])) for _ in range(count)]
        self.ids = {message.id for message in self.messages}
        self.confirmed: set[str] = set()
        self.error: BaseException | None = None
        self._interval = 1.0 / rate
        # Patient at the end: after a crash, a quorum queue may take a while to confirm what
        # waited for it, and the tests are about nothing being lost, not about how soon.
        self._submitter = TaskSubmitter(
            settings,
            queue,
            queue_type,
            close_timeout=CONFIRM_PATIENCE_S,
            on_confirmed=lambda batch: self.confirmed.update(m.message_id for m in batch),
        )

    def run(self) -> None:
        try:
            with self._submitter as submitter:
                started = time.monotonic()
                for number, message in enumerate(self.messages):
                    submitter.submit(message)
                    time.sleep(max(0.0, started + number * self._interval - time.monotonic()))
        except BaseException as error:  # reported by the test through .error
            self.error = error

    def finish(self, timeout: float = 120.0) -> None:
        """Wait until every task is submitted and confirmed; raise what went wrong."""
        self.join(timeout)
        assert not self.is_alive(), "the submitter did not finish"
        if self.error is not None:
            raise self.error
        missing = self.ids - self.confirmed
        assert not missing, f"{len(missing)} tasks never confirmed, e.g. {sorted(missing)[:5]}"
