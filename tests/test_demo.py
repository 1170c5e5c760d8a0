"""``rabbitry demo``: the README's first command, on the in-process model and on RabbitMQ."""

import json
import os

from rabbitry.common.connect import connect
from rabbitry.common.topology import dead_letter_queue_name, history_stream_name
from tests.helpers import json_lines, run_command

#: A URL where no broker answers, so ``--broker auto`` must fall back to the model.
NOWHERE = "amqp://guest:guest@127.0.0.1:1/"


def demo(*args, env=None):
    return run_command(["rabbitry", "demo", *args], env={**os.environ, **(env or {})})


#: Who must receive what, by the tutorials' routing rules: the test's own table, not the demo's.
RECEIVED = {
    "fanout": {"screen": ["deploy started", "hello all"], "archive": ["deploy started", "hello all"]},
    "direct": {"errors only": ["error"], "info and up": ["error", "info", "warning"]},
    "topic": {
        "kern.*": ["kern.critical", "kern.info"],
        "*.critical": ["app.critical", "kern.critical"],
        "kern.* *.critical": ["app.critical", "kern.critical", "kern.info"],
        "#": ["app.critical", "app.info", "auth.warning", "kern.critical", "kern.info"],
    },
}


def assert_the_demo_did_its_work(result) -> dict:
    """Check a ``demo --json --verbose`` run by what its worker's lines say it did and by what its
    subscribers received, never by its own verdict; return its summary."""
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stderr)
    succeeded = [line for line in lines if line.get("event") == "task_succeeded"]
    (dead,) = [line for line in lines if line.get("event") == "task_dead_lettered"]
    ids = {line["task_id"] for line in succeeded}
    assert len(succeeded) == len(ids) == 16 and {line["task"] for line in succeeded} == {"demo.work"}
    assert dead["task"] == "fail" and dead["task_id"] not in ids
    assert [line for line in lines if line.get("event") == "task_failed"] == []
    long_tasks = [line["pool_process"] for line in succeeded if line["result"] == 0.4]
    assert sorted(set(long_tasks)) == [0, 1]  # with prefetch 1 no member hoards the long tasks

    summary = json.loads(result.stdout)
    received = {
        kind: {name: sorted(got["received"]) for name, got in subscribers.items()}
        for kind, subscribers in summary["logs"]["exchanges"].items()
    }
    assert received == RECEIVED
    assert summary["logs"]["history"]["replayed"] == ["kern.critical", "kern.info"]
    assert summary["logs"]["unroutable"] == ["direct:debug"]
    tasks = summary["tasks"]
    assert (tasks["submitted"], tasks["succeeded"], tasks["dead_lettered"]) == (17, 16, 1)  # as observed
    return summary


def test_the_demo_runs_on_the_in_process_model_and_does_what_it_says():
    result = demo("--broker", "local", "--json", "--verbose")

    assert "in-process model" in result.stderr.splitlines()[0]
    summary = assert_the_demo_did_its_work(result)
    assert summary["broker"] == "the in-process model"


def test_with_no_broker_reachable_auto_says_so_and_uses_the_model():
    result = demo(env={"AMQP_URL": NOWHERE})

    assert result.returncode == 0, result.stderr
    notice, *rest = result.stdout.splitlines()
    assert "no RabbitMQ reachable" in notice and "in-process model" in notice
    assert "***" in notice and "guest:guest" not in notice  # the password is never shown
    assert rest[-1].startswith("Done in") and rest[-1].endswith("on the in-process model.")


def test_with_rabbitmq_reachable_auto_runs_on_it_and_leaves_nothing_behind(broker_url, broker_settings):
    result = demo("--json", "--verbose", env={"AMQP_URL": broker_url})

    assert "running on RabbitMQ" in result.stderr.splitlines()[0]
    summary = assert_the_demo_did_its_work(result)
    assert summary["broker"] == "RabbitMQ"
    work_queue = summary["tasks"]["queue"]
    history = history_stream_name(work_queue.removesuffix(".tasks") + ".topic")
    with connect(broker_settings, "rabbitry-tests-demo") as connection:
        for queue in (work_queue, dead_letter_queue_name(work_queue), history):
            assert connection.queue_state(queue) is None, queue


def test_asking_for_rabbitmq_when_none_answers_is_one_clear_error():
    result = demo("--broker", "amqp", "--url", NOWHERE)

    assert result.returncode == 3
    assert result.stderr.strip().startswith("Error: cannot reach the broker")
    assert "Traceback" not in result.stderr
