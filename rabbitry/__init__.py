"""rabbitry: tasks and logs over RabbitMQ.

What an application imports is here, and only here::

    from rabbitry import task

    @task(queue="images", max_retries=5)
    def resize(path: str, width: int = 800) -> None: ...

    resize.delay("cat.png", width=400)   # a worker runs it: worker --queue images --tasks myapp.tasks

Everything else (``rabbitry.common``, ``rabbitry.workers``, ...) is internal
and may change. The names below are imported only when first used, so
importing ``rabbitry`` (and running ``rabbitry --help``) stays quick.
"""

import importlib

#: Public name -> the module that defines it.
_EXPORTS = {
    # Tasks
    "task": "rabbitry.tasks",
    "Task": "rabbitry.tasks",
    "TaskSubmitter": "rabbitry.producers.submitter",
    "AsyncTaskSubmitter": "rabbitry.producers.aio",
    "TaskHandle": "rabbitry.producers.handles",
    "TaskFailed": "rabbitry.producers.handles",
    "ResultLost": "rabbitry.producers.handles",
    "ResultNotRequested": "rabbitry.producers.handles",
    "TaskMessage": "rabbitry.common.messages",
    # Metrics
    "SubmitterMetrics": "rabbitry.producers.metrics",
    "instrument": "rabbitry.producers.default",
    # Logs
    "LogExchangeHandler": "rabbitry.producers.log_handler",
    "LogEmitter": "rabbitry.producers.log_emitter",
    "LogSubscriber": "rabbitry.subscribers.log_subscriber",
    "log_exchange": "rabbitry.common.topology",
    # Settings
    "BrokerSettings": "rabbitry.common.settings",
    "TlsSettings": "rabbitry.common.settings",
    # Errors
    "RabbitryError": "rabbitry.common.errors",
    "ConfigurationError": "rabbitry.common.errors",
    "DuplicateTask": "rabbitry.common.errors",
    "BrokerUnavailable": "rabbitry.common.errors",
    "BrokerRefused": "rabbitry.common.errors",
    "PublishFailed": "rabbitry.common.errors",
    "Unroutable": "rabbitry.common.errors",
    "MessageError": "rabbitry.common.errors",
    "InvalidDelay": "rabbitry.common.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rabbitry' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # imported once: later look-ups skip this function
    return value


def __dir__():
    return sorted({*globals(), *__all__})
