"""The opt-out spool: one-click unsubscribes made durable while the database is busy.

An unsubscribe must never be lost or refused. When ``mailcli serve`` cannot
write to the database at once (an import, a restore, a vacuum or a long purge
holds it), it writes the opt-out into this spool instead and only then answers
200. The spool is a folder beside the database, ``<database>-optouts/``
(0700), so every configuration that names the database shares it. Each
opt-out is one small JSON file (0600): written under a temporary name,
fsynced, renamed into place and the folder fsynced, so an entry is either
whole or absent after a crash, and writers never need a lock.

An entry holds what the token said (the contact's random uid and the list
id), the time of the request and the channel — never an address. Every
mailcli process that opens the database applies what it finds
(``feedback.actions.apply_spooled_optouts``), serve as soon as the database
is free again; an entry is removed only after the transaction that applied
it has committed, and applying one twice changes nothing. A running send
reads the spool before each message (``SpoolWatch``), so a spooled opt-out
stops its messages exactly like one in the database.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from ..durable import fsync_folder

SUFFIX = "-optouts"
_TMP = ".tmp-"


@dataclass(frozen=True, slots=True)
class SpooledOptOut:
    """One opt-out waiting in the spool."""

    contact_uid: str
    list_id: int
    at: str  # ISO-8601 UTC time of the request
    channel: str
    path: Path


def spool_dir(database: Path) -> Path:
    """The spool folder of a database file."""
    return database.with_name(database.name + SUFFIX)


def spool_optout(database: Path, *, contact_uid: str, list_id: int, at: str, channel: str) -> Path:
    """Write one opt-out durably into the spool (fsynced before returning)."""
    folder = spool_dir(database)
    folder.mkdir(mode=0o700, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.json"
    data = json.dumps({"uid": contact_uid, "list_id": list_id, "at": at, "channel": channel}, sort_keys=True)
    tmp = folder / f"{_TMP}{name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    final = folder / name
    os.replace(tmp, final)
    fsync_folder(folder)
    return final


def _names(folder: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith(_TMP))
    except FileNotFoundError:
        return []


def has_pending(database: Path) -> bool:
    """True when at least one opt-out waits in the spool (one directory read)."""
    return bool(_names(spool_dir(database)))


def pending_optouts(database: Path) -> list[SpooledOptOut]:
    """The opt-outs waiting in the spool, oldest first.

    An entry that cannot be parsed (a damaged disk) is set aside as
    ``NAME.unreadable`` for a person to look at — never discarded, it is
    somebody's opt-out — so it does not hold up the others.
    """
    folder = spool_dir(database)
    found: list[SpooledOptOut] = []
    for name in _names(folder):
        path = folder / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            found.append(SpooledOptOut(contact_uid=str(data["uid"]), list_id=int(data["list_id"]),
                                       at=str(data["at"]), channel=str(data["channel"]), path=path))
        except FileNotFoundError:
            continue  # applied and removed by another process meanwhile
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                os.replace(path, path.with_name(name + ".unreadable"))
    return found


def remove_applied(entries: list[SpooledOptOut]) -> None:
    """Delete entries whose opt-outs are committed to the database."""
    folders = set()
    for entry in entries:
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()
        folders.add(entry.path.parent)
    for folder in folders:
        with contextlib.suppress(OSError):
            fsync_folder(folder)


class SpoolWatch:
    """Cheap, repeated look at the spool for a long-running process.

    ``changed()`` costs one ``stat`` of the folder while nothing was added or
    removed (a new entry changes the folder's modification time); a folder
    changed in the last two seconds counts as changed every time, because a
    coarse file-system clock could hide a second change in the same tick.
    """

    def __init__(self, database: Path) -> None:
        self.database = database
        self.folder = spool_dir(database)
        self._seen: tuple[int, int] | None = None

    def changed(self) -> bool:
        try:
            st = os.stat(self.folder)
            mark = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            mark = (0, 0)
        if mark == self._seen and time.time_ns() - mark[1] > 2_000_000_000:
            return False
        self._seen = mark
        return True

    def optouts(self) -> set[tuple[str, int]]:
        """(contact uid, list id) of every opt-out waiting in the spool."""
        return {(entry.contact_uid, entry.list_id) for entry in pending_optouts(self.database)}
