"""compose.yaml without a Docker engine: the Compose Specification's schema, real
commands, and each demo profile run as local processes.

A profile's rabbitry services run here with the very commands and environment
compose.yaml gives them. Only where things are changes: the hosts in AMQP_URL
point at the local broker, in a virtual host of the test's own (a compose
project has a broker of its own), or at a local 3-node cluster; and each
config is written to a file that stands where the container would see it.
"""

import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import uuid
from importlib import metadata, resources
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import jsonschema
import pytest
import yaml

from rabbitry.common.broker import connect
from rabbitry.common.routing import topic_matches
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import DEFAULT_TASK_QUEUE
from tests.helpers import BIN, command_path, json_lines, stop_process, wait_until

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
PROFILES = ("work-queue", "logs", "cluster")

# -- reading compose.yaml as docker compose does -----------------------------------------------

_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]+)\}|(?P<named>[A-Za-z_]\w*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:(?P<operator>:?[-?+])(?P<argument>.*))?", re.S)


def interpolate(value, variables: dict[str, str]):
    """``value`` with ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` … substituted; ``$$`` is ``$``."""
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return variables.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None:
            raise ValueError(f"invalid interpolation ${{{match['braced']}}}")
        name, operator, argument = braced["name"], braced["operator"] or "", braced["argument"] or ""
        current = variables.get(name)
        missing = not current if operator.startswith(":") else current is None
        if operator.endswith("-"):
            return argument if missing else current
        if operator.endswith("?"):
            if missing:
                raise ValueError(f"variable {name} is required: {argument}")
            return current
        if operator.endswith("+"):
            return "" if missing else argument
        return current or ""

    return _VARIABLE.sub(substitute, value)


def load_compose(variables: dict[str, str] | None = None) -> dict:
    """compose.yaml, interpolated with ``variables`` (none set: every default applies)."""
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), variables or {})


def compose_schema() -> dict:
    """The Compose Specification's JSON schema, as check-jsonschema vendors it from compose-spec."""
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendored.joinpath("compose-spec.json").read_text())


def profile_services(compose: dict, profile: str) -> dict[str, dict]:
    """The services ``docker compose --profile PROFILE up`` starts."""
    return {name: service for name, service in compose["services"].items()
            if not service.get("profiles") or profile in service["profiles"]}


def is_rabbitry(service: dict) -> bool:
    """True for a service built from this repository (the others are brokers)."""
    return "build" in service


def environment_of(service: dict) -> dict[str, str]:
    """A service's environment, from either of compose's two forms."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def broker_hosts(amqp_url: str) -> list[str]:
    """The host names in a (comma-separated) AMQP_URL."""
    return [urlsplit(url.strip()).hostname for url in amqp_url.split(",")]


def rabbitry_scripts() -> set[str]:
    """The console scripts the rabbitry distribution installs."""
    return {entry.name for entry in metadata.distribution("rabbitry").entry_points
            if entry.group == "console_scripts"}


def shell_script(service: dict) -> str | None:
    """The script of a ``sh -c SCRIPT`` command, or None for a plain command."""
    command = service.get("command") or []
    return command[2] if command[:2] == ["sh", "-c"] else None


# -- running a profile as local processes ---------------------------------------------------------

def in_vhost(url: str, vhost: str) -> str:
    """``url`` with its virtual host replaced by ``vhost``."""
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(vhost, safe="")))


def local_urls(amqp_url: str, addresses: dict[str, str], vhost: str | None = None) -> str:
    """``amqp_url`` with each compose host replaced by its local ``host:port`` (and vhost)."""
    urls = []
    for url in amqp_url.split(","):
        parts = urlsplit(url.strip())
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@{addresses[parts.hostname]}" if credentials else addresses[parts.hostname]
        local = urlunsplit(parts._replace(netloc=netloc))
        urls.append(in_vhost(local, vhost) if vhost else local)
    return ",".join(urls)


class LocalService:
    """One replica of a compose service, run as a local process: same command, same environment."""

    def __init__(self, name: str, compose: dict, addresses: dict[str, str], workdir: Path,
                 vhost: str | None = None):
        self.name = name
        service = compose["services"][name.rsplit(".", 1)[0]]
        self.argv = list(service["command"])
        if self.argv[0] in rabbitry_scripts():
            self.argv[0] = command_path(self.argv[0])
        for config in service.get("configs", []):
            self._place_config(config, compose["configs"], workdir)
        environment = environment_of(service)
        environment["AMQP_URL"] = local_urls(environment["AMQP_URL"], addresses, vhost)
        # What the image provides: its scripts on PATH, and unbuffered output.
        self.env = {"PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(workdir), "PYTHONUNBUFFERED": "1",
                    **environment}
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    def _place_config(self, config, configs: dict, workdir: Path) -> None:
        source = config if isinstance(config, str) else config["source"]
        target = f"/{source}" if isinstance(config, str) else config.get("target", f"/{source}")
        local = workdir / f"config-{source}"
        local.write_text(configs[source]["content"])
        self.argv = [str(local) if arg == target else arg for arg in self.argv]

    def start(self) -> "LocalService":
        with open(self._path("out"), "w") as out, open(self._path("err"), "w") as err:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.workdir, stdout=out, stderr=err,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def _path(self, stream: str) -> Path:
        return self.workdir / f"{self.name}.{stream}"

    def stdout(self) -> str:
        return self._path("out").read_text()

    def stderr(self) -> str:
        return self._path("err").read_text()

    def events(self, name: str) -> list[dict]:
        """The service's JSON log lines (stdout and stderr) whose event is ``name``."""
        return [e for e in json_lines(self.stdout() + "\n" + self.stderr()) if e.get("event") == name]

    def wait(self, timeout: float = 60) -> int:
        """Wait for the command to finish by itself; fail if it does not, or fails."""
        returncode = self.process.wait(timeout)
        assert returncode == 0, f"{self.name} exited {returncode}:\n{self.stderr()}"
        return returncode

    def stop(self, timeout: float = 30) -> int:
        """``docker compose stop``: SIGTERM, then SIGKILL if it will not go.

        As when a container's main process ends, whatever it left running goes with it.
        """
        returncode = stop_process(self.process, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return returncode

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.process.returncode}:\n{self.stderr()}")


