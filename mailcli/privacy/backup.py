"""Consistent backups of the database, and restores that never resurrect anyone.

``create_backup`` uses SQLite's online backup API (``Connection.backup``) in
one step, so the copy is a consistent snapshot even while a send is writing
(STANDARDS F30); the copy is switched to rollback-journal mode so it is one
self-contained file, written 0600 into ``backups/`` (0700) as
``mailcli-YYYYmmddTHHMMSSZ.db``.

``restore_backup`` checks ``PRAGMA integrity_check`` on the backup before
touching anything, keeps the database it replaces as a backup labelled
``pre-restore`` (so a mistaken restore can itself be undone, and it ages out
with the other backups), replaces the file atomically (temporary file, fsync,
``os.replace``; stale ``-wal``/``-shm`` removed first so SQLite can never
replay an old log into the restored file) and then:

* re-applies the erasure ledger (``erase.reapply_ledger``) and the
  ``erased`` suppressions of the replaced database, so nobody erased comes
  back (F31);
* merges the replaced database's suppression list and applies its opt-outs
  to the restored memberships, so nobody who unsubscribed since the backup
  is mailed again;
* carries over the audit entries the backup lacks, re-chained, so the
  accountability trail survives the restore.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import audit, clock
from ..config import Settings
from ..errors import MailcliError, NotFoundError
from ..locks import maintenance_lock
from ..store import Store, open_store
from ..store.db import connect
from ..store.migrations import MIGRATIONS
from .erase import ensure_suppression, erase_contact_rows
from .ledger import LedgerEntry, read_entries
from .scrub import checkpoint, scrub
from .subject import contact_hmac

NAME = re.compile(r"^mailcli-(\d{8}T\d{6}Z)(?:-([A-Za-z0-9-]+))?\.db$")


@dataclass(frozen=True, slots=True)
class BackupInfo:
    path: Path
    created_at: str
    size: int

    def as_json(self) -> dict[str, object]:
        return {"path": str(self.path), "created_at": self.created_at, "size": self.size}


@dataclass(frozen=True, slots=True)
class RestoreResult:
    source: Path
    safety_copy: Path | None
    reerased: int
    optouts_reapplied: int
    suppressions_merged: int
    audit_carried: int
    warnings: tuple[str, ...]


def _private_dir(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _new_backup_path(settings: Settings, label: str | None) -> Path:
    folder = settings.backups_dir
    _private_dir(folder)
    stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
    suffix = f"-{label}" if label else ""
    path = folder / f"mailcli-{stamp}{suffix}.db"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"mailcli-{stamp}{suffix}-{n}.db"
    return path


def copy_database(source: sqlite3.Connection, dest_path: Path) -> None:
    """Online-backup ``source`` into a new 0600 file at ``dest_path``."""
    fd = os.open(dest_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    try:
        dest = sqlite3.connect(str(dest_path), isolation_level=None)
        try:
            source.backup(dest)  # pages=-1: one step, one consistent snapshot
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()
        os.chmod(dest_path, 0o600)
        with open(dest_path, "rb") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            dest_path.unlink()
        raise


def create_backup(store: Store, settings: Settings, *, label: str | None = None) -> BackupInfo:
    path = _new_backup_path(settings, label)
    try:
        copy_database(store.conn, path)
    except (OSError, sqlite3.Error) as exc:
        raise MailcliError(f"Cannot write the backup {path}: {exc}") from None
    _fsync_dir(path.parent)
    # After the copy: the snapshot itself needs no write lock, so a running
    # send never delays it; the audit row then waits its turn like any write.
    audit.record_access(store, settings, "backup", command="backup create", detail={"file": path.name})
    return _info(path)


def _info(path: Path) -> BackupInfo:
    stat = path.stat()
    match = NAME.match(path.name)
    if match:
        created = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    else:
        created = datetime.fromtimestamp(stat.st_mtime, timezone.utc).replace(microsecond=0)
    return BackupInfo(path=path, created_at=clock.to_iso(created), size=stat.st_size)


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


# -- restore --------------------------------------------------------------------

def check_backup(path: Path) -> None:
    """Refuse anything that is not an intact mailcli database."""
    if not path.is_file():
        raise NotFoundError(f"Backup not found: {path}", hint="`mailcli backup list` shows the backups")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise MailcliError(f"Cannot open the backup {path}: {exc}") from None
    try:
        result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        applied = {row[0] for row in conn.execute("SELECT name FROM migrations")} if "migrations" in tables else set()
    except sqlite3.DatabaseError as exc:
        raise MailcliError(f"{path} is not a usable database ({exc}); nothing was changed") from None
    finally:
        conn.close()
    if result != ["ok"]:
        raise MailcliError(f"{path} failed the integrity check ({'; '.join(result[:3])}); nothing was changed",
                           hint="pick an older backup with `mailcli backup list`")
    if not {"contacts", "migrations", "suppressions"} <= tables:
        raise MailcliError(f"{path} is not a mailcli database; nothing was changed")
    newer = applied - {name for name, _ in MIGRATIONS}
    if newer:
        raise MailcliError(f"{path} was written by a newer mailcli ({', '.join(sorted(newer))}); nothing was changed",
                           hint="upgrade mailcli, then restore")


@dataclass(frozen=True, slots=True)
class _Carried:
    suppressions: list[tuple[str, str, str, str | None, str]]
    audit_rows: list[tuple[Any, ...]]


def _read_current(path: Path) -> tuple[_Carried | None, str | None]:
    """What the database being replaced knows that the backup may not."""
    try:
        conn = connect(path)
        try:
            suppressions = conn.execute("SELECT hmac, scope, reason, channel, created_at FROM suppressions").fetchall()
            audit_rows = conn.execute(
                "SELECT at, actor, command, action, subject_hmac, detail, reason, hash FROM audit_log ORDER BY id"
            ).fetchall()
        finally:
            conn.close()
    except (sqlite3.Error, MailcliError) as exc:
        return None, f"could not read the replaced database ({exc}); only the erasure ledger was re-applied"
    return _Carried(suppressions, audit_rows), None


def _replace_file(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".restore-", suffix=".db", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out, source.open("rb") as inp:
            while chunk := inp.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        # A stale -wal would be replayed into the restored file: remove first.
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{target}{suffix}")
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _reapply(store: Store, settings: Settings, carried: _Carried | None) -> tuple[int, int, int]:
    """Re-erase, merge suppressions, apply opt-outs. Returns (re-erased, opt-outs, merged)."""
    erasures: dict[str, LedgerEntry] = {}

    def note(entry: LedgerEntry) -> None:
        known = erasures.get(entry.hmac)
        if known is None or entry.erased_at > known.erased_at:
            erasures[entry.hmac] = entry

    for entry in read_entries(settings):
        note(entry)
    suppressions = carried.suppressions if carried else []
    for hmac, scope, reason, _channel, created_at in suppressions:
        if reason == "erased" and scope == "*":
            note(LedgerEntry(hmac, created_at, "request", True))
    by_hmac: dict[str, list[tuple[str, str, str | None, str]]] = {}
    reerased = optouts = merged = 0
    with store.transaction() as conn:
        for hmac, scope, reason, channel, created_at in suppressions:
            cur = conn.execute(
                "INSERT OR IGNORE INTO suppressions (hmac, scope, reason, channel, created_at) VALUES (?, ?, ?, ?, ?)",
                (hmac, scope, reason, channel, created_at),
            )
            if cur.rowcount:
                merged += 1
                by_hmac.setdefault(hmac, []).append((scope, reason, channel, created_at))
        for entry in erasures.values():
            if entry.suppress:
                ensure_suppression(conn, entry.hmac, "*", "erased", "restore")
        contacts = conn.execute("SELECT id, email_key, created_at FROM contacts").fetchall()
        for contact_id, email_key, created_at in contacts:
            hmac = contact_hmac(settings, email_key)
            erased = erasures.get(hmac)
            if erased is not None and clock.parse_iso(created_at) <= clock.parse_iso(erased.erased_at):
                erase_contact_rows(conn, contact_id, hmac)
                reerased += 1
                continue
            for scope, _reason, channel, at in by_hmac.get(hmac, []):
                list_clause = "" if scope == "*" else " AND list_id = (SELECT id FROM lists WHERE name = ?)"
                params: tuple[object, ...] = (at, channel or "restore", at, contact_id) + (() if scope == "*" else (scope,))
                sql = ("UPDATE memberships SET status = 'unsubscribed', unsubscribed_at = ?, unsubscribe_channel = ?,"  # noqa: S608 - fixed clauses
                       " updated_at = ? WHERE contact_id = ? AND status != 'unsubscribed'" + list_clause)
                optouts += conn.execute(sql, params).rowcount
    return reerased, optouts, merged


def _carry_audit(store: Store, carried: _Carried | None) -> int:
    """Append (re-chained) the replaced database's audit rows the backup lacks."""
    if carried is None:
        return 0
    present = {row[0] for row in store.conn.execute("SELECT hash FROM audit_log")}
    missing = [row for row in carried.audit_rows if row[7] not in present]
    for at, actor, command, action, subject_hmac, detail, reason, _hash in missing:
        audit.append_row(store, at=str(at), actor=str(actor), command=str(command), action=str(action),
                         subject_hmac=subject_hmac, detail_text=str(detail), reason=reason)
    return len(missing)


