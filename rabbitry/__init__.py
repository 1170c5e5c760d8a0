"""The ``rabbitry`` umbrella command: demo, compare, dlq and status."""
