"""Durations as people write them: one syntax for every option that takes one.

``new-task --delay``, ``subscribe --since``/``--until``, ``rabbitry logs retain --max-age`` and a
schedule's ``every`` all read a duration with :func:`parse_duration`: a bare number of seconds
(``30``, ``1.5``), or numbers with units, summed (``90s``, ``10m``, ``2h``, ``7d``, ``1w``,
``1h30m``). The units are ``s``, ``m`` (minutes), ``h``, ``d`` and ``w``, and, as RabbitMQ writes
a stream's ``x-max-age``, ``S``, ``H``, ``D``, ``W``, ``M`` (a month, 30 days) and ``Y`` (365
days). A duration is finite, not negative, and at most :data:`MAX_DURATION_S`.
"""

import math
import re

from rabbitry.common.errors import ConfigurationError

#: Seconds in each unit. ``m`` is a minute and ``M`` a month, as RabbitMQ reads them.
UNIT_S = {
    "s": 1,
    "S": 1,
    "m": 60,
    "h": 3600,
    "H": 3600,
    "d": 86400,
    "D": 86400,
    "w": 7 * 86400,
    "W": 7 * 86400,
    "M": 30 * 86400,
    "y": 365 * 86400,
    "Y": 365 * 86400,
}
#: The longest duration read: 100 years. Anything longer is a typing slip, and past what a
#: point in time can be counted back to.
MAX_DURATION_S = 100 * 365 * 86400
_PART = re.compile(r"(\d+(?:\.\d+)?)([" + "".join(UNIT_S) + "])")
#: RabbitMQ's units for an x-max-age, largest first.
_RABBITMQ_AGE_UNITS = ("Y", "M", "D", "h", "m", "s")
_RABBITMQ_AGE = re.compile(r"^[1-9][0-9]*[YMDhms]$")

_FORMS = "write it as 30, 1.5, 90s, 10m, 2h, 7d, 1w or 1h30m"


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``10m``, ``24h``, ``7d``, ``2w``, ``1h30m`` or a bare ``90``.

    Raises ConfigurationError for anything else: negative, not finite, or longer than 100 years.
    """
    compact = str(text).strip().replace(" ", "")
    try:
        seconds = float(compact)  # bare seconds
    except ValueError:
        parts = _PART.findall(compact)
        if not compact or "".join(number + unit for number, unit in parts) != compact:
            raise ConfigurationError(f"{text!r} is not a duration: {_FORMS}") from None
        seconds = sum(float(number) * UNIT_S[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(f"{text!r} is not a duration: {_FORMS} (at least 0, and finite)")
    if seconds > MAX_DURATION_S:
        raise ConfigurationError(f"{text!r} is too long a duration: at most 100 years")
    return seconds


def rabbitmq_age(text: str) -> str:
    """A duration as RabbitMQ reads a stream's ``x-max-age``: ``7D``, ``12h``, ``90m``.

    An age already in that form is kept as written; any other duration is
    rounded to whole seconds and written in the largest unit that holds it
    exactly. Raises ConfigurationError for a duration under half a second.
    """
    text = str(text).strip()
    if _RABBITMQ_AGE.match(text):
        return text
    seconds = round(parse_duration(text))
    if seconds < 1:
        raise ConfigurationError(f"{text!r} is too short an age for a stream: at least 1s")
    unit = next(unit for unit in _RABBITMQ_AGE_UNITS if seconds % UNIT_S[unit] == 0)
    return f"{seconds // UNIT_S[unit]}{unit}"
