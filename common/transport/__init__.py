"""The transport layer: the connection contract, the rules both transports keep, and connecting.

- :mod:`.contract`: :class:`~.contract.Connection`, the small messaging API
  that producers, workers and subscribers speak, and the messages it carries.
- :mod:`.routing` and :mod:`.limits`: AMQP's routing rules and size limits,
  as RabbitMQ applies them; the in-process broker applies the same.
- :mod:`.connect`: a connection for a URL, RabbitMQ's or ``local://``, and
  reconnecting with backoff.
"""
