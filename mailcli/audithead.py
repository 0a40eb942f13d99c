"""The audit head: the audit log's length and newest MAC, kept outside the database.

A chain of MACs shows an entry edited or removed in its middle, but not
entries removed from its end, nor all of them: what is left is still a chain
(``docs/guarantees.md#audit``). So every append also moves on the head,
``audit-head`` in the database's ledger folder (:mod:`mailcli.ledgers`): one
JSON line with the number of entries, the id and MAC of the newest and the
MAC the oldest follows. It is written after the append's transaction has
committed, never ahead of it; a crash in between leaves it one step behind,
which is no sign of tampering. ``privacy audit --verify`` fails when the
entry the head names is gone or changed, or fewer entries lead up to it, and
prints the head, so a copy can be kept elsewhere too (a cron mail, a ticket).

The head moves on only from a log that still holds the entry it names: a log
cut short behind mailcli's back is not anchored again by the next append, so
verify goes on failing. ``privacy purge``, which cuts the oldest entries by
retention, and ``backup restore``, which replaces the log, set it anew. A
log without a head — new, or written by an older mailcli — gets one the first
time a command holds the secret's key; a log whose keyed entries exist with
no head has lost it, and verify says so. Backups carry the head of the
moment they were taken (``carry``), so a restore can check the backup's log.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import MailcliError
from .ledgers import ledger_folder, write_atomically
from .locks import database_lock
from .store import Store, facts
from .store import audit as audit_rows

NAME = "audit-head"


@dataclass(frozen=True, slots=True)
class Head:
    entries: int
    last_id: int | None
    last: str
    base: str

    def as_json(self) -> dict[str, object]:
        return {"entries": self.entries, "last_id": self.last_id, "last": self.last, "base": self.base}

    def text(self) -> str:
        newest = f", the newest #{self.last_id}" if self.last_id is not None else ""
        return f"{self.entries} entries{newest}, MAC {self.last}"

    @classmethod
    def parse(cls, text: str) -> Head:
        """A head from its JSON text; ValueError when it is not one."""
        try:
            data = json.loads(text)
            last_id = data["last_id"]
            head = cls(int(data["entries"]), None if last_id is None else int(last_id), str(data["last"]),
                       str(data["base"]))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(str(exc)) from None
        if head.entries < 0 or len(head.last) != 64 or len(head.base) != 64:
            raise ValueError("out of range")
        return head


def head_path(database: Path) -> Path:
    return ledger_folder(database) / NAME


def read_head(database: Path) -> Head | None:
    """The head of the database's audit log; None when there is none; ValueError when it is damaged."""
    try:
        text = head_path(database).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None
    return Head.parse(text)


def state(store: Store) -> Head:
    """What the head of the log as it is now says."""
    conn = store.conn
    base = facts.get_fact(conn, facts.AUDIT_BASE) or audit_rows.GENESIS
    now = audit_rows.chain_state(conn, base)
    return Head(now.entries, now.last_id, now.last, now.base)


def holds(store: Store, head: Head) -> bool:
    """Does the log still hold the newest entry ``head`` names, with as many entries up to it?"""
    if head.last_id is None:
        return True
    conn = store.conn
    return (audit_rows.hash_of(conn, head.last_id) == head.last
            and audit_rows.entries_up_to(conn, head.last_id) == head.entries)


def _write(store: Store, head: Head) -> None:
    path = head_path(store.path)
    try:
        write_atomically(path, json.dumps(head.as_json(), sort_keys=True) + "\n")
    except OSError as exc:
        raise MailcliError(f"Cannot write the audit head {path}: {exc.strerror}",
                           hint="the folder of the database must be writable") from None


def locked(store: Store) -> contextlib.AbstractContextManager[object]:
    """Hold the head's lock: no append moves it meanwhile (a backup takes its copy so)."""
    return database_lock(store.path, NAME, command="audit", busy="Another process holds the audit head",
                         hint="run the command again", wait=30.0)


def _current(store: Store) -> Head | None:
    try:
        return read_head(store.path)
    except ValueError:
        return None


def start(store: Store) -> None:
    """Write the first head of a log that has none and no keyed entries yet."""
    from .audit import legacy_until

    if head_path(store.path).exists():
        return
    with locked(store):
        if head_path(store.path).exists() or audit_rows.has_entries_after(store.conn, legacy_until(store.conn)):
            return
        _write(store, state(store))


def advance(store: Store) -> None:
    """Move the head on to the log as it is, if the log still holds what the head names."""
    with locked(store):
        head = _current(store)
        if head is not None and holds(store, head):
            _write(store, state(store))


def reset(store: Store) -> None:
    """Set the head to the log as it is (after a purge cut it, or a restore replaced it)."""
    with locked(store):
        _write(store, state(store))


def intact(store: Store) -> bool:
    """Is the head there and does the log hold what it names (before a purge cuts the log)?"""
    head = _current(store)
    return head is not None and holds(store, head)


CARRIED = "audit_head"  # the fact a backup keeps the head in


def carried_head(text: str | None) -> Head | None:
    if text is None:
        return None
    try:
        return Head.parse(text)
    except ValueError:
        return None


def head_for_backup(store: Store) -> str | None:
    """The head to carry in a backup, as text (None when the log has none);
    read it and take the copy while holding ``locked``."""
    head = _current(store)
    return None if head is None else json.dumps(head.as_json(), sort_keys=True)
