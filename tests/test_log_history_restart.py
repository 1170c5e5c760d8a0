"""History across a broker restart: the stream stays, and the first emitter binds it again.

The tutorials' log exchanges are not durable: a restart removes them and the
stream's binding with them. This starts a node of its own, to restart it.
"""

import os

from tests.helpers import json_lines, run_command


def test_history_survives_a_restart_and_emit_log_binds_the_stream_again(extra_broker, unique_name):
    env = dict(os.environ, AMQP_URL=extra_broker.url, RABBITRY_LOG_FORMAT="json")

    def run(*args):
        return run_command(list(args), env=env, check=True)

    run("rabbitry", "logs", "retain", "--max-age", "1D")  # topic_logs, as the tutorials name it
    run("emit-log", f"{unique_name}.info", "before the restart")
    extra_broker.restart()
    run("emit-log", f"{unique_name}.info", "after the restart")  # a new exchange, and the stream bound again

    result = run("subscribe", "--since", "first", f"{unique_name}.*", "--json", "--timeout", "1")
    assert [line["body"] for line in json_lines(result.stdout)] == ["before the restart", "after the restart"]
