"""Consistent backups of the database (``backup create | list | prune``).

``create_backup`` uses SQLite's online backup API (``Connection.backup``) in
one step, so the copy is a consistent snapshot even while a send is writing
(``docs/guarantees.md#backups``); the copy is switched to rollback-journal mode so it is one
self-contained file, written 0600 into ``backups/`` (0700) as
``mailcli-YYYYmmddTHHMMSSZ.db``. It is written under a temporary name and
renamed when complete, so a killed run never leaves half a backup that
``backup list`` would offer.

Each copy carries the audit head of its moment (:mod:`mailcli.audithead`),
taken under the head's lock with the snapshot, so a restore can check that
the backup's audit log is whole. With ``[backup] encrypt = true`` the copy
is encrypted (age, :mod:`mailcli.privacy.encryption`) before it gets its
name, ``mailcli-….db.age``; the plain temporary copy is removed.

A project on a PostgreSQL server is backed up by ``pg_dump`` instead
(:mod:`mailcli.store.pgdump`): a custom-format archive of its schema, taken
in one snapshot while others write, ``mailcli-….dump`` (``.dump.age``
encrypted), written and named the same way. On a server the audit log has
no head beside a file, so the archive carries none.

Restoring one is :mod:`mailcli.privacy.restore` (a SQLite file) or
:mod:`mailcli.privacy.pgrestore` (a server).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .. import audit, audithead, clock
from ..audithead import CARRIED
from ..config import Settings
from ..durable import fsync_folder
from ..errors import MailcliError
from ..lifeline import process_alive
from ..store import Store, pgdump
from ..store.backups import carry_fact, snapshot
from .encryption import SUFFIX, BackupKey, backup_key, encrypt_file

if TYPE_CHECKING:
    from ..store.postgres import PgConnection

NAME = re.compile(r"^mailcli-(\d{8}T\d{6}Z)(?:-([A-Za-z0-9-]+))?\.(?:db|dump)(\.age)?$")
# The extension of a backup of each engine's database.
EXTENSIONS = {"sqlite": ".db", "postgresql": ".dump"}


@dataclass(frozen=True, slots=True)
class BackupInfo:
    path: Path
    created_at: str
    size: int
    encrypted: bool = False

    def as_json(self) -> dict[str, object]:
        return {"path": str(self.path), "created_at": self.created_at, "size": self.size,
                "encrypted": self.encrypted}


def _private_dir(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)


def new_backup_path(settings: Settings, label: str | None, *, encrypted: bool = False,
                    engine: str = "sqlite") -> Path:
    folder = settings.backups_dir
    _private_dir(folder)
    stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
    suffix = f"-{label}" if label else ""
    ext = EXTENSIONS[engine] + (SUFFIX if encrypted else "")
    path = folder / f"mailcli-{stamp}{suffix}{ext}"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"mailcli-{stamp}{suffix}-{n}{ext}"
    return path


def copy_database(source: sqlite3.Connection, dest_path: Path, *, head: str | None = None,
                  key: BackupKey | None = None) -> None:
    """Online-backup ``source`` into a new 0600 file at ``dest_path``, carrying
    the audit ``head`` and encrypted with ``key`` when given."""

    def fill(tmp: Path) -> None:
        snapshot(source, tmp)
        if head is not None:
            carry_fact(tmp, CARRIED, head)

    write_backup(dest_path, fill, key)


def dump_database(conn: PgConnection, dest_path: Path, *, key: BackupKey | None = None) -> None:
    """``pg_dump`` the server's database into a new 0600 file at ``dest_path``, encrypted with ``key`` when given."""
    write_backup(dest_path, lambda tmp: pgdump.dump(conn, tmp), key)


