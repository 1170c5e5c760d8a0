"""compose.yaml run for real: a Docker engine, Compose v2 and projects of the tests' own.

The tests that need Docker ask for the ``docker`` fixture, which skips them
with the reason when no engine or no Compose v2 answers (and fails them
instead under CI, or when ``RABBITRY_COMPOSE_TESTS=required``). The rabbitry
image is built once per test run, under a tag of the run's own, and removed at
the end. Each :class:`ComposeProject` has a project name of its own
(``docker compose -p``), publishes its ports on ephemeral loopback ports, and
is taken down with its volumes when its test ends, passed or failed; the teardown checks that nothing of it is left.

The images come from the environment, as for a user: ``RABBITMQ_IMAGE`` and
``PYTHON_IMAGE`` (``../shared/docker/make-base-images.sh env`` prints local
stand-ins for the official images where no registry can be reached).

Fixtures (made available to every test module by ``conftest.py``):

- ``docker``: the Docker client's path, once an engine and Compose v2 answer.
- ``rabbitry_image``: the tag of the rabbitry image built for this run.
- ``compose_project``: makes :class:`ComposeProject`\\ s, taken down afterwards.
"""

import json
import os
import secrets
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.helpers import json_lines
from tests.prerequisites import missing

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
PROFILES = ("work-queue", "logs", "cluster")
#: Set to "required" where Docker was set up on purpose: a missing engine then fails the tests.
REQUIRED_ENVVAR = "RABBITRY_COMPOSE_TESTS"
#: Debian's client, preferred where another ``docker`` comes first on PATH.
DEBIAN_DOCKER = "/usr/bin/docker"
SETUP_HINT = "../shared/docker/make-base-images.sh sets up an engine, Compose v2 and base images"
#: Every project and image of one test run carries this run's id.
RUN_ID = uuid.uuid4().hex[:8]
PROJECT_LABEL = "com.docker.compose.project"


def docker_client() -> str | None:
    """The Docker client to use: ``$DOCKER``, else Debian's, else the first on PATH."""
    if os.environ.get("DOCKER"):
        return os.environ["DOCKER"]
    if os.access(DEBIAN_DOCKER, os.X_OK):
        return DEBIAN_DOCKER
    return shutil.which("docker")


