"""rabbitry's shared layer: settings, errors, topology, messages and transports.

This package is the only place that imports pika. Producers, workers and
subscribers speak to :mod:`rabbitry.common.transport`; the AMQP transport
(:mod:`rabbitry.common.amqp`) and the in-process one (:mod:`rabbitry.common.local`) both
implement it.
"""
