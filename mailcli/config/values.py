"""Values of a configuration that are more than a number or a string:
durations (``30d``, ``13mo``) and sending rates (``"20/s"``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

_DURATION = re.compile(r"^\s*([0-9]+)\s*(s|m|h|d|w|mo|y)\s*$")
_UNIT_WORDS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks", "mo": "months", "y": "years"}


@dataclass(frozen=True, slots=True)
class Duration:
    """A retention period such as ``30d``, ``12w``, ``13mo`` or ``2y``.

    Months and years are calendar months, so ``13mo`` before 31 March is
    28/29 February of the year before, as a person would count.
    """

    amount: int
    unit: str

    @property
    def text(self) -> str:
        return f"{self.amount}{self.unit}"

    def describe(self) -> str:
        word = _UNIT_WORDS[self.unit]
        return f"{self.amount} {word[:-1] if self.amount == 1 else word}"

    def before(self, moment: datetime) -> datetime:
        """The moment this duration before ``moment``, or the earliest one
        there is (1 January of the year 1) if that is earlier."""
        try:
            if self.unit in ("mo", "y"):
                months = self.amount * (12 if self.unit == "y" else 1)
                return _minus_months(moment, months)
            seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[self.unit]
            return moment - timedelta(seconds=self.amount * seconds)
        except (OverflowError, ValueError):
            return datetime.min.replace(tzinfo=moment.tzinfo)

    def seconds(self) -> float:
        """Approximate length in seconds (months as 30 days)."""
        per = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "mo": 2592000, "y": 31536000}
        return float(self.amount * per[self.unit])


def _minus_months(moment: datetime, months: int) -> datetime:
    import calendar

    total = moment.year * 12 + (moment.month - 1) - months
    year, month = divmod(total, 12)
    month += 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def parse_duration(text: str, longest: str = "100y") -> Duration:
    """``30d`` and the like, from 0 to ``longest`` (months as 30 days, years as 365)."""
    duration = _duration(text)
    if duration is None or duration.seconds() > _duration(longest).seconds():  # type: ignore[union-attr]
        raise ValueError(f"must be a duration such as 90s, 30m, 12h, 30d, 12w, 13mo or 2y, from 0 to {longest}"
                         f" (got {text!r})")
    return duration


def _duration(text: str) -> Duration | None:
    match = _DURATION.match(str(text))
    # A number of hundreds of digits is refused without being converted.
    if not match or len(match.group(1).lstrip("0")) > 15:
        return None
    return Duration(int(match.group(1)), match.group(2))


# A sending rate above this is no limit a relay would give; 0 means no limit.
MAX_RATE = 10_000.0
_RATE_RANGE = f"0 (no limit) or from \"1/h\" to \"{MAX_RATE:.0f}/s\""


def parse_rate(value: Any) -> float:
    """``"20/s"``, ``"600/m"``, ``"3600/h"`` or a number per second; 0 = unlimited."""
    if isinstance(value, bool):
        raise ValueError(f"must be {_RATE_RANGE}, not true/false")
    if isinstance(value, (int, float)):
        rate = float(value) if value == value and abs(value) <= 1e300 else math.nan
        shown = repr(value)
    else:
        text = str(value).strip()
        match = re.fullmatch(r"([0-9]{1,12}(?:\.[0-9]{1,12})?)\s*(?:/\s*(s|m|h))?", text)
        if not match:
            raise ValueError(f"must be a rate like \"20/s\", \"600/m\" or \"3600/h\": {_RATE_RANGE} (got {text!r})")
        per = {"s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
        rate = float(match.group(1)) / per
        shown = repr(text)
    if rate != 0 and not 1 / 3600 - 1e-12 <= rate <= MAX_RATE:
        raise ValueError(f"must be {_RATE_RANGE} (got {shown})")
    return rate


def format_rate(per_second: float) -> str:
    """A rate as a person writes it: ``20.0`` → ``"20/s"``, ``0.5`` → ``"30/m"``; 0 → ``"0"``."""
    if per_second <= 0:
        return "0"
    for unit, factor in (("s", 1), ("m", 60), ("h", 3600)):
        count = per_second * factor
        if abs(count - round(count)) < 1e-9:
            return f"{round(count)}/{unit}"
    return f"{per_second:g}/s"


def format_seconds(seconds: float) -> str:
    """A length of time as a person writes it: ``120.0`` → ``"2m"``, ``90.0`` → ``"90s"``."""
    for unit, factor in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    return f"{seconds:g}s"
