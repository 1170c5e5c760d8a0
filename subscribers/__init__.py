"""Subscribers to the log exchanges: :class:`LogSubscriber` and the ``subscribe`` command."""
