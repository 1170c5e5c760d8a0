"""rabbitry's logging configuration: what survives a lost output, and what the test suite prints."""

import os

import pytest
import structlog

from rabbitry.common.logconfig import configure_logging


@pytest.fixture
def saved_configuration():
    """structlog's configuration, put back as it was after the test."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_debug_lines_of_rabbitry_code_run_by_the_tests_do_not_reach_their_output(capfd):
    structlog.get_logger("rabbitry.worker").debug("consuming", queue="test.quiet")

    out, err = capfd.readouterr()
    assert "consuming" not in out + err


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_log_line_to_a_pipe_whose_reader_is_gone_is_dropped_and_the_pipe_replaced_by_dev_null(
    saved_configuration, log_format
):
    reader, writer = os.pipe()
    with os.fdopen(writer, "w") as stream:
        configure_logging(log_format, "info", stream)
        log = structlog.get_logger("rabbitry.worker")
        log.info("worker_started")
        assert b"worker_started" in os.read(reader, 4096)
        os.close(reader)  # as `| tee` ends on Ctrl-C

        log.info("worker_stopping", signal="SIGINT")  # raised BrokenPipeError
        log.info("worker_stopped", exit_code=0)

        assert os.readlink(f"/proc/self/fd/{writer}") == os.devnull
