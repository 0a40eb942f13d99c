"""The values of a contact row: consent time, consent IP, cells.

Consent evidence: naive times are taken as UTC; day-first dates
(``01-04-2023 10:12``) are read the European way. An IP address is kept
truncated to its /24 (IPv4) or /48 (IPv6) network — enough as evidence, less
personal data (docs/guarantees.md#consent).

:func:`parse_consent_time` and :func:`truncate_ip` read every shape. The row
parser checks the shape nearly every file has first (Mailchimp's
``2023-04-01 10:12:33``, a dotted IPv4 address) with :data:`PLAIN_TIME`,
:func:`known_date` and :data:`OCTETS`, without a call per row, and calls these
only for the rest; property tests check that both give the same.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import date, datetime, timezone

from mailcli import clock
from mailcli.importrows import MAX_FIELD_CHARS

# A rejected row's cell over MAX_FIELD_CHARS goes to the rejects file cut to
# this many characters and a marker saying how long it was.
REJECT_CELL_CHARS = 1000

# The common shapes. "YYYY-MM-DD HH:MM:SS" with a possible time of day (ASCII
# digits only, as datetime.fromisoformat wants them; the date is checked by
# known_date), already UTC; IPv4 octets as written without leading zeros
# (ipaddress refuses those).
PLAIN_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]").fullmatch
OCTETS = frozenset(str(n) for n in range(256))
DATES: dict[str, bool] = {}  # "YYYY-MM-DD" -> whether it is a date, for the dates seen (files repeat them)

_DMY = re.compile(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})(?:[ T]+(\d{1,2})[:.](\d{2})(?:[:.](\d{2}))?)?")


# Complexity: per row: the common timestamp shapes first, then the general parser, each refusal a ValueError.
def parse_consent_time(text: str) -> str:
    """A consent timestamp as ISO-8601 UTC; raises ValueError if unreadable."""
    value = text.strip()
    if not value:
        raise ValueError("empty consent time")
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "Zz" else value)
    except ValueError:
        match = _DMY.fullmatch(value)
        if match is None:
            raise
        day, month, year, hour, minute, second = match.groups()
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    else:
        if moment.tzinfo is None and len(value) == 19 and value[10] in " T":
            # The Mailchimp shape "2023-04-01 10:12:33": already UTC and whole seconds.
            return f"{value[:10]}T{value[11:]}Z"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return clock.to_iso(moment)


def known_date(text: str) -> bool:
    """Whether ``YYYY-MM-DD`` is a date (remembered in DATES)."""
    valid = DATES.get(text)
    if valid is None:
        try:
            date.fromisoformat(text)
            valid = True
        except ValueError:
            valid = False
        if len(DATES) >= 10_000:  # bounded: memory stays flat whatever the file
            DATES.clear()
        DATES[text] = valid
    return valid


def truncate_ip(text: str) -> str:
    """``192.0.2.57`` → ``192.0.2.0/24``; ``2001:db8:1:2::5`` → ``2001:db8:1::/48``."""
    address = ipaddress.ip_address(text.strip())
    if address.version == 4:
        return f"{ipaddress.IPv4Address(int(address) & 0xFFFFFF00)}/24"
    return f"{ipaddress.IPv6Address(int(address) >> 80 << 80)}/48"


def cut_cell(cell: str) -> str:
    """A rejected row's cell as it was in the file, or, over the field limit,
    its start and a marker saying how long it was."""
    if len(cell) <= MAX_FIELD_CHARS:
        return cell
    return f"{cell[:REJECT_CELL_CHARS]}…[cut: {len(cell)} characters]"
