"""What counts as a number in a config or a result file: one definition for every reader."""

from __future__ import annotations

import math
from typing import Any


def is_number(value: Any) -> bool:
    """True for ints and floats, not bools (YAML's ``true`` is no strength)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """:func:`is_number` and finite (no NaN, no infinity)."""
    return is_number(value) and math.isfinite(value)
