"""The one clock mailcli reads, so tests can move time without touching the OS."""

from __future__ import annotations

from datetime import datetime, timezone


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
