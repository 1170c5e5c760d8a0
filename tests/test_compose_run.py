"""compose.yaml's three demos, run with docker compose: every task, every log line, counted.

Each test has a compose project of its own (see tests/compose_project.py), built
on the one rabbitry image of the run; the ``docker`` fixture skips them, with
the reason, where no Docker engine or Compose v2 answers.
"""

import collections
import json

import pytest

from rabbitry.common.connect import connect
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import DEFAULT_TASK_QUEUE
from tests.compose_project import ComposeProject
from tests.helpers import wait_until

#: Each test boots brokers in containers and waits up to PATIENCE at several steps.
pytestmark = pytest.mark.timeout(600)

#: What a test waits for at most: the machine may be busy, and the brokers boot in containers.
PATIENCE = 180
#: The broker user compose.yaml gives its brokers when .env sets none.
DEMO_USER = "rabbitry"
CONFIRM_TIMEOUT = "dead_letter_worker_publisher_confirm_timeout"


def published_broker(project) -> BrokerSettings:
    """Settings for the work-queue broker through its published port (it moves when the broker restarts)."""
    address = project.published("rabbitmq", 5672)
    password = project.env["RABBITMQ_DEFAULT_PASS"]
    return BrokerSettings.from_url(f"amqp://{DEMO_USER}:{password}@{address}/%2F", reconnect_for=10.0)


def queue_state(settings: BrokerSettings, queue: str):
    with connect(settings, "rabbitry-compose-tests") as connection:
        return connection.queue_state(queue)


def succeeded_task_ids(project, containers: list[str]) -> collections.Counter:
    return collections.Counter(
        event["task_id"] for container in containers for event in project.events(container, "task_succeeded")
    )


def test_compose_refuses_to_start_without_a_password_and_publishes_on_loopback_unless_told(docker, compose_project):
    # Not a compose_project: one that can neither start nor be taken down. `config` reads the file as
    # `up` does (and fails as it does), and starts nothing.
    unset = ComposeProject(docker, "rabbitry-test-no-password", {"RABBITMQ_DEFAULT_PASS": None})
    refused = unset.compose("config", check=False)
    assert refused.returncode != 0
    assert "RABBITMQ_DEFAULT_PASS" in refused.stderr and "openssl rand -hex 16" in refused.stderr

    chosen = compose_project(RABBITMQ_PORT=None, RABBITMQ_MANAGEMENT_PORT=None).config()
    published = [(name, port) for name, service in chosen["services"].items() for port in service.get("ports", [])]
    assert published and all(port["host_ip"] == "127.0.0.1" for _, port in published), published
    opened = compose_project(RABBITMQ_PORT="0.0.0.0:5672").config()  # an operator's choice
    assert {port["host_ip"] for port in opened["services"]["rabbitmq"]["ports"] if port["target"] == 5672} == {
        "0.0.0.0"
    }


def test_the_work_queue_keeps_queued_tasks_over_a_broker_restart_and_spreads_them_over_three_workers(compose_project):
    project = compose_project()
    project.up("rabbitmq")
    # The broker sends a delayed task on after a restart within 5 s, not RabbitMQ's 180 s (docs/delays.md).
    setting = project.exec("rabbitmq", "rabbitmqctl", "eval", f"application:get_env(rabbit, {CONFIRM_TIMEOUT}).")
    assert setting.strip() == "{ok,5000}"
    queued = project.run("new-task").split()
    assert len(queued) == len(set(queued)) > 3

    project.compose("restart", "rabbitmq")
    project.up("rabbitmq")  # healthy again
    assert queue_state(published_broker(project), DEFAULT_TASK_QUEUE).messages == len(queued)

    project.up("worker", scale=3)
    workers = project.containers("worker")
    assert len(workers) == 3
    settings = published_broker(project)
    wait_until(
        lambda: queue_state(settings, DEFAULT_TASK_QUEUE).consumers == 3 * 2,
        PATIENCE,
        1.0,
        "3 workers of 2 processes each to consume",
    )
    more = project.run("new-task").split()  # queued while all three consume: fair dispatch shares them
    every_task = queued + more

    wait_until(
        lambda: set(succeeded_task_ids(project, workers)) >= set(every_task),
        PATIENCE,
        1.0,
        f"{len(every_task)} tasks to succeed",
    )
    assert succeeded_task_ids(project, workers) == collections.Counter(every_task)  # each exactly once
    for worker in workers:
        assert set(succeeded_task_ids(project, [worker])) & set(more), f"worker {worker} took none"
    assert queue_state(settings, DEFAULT_TASK_QUEUE).messages == 0


