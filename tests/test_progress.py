"""new-task's progress bar: the count of the total, the rate, and a time left that is real.

The numbers are pure functions, tested with given figures; the bar is driven by a clock of the
test's own, so nothing here waits for time to pass. One test runs ``new-task`` on a terminal.
"""

import io
import os
import pty
import select
import subprocess
import uuid

from rabbitry.producers.progress import ProgressBar, RateMeter, final_line, format_duration, progress_line
from tests.helpers import command_path


class ManualClock:
    """A clock that moves only when the test says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drawn_lines(stream: io.StringIO) -> list[str]:
    """The lines a bar drew, each redrawing the one before it."""
    return [part for part in stream.getvalue().replace("\x1b[K", "").split("\r") if part]


def test_the_bar_shows_the_count_of_the_total_the_rate_and_the_time_left():
    clock, stream = ManualClock(), io.StringIO()
    with ProgressBar(1000, stream, clock=clock, width=100) as bar:
        for _ in range(5):
            clock.now += 1.0
            bar.update(100)
        last_while_running = drawn_lines(stream)[-1]

    assert "500/1,000" in last_while_running
    assert "100/s" in last_while_running
    assert "ETA 0:00:05" in last_while_running
    assert drawn_lines(stream)[-1].rstrip("\n").endswith("500/1,000  100/s  in 0:00:05")


def test_a_bar_that_is_not_done_never_says_no_time_is_left():
    assert "ETA 0:00:01" in progress_line("queueing", 999, 1000, 50_000.0)
    assert "ETA 0:00:00" in progress_line("queueing", 1000, 1000, 50_000.0)


def test_the_time_left_is_unknown_until_a_rate_is_measured():
    clock, stream = ManualClock(), io.StringIO()
    with ProgressBar(10, stream, clock=clock, width=100):
        first = drawn_lines(stream)[0]

    assert "0/10" in first and "-/s" in first and "ETA --:--:--" in first


def test_the_rate_is_that_of_the_last_seconds_not_of_the_first_burst():
    meter = RateMeter(window_s=5.0)
    meter.add(0.0, 0)
    meter.add(0.1, 1000)  # the confirm window filling at once
    for second in range(1, 21):
        meter.add(float(second), 1000 + 100 * second)

    assert meter.per_second() == 100.0


def test_the_final_line_says_how_many_in_how_long():
    assert final_line("queueing", 3000, 3000, 1.6).endswith("3,000/3,000  1,875/s  in 0:00:02")
    assert format_duration(2 * 86_400 + 3_600 * 3 + 61, round_up=True) == "2d 03:01:01"


def test_new_task_on_a_terminal_draws_the_count_and_the_rate(tmp_path):
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [command_path("new-task"), "--broker", "local", "--count", "2000", "--quiet", "hello"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env=dict(os.environ, COLUMNS="120", AMQP_URL=f"local://{uuid.uuid4().hex}"),
    )
    os.close(terminal)
    drawn = b""
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 60)
            assert ready, "new-task drew nothing for 60 s"
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other side closed: new-task has exited
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
        process.wait(timeout=60)

    assert process.returncode == 0, drawn
    text = drawn.decode()
    assert "2,000/2,000" in text, text
    assert "/s" in text, text
