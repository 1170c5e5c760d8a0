"""Producers: ``new-task`` for the work queue, ``emit-log`` and the logging handler for logs."""