def docker_unavailable_reason(docker: str | None) -> str | None:
    """Why compose.yaml cannot be run here, or None when an engine and Compose v2 both answer."""
    if docker is None or not os.access(docker, os.X_OK):
        return f"no docker client ({docker or 'none on PATH'})"
    engine = subprocess.run(
        [docker, "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, timeout=60
    )
    if engine.returncode != 0:
        return f"no Docker engine answers ({_first_line(engine.stderr)})"
    compose = subprocess.run([docker, "compose", "version", "--short"], capture_output=True, text=True, timeout=60)
    if compose.returncode != 0:
        return f"Docker Compose v2 is not installed (`docker compose version`: {_first_line(compose.stderr)})"
    if not compose.stdout.strip().lstrip("v").startswith("2."):
        return f"Docker Compose v2 is needed, found {compose.stdout.strip()}"
    return None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no message")


def docker_run(docker: str, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``docker ARGS``; with ``check``, a failure raises with what docker said."""
    result = subprocess.run([docker, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


class ComposeProject:
    """compose.yaml under a project name of its own, every profile enabled, services started by name."""

    def __init__(self, docker: str, name: str, variables: dict[str, str | None]):
        self.docker = docker
        self.name = name
        environment = {**os.environ, **variables}
        self.env = {key: value for key, value in environment.items() if value is not None}

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """``docker compose -p NAME --profile ... ARGS``, with the project's variables."""
        profiles = [arg for profile in PROFILES for arg in ("--profile", profile)]
        command = [self.docker, "compose", "--project-name", self.name, "--file", str(COMPOSE_FILE), *profiles, *args]
        result = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def up(self, *services: str, scale: int | None = None, timeout: float = 300) -> None:
        """Start ``services`` (with their dependencies) and wait until each is running, or healthy."""
        scaling = [] if scale is None else [arg for service in services for arg in ("--scale", f"{service}={scale}")]
        self.compose(
            "up",
            "--detach",
            "--no-build",
            "--wait",
            "--wait-timeout",
            str(int(timeout)),
            *scaling,
            *services,
            timeout=timeout + 60,
        )

    def run(self, service: str, timeout: float = 300) -> str:
        """``docker compose run`` a one-off container of ``service`` to its end; its standard output."""
        return self.compose("run", "--rm", "--no-deps", "-T", service, timeout=timeout).stdout

    def config(self) -> dict:
        """compose.yaml as Compose reads it for this project: interpolated, merged, defaults filled in."""
        return json.loads(self.compose("config", "--format", "json").stdout)

    def containers(self, service: str) -> list[str]:
        """The ids of ``service``'s containers, stopped ones too, in replica order."""
        lines = self.compose("ps", "--all", "--format", "{{.Name}} {{.ID}}", service).stdout.split("\n")
        return [container_id for _name, container_id in sorted(line.split() for line in lines if line.strip())]

    def output(self, container: str) -> tuple[str, str]:
        """A container's standard output and standard error, as far as written."""
        result = docker_run(self.docker, "logs", container)
        return result.stdout, result.stderr

    def events(self, container: str, name: str) -> list[dict]:
        """A container's JSON log lines (either stream) whose event is ``name``."""
        stdout, stderr = self.output(container)
        return [event for event in json_lines(stdout + "\n" + stderr) if event.get("event") == name]

    def published(self, service: str, port: int) -> str:
        """``HOST:PORT`` on which ``service``'s ``port`` is published (it changes when the container restarts)."""
        return self.compose("port", service, str(port)).stdout.strip()

    def exec(self, service: str, *command: str, timeout: float = 120) -> str:
        """Run ``command`` in ``service``'s running container; its standard output."""
        return self.compose("exec", "-T", service, *command, timeout=timeout).stdout

    def down(self) -> None:
        """``docker compose down --volumes``: containers, volumes and network gone."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")

    def leftovers(self) -> dict[str, list[str]]:
        """The project's containers, volumes and networks that the engine still holds."""
        label = f"label={PROJECT_LABEL}={self.name}"
        return {
            kind: docker_run(self.docker, *command, "--quiet", "--filter", label).stdout.split()
            for kind, command in (
                ("containers", ("ps", "--all")),
                ("volumes", ("volume", "ls")),
                ("networks", ("network", "ls")),
            )
        }

    def remove_leftovers(self) -> None:
        """Force away whatever ``down`` left, so that a failed test leaves nothing either."""
        left = self.leftovers()
        for kind, command in (
            ("containers", ("rm", "--force", "--volumes")),
            ("volumes", ("volume", "rm")),
            ("networks", ("network", "rm")),
        ):
            if left[kind]:
                docker_run(self.docker, *command, *left[kind], check=False)


@pytest.fixture(scope="session")
def docker() -> str:
    """The Docker client, once an engine and Compose v2 answer; the test is skipped otherwise (fails under CI)."""
    client = docker_client()
    reason = docker_unavailable_reason(client)
    if reason is not None:
        message = f"compose.yaml is not run: {reason}; {SETUP_HINT}"
        if os.environ.get(REQUIRED_ENVVAR) == "required":
            pytest.fail(f"{message} ({REQUIRED_ENVVAR}=required)", pytrace=False)
        missing(message)
    return client


@pytest.fixture(scope="session")
def rabbitry_image(docker):
    """The rabbitry image, built once for the whole run from compose.yaml's rabbitry-image service."""
    tag = f"rabbitry-test:{RUN_ID}"
    # Compose reads the whole file, the broker's required password too, even to build one image.
    variables = {"RABBITRY_IMAGE": tag, "RABBITMQ_DEFAULT_PASS": "unused-by-the-build"}
    project = ComposeProject(docker, f"rabbitry-test-{RUN_ID}-build", variables)
    project.compose("build", "rabbitry-image", timeout=900)
    yield tag
    docker_run(docker, "image", "rm", tag, check=False)


@pytest.fixture
def compose_project(docker, rabbitry_image):
    """Make :class:`ComposeProject`\\ s running this run's image; each is taken down, and checked gone.

    Keyword arguments are variables for compose.yaml (what a user puts in .env; None: unset);
    JSON logs, ports on ephemeral loopback ports and a password of the project's own are the default.
    """
    projects = []

    def make(**variables: str | None) -> ComposeProject:
        name = f"rabbitry-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
        defaults = {
            "RABBITRY_IMAGE": rabbitry_image,
            "RABBITRY_LOG_FORMAT": "json",
            "RABBITMQ_PORT": "127.0.0.1:",
            "RABBITMQ_MANAGEMENT_PORT": "127.0.0.1:",
            "RABBITMQ_DEFAULT_PASS": secrets.token_hex(16),
        }
        project = ComposeProject(docker, name, {**defaults, **variables})
        projects.append(project)
        return project

    yield make
    left = {}
    for project in projects:
        try:
            project.down()
        finally:
            left[project.name] = {kind: ids for kind, ids in project.leftovers().items() if ids}
            project.remove_leftovers()
    assert not any(left.values()), f"docker compose down --volumes left {left}"
