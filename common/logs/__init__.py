"""Logs on the log exchanges: the messages, and the streams that keep their history.

Producers (``emit-log``, the logging handler) and subscribers (``subscribe``,
``subscribe --since``) meet here:

- :mod:`.messages`: what a log message carries, and how to read it back.
- :mod:`.history`: a log exchange's history, a stream bound to it.
"""
