"""Fixtures only the fault tests use: rabbitry's commands aimed at the module's own node, and a
cluster of three nodes."""

import pytest

from tests.helpers import NodeCommands
from tests.nodes import RabbitCluster, module_resource


@pytest.fixture
def node(extra_broker):
    """rabbitry's commands and a connection aimed at this test module's own node; the workers
    they started are stopped afterwards."""
    with NodeCommands(extra_broker.url) as commands:
        yield commands


_cluster3_started, cluster3 = module_resource(
    "cluster3", RabbitCluster, "A 3-node RabbitMQ cluster of this test module's own, every node running."
)
