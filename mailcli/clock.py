"""The one clock mailcli reads, so tests can move time without touching the OS."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def monotonic() -> float:
    """Seconds on a clock that never goes back (for measuring spans, such as
    how long a send has gone without the relay pushing back)."""
    return time.monotonic()


def now() -> datetime:
    """The current time as an aware UTC datetime (whole seconds)."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def now_iso() -> str:
    """The current time as ISO-8601 UTC text, as stored in the database."""
    return to_iso(now())


def to_iso(moment: datetime) -> str:
    """ISO-8601 UTC text with a ``Z`` suffix for an aware datetime.

    The year always has four digits (strftime writes the year 999 as
    ``999``), so that the text sorts as the time does: the database compares
    these as strings.
    """
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")[:19] + "Z"


def parse_iso(text: str) -> datetime:
    """Parse the ISO-8601 text this module writes (and common variants)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def parse_moment(text: str) -> datetime:
    """A moment a person typed: ISO 8601, a date alone or with a time, UTC
    unless it carries an offset (``2027-01-01``, ``2026-12-01T09:30:00+01:00``).

    Raises ValueError for text that is no such moment, OverflowError for an
    offset that takes it past the year 1 or 9999.
    """
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
