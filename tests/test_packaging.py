"""The distribution installs one import name, ``rabbitry``, and nothing else at the top, so an
application's own ``common`` or ``workers`` lives beside it."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("rabbitry-*.whl")
    return built


def test_the_wheel_installs_rabbitry_as_its_only_top_level_name(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [name for name in names if name.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["rabbitry"]
    code = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert code == {"rabbitry"}


def test_the_repository_folders_install_as_subpackages_of_rabbitry(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for folder in ("common", "producers", "workers", "subscribers"):
        assert f"rabbitry/{folder}/__init__.py" in names
    for module in (
        "common/amqp/connection.py",
        "common/local/broker.py",
        "common/transport/contract.py",
        "common/logs/history.py",
        "commands/demo.py",
        "compare/command.py",
        "workers/builtin_tasks.py",
    ):
        assert f"rabbitry/{module}" in names


def dependency_folders() -> list[str]:
    """The folders that hold rabbitry's dependencies in this environment (not rabbitry itself)."""
    import click
    import pika
    import structlog

    return sorted({str(Path(module.__file__).resolve().parent.parent) for module in (pika, click, structlog)})


def write_application(folder: Path, task_name: str, queue: str) -> None:
    """An application whose own ``common.py`` and ``workers/`` package sit beside its tasks."""
    (folder / "common.py").write_text('WHO = "the application\'s own common.py"\n')
    (folder / "workers").mkdir()
    (folder / "workers" / "__init__.py").write_text("")
    (folder / "workers" / "jobs.py").write_text(
        "import common\nfrom rabbitry import task\n\n"
        f"@task(name={task_name!r}, queue={queue!r})\n"
        "def record(path):\n    with open(path, 'w') as out:\n        out.write(common.WHO)\n"
    )
    (folder / "send.py").write_text("import sys\nfrom workers.jobs import record\n\nprint(record.delay(sys.argv[1]))\n")


def test_the_wheel_in_a_fresh_venv_runs_a_task_beside_an_apps_own_common_and_workers(
    wheel, tmp_path, start_worker, cli_env, work_queue_name, unique_name
):
    venv, app = tmp_path / "venv", tmp_path / "app"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    # The dependencies as they are installed here: the venv reaches them, not this checkout's rabbitry.
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site_packages, "dependencies.pth").write_text("\n".join(dependency_folders()) + "\n")
    app.mkdir()
    write_application(app, unique_name, work_queue_name)
    env = {**cli_env, "PYTHONPATH": ""}  # the app's folder is on the path as the current folder, and only so

    worker = start_worker(
        work_queue_name,
        "--processes",
        "1",
        "--tasks",
        "workers.jobs",
        cwd=str(app),
        command=str(venv / "bin" / "worker"),
        env=env,
    )
    sent = subprocess.run(
        [str(python), "send.py", str(tmp_path / "recorded")],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert sent.returncode == 0, sent.stderr
    recorded = tmp_path / "recorded"
    wait_until(lambda: recorded.exists() and recorded.read_text(), message="the task's run")
    assert recorded.read_text() == "the application's own common.py"
    assert [event["task_id"] for event in worker.events("task_succeeded")] == [sent.stdout.strip()]
    where = subprocess.run(
        [str(python), "-c", "import rabbitry; print(rabbitry.__file__)"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(site_packages)
