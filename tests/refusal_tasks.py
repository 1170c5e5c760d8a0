"""Tasks for the tests of what the broker refuses (tests/faults/test_refusals.py)."""

from rabbitry.tasks import task


@task
def text_of(size: int) -> str:
    """Return ``size`` bytes of text: a result as large as asked."""
    return "x" * size
