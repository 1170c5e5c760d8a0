"""compose.yaml without a Docker engine: the Compose Specification's schema, and what
the file itself must say (images by variables, one build, no fixed password, real
commands). tests/test_compose_run.py runs the demos with docker compose.
"""

import json
import re
import subprocess
from importlib import metadata, resources
from urllib.parse import urlsplit

import jsonschema
import yaml

from tests.compose_project import COMPOSE_FILE
from tests.helpers import command_path

#: The service that builds rabbitry's image; every other rabbitry service runs that image.
IMAGE_SERVICE = "rabbitry-image"


def compose_file() -> dict:
    """compose.yaml as written (its anchors merged, its variables not interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_schema() -> dict:
    """The Compose Specification's JSON schema, as check-jsonschema vendors it from compose-spec."""
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendored.joinpath("compose-spec.json").read_text())


def rabbitry_services(compose: dict) -> dict[str, dict]:
    """The services that run rabbitry's image (the others are brokers, and the image's build)."""
    image = compose["services"][IMAGE_SERVICE]["image"]
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image") == image and name != IMAGE_SERVICE
    }


def brokers(compose: dict) -> dict[str, dict]:
    """The RabbitMQ services: those that are neither rabbitry's nor the metrics profile's."""
    return {
        name: service
        for name, service in compose["services"].items()
        if name != IMAGE_SERVICE
        and name not in rabbitry_services(compose)
        and "metrics" not in service.get("profiles", [])
    }


def rabbitry_scripts() -> set[str]:
    """The console scripts the rabbitry distribution installs."""
    return {entry.name for entry in metadata.distribution("rabbitry").entry_points if entry.group == "console_scripts"}


def test_compose_yaml_is_valid_under_the_compose_specification():
    validator = jsonschema.Draft202012Validator(compose_schema())
    errors = [f"{error.json_path}: {error.message}" for error in validator.iter_errors(compose_file())]
    assert errors == []
    assert "version" not in compose_file()  # obsolete in the Compose Specification


def test_the_schema_rejects_a_misspelt_key_as_docker_compose_does():
    compose = compose_file()
    compose["services"]["worker"]["comand"] = compose["services"]["worker"].pop("command")
    assert not jsonschema.Draft202012Validator(compose_schema()).is_valid(compose)


def test_the_images_are_chosen_by_variables_and_rabbitry_s_is_built_once():
    compose = compose_file()
    for name, broker in brokers(compose).items():
        assert broker["image"] == "${RABBITMQ_IMAGE:-rabbitmq:3.13-management}", name
    builder = compose["services"][IMAGE_SERVICE]
    assert builder["build"]["args"] == {"PYTHON_IMAGE": "${PYTHON_IMAGE:-python:3.12-slim-bookworm}"}
    assert builder["scale"] == 0  # built, never started
    services = rabbitry_services(compose)
    assert services
    for name, service in services.items():
        assert "build" not in service and service["pull_policy"] == "never", name
        assert IMAGE_SERVICE in service["depends_on"], name  # so that `up SERVICE` builds it first


def test_no_password_is_written_into_compose_yaml_and_the_broker_s_is_required():
    compose = compose_file()
    user = "${RABBITMQ_DEFAULT_USER:-rabbitry}"
    for name, service in rabbitry_services(compose).items():
        for url in service["environment"]["AMQP_URL"].split(","):
            assert urlsplit(url.strip()).netloc.rpartition("@")[0] == f"{user}:${{RABBITMQ_DEFAULT_PASS}}", name
    for name, broker in brokers(compose).items():
        assert broker["environment"]["RABBITMQ_DEFAULT_PASS"].startswith("${RABBITMQ_DEFAULT_PASS:?"), name
    assert not re.search(r"_PASS\w*:-", COMPOSE_FILE.read_text())  # no default password anywhere


#: A published port as compose.yaml may write it: on 127.0.0.1, unless a variable says otherwise.
LOOPBACK_PORT = re.compile(r"^(127\.0\.0\.1:\$\{\w+:-\d+\}|\$\{\w+:-127\.0\.0\.1:\d+\}):\d+$")


def test_every_published_port_is_on_loopback_unless_the_operator_says_otherwise():
    ports = {name: service["ports"] for name, service in compose_file()["services"].items() if "ports" in service}
    assert "rabbitmq" in ports and "rabbitmq-1" in ports
    for name, published in ports.items():
        for port in published:
            assert LOOPBACK_PORT.match(port), f"{name}: {port}"


def test_the_brokers_send_a_delayed_task_on_within_seconds_of_a_restart():
    compose = compose_file()
    advanced = compose["configs"]["broker-advanced"]["content"]
    assert "{dead_letter_worker_publisher_confirm_timeout, 5000}" in advanced
    for name, broker in brokers(compose).items():
        targets = {config["source"]: config["target"] for config in broker["configs"]}
        assert targets["broker-advanced"] == "/etc/rabbitmq/advanced.config", name


def test_every_command_is_a_rabbitry_command_that_accepts_its_options():
    scripts = rabbitry_scripts()
    for name, service in rabbitry_services(compose_file()).items():
        command = service["command"]
        if command[:2] == ["sh", "-c"]:
            used = {word for word in re.findall(r"[\w-]+", command[2]) if word in scripts}
            assert used, f"{name}'s script runs no rabbitry command"
            continue
        assert command[0] in scripts, name
        result = subprocess.run(
            [command_path(command[0]), *command[1:], "--help"], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert result.stdout.startswith(f"Usage: {command[0]} ")


def test_the_metrics_profile_scrapes_every_worker_on_its_metrics_port_and_the_broker():
    compose = compose_file()
    command = compose["services"]["worker"]["command"]
    port = int(command[command.index("--metrics-port") + 1])
    assert command[command.index("--metrics-host") + 1] == "0.0.0.0"  # reachable on the compose network
    for service in ("prometheus", "grafana"):
        assert compose["services"][service]["profiles"] == ["metrics"]
    for config in compose["configs"].values():
        assert "file" not in config or (COMPOSE_FILE.parent / config["file"]).is_file(), config

    prometheus = yaml.safe_load((COMPOSE_FILE.parent / "monitoring/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["rabbitry-worker"]["dns_sd_configs"] == [{"names": ["worker"], "type": "A", "port": port}]
    assert jobs["rabbitmq"]["static_configs"] == [{"targets": ["rabbitmq:15692"]}]


def test_the_grafana_dashboard_is_valid_and_every_panel_queries_prometheus():
    dashboard = json.loads((COMPOSE_FILE.parent / "monitoring/grafana/rabbitry.json").read_text())
    datasource = yaml.safe_load((COMPOSE_FILE.parent / "monitoring/grafana/datasource.yml").read_text())
    [source] = datasource["datasources"]

    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"] and all(target["expr"].strip() for target in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
