"""The transport layer: the connection contract, and the rules both transports keep.

- :mod:`.contract`: :class:`~.contract.Connection`, the small messaging API
  that producers, workers and subscribers speak, and the messages it carries.
- :mod:`.routing` and :mod:`.wire_limits`: AMQP's routing rules and the size
  limits of its wire format, as RabbitMQ applies them; the in-process broker
  applies the same.

The two transports that implement the contract are beside it, in
:mod:`rabbitry.common.amqp` and :mod:`rabbitry.common.local`; nothing here
imports either. :mod:`rabbitry.common.connect` chooses one by URL.
"""
