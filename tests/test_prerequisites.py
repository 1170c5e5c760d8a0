"""The suite cannot lie: under CI a missing prerequisite fails the tests that need it, and a
hung test fails within its time bound while the rest of the run goes on.

Each check runs pytest in a process of its own, as CI would, on a file of the suite or on a
test written here to hang.
"""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPOSITORY
from tests.nodes import SCRIPT_DIR_ENVVAR
from tests.prerequisites import CI_ENVVAR

#: A test that starts a RabbitMQ node of its module's own (the ``extra_broker`` fixture).
NODE_TEST = "tests/test_log_outages.py::test_records_of_an_outage_are_published_once_the_broker_is_back"

HANGS = """
import socket
import threading


def test_waits_for_an_event_nobody_sets():
    threading.Event().wait()


def test_reads_from_a_socket_that_never_speaks():
    left, right = socket.socketpair()
    left.recv(1)


def test_after_the_hung_ones_still_runs():
    assert True
"""


def pytest_run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rsf", *args],
        cwd=REPOSITORY,
        env={**env, "COLUMNS": "120"},  # the summary's layout, whatever the terminal of the outer run
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def no_rabbitmq(tmp_path):
    """The environment of a run in which the RabbitMQ server's scripts are nowhere to be found."""
    hidden = tmp_path / "no-rabbitmq"
    hidden.mkdir()
    return {**os.environ, SCRIPT_DIR_ENVVAR: str(hidden)}


def test_under_ci_a_test_that_cannot_start_its_node_fails_with_the_reason(no_rabbitmq):
    result = pytest_run(NODE_TEST, env={**no_rabbitmq, CI_ENVVAR: "true"})
    assert result.returncode == 1, result.stdout[-3000:]
    assert "1 error" in result.stdout.splitlines()[-1], result.stdout
    assert "rabbitmq-server is not installed in" in result.stdout
    assert "skipped" not in result.stdout.splitlines()[-1]


def test_outside_ci_a_test_that_cannot_start_its_node_is_skipped_with_the_reason(no_rabbitmq):
    env = {name: value for name, value in no_rabbitmq.items() if name != CI_ENVVAR}
    result = pytest_run(NODE_TEST, env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 skipped" in result.stdout.splitlines()[-1], result.stdout
    assert "rabbitmq-server is not installed in" in result.stdout


def test_every_test_has_a_time_bound(pytestconfig):
    assert float(pytestconfig.getini("timeout")) > 0
    assert pytestconfig.getini("timeout_method") == "signal"


def test_a_hung_test_fails_within_its_bound_and_the_run_goes_on(tmp_path):
    (tmp_path / "test_hangs.py").write_text(HANGS)
    # The project's own configuration, with the bound shortened so that the check is quick.
    config = os.path.join(REPOSITORY, "pyproject.toml")
    result = pytest_run(
        str(tmp_path / "test_hangs.py"),
        "-c",
        config,
        "--rootdir",
        str(tmp_path),
        "-o",
        "timeout=2",
        env=dict(os.environ),
    )
    assert result.returncode == 1, result.stdout[-3000:]
    assert "2 failed, 1 passed" in result.stdout.splitlines()[-1], result.stdout
    failed = [line.split("::")[1].split()[0] for line in result.stdout.splitlines() if line.startswith("FAILED ")]
    assert sorted(failed) == ["test_reads_from_a_socket_that_never_speaks", "test_waits_for_an_event_nobody_sets"]
    reasons = [
        line for line in result.stdout.splitlines() if line.startswith("E ") and "Failed: Timeout (>2.0s)" in line
    ]
    assert len(reasons) == 2, result.stdout
