"""The RabbitMQ transport: the connection contract over pika, and RabbitMQ's HTTP API.

The only folder of rabbitry that imports pika. pika's exceptions are
translated where they leave it, and the few private parts of pika it needs
are reached through one adapter, :mod:`.pika_internals`.

- :mod:`.connection`: :class:`~rabbitry.common.transport.contract.Connection` over pika.
- :mod:`.opening`: opening a connection: pika's parameters for a URL, TLS, failover across URLs.
- :mod:`.translation`: pika's exceptions translated into rabbitry's.
- :mod:`.frames` and :mod:`.headers`: reading a connection's frames, fast for
  deliveries and forgiving of header tables pika cannot read.
- :mod:`.pika_internals`: the adapter.
- :mod:`.management`: the management plugin's HTTP API, with the standard library.
"""
