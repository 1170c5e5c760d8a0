"""rabbitry's shared layer: settings, errors, topology, messages and transports.

This package is the only place that imports pika. Producers, workers and
subscribers speak to :mod:`common.transport`; the AMQP transport
(:mod:`common.amqp`) and the in-process one (:mod:`common.local`) both
implement it.
"""
