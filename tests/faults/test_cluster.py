"""A 3-node cluster: quorum task and dead-letter queues, and failover between the
nodes of a comma-separated AMQP_URL when one node is lost mid-run."""

from rabbitry.common.topology import dead_letter_queue_name
from tests.faults.helpers import BackgroundSubmitter, wait_for_all
from tests.helpers import NodeCommands, wait_until


def test_the_task_queue_and_dead_letter_queue_are_quorum_queues_on_every_node(cluster3, unique_name):
    node = NodeCommands(cluster3.urls)
    node.run("new-task", "--task", "noop", "--queue", unique_name, check=True)

    listing = cluster3.nodes[1].ctl("list_queues", "name", "type", "members", "--quiet", "--no-table-headers")
    rows = {line.split("\t")[0]: line for line in listing.splitlines()}
    for queue in (unique_name, dead_letter_queue_name(unique_name)):
        assert "quorum" in rows[queue]
        assert all(name in rows[queue] for name in cluster3.names)


def test_losing_one_node_of_three_mid_run_loses_no_task(cluster3, unique_name):
    node = NodeCommands(cluster3.urls)  # every command gets all three URLs
    try:
        workers = [node.start_worker(unique_name, "--processes", "2") for _ in range(2)]
        submitter = BackgroundSubmitter(node.settings, unique_name, count=1000, rate=250, task="sleep", args=[0.002])
        submitter.start()
        wait_until(lambda: len(submitter.confirmed) >= 300, message="300 tasks confirmed")

        cluster3.nodes[0].kill()  # the first URL: where every client connected

        submitter.finish()
        wait_for_all(submitter.ids, workers)
        assert node.queue_state(unique_name).messages == 0
        assert all(w.events("connection_lost") for w in workers)
        assert all(w.process.poll() is None for w in workers)
    finally:
        node.stop_workers()
