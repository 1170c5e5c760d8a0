"""``rabbitry compare``: the same workloads on both transports, as a table and as JSON."""

import json
import os

from tests.helpers import run_command

SMALL = ["--tasks", "500", "--messages", "200", "--subscribers", "2", "--seed-tasks", "200"]


def test_compare_json_has_every_row_and_topic_routing_is_identical_on_both_sides(broker_url):
    result = run_command(["rabbitry", "compare", "--json", *SMALL], env={**os.environ, "AMQP_URL": broker_url},
                         timeout=120)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    workloads = [row["workload"] for row in report["rows"]]
    assert [w.split(":")[0] for w in workloads] == ["work queue", "work queue", "fair dispatch", "fan-out",
                                                    "topic routing"] + ["seed"] * 4
    for row in report["rows"][:4]:
        assert row["model"] > 0 and row["rabbitmq"] > 0
        assert (row["model_vs_rabbitmq"] is not None) == row["unit"].endswith("/s")
    routing = report["rows"][4]
    assert routing["model"] is True and routing["rabbitmq"] is True
    assert routing["identical_on_both_sides"] is True
    assert report["model"]["topic_routing"]["routed"] == report["rabbitmq"]["topic_routing"]["routed"]
    for side in ("model", "rabbitmq"):
        assert report[side]["work_queue"]["left_in_queue"] == 0  # every task was acked
    assert all(row["model"] > 0 for row in report["rows"][5:])


def test_compare_prints_a_table_and_runs_the_model_alone_without_rabbitmq():
    nowhere = "amqp://guest:guest@127.0.0.1:1/"
    result = run_command(["rabbitry", "compare", *SMALL], env={**os.environ, "AMQP_URL": nowhere}, timeout=120)

    assert result.returncode == 0, result.stderr
    assert "RabbitMQ: not reachable" in result.stderr
    header, rule, *lines = result.stdout.splitlines()
    assert "in-process model" in header and "RabbitMQ" in header
    assert set(rule.replace(" ", "")) == {"-"}
    assert any(line.startswith("topic routing") and " yes " in line for line in lines)
