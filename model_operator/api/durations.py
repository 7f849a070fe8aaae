"""Go-style durations ("500ms", "30s", "1m30s") as the API writes them, their value in seconds, and the
rules a duration field carries into the CRD with their twin checks in the models."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .base import cel, cel_rules

# Up to four number-unit parts, each number at most 5 digits and 9 decimals: everything this grammar
# accepts is inside Go's duration range (about 2,562,047h), so the API server's CEL `duration()` never
# fails to convert a value that passed the shape rule. `[.]` rather than an escape: the same text is a
# Python, Rust (pydantic) and RE2 (CEL) regular expression, and a CEL string literal.
DURATION_PATTERN = r"^([0-9]{1,5}([.][0-9]{1,9})?(ms|s|m|h)){1,4}$"
_PART = re.compile(r"([0-9]+)(?:[.]([0-9]+))?(ms|s|m|h)")
_UNIT_NANOSECONDS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
# The longest text the grammar accepts; as the schema's maxLength it also keeps the API server's CEL cost
# estimate for the rules below (inside a list of steps) within its budget.
DURATION_MAX_LENGTH = 4 * len("12345.123456789ms")
SHAPE_HINT = "such as 500ms, 30s, 1m30s or 2h (at most 4 parts, each number at most 5 digits)"


def is_duration(text: object) -> bool:
    return isinstance(text, str) and re.fullmatch(DURATION_PATTERN, text) is not None


def duration_nanoseconds(text: str) -> int:
    """Nanoseconds in a Go-style duration, computed as Go's time.ParseDuration does (a fraction goes
    through float64 and is truncated), so a floor compares here exactly as in the API server's CEL."""
    if not is_duration(text):
        raise ValueError(f"{text!r} is not a duration {SHAPE_HINT}")
    total = 0
    for whole, fraction, unit in _PART.findall(text):
        total += int(whole) * _UNIT_NANOSECONDS[unit]
        if fraction and int(fraction):
            total += int(float(int(fraction)) * (float(_UNIT_NANOSECONDS[unit]) / float(10 ** len(fraction))))
    return total


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration; raises ValueError naming the text when it is not one."""
    return duration_nanoseconds(text) / 1e9


def format_duration(seconds: float) -> str:
    """The shortest Go-style text for a number of seconds (whole milliseconds)."""
    millis = round(seconds * 1000)
    if millis % 1000:
        return f"{millis}ms"
    whole = millis // 1000
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


@dataclass(frozen=True)
class DurationRules:
    """What one duration field must be: its shape, and optionally a floor (with the reason for it)."""

    name: str
    at_least: str = "0s"
    why: str = ""

    @property
    def shape_message(self) -> str:
        return f"{self.name} must be a duration {SHAPE_HINT}"

    @property
    def floor_message(self) -> str:
        return f"{self.name} must be at least {self.at_least}" + (f" ({self.why})" if self.why else "")

    def schema(self) -> dict[str, Any]:
        """The CEL rules for the CRD. The floor rule is guarded by the shape, so a value the API server
        cannot convert gets the shape's message rather than a type-conversion error."""
        rules = [cel(f"self.matches('{DURATION_PATTERN}')", self.shape_message)]
        if duration_nanoseconds(self.at_least) > 0:
            floor = f"!self.matches('{DURATION_PATTERN}') || duration(self) >= duration('{self.at_least}')"
            rules.append(cel(floor, self.floor_message))
        return cel_rules(*rules)

    def check(self, value: str) -> str:
        """The models' twin of `schema()`."""
        if not is_duration(value):
            raise ValueError(self.shape_message)
        if duration_nanoseconds(value) < duration_nanoseconds(self.at_least):
            raise ValueError(self.floor_message)
        return value