def write_backup(dest_path: Path, fill: Callable[[Path], None], key: BackupKey | None) -> None:
    """A new 0600 file at ``dest_path`` that ``fill`` writes (encrypted with ``key`` when given):
    written under a temporary name, fsynced, then renamed, so it is whole or not there."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest_path.name}.{os.getpid()}.", suffix=".tmp", dir=dest_path.parent)
    tmp = Path(tmp_name)
    os.close(fd)
    sealed = tmp.with_name(tmp.name + SUFFIX)
    try:
        os.chmod(tmp, 0o600)
        fill(tmp)
        if key is not None:
            encrypt_file(tmp, sealed, key)
            tmp.unlink()
            tmp = sealed
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        if dest_path.exists():
            raise FileExistsError(f"{dest_path} exists")
        os.replace(tmp, dest_path)
    except BaseException:
        for leftover in (tmp, sealed):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise


_PARTIAL = re.compile(r"^\.mailcli-.*\.(?:db|dump)(?:\.age)?\.(\d+)\.[^.]*\.tmp(-journal|\.age)?$")


def remove_partial_copies(folder: Path) -> int:
    """Delete half-written copies left in ``folder`` by killed runs (their
    names carry the writer's pid; a copy whose writer still runs is kept)."""
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        match = _PARTIAL.match(name)
        if not match or process_alive(int(match.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / name)
            removed += 1
    return removed


def backup_key_for(settings: Settings) -> BackupKey | None:
    """The key backups are encrypted with now (None when they are written plain)."""
    if not settings.backup.encrypt:
        return None
    return backup_key(settings, why="[backup] encrypt is true")


def create_backup(store: Store, settings: Settings, *, label: str | None = None) -> BackupInfo:
    key = backup_key_for(settings)
    remove_partial_copies(settings.backups_dir)
    path = new_backup_path(settings, label, encrypted=key is not None, engine=store.engine)
    try:
        if store.url is not None:
            dump_database(store.conn, path, key=key)
        else:
            with audithead.locked(store):
                copy_database(store.conn, path, head=audithead.head_for_backup(store), key=key)
    except (OSError, sqlite3.Error) as exc:
        raise MailcliError(f"Cannot write the backup {path}: {exc}") from None
    with contextlib.suppress(OSError):
        fsync_folder(path.parent)
    # After the copy: the snapshot itself needs no write lock, so a running
    # send never delays it; the audit row then waits its turn like any write.
    audit.record_access(store, settings, "backup", command="backup create",
                        detail={"file": path.name, "encrypted": key is not None})
    return _info(path)


def _info(path: Path) -> BackupInfo:
    stat = path.stat()
    match = NAME.match(path.name)
    if match:
        created = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    else:
        created = datetime.fromtimestamp(stat.st_mtime, timezone.utc).replace(microsecond=0)
    return BackupInfo(path=path, created_at=clock.to_iso(created), size=stat.st_size,
                      encrypted=path.name.endswith(SUFFIX))


def list_backups(settings: Settings) -> list[BackupInfo]:
    folder = settings.backups_dir
    if not folder.is_dir():
        return []
    found = [_info(p) for p in folder.iterdir() if p.is_file() and NAME.match(p.name)]
    return sorted(found, key=lambda b: (b.created_at, b.path.name))


def expired_backups(settings: Settings, as_of: datetime) -> list[BackupInfo]:
    cutoff = clock.to_iso(settings.retention.backups.before(as_of))
    return [b for b in list_backups(settings) if b.created_at < cutoff]


def prune_backups(settings: Settings, *, as_of: datetime | None = None, dry_run: bool = False) -> list[BackupInfo]:
    """Delete backups older than ``[retention] backups``; returns them."""
    expired = expired_backups(settings, as_of or clock.now())
    if not dry_run:
        for backup in expired:
            with contextlib.suppress(FileNotFoundError):
                backup.path.unlink()
    return expired


__all__ = [
    "BackupInfo", "backup_key_for", "copy_database", "create_backup", "dump_database", "write_backup", "expired_backups", "list_backups",
    "new_backup_path", "prune_backups", "remove_partial_copies",
]