class LocalProject:
    """A compose profile whose rabbitry services run locally against local brokers."""

    def __init__(self, profile: str, variables: dict[str, str], addresses: dict[str, str], workdir: Path,
                 vhost: str | None = None):
        self.compose = load_compose(variables)
        self.services = profile_services(self.compose, profile)
        self.addresses, self.workdir, self.vhost = addresses, workdir, vhost
        self.started: list[LocalService] = []

    @property
    def rabbitry_services(self) -> set[str]:
        return {name for name, service in self.services.items() if is_rabbitry(service)}

    def start(self, name: str, replicas: int = 1) -> list[LocalService]:
        """``docker compose up --scale NAME=REPLICAS``, for one service."""
        assert name in self.rabbitry_services
        services = [LocalService(f"{name}.{index}", self.compose, self.addresses, self.workdir, self.vhost)
                    for index in range(1, replicas + 1)]
        self.started += services
        return [service.start() for service in services]

    def run(self, name: str, timeout: float = 60) -> LocalService:
        """Start a one-off service and wait until it has done its work."""
        (service,) = self.start(name)
        service.wait(timeout)
        return service

    def stop(self) -> None:
        for service in self.started:
            service.stop()


@pytest.fixture
def compose_vhost(broker_url):
    """A virtual host of the test's own on the local broker, deleted afterwards."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None or urlsplit(broker_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("a virtual host of the test's own needs rabbitmqctl beside the broker")
    name = f"rabbitry-compose-{uuid.uuid4().hex[:8]}"
    user = unquote(urlsplit(broker_url).username or "guest")

    def ctl(*args):
        subprocess.run([rabbitmqctl, "-q", *args], check=True, capture_output=True, timeout=60)

    ctl("add_vhost", name)
    ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    yield name
    ctl("delete_vhost", name)


def project_variables(broker_url: str, **overrides: str) -> dict[str, str]:
    """What a user would put in .env: the local brokers' user, and JSON logs for the test to read."""
    parts = urlsplit(broker_url)
    return {"RABBITMQ_DEFAULT_USER": unquote(parts.username or "guest"),
            "RABBITMQ_DEFAULT_PASS": unquote(parts.password or "guest"),
            "RABBITRY_LOG_FORMAT": "json", **overrides}


def local_address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}"


@pytest.fixture
def local_project(tmp_path):
    """Make LocalProjects; every process they started is stopped at the end."""
    projects = []

    def make(*args, **kwargs) -> LocalProject:
        project = LocalProject(*args, workdir=tmp_path, **kwargs)
        projects.append(project)
        return project

    yield make
    for project in projects:
        project.stop()


def wait_for_consumers(settings: BrokerSettings, queue: str, count: int, services: list[LocalService]) -> None:
    def ready():
        for service in services:
            service.check_alive()
        with connect(settings, "rabbitry-tests-wait") as connection:
            state = connection.queue_state(queue)
        return state is not None and state.consumers >= count

    wait_until(ready, 30, 0.1, f"{count} consumers on {queue}")


