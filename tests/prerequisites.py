"""What a test needs from the machine, and what happens when it is missing.

On a developer's machine a test whose prerequisite is missing (``rabbitmq-server`` to start
nodes of its own, root, openssl, Docker, libfaketime, hadolint) is skipped with the reason.
Under CI (``CI`` set, as ``.ci/run`` runs) it fails with that reason instead: a green CI run
means every test ran.
"""

import os
from typing import NoReturn

import pytest

#: Set (to anything but "", "0" or "false") by CI; .ci/run runs with CI=true.
CI_ENVVAR = "CI"


def required() -> bool:
    """Whether a missing prerequisite fails the test rather than skipping it."""
    return os.environ.get(CI_ENVVAR, "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> NoReturn:
    """Skip the test for ``reason``; under CI, fail it with that reason."""
    if required():
        pytest.fail(f"{reason} ({CI_ENVVAR} is set: under CI every test must run)", pytrace=False)
    pytest.skip(reason)
