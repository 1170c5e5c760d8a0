"""``rabbitry compare``: the same workloads on the in-process model and on RabbitMQ.

- :mod:`.command`: the command itself.
- :mod:`.workloads`: the transport workloads, each run through the one connection API.
- :mod:`.concurrency`: the seed article's concurrency experiment, every form on every
  workload: :mod:`.forms` without a broker, :mod:`.worker` with rabbitry's worker, on
  the tasks of :mod:`.tasks` and :mod:`.async_tasks`, against the slow server of
  :mod:`.server`.
"""
