"""Checks of the API's numeric arguments, each error naming the argument: a wrong type is a TypeError, a
value out of range a ValueError, and 0 is never read as "unset" (None is). The command line checks the
same ranges at parse time (cliargs' option types)."""

from __future__ import annotations

import math
import numbers


def check_int(value, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return int(value)


def check_number(value, name: str, *, minimum: float | None = None, above: float | None = None) -> float:
    """A finite number, >= `minimum` and/or > `above`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}={value} must be finite")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    if above is not None and value <= above:
        raise ValueError(f"{name}={value} must be greater than {above}")
    return float(value)
