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

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

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
