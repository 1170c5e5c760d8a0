"""A graceful stop in the middle of a burst of dead letters: what the worker logged as settled
is settled, once, and every task is in exactly one place afterwards. Runs on an extra node."""

import collections

from rabbitry.common.topology import dead_letter_queue_name
from tests.helpers import wait_until

TASKS = 3000


def test_a_sigterm_during_a_burst_of_dead_letters_leaves_each_task_once_and_every_logged_one_settled(node, unique_name):
    ids = node.run(
        "new-task", "--task", "fail", "--count", str(TASKS), "--queue", unique_name, check=True
    ).stdout.split()
    assert len(set(ids)) == TASKS
    worker = node.start_worker(unique_name, "--processes", "2", "--max-retries", "0")
    dead_letter_queue = dead_letter_queue_name(unique_name)
    for share in (10, 5):  # while the burst goes on, a line logged is a letter the broker holds
        wait_until(
            lambda share=share: len(worker.events("task_dead_lettered")) >= TASKS // share,
            timeout=120,
            message="a share",
        )
        logged_by_now = len(worker.events("task_dead_lettered"))
        assert node.queue_state(dead_letter_queue).messages >= logged_by_now

    assert worker.stop(timeout=60) == 0  # SIGTERM: a graceful stop

    # The broker puts back what the closed channels held as it notices they are gone.
    wait_until(
        lambda: node.queue_state(unique_name).messages + node.queue_state(dead_letter_queue).messages >= TASKS,
        timeout=120,
        message="every task back in a queue",
    )
    logged = {event["task_id"] for event in worker.events("task_dead_lettered")}
    waiting = [delivery.message_id for delivery in node.drain(unique_name)]
    dead = [letter.message_id for letter in node.drain(dead_letter_queue)]
    places = collections.Counter(waiting + dead)
    assert sorted(places) == sorted(ids)
    assert [task_id for task_id, count in places.items() if count > 1] == []  # none is both, or twice
    assert logged <= set(dead)  # what was logged as dead-lettered was
    assert len(logged) == len(worker.events("task_dead_lettered"))  # and logged once
