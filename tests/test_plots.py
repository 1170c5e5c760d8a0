"""``--plot FILE`` of ``rabbitry compare`` and ``rabbitry demo``: real pictures, and one-line mistakes."""

import os
import sys

import pytest

from rabbitry.common.errors import ExitCode
from tests.helpers import assert_one_line_error, run_command

SMALL_COMPARE = [
    "compare",
    "--tasks",
    "200",
    "--messages",
    "50",
    "--subscribers",
    "1",
    "--seed-tasks",
    "100",
    "--cpu-tasks",
    "20",
    "--io-tasks",
    "20",
    "--sweep-tasks",
    "4",
]
NOWHERE = {**os.environ, "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_compare_draws_its_figures_to_an_svg(tmp_path):
    picture = tmp_path / "compare.svg"
    result = run_command(["rabbitry", *SMALL_COMPARE, "--plot", str(picture)], env=NOWHERE, timeout=180)

    assert result.returncode == 0, result.stderr
    text = picture.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert "I/O-bound" in text and "makespan" in text


def test_the_demo_draws_its_fair_dispatch_timeline_to_a_png(tmp_path):
    picture = tmp_path / "fair-dispatch.png"
    result = run_command(
        ["rabbitry", "demo", "--broker", "local", "--plot", str(picture)], env=dict(os.environ), timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert picture.stat().st_size > 1000
    assert picture.read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("command", [["compare"], ["demo", "--broker", "local"]])
def test_an_unknown_picture_suffix_is_one_line_before_anything_runs(tmp_path, command):
    result = run_command(["rabbitry", *command, "--plot", str(tmp_path / "figure.jpg")], env=NOWHERE, timeout=30)

    assert_one_line_error(result, ExitCode.USAGE, "figure.jpg", ".png or .svg")
    assert result.stdout == ""  # refused before measuring


def test_a_picture_in_a_folder_that_does_not_exist_is_one_line(tmp_path):
    result = run_command(
        ["rabbitry", "demo", "--broker", "local", "--plot", str(tmp_path / "no" / "demo.svg")], env=NOWHERE, timeout=30
    )

    assert_one_line_error(result, ExitCode.USAGE, "there is no folder")


def test_without_matplotlib_the_tables_print_and_plot_is_one_line_naming_the_extra(tmp_path):
    # A module named matplotlib that fails to import stands for an installation without the extra.
    (tmp_path / "matplotlib").mkdir()
    (tmp_path / "matplotlib" / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {**NOWHERE, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    result = run_command(
        ["rabbitry", "demo", "--broker", "local", "--plot", str(tmp_path / "demo.svg")], env=env, timeout=120
    )

    assert_one_line_error(result, ExitCode.EXTRA_MISSING, "pip install 'rabbitry[plot]'")
    assert "Done in" in result.stdout  # the summary came first
    assert not (tmp_path / "demo.svg").exists()
