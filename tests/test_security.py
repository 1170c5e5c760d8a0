"""Security basics: no pickle, only registered tasks run, size limits, amqps:// with a CA and
a client certificate on every command, and passwords masked everywhere."""

import ast
import json
import pathlib
import subprocess

import pika
import pytest

from rabbitry.common.errors import ExitCode
from rabbitry.common.messages import MAX_MESSAGE_BYTES
from rabbitry.common.topology import dead_letter_queue_name
from tests.helpers import REPOSITORY, NodeCommands, command_path, wait_until

PACKAGES = ("common", "producers", "workers", "subscribers", "rabbitry")
SECRET = "hunter2-not-for-logs"


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_imports_pickle_or_marshal():
    sources = [path for package in PACKAGES for path in pathlib.Path(REPOSITORY, package).rglob("*.py")]
    assert sources
    for path in sources:
        assert not imported_modules(path) & {"pickle", "marshal", "shelve", "dill", "cloudpickle"}, path


def test_only_registered_tasks_run_whatever_a_message_names(
    broker_url, run, start_worker, work_queue_name, connection, tmp_path
):
    worker = start_worker(work_queue_name, "--processes", "1")
    planted = tmp_path / "planted"
    for name in ("os.system", "subprocess.call", "builtins.exec", "__import__"):
        run(
            "new-task",
            "--task",
            name,
            "--args",
            json.dumps([f"touch {planted}"]),
            "--queue",
            work_queue_name,
            check=True,
        )
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as raw:  # a Celery-style pickled task
        raw.channel().basic_publish(
            "",
            work_queue_name,
            b"\x80\x04\x95cos\nsystem\n",
            pika.BasicProperties(content_type="application/x-python-serialize", delivery_mode=2, message_id="pickled"),
        )

    dead = wait_until(lambda: len(worker.events("task_dead_lettered")) == 5 and worker.events("task_dead_lettered"))

    assert sorted(e["reason"] for e in dead) == ["malformed"] + ["unknown_task"] * 4
    pickled = [e for e in dead if e["task_id"] == "pickled"]
    assert "unsupported content type" in pickled[0]["error"]
    assert worker.events("task_succeeded") == [] and not planted.exists()


def test_a_task_over_the_size_limit_is_refused_before_anything_is_sent(run, work_queue_name, connection, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        json.dumps({"task": "echo"}) + "\n" + json.dumps({"task": "echo", "args": ["x" * MAX_MESSAGE_BYTES]})
    )

    result = run("new-task", "--file", str(tasks), "--queue", work_queue_name)

    assert result.returncode == ExitCode.USAGE
    assert f"over the {MAX_MESSAGE_BYTES}-byte limit" in result.stderr and "Traceback" not in result.stderr
    assert connection.queue_state(work_queue_name) is None


def test_an_oversized_body_is_dead_lettered_unread(broker_url, start_worker, work_queue_name, connection):
    worker = start_worker(work_queue_name, "--processes", "1")
    body = json.dumps({"task": "echo", "args": ["x" * (MAX_MESSAGE_BYTES + 10)]}).encode()
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as raw:
        raw.channel().basic_publish(
            "",
            work_queue_name,
            body,
            pika.BasicProperties(content_type="application/json", delivery_mode=2, message_id="huge"),
        )

    (dead,) = wait_until(lambda: worker.events("task_dead_lettered"))

    assert dead["reason"] == "malformed" and "byte limit" in dead["error"]
    wait_until(lambda: connection.queue_state(dead_letter_queue_name(work_queue_name)).messages == 1)


@pytest.mark.parametrize(
    "body, error",
    [
        (b"[" * 100_000, "nested too deeply"),  # a JSON bomb for the decoder's stack
        # Its name would not fit the dead letter's headers in a frame: the broker would close the
        # connection on every attempt to dead-letter it, and the task would come back for ever.
        (json.dumps({"task": "x" * 200_000}).encode(), "task name is 200000 bytes long"),
        # Its id could not be the message_id of its retry, which looped the same way.
        (json.dumps({"task": "fail", "id": "i" * 300}).encode(), "task id is 300 bytes long"),
    ],
)
def test_a_hostile_body_is_dead_lettered_and_the_worker_goes_on(
    broker_url, start_worker, work_queue_name, run, body, error
):
    worker = start_worker(work_queue_name, "--processes", "1")
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as raw:
        raw.channel().basic_publish(
            "",
            work_queue_name,
            body,
            pika.BasicProperties(content_type="application/json", delivery_mode=2, message_id="hostile"),
        )
    run("new-task", "--task", "echo", "--queue", work_queue_name, check=True)

    (dead,) = wait_until(lambda: worker.events("task_dead_lettered"))
    wait_until(lambda: worker.events("task_succeeded"))

    assert (dead["task_id"], dead["reason"]) == ("hostile", "malformed") and error in dead["error"]
    assert not worker.events("connection_lost")


