"""What an import hands from the CSV reader to the store.

The reader (:mod:`mailcli.importer`) parses a file into these rows and groups
them into batches; the store (:mod:`mailcli.store.imports`) stages and writes
them. Both import this module and neither imports the other's, so the store
never depends on the code that reads files and runs worker processes.

Rows are ``NamedTuple``s and plain tuples rather than dataclasses: just as
immutable, and several times cheaper to build on a path that makes one per
line of the file (benchmarks/README.md, "Import rows are tuples").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

#: The longest field an import takes (a longer one rejects its row) and
#: ``contacts set`` takes (a longer value is refused); a NUL byte is refused
#: by both.
MAX_FIELD_CHARS = 64 * 1024
_SPACES = re.compile(r"\s+")


def clean_name(value: str) -> str:
    """A name without line breaks or controls (each becomes a space): it may
    end up in a To: display name. An import and ``contacts set`` store names so."""
    value = value.strip()
    if value.isprintable():
        return value
    cleaned = "".join(ch if ch.isprintable() else " " for ch in value)
    return _SPACES.sub(" ", cleaned).strip()


def field_problem(value: str) -> str | None:
    """Why a value is no field's: longer than MAX_FIELD_CHARS, or holding a
    NUL byte (the import rejects such a row for the same reasons)."""
    if len(value) > MAX_FIELD_CHARS:
        return f"longer than {MAX_FIELD_CHARS // 1024} KiB ({len(value)} characters)"
    if "\x00" in value:
        return "NUL bytes are not allowed"
    return None

# A valid row as the store stages it: (line, email, key, first_name,
# last_name, attributes as compact JSON, consent_at, consent_ip). ``email`` is
# None when it is the key itself (most addresses are written in lower case),
# which keeps the address out of the workers' frames and the stage once;
# consent_at is ISO-8601 UTC (None: the import time), consent_ip a network
# such as "192.0.2.0/24".
StagedRow = tuple[int, "str | None", str, "str | None", "str | None", str, "str | None", "str | None"]


class OptOut(NamedTuple):
    """A row of someone who left the list at the service the file comes
    from: unsubscribed, or cleaned (the address bounced). Never subscribed;
    the store puts the address on the suppression list."""

    line: int
    key: str
    kind: str  # "unsubscribed" or "bounced"
    at: str | None  # when, ISO-8601 UTC, if the file says so readably


class RowReject(NamedTuple):
    """A row that was not imported, with the reason and its cells by header."""

    line: int
    reason: str
    raw: dict[str, str]


class Batch(NamedTuple):
    """Rows on their way to the store, with how far the reader has got."""

    rows: list[StagedRow]
    rejects: list[RowReject]
    position: int  # bytes of the file read so far
    suppressed: int = 0  # rows left out because the address is suppressed
    frame: bytes | None = None  # a worker's rows, rejects and opt-outs: a serialized SQLite database
    retract_from: int = 0  # withdraw the worker rows, rejects and opt-outs from this line on
    optouts: Sequence[OptOut] = ()  # rows of people who left the list at the file's source


class Suppression:
    """Whether an address key is on the suppression list (for this list or all
    marketing), by its keyed hash (docs/guarantees.md#suppression)."""

    def __init__(self, secret: bytes, digests: set[str]) -> None:
        # Imported here, when there is a list to check: every import worker
        # loads this module.
        from mailcli.tokens import address_hmac

        self.secret = secret
        self.digests = digests
        self._digest = address_hmac

    def __call__(self, key: str) -> bool:
        return self._digest(self.secret, key) in self.digests


# What the store calls inside its transaction, once it knows the suppression
# list, with whether it can take worker frames (serialized SQLite databases):
# it returns the file's batches, suppressed addresses left out and counted.
BatchSource = Callable[[Suppression | None, bool], Iterable[Batch]]
