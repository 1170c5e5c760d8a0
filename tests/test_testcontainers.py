"""With RABBITMQ_URL unset and a Docker engine up, the tests start their own broker.

conftest.py's ``broker_url`` starts RabbitMQ through testcontainers, from the
image ``RABBITMQ_IMAGE`` names; this runs a test file that way, in a pytest of
its own, and checks that the broker's container is gone afterwards.
"""

import os
import subprocess
import sys

from tests.compose_project import ROOT, docker_run
from tests.helpers import rabbitmq_image


def rabbitmq_containers(docker: str, image: str) -> set[str]:
    return set(docker_run(docker, "ps", "--all", "--quiet", "--filter", f"ancestor={image}").stdout.split())


def test_the_tests_start_their_own_broker_through_testcontainers(docker):
    image = rabbitmq_image()
    before = rabbitmq_containers(docker, image)
    env = {name: value for name, value in os.environ.items() if name != "RABBITMQ_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_publisher.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,  # within the test's own bound (pyproject.toml's timeout)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout.splitlines()[-1]
    assert rabbitmq_containers(docker, image) == before
