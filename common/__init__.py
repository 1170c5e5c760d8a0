"""rabbitry's shared layer: what producers, workers and subscribers all stand on.

Four folders, each a layer, and the modules every side shares:

- :mod:`~rabbitry.common.transport`: the connection contract that producers,
  workers and subscribers speak, and the routing and size rules both
  transports obey.
- :mod:`~rabbitry.common.amqp`: that contract over RabbitMQ. The only folder
  that imports pika.
- :mod:`~rabbitry.common.local`: the same contract without a server, an
  in-process broker of threads and queues.
- :mod:`~rabbitry.common.logs`: log messages and the streams that keep their
  history.
- Beside them: :func:`~rabbitry.common.connect.connect`, which picks a
  transport by URL and reconnects with backoff; settings (:mod:`.settings`), errors and exit codes
  (:mod:`.errors`), every exchange and queue (:mod:`.topology`), the task
  message (:mod:`.messages`), its replies (:mod:`.replies`) and delays
  (:mod:`.delays`), stream retention (:mod:`.retention`), and what every
  command shares (:mod:`.cli`, :mod:`.logconfig`).

Nothing here imports from producers, workers, subscribers or the ``rabbitry``
commands above it.
"""
