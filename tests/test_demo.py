"""``rabbitry demo``: the README's first command, on the in-process model and on RabbitMQ."""

import json
import os

from tests.helpers import run_command

#: A URL where no broker answers, so ``--broker auto`` must fall back to the model.
NOWHERE = "amqp://guest:guest@127.0.0.1:1/"


def demo(*args, env=None):
    return run_command(["rabbitry", "demo", *args], env={**os.environ, **(env or {})})


def test_the_demo_runs_on_the_in_process_model_and_its_summary_adds_up():
    result = demo("--broker", "local", "--json")

    assert result.returncode == 0, result.stderr
    assert "in-process model" in result.stderr
    summary = json.loads(result.stdout)
    tasks, logs = summary["tasks"], summary["logs"]
    assert summary["ok"] is True
    assert (tasks["submitted"], tasks["succeeded"], tasks["dead_lettered"]) == (17, 16, 1)
    members = tasks["pool_members"].values()
    assert sum(m["tasks"] for m in members) == 16
    assert all(m["long_tasks"] >= 1 for m in members)  # with prefetch 1 no member hoards the long tasks
    topic = logs["exchanges"]["topic"]
    assert sorted(topic["kern.*"]["received"]) == ["kern.critical", "kern.info"]
    assert sorted(topic["*.critical"]["received"]) == ["app.critical", "kern.critical"]
    assert sorted(topic["kern.* *.critical"]["received"]) == ["app.critical", "kern.critical", "kern.info"]
    assert len(topic["#"]["received"]) == 5
    assert logs["exchanges"]["direct"]["errors only"]["received"] == ["error"]
    assert all(len(s["received"]) == 2 for s in logs["exchanges"]["fanout"].values())
    assert logs["unroutable"] == ["direct:debug"]


def test_with_no_broker_reachable_auto_says_so_and_uses_the_model():
    result = demo(env={"AMQP_URL": NOWHERE})

    assert result.returncode == 0, result.stderr
    notice, *rest = result.stdout.splitlines()
    assert "no RabbitMQ reachable" in notice and "in-process model" in notice
    assert "***" in notice and "guest:guest" not in notice  # the password is never shown
    assert rest[-1].startswith("Done in") and rest[-1].endswith("on the in-process model.")


def test_with_rabbitmq_reachable_auto_runs_on_it(broker_url):
    result = demo("--json", env={"AMQP_URL": broker_url})

    assert result.returncode == 0, result.stderr
    assert "running on RabbitMQ" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["broker"] == "RabbitMQ" and summary["ok"] is True


def test_asking_for_rabbitmq_when_none_answers_is_one_clear_error():
    result = demo("--broker", "amqp", "--url", NOWHERE)

    assert result.returncode == 3
    assert result.stderr.strip().startswith("Error: cannot reach the broker")
    assert "Traceback" not in result.stderr
