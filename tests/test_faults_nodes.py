"""The extra nodes themselves: they run on ports of their own and come back after a stop."""

import pytest

from common.broker import connect

pytestmark = pytest.mark.slow


def test_an_extra_node_comes_back_after_stop_app(extra_broker):
    assert extra_broker.amqp_port != 5672
    extra_broker.stop_app()
    extra_broker.start_app()
    with connect(extra_broker.settings()) as connection:
        assert connection.is_open