def succeeded_task_ids(workers: list[LocalService]) -> collections.Counter:
    return collections.Counter(event["task_id"] for worker in workers for event in worker.events("task_succeeded"))


# -- the file itself ------------------------------------------------------------------------------

def test_compose_yaml_is_valid_under_the_compose_specification():
    validator = jsonschema.Draft202012Validator(compose_schema())
    for document in (yaml.safe_load(COMPOSE_FILE.read_text()), load_compose()):
        errors = [f"{error.json_path}: {error.message}" for error in validator.iter_errors(document)]
        assert errors == []
    assert "version" not in load_compose()  # obsolete in the Compose Specification


def test_the_schema_rejects_a_misspelt_key_as_docker_compose_does():
    compose = load_compose()
    compose["services"]["worker"]["comand"] = compose["services"]["worker"].pop("command")
    assert not jsonschema.Draft202012Validator(compose_schema()).is_valid(compose)


def test_each_demo_is_a_profile_with_its_own_broker():
    compose = load_compose()
    for profile in PROFILES:
        services = profile_services(compose, profile)
        brokers = {name for name, service in services.items() if not is_rabbitry(service)}
        assert brokers and services.keys() - brokers, profile
        for broker in brokers:
            assert "rabbitmq-diagnostics" in services[broker]["healthcheck"]["test"]
            assert services[broker]["image"].startswith("rabbitmq:") and "management" in services[broker]["image"]
            assert any(volume.endswith(":/var/lib/rabbitmq") for volume in services[broker]["volumes"])
            assert services[broker]["hostname"] == broker  # the node name, and so its data, survive recreation
    assert set(profile_services(compose, "cluster")) & set(profile_services(compose, "work-queue")) == set()


def test_every_rabbitry_service_waits_for_a_healthy_broker_of_each_url():
    compose = load_compose()
    for name, service in compose["services"].items():
        if not is_rabbitry(service):
            continue
        hosts = broker_hosts(environment_of(service)["AMQP_URL"])
        for host in hosts:
            assert service["depends_on"][host]["condition"] == "service_healthy", (name, host)
            assert set(service["profiles"]) <= set(compose["services"][host]["profiles"]), (name, host)


def test_the_image_is_given_its_settings_through_the_environment_and_no_password_is_fixed():
    compose = load_compose({"RABBITMQ_DEFAULT_USER": "alice", "RABBITMQ_DEFAULT_PASS": "s3cret"})
    for name, service in compose["services"].items():
        environment = environment_of(service)
        if is_rabbitry(service):
            for url in environment["AMQP_URL"].split(","):
                assert urlsplit(url).username == "alice" and urlsplit(url).password == "s3cret", name
        else:
            assert environment["RABBITMQ_DEFAULT_PASS"] == "s3cret", name


