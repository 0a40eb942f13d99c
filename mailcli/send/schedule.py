"""``send --not-before "2026-12-24 09:00" [--tz Europe/Amsterdam]``: the moment
before which a campaign sends nothing.

A cron line that runs the same ``send`` every few minutes then sends it on
time: each run before the moment creates (or reschedules) the campaign and
exits 0 having sent nothing; the first run after it freezes the audience and
sends. The time is read in ``--tz`` (an IANA zone name), else in this
machine's local time zone, unless it carries its own offset
(``2026-12-24T09:00+01:00``, ``…Z``).
"""

from __future__ import annotations

import difflib
from datetime import datetime, timezone, tzinfo

from mailcli.errors import UsageError

FORMATS = "2026-12-24 09:00, 2026-12-24T09:00:00 or 2026-12-24T09:00+01:00"


def parse_not_before(text: str, tz: str | None = None) -> datetime:
    """The moment as an aware UTC datetime; a UsageError names what was wrong."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise UsageError(f"--not-before {text!r} is not a date and time", hint=f"write it like {FORMATS}") from None
    if len(value) == 10:
        raise UsageError(f"--not-before {text!r} has no time of day", hint=f"write it like {FORMATS}")
    if moment.tzinfo is not None:
        if tz is not None:
            raise UsageError(f"--not-before {text!r} has its own offset; leave out --tz {tz}")
        return moment.astimezone(timezone.utc)
    if tz is None:
        return moment.astimezone().astimezone(timezone.utc)  # this machine's local time
    return moment.replace(tzinfo=zone(tz)).astimezone(timezone.utc)


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name`` (``Europe/Amsterdam``); a UsageError with a suggestion if unknown."""
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        guess = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=1, cutoff=0.6)
        raise UsageError(f"--tz {name!r} is not a time zone" + (f" (did you mean {guess[0]}?)" if guess else ""),
                         hint="use an IANA name like Europe/Amsterdam or UTC") from None
