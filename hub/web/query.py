"""Values from a query string or a header (an event id, a wait, a filter), checked: an
integer in range, a bounded text, each refused with the field named."""

from __future__ import annotations

import re
from typing import Any

from hub.errors import invalid

MAX_INT = 2**63 - 1


def integer(value: Any, field: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high] (JSON numbers or query strings), else 422."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value.strip()):
        # The stripped text: str.strip() removes more than int() skips (\x1c to \x1f).
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, "must be an integer")
    if not low <= value <= high:
        raise invalid(field, f"must be between {low} and {high}")
    return value


def text(value: Any, field: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if len(value) > max_length or "\0" in value:
        raise invalid(field, f"must be at most {max_length} characters, without NUL")
    return value
