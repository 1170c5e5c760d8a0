"""The in-process transport: the connection contract with AMQP's semantics and no server.

The embedded default when no broker is reachable, the test double, and the
other side of ``rabbitry compare``. As in kombu, routing is apart from storage:

- :mod:`.connection`: the client side, one :class:`~.connection.LocalConnection`
  per thread, speaking to its broker through an outbox (:mod:`.outbox`).
- :mod:`.registry`: the process's brokers by name, and connecting to the one a
  ``local://`` URL names.
- :mod:`.broker`: the broker that joins routing (:mod:`.exchange`) to storage
  (:mod:`.queue`, :mod:`.stream`), with dead letters (:mod:`.dead_letters`),
  expiry (:mod:`.expiry`) and direct reply-to (:mod:`.reply_to`).
- :mod:`.refusals`: the broker's refusals, worded as RabbitMQ words them.
"""
