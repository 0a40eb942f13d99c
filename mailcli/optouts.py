"""The opt-out ledger: every opt-out, kept outside the database.

A backup taken before someone unsubscribed still has them subscribed. When
the database itself is lost or damaged, the backup is all a restore has, so
every opt-out — unsubscribe (one-click, mailto, by hand, from an imported
export), hard bounce, complaint, objection — and every restriction or lifted
restriction is also appended to ``.mailcli/optouts.jsonl`` (mode 0600, folder
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
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .config import Settings
from .errors import MailcliError

T = TypeVar("T")

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
    return settings.data_dir / LEDGER_NAME


def append_durably(path: Path, text: str) -> None:
    """Append ``text`` to a private file (0600, folder 0700) and fsync it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


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


def ledger_end(path: Path) -> int:
    """Where a ledger ends now (its size): read from there to get only later lines."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def ledger_lines(path: Path, start: int = 0) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line of a ledger from byte ``start`` on.

    ``start`` from ``ledger_end`` may fall inside a line another process was
    appending at that moment: reading then begins at the start of that line.
    Line numbers count from the start of the file. A missing file has none.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        number = 1
        if start > 0:
            prefix = handle.read(start)
            cut = prefix.rfind(b"\n") + 1  # 0 when no whole line precedes start
            number = prefix.count(b"\n", 0, cut) + 1
            handle.seek(cut)
        for raw in handle:
            if raw.endswith(b"\n"):
                yield number, raw.decode("utf-8", "replace")
            number += 1


def read_ledger(path: Path, what: str, hint: str, parse: Callable[[dict[str, Any]], T], start: int = 0) -> Iterator[T]:
    """Every entry of a JSON-lines ledger in order (from byte ``start``).

    A damaged line is an error naming the file and line: it must never be
    skipped. A last line without its newline is an append still in progress
    (or cut off by a crash before its fsync returned): not an entry yet.
    """
    try:
        lines = list(ledger_lines(path, start))
    except OSError as exc:
        raise MailcliError(f"Cannot read the {what} {path}: {exc.strerror}") from None
    for number, line in lines:
        if not line.strip():
            continue
        try:
            entry = parse(json.loads(line))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise MailcliError(f"{path}:{number}: not a valid {what} line", hint=hint) from None
        yield entry


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
