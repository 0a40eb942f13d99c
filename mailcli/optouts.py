"""The opt-out ledger: every opt-out, kept outside the database.

A backup taken before someone unsubscribed still has them subscribed. When
the database itself is lost or damaged, the backup is all a restore has, so
every opt-out — unsubscribe (one-click, mailto, by hand, from an imported
export), hard bounce, complaint, objection — and every restriction or lifted
restriction is also appended to ``optouts.jsonl`` in the database's ledger
folder (``<database>-ledgers/``, see :mod:`mailcli.ledgers`; mode 0600, folder
0700), beside the erasure ledger: one JSON object per line with the keyed
HMAC of the address, the scope (a list name, or ``*`` for all marketing),
why, the channel and the time — never the address. ``backup restore``
re-applies it to the restored database, so nobody who opted out after the
backup is mailed again.

A line is appended and fsynced inside the transaction that records the
opt-out, before it commits: if the transaction then fails, the worst case is
a line for a person who asked to opt out anyway, never an opt-out that a
restore could undo. A repeated opt-out that changes nothing writes no line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import MailcliError
from .ledgers import append_durably, ledger_file, read_ledger

LEDGER_NAME = "optouts.jsonl"
REASONS = ("unsubscribed", "bounced", "complained", "objected", "restricted", "unrestricted")


@dataclass(frozen=True, slots=True)
class OptOutEntry:
    hmac: str
    scope: str  # a list name, or "*" for all marketing
    reason: str  # one of REASONS
    channel: str
    at: str  # ISO-8601 UTC


def optout_ledger_path(settings: Settings) -> Path:
    return ledger_file(settings, LEDGER_NAME)


def append_optouts(settings: Settings, entries: Iterable[OptOutEntry]) -> None:
    """Append entries durably to the opt-out ledger."""
    text = "".join(
        json.dumps({"hmac": e.hmac, "scope": e.scope, "reason": e.reason, "channel": e.channel, "at": e.at},
                   sort_keys=True) + "\n"
        for e in entries
    )
    if not text:
        return
    path = optout_ledger_path(settings)
    try:
        append_durably(path, text)
    except OSError as exc:
        raise MailcliError(f"Cannot write the opt-out ledger {path}: {exc.strerror}; nothing was recorded") from None


def _optout(data: dict[str, Any]) -> OptOutEntry:
    entry = OptOutEntry(hmac=str(data["hmac"]), scope=str(data["scope"]), reason=str(data["reason"]),
                        channel=str(data.get("channel") or ""), at=str(data["at"]))
    if entry.reason not in REASONS:
        raise ValueError(entry.reason)
    return entry


def read_optouts(settings: Settings, start: int = 0) -> Iterator[OptOutEntry]:
    """Every entry in order (from byte ``start``, see ``ledger_end``)."""
    return read_ledger(optout_ledger_path(settings), "opt-out ledger",
                       "repair the line by hand (it holds only a hash, a scope and a time); never delete the file",
                       _optout, start)