def printed_messages(project, container: str) -> collections.Counter:
    """The messages a subscriber printed, as ``KEY SEVERITY MESSAGE`` lines: (routing key, message)."""
    stdout, _stderr = project.output(container)
    return collections.Counter(
        (key, message) for key, _severity, message in (line.split(None, 2) for line in stdout.splitlines())
    )


def test_each_log_subscriber_prints_exactly_the_lines_its_binding_key_selects_and_down_leaves_nothing(compose_project):
    count = 5
    project = compose_project(EMIT_COUNT=str(count), EMIT_INTERVAL="0", EMIT_START_DELAY="0")
    keys = ["kern.info", "kern.critical", "auth.warning", "auth.critical", "cron.info", "mail.error"]
    selected = {
        "subscribe-all": keys,
        "subscribe-kern": ["kern.info", "kern.critical"],
        "subscribe-critical": ["kern.critical", "auth.critical"],
    }
    services = project.config()["services"]
    assert {name: services[name]["command"] for name in selected} == {
        "subscribe-all": ["subscribe", "#"],
        "subscribe-kern": ["subscribe", "kern.*"],
        "subscribe-critical": ["subscribe", "*.critical"],
    }

    project.up(*selected)
    subscribers = {name: project.containers(name)[0] for name in selected}
    for name, container in subscribers.items():
        wait_until(lambda c=container: project.events(c, "subscribed"), PATIENCE, 1.0, f"{name} to bind its queue")
    project.run("emit-log")

    for name, container in subscribers.items():
        expected = collections.Counter((key, f"{key} event {n}") for key in selected[name] for n in range(1, count + 1))
        total = sum(expected.values())
        wait_until(
            lambda c=container, n=total: sum(printed_messages(project, c).values()) >= n,
            PATIENCE,
            1.0,
            f"{total} lines from {name}",
        )
        assert printed_messages(project, container) == expected, name

    made = project.leftovers()
    assert len(made["containers"]) == 1 + len(selected) and made["volumes"] and made["networks"], made
    project.down()
    assert project.leftovers() == {"containers": [], "volumes": [], "networks": []}


def cluster_nodes(project) -> set[str]:
    """The running nodes of the cluster, as rabbitmq-1 sees them."""
    status = json.loads(project.exec("rabbitmq-1", "rabbitmqctl", "-q", "cluster_status", "--formatter", "json"))
    return set(status["running_nodes"])


def cluster_queue(project, queue: str) -> dict[str, int]:
    """``messages`` and ``consumers`` of ``queue``, as rabbitmq-1 sees it (the cluster publishes no AMQP port)."""
    rows = json.loads(
        project.exec(
            "rabbitmq-1", "rabbitmqctl", "-q", "list_queues", "name", "messages", "consumers", "--formatter", "json"
        )
    )
    return next((row for row in rows if row["name"] == queue), {"messages": 0, "consumers": 0})


def test_three_nodes_form_a_cluster_that_loses_no_task_when_one_stops_mid_batch(compose_project):
    project = compose_project()
    nodes = ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    project.up(*nodes)
    wait_until(
        lambda: cluster_nodes(project) == {f"rabbit@{node}" for node in nodes},
        PATIENCE,
        2.0,
        "three running nodes in one cluster",
    )

    project.up("cluster-worker", scale=2)
    workers = project.containers("cluster-worker")
    wait_until(
        lambda: cluster_queue(project, DEFAULT_TASK_QUEUE)["consumers"] == 2 * 2,
        PATIENCE,
        2.0,
        "2 workers of 2 processes each to consume",
    )
    task_ids = project.run("cluster-new-task").split()
    assert len(task_ids) == len(set(task_ids)) > 3
    wait_until(
        lambda: sum(succeeded_task_ids(project, workers).values()) >= 2, PATIENCE, 0.5, "the first tasks to succeed"
    )
    project.compose("stop", "rabbitmq-2")  # the node every worker is connected to

    wait_until(
        lambda: set(succeeded_task_ids(project, workers)) >= set(task_ids),
        PATIENCE,
        1.0,
        f"all {len(task_ids)} tasks to succeed",
    )
    assert set(succeeded_task_ids(project, workers)) == set(task_ids)  # counted by id: none lost
    assert all(project.events(worker, "connection_lost") for worker in workers)  # they were on rabbitmq-2
    # A task whose ack went down with rabbitmq-2 comes again, and is settled too.
    wait_until(
        lambda: cluster_queue(project, DEFAULT_TASK_QUEUE)["messages"] == 0, PATIENCE, 2.0, "the task queue to empty"
    )
