"""A subscriber with a durable named queue, and a streaming emit-log, through a broker
restart on a node of the test's own: every message emitted arrives, counted by id."""

import subprocess
import threading
import time

from tests.helpers import NodeCommands, command_path, json_lines, wait_until

#: Messages received before the restart, and sent after it is over: the restart falls mid-stream.
BEFORE_RESTART = 50
AFTER_RESTART = 100


def test_a_named_queue_subscriber_loses_nothing_through_a_broker_restart(extra_broker, unique_name, tmp_path):
    node = NodeCommands(extra_broker.url)
    exchange = f"{unique_name}.logs"
    received_path = tmp_path / "received.jsonl"
    received = open(received_path, "w")  # the subscriber writes at its offset: read through a handle of its own
    subscriber = subprocess.Popen(
        [command_path("subscribe"), "--exchange", exchange, "--durable", "--queue", unique_name, "--json", "app.*"],
        env=node.env,
        stdout=received,
        stderr=subprocess.DEVNULL,
    )
    emitter = subprocess.Popen(
        [command_path("emit-log"), "--exchange", exchange, "--durable", "app.info"],
        env=node.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def bodies():
        return {line.get("body") for line in json_lines(received_path.read_text())}

    try:

        def subscribed():
            state = node.queue_state(unique_name)
            return state is not None and state.consumers > 0

        wait_until(subscribed, message="the subscriber's queue")
        sent: list[str] = []
        restarted, stop = threading.Event(), threading.Event()

        def feed():  # a stream from before the restart, through it, to AFTER_RESTART lines past it
            after_restart = 0
            while after_restart < AFTER_RESTART and not stop.is_set():
                sent.append(f"message-{len(sent)}")
                emitter.stdin.write(f"{sent[-1]}\n".encode())
                emitter.stdin.flush()
                after_restart += restarted.is_set()
                time.sleep(0.01)
            emitter.stdin.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        wait_until(lambda: len(bodies()) >= BEFORE_RESTART, message=f"{BEFORE_RESTART} messages received")
        extra_broker.restart()  # stop the whole node, then start it again
        restarted.set()
        feeder.join(60)
        assert not feeder.is_alive()

        assert emitter.wait(60) == 0, emitter.stderr.read().decode()

        try:
            wait_until(lambda: bodies() >= set(sent), 60, 0.2, "every message")
        except AssertionError:
            missing = set(sent) - bodies()
            raise AssertionError(
                f"{len(missing)} of {len(sent)} messages never arrived, e.g. {sorted(missing)[:5]}"
            ) from None
        assert subscriber.poll() is None  # it reconnected by itself
    finally:
        stop.set()
        for process in (emitter, subscriber):
            if process.poll() is None:
                process.terminate()
                process.wait(10)
        received.close()