# -- TLS --------------------------------------------------------------------
@pytest.fixture
def tls_node(tls_broker):
    """Commands aimed at the TLS listener, with the CA and client certificate in the environment."""
    files = tls_broker.tls_files
    commands = NodeCommands(
        tls_broker.tls_url,
        AMQP_TLS_CA_FILE=files.ca_file,
        AMQP_TLS_CERT_FILE=files.client_cert,
        AMQP_TLS_KEY_FILE=files.client_key,
    )
    commands.settings = tls_broker.settings()  # inspect through the plain listener
    yield commands
    commands.stop_workers()


def test_every_command_works_over_amqps_with_a_client_certificate(tls_broker, tls_node, unique_name):
    files = tls_broker.tls_files
    options = [
        "--url",
        tls_broker.tls_url,
        "--tls-ca-file",
        files.ca_file,
        "--tls-cert-file",
        files.client_cert,
        "--tls-key-file",
        files.client_key,
    ]
    exchange = f"{unique_name}.logs"

    queued = tls_node.run(
        "new-task", "--task", "echo", "--args", '["over tls"]', "--queue", unique_name, *options, check=True
    )
    status = tls_node.run("rabbitry", "status", "--json", "--queue", unique_name, *options, check=True)
    worker = tls_node.start_worker(unique_name, "--processes", "1")  # TLS files from the environment
    wait_until(lambda: worker.events("task_succeeded"))
    subscriber = subprocess.Popen(
        [command_path("subscribe"), "--exchange", exchange, "--count", "1", "app.*", *options],
        env=tls_node.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: tls_node.queue_state(unique_name) is not None)
    wait_until(
        lambda: (
            tls_node.run(
                "emit-log", "--exchange", exchange, "--require-route", "app.info", "hello over tls", *options
            ).returncode
            == 0
        ),
        message="a routed log message",
    )
    listed = tls_node.run("rabbitry", "dlq", "list", "--queue", unique_name, *options, check=True)

    assert worker.events("task_succeeded")[0]["task_id"] == queued.stdout.strip()
    assert json.loads(status.stdout.splitlines()[0])["messages"] == 1
    output, _ = subscriber.communicate(timeout=30)
    assert "hello over tls" in output and subscriber.returncode == 0
    assert "0 dead letter(s)" in listed.stdout
    assert "amqps://guest:***@" in worker.events("worker_started")[0]["broker"]


@pytest.mark.parametrize(
    ("leave_out", "says"), [("client certificate", "check the client certificate"), ("CA", "certificate verify failed")]
)
def test_amqps_without_the_right_files_fails_with_one_clear_line(tls_broker, tls_node, leave_out, says):
    files = tls_broker.tls_files
    options = (
        ["--tls-cert-file", files.client_cert, "--tls-key-file", files.client_key]
        if leave_out == "CA"
        else ["--tls-ca-file", files.ca_file]
    )
    env = {k: v for k, v in tls_node.env.items() if not k.startswith("AMQP_TLS_")}

    result = subprocess.run(
        [command_path("new-task"), "hello", "--url", tls_broker.tls_url, *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == ExitCode.BROKER_UNAVAILABLE, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "cannot reach the broker at amqps://guest:***@localhost" in error and says in error
    assert "Traceback" not in result.stderr


# -- masking ------------------------------------------------------------------
def test_a_password_never_appears_in_any_log_line_or_error(tls_broker, unique_name):
    tls_broker.ctl("add_user", "masked", SECRET)
    tls_broker.ctl("set_permissions", "masked", ".*", ".*", ".*")
    url = f"amqp://masked:{SECRET}@127.0.0.1:{tls_broker.amqp_port}/%2F"
    node = NodeCommands(url)
    try:
        worker = node.start_worker(unique_name, "--processes", "1")
        tls_broker.stop_app()  # connection losses and reconnect attempts get logged
        wait_until(lambda: worker.events("broker_unreachable"), message="a reconnect attempt")
        down = [
            node.run(*command, "--url", url)
            for command in (
                ["new-task", "hello"],
                ["emit-log", "app.info", "x"],
                ["subscribe", "--count", "1", "#"],
                ["rabbitry", "status"],
                ["rabbitry", "dlq", "list"],
                ["worker", "--connect-timeout", "0"],
            )
        ]
        tls_broker.start_app()
        worker.wait_for_consumers(node.settings)
        wrong = node.run("new-task", "hello", "--url", url.replace(SECRET, SECRET + "-wrong"))
    finally:
        node.stop_workers()

    texts = [worker.output()] + [r.stdout + r.stderr for r in [*down, wrong]]
    assert all(r.returncode == ExitCode.BROKER_UNAVAILABLE for r in down), [r.stderr for r in down]
    assert wrong.returncode == ExitCode.BROKER_REFUSED
    assert all("masked:***@" in text for text in texts[1:-1])
    assert not [text for text in texts if SECRET in text]
