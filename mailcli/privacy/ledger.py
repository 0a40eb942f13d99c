"""The erasure ledger: who was erased and when, kept outside the database.

A backup taken before an erasure still holds the person. So that restoring it
never brings them back (``docs/guarantees.md#restore``), every erasure is also appended to
``erasures.jsonl`` in the database's ledger folder (``<database>-ledgers/``,
:mod:`mailcli.ledgers`; mode 0600, folder 0700): one JSON object per line with
the keyed HMAC of the address, the time and why — never the address.
``backup restore`` replays it. The file lives beside the database and not in
it, because the database is what a restore replaces.

The ledger is written and fsynced *before* the database transaction: if the
erasure then fails, the worst case is a ledger line for a person who asked to
be erased anyway, never an erasure that a restore could undo.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import MailcliError
from ..ledgers import append_durably, ledger_file, read_ledger

LEDGER_NAME = "erasures.jsonl"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    hmac: str
    erased_at: str
    reason: str  # "request", "retention:unconfirmed", ... ; why the person was erased
    suppress: bool  # whether a '*' suppression must exist (request erasures)


def ledger_path(settings: Settings) -> Path:
    return ledger_file(settings, LEDGER_NAME)


def append_entries(settings: Settings, entries: list[LedgerEntry]) -> None:
    """Append entries durably (fsync) to the ledger, creating it 0600."""
    if not entries:
        return
    path = ledger_path(settings)
    text = "".join(
        json.dumps({"hmac": e.hmac, "erased_at": e.erased_at, "reason": e.reason, "suppress": e.suppress},
                   sort_keys=True) + "\n"
        for e in entries
    )
    try:
        append_durably(path, text)
    except OSError as exc:
        raise MailcliError(f"Cannot write the erasure ledger {path}: {exc.strerror}; nothing was erased") from None


def _entry(data: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(hmac=str(data["hmac"]), erased_at=str(data["erased_at"]),
                       reason=str(data.get("reason", "request")), suppress=bool(data.get("suppress", True)))


def read_entries(settings: Settings, start: int = 0) -> Iterator[LedgerEntry]:
    """Every entry (from byte ``start``, see ``optouts.ledger_end``); a damaged
    line is an error naming the line (it must not be skipped)."""
    return read_ledger(ledger_path(settings), "erasure ledger",
                       "repair the line by hand (it holds only a hash and a time); never delete the file", _entry, start)
