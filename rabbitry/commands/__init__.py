"""The ``rabbitry`` subcommands of its own: one module each, loaded only when it runs.

``worker``, ``new-task``, ``emit-log`` and ``subscribe`` live with their
side (``workers/``, ``producers/``, ``subscribers/``); ``compare`` in
:mod:`rabbitry.compare`. The umbrella group is :mod:`rabbitry.cli`.
"""
