"""The distribution installs one import name, ``rabbitry``, and nothing else at the top."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "--wheel-dir", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
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
    assert "rabbitry/common/amqp.py" in names
    assert "rabbitry/workers/builtin_tasks.py" in names
