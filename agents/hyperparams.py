"""Checks for agent hyper-parameters: a bad value fails at construction, naming the parameter.

Hydra overrides reach constructors as plain Python values (``agent.params.alpha=nan`` arrives as
``float("nan")``, ``alpha=abc`` as ``"abc"``), and the composition root builds every agent once
before any work (``rapport.experiments.builders.check_agent``), so a check here is what turns a typo into
one clear line instead of a run that finishes with nonsense. Each error names the parameter, the
valid range and the value received.

``bool`` is refused where a number is expected (``True`` would otherwise pass as 1), and floats
are refused where a count is expected (``propensity_draws=6.4``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def check_real(name: str, value: Any, *, minimum: float | None = None, exclusive: bool = False,
               maximum: float | None = None, meaning: str = "") -> float:
    """``value`` as a finite float in ``[minimum, maximum]`` (``(minimum, ...`` when ``exclusive``).

    Parameters
    ----------
    name : the parameter's name as the caller spells it (``"alpha"``), used in the message.
    minimum, maximum : bounds (None: unbounded on that side).
    exclusive : the lower bound itself is invalid (``ridge > 0``).
    meaning : a few words on what the parameter does, appended to the message.

    Raises
    ------
    ValueError
        Not a real number (bool and strings included), NaN, ±inf, or outside the range.
    """
    low = "" if minimum is None else (f" > {minimum:g}" if exclusive else f" >= {minimum:g}")
    high = "" if maximum is None else f" <= {maximum:g}"
    valid = f"a finite number{low}{' and' if low and high else ''}{high}"
    why = f" ({meaning})" if meaning else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {valid}{why}, got {value!r} ({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be {valid}{why}, got {number}")
    too_low = minimum is not None and (number <= minimum if exclusive else number < minimum)
    if too_low or (maximum is not None and number > maximum):
        raise ValueError(f"{name} must be {valid}{why}, got {number:g}")
    return number


def check_count(name: str, value: Any, *, minimum: int = 0, meaning: str = "") -> int:
    """``value`` as an int ``>= minimum`` (numpy integers accepted; floats and bool refused)."""
    why = f" ({meaning})" if meaning else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}{why}, got {value!r} ({type(value).__name__})")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{why}, got {int(value)}")
    return int(value)


def check_flag(name: str, value: Any, *, meaning: str = "") -> bool:
    """``value`` as a bool: ``True``/``False`` (numpy bools accepted); ``"false"``, 0 and 1 refused,
    since a string is always truthy and an int is usually a mistyped other parameter."""
    if not isinstance(value, bool | np.bool_):
        why = f" ({meaning})" if meaning else ""
        raise ValueError(f"{name} must be true or false{why}, got {value!r} ({type(value).__name__})")
    return bool(value)