def test_every_command_is_a_rabbitry_command_that_accepts_its_options():
    compose = load_compose()
    scripts = rabbitry_scripts()
    for name, service in compose["services"].items():
        if not is_rabbitry(service):
            continue
        script = shell_script(service)
        if script is not None:
            used = {word for word in re.findall(r"[\w-]+", script) if word in scripts}
            assert used, f"{name}'s script runs no rabbitry command"
            continue
        command = service["command"]
        assert command[0] in scripts, name
        result = subprocess.run([command_path(command[0]), *command[1:], "--help"], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert result.stdout.startswith(f"Usage: {command[0]} ")


def test_the_cluster_nodes_discover_each_other_by_the_names_compose_gives_them():
    compose = load_compose()
    nodes = {name: service for name, service in profile_services(compose, "cluster").items()
             if not is_rabbitry(service)}
    assert len(nodes) == 3
    cookies = {environment_of(node)["RABBITMQ_ERLANG_COOKIE"] for node in nodes.values()}
    assert len(cookies) == 1 and "" not in cookies
    discovery = {}
    for node in nodes.values():
        (config,) = node["configs"]
        assert config["target"].startswith("/etc/rabbitmq/conf.d/")
        content = compose["configs"][config["source"]]["content"]
        discovery = dict(line.split(" = ", 1) for line in content.splitlines() if line.strip())
    assert discovery["cluster_formation.peer_discovery_backend"] == "classic_config"
    listed = {value for key, value in discovery.items() if key.startswith("cluster_formation.classic_config.nodes.")}
    assert listed == {f"rabbit@{node['hostname']}" for node in nodes.values()}


# -- each profile, run as local processes -----------------------------------------------------------

def test_the_work_queue_profile_runs_every_task_with_fair_dispatch_over_three_workers(
        broker_url, compose_vhost, local_project):
    project = local_project("work-queue", project_variables(broker_url), {"rabbitmq": local_address(broker_url)},
                            vhost=compose_vhost)
    assert project.rabbitry_services == {"worker", "new-task"}
    settings = BrokerSettings.from_url(in_vhost(broker_url, compose_vhost))

    workers = project.start("worker", replicas=3)  # docker compose up --scale worker=3
    wait_for_consumers(settings, DEFAULT_TASK_QUEUE, 3 * 2, workers)
    new_task = project.run("new-task")
    task_ids = new_task.stdout().split()

    assert len(task_ids) == len(set(task_ids)) > 3
    wait_until(lambda: set(succeeded_task_ids(workers)) >= set(task_ids), 60, 0.2, "every task to succeed")
    assert all(worker.stop() == 0 for worker in workers)
    assert succeeded_task_ids(workers) == collections.Counter(task_ids)  # each exactly once
    assert all(worker.events("task_succeeded") for worker in workers)  # every container took its share
    with connect(settings) as connection:
        assert connection.queue_state(DEFAULT_TASK_QUEUE).messages == 0


def readable_messages(subscriber: LocalService) -> list[tuple[str, str]]:
    """(routing key, message) of each line ``subscribe`` printed: ``KEY SEVERITY MESSAGE``."""
    messages = []
    for line in subscriber.stdout().splitlines():
        routing_key, _severity, message = line.split(None, 2)
        messages.append((routing_key, message))
    return messages


def test_the_logs_profile_gives_each_subscriber_exactly_its_messages(broker_url, compose_vhost, local_project):
    count = 4
    variables = project_variables(broker_url, EMIT_COUNT=str(count), EMIT_INTERVAL="0", EMIT_START_DELAY="0")
    project = local_project("logs", variables, {"rabbitmq": local_address(broker_url)}, vhost=compose_vhost)
    subscriber_names = {"subscribe-all", "subscribe-kern", "subscribe-critical"}
    assert project.rabbitry_services == subscriber_names | {"emit-log"}

    subscribers = {name: project.start(name)[0] for name in sorted(subscriber_names)}
    for subscriber in subscribers.values():
        wait_until(lambda s=subscriber: s.check_alive() or s.events("subscribed"), 30, 0.1,
                   f"{subscriber.name} to bind its queue")
    project.run("emit-log")

    emitted_keys = re.search(r"for key in ([^;]+);", shell_script(project.services["emit-log"]))[1].split()
    emitted = [(key, f"{key} event {n}") for key in emitted_keys for n in range(1, count + 1)]
    for name, subscriber in subscribers.items():
        (binding_key,) = project.services[name]["command"][1:]
        expected = [message for message in emitted if topic_matches(binding_key, message[0])]
        assert 0 < len(expected) <= len(emitted)
        wait_until(lambda s=subscriber, n=len(expected): len(readable_messages(s)) >= n, 30, 0.1,
                   f"{len(expected)} messages for {binding_key}")
        assert subscriber.stop() == 0
        assert collections.Counter(readable_messages(subscriber)) == collections.Counter(expected), binding_key


@pytest.mark.slow
def test_the_cluster_profile_loses_no_task_when_rabbitmq_2_stops_mid_run(cluster3, tmp_path, local_project):
    nodes = dict(zip(("rabbitmq-1", "rabbitmq-2", "rabbitmq-3"), cluster3.nodes))
    project = local_project("cluster", project_variables(cluster3.nodes[0].url),
                            {name: local_address(node.url) for name, node in nodes.items()})
    assert project.rabbitry_services == {"cluster-worker", "cluster-new-task"}
    assert set(project.services) - project.rabbitry_services == set(nodes)

    workers = project.start("cluster-worker", replicas=2)
    wait_for_consumers(cluster3.settings(), DEFAULT_TASK_QUEUE, 2 * 2, workers)
    task_ids = project.run("cluster-new-task").stdout().split()
    wait_until(lambda: len(succeeded_task_ids(workers)) >= 2, 60, 0.1, "the first tasks to succeed")
    nodes["rabbitmq-2"].stop()  # docker compose stop rabbitmq-2

    wait_until(lambda: set(succeeded_task_ids(workers)) >= set(task_ids), 60, 0.2, "every task to succeed")
    assert all(worker.stop() == 0 for worker in workers)
    assert all(worker.events("connection_lost") for worker in workers)  # they were on rabbitmq-2, and moved
    with connect(cluster3.settings()) as connection:
        assert connection.queue_state(DEFAULT_TASK_QUEUE).messages == 0