def restore_backup(settings: Settings, source: Path) -> RestoreResult:
    """Replace the database with ``source`` (see module docstring)."""
    source = Path(source)
    target = settings.project.database
    if target.exists() and source.resolve() == target.resolve():
        raise MailcliError(f"{source} is the database itself; pick a backup from `mailcli backup list`")
    check_backup(source)
    warnings: list[str] = []
    with maintenance_lock(settings, "backup restore"):
        safety: Path | None = None
        carried: _Carried | None = None
        if target.exists():
            carried, problem = _read_current(target)
            if problem:
                warnings.append(problem)
            try:
                conn = connect(target)
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    safety = _new_backup_path(settings, "pre-restore")
                    copy_database(conn, safety)
                finally:
                    conn.close()
            except (sqlite3.Error, MailcliError, OSError) as exc:
                safety = None
                warnings.append(f"could not keep a copy of the replaced database ({exc})")
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace_file(source, target)
        store = open_store(target)
        try:
            reerased, optouts, merged = _reapply(store, settings, carried)
            carried_rows = _carry_audit(store, carried)
            audit.record_access(
                store, settings, "restore", command="backup restore",
                detail={"file": source.name, "reerased": reerased, "optouts_reapplied": optouts,
                        "suppressions_merged": merged, "audit_carried": carried_rows},
            )
            result = scrub(store, vacuum=reerased > 0)
            if not result.wal_truncated:
                warnings.append("another process is using the database; stop it and run `mailcli privacy purge`")
        finally:
            store.close()
    return RestoreResult(source=source, safety_copy=safety, reerased=reerased, optouts_reapplied=optouts,
                         suppressions_merged=merged, audit_carried=carried_rows, warnings=tuple(warnings))


__all__ = [
    "BackupInfo", "RestoreResult", "check_backup", "checkpoint", "create_backup", "expired_backups",
    "list_backups", "prune_backups", "restore_backup",
]
