"""A broker that accepts TCP but never speaks AMQP (a frozen node, a stalled proxy, a
wrong port): commands exit with one line, and running workers and publishers wait it out."""

import concurrent.futures

from rabbitry.common.errors import ExitCode
from tests.faults.helpers import BackgroundSubmitter, wait_for_all
from tests.faults.proxy import FreezableProxy, SilentServer
from tests.helpers import NodeCommands, succeeded_ids, wait_until

#: pika gives up on a connection whose AMQP handshake has not finished after this long.
PIKA_STACK_TIMEOUT_S = 15


def test_a_server_that_never_speaks_amqp_is_one_line_and_exit_3_for_every_command(unique_name):
    with SilentServer() as silent:
        node = NodeCommands(silent.url())
        commands = (
            ["new-task", "--queue", unique_name, "hello"],
            ["worker", "--queue", unique_name, "--processes", "1", "--connect-timeout", "0"],
            ["rabbitry", "status", "--queue", unique_name],
        )
        with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:  # each waits out pika's timeout
            results = list(pool.map(lambda command: node.run(*command, timeout=90), commands))

    for result in results:
        assert result.returncode == ExitCode.BROKER_UNAVAILABLE, result.stderr
        assert "Traceback" not in result.stderr
        (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert "does not answer as a broker" in error


def test_workers_and_publishers_wait_out_a_stalled_network_and_lose_nothing(extra_broker, unique_name):
    with FreezableProxy(extra_broker.amqp_port) as proxy, NodeCommands(proxy.url()) as node:
        worker = node.start_worker(unique_name, "--processes", "2")
        submitter = BackgroundSubmitter(node.settings, unique_name, count=600, rate=40)
        submitter.start()
        wait_until(lambda: len(succeeded_ids(worker)) >= 50, message="50 tasks done")

        # Every connection drops, and new ones are accepted but answered by nothing for longer
        # than pika waits for a handshake: reconnecting fails with AMQPConnectorStackTimeout.
        proxy.freeze()
        proxy.drop_connections()
        wait_until(
            lambda: any(
                "does not answer as a broker" in event["error"] for event in worker.events("broker_unreachable")
            ),
            timeout=PIKA_STACK_TIMEOUT_S * 3,
            message="a reconnect attempt that timed out",
        )
        proxy.thaw()

        submitter.finish(timeout=120)
        wait_for_all(submitter.ids, [worker], timeout=120)

    assert worker.events("pool_process_died") == []
    assert worker.process.poll() is None or worker.process.returncode == 0
