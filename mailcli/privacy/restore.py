"""``backup restore``: prepared aside, checked and completed, then swapped in at once.

A restore must never leave the raw backup as the live database, lose an
opt-out or an erasure, or leave personal data lying around — whenever it is
killed. So:

1. **Check the backup** without changing anything: ``PRAGMA integrity_check``,
   a mailcli database no newer than this mailcli, and exactly the schema its
   migrations create (:func:`mailcli.store.schema.schema_differences`): a
   trigger, view or table mailcli does not know — a trigger that empties
   ``suppressions``, say — refuses it.
2. **Keep the replaced database** as a ``pre-restore`` backup, and read what
   it knows that the backup may not: its suppression list and audit log.
3. **Prepare the restored database aside**, as ``.restore-*.db`` beside the
   live one (0600): a copy of the backup, migrated, with every later erasure
   re-applied (the erasure ledger and the replaced database's ``erased``
   suppressions), every later opt-out and restriction re-applied (the
   replaced database's suppressions and the opt-out ledger,
   :mod:`mailcli.optouts`), the missing audit entries carried over and
   re-chained; vacuumed to the live database's page size when anyone was
   re-erased or the sizes differ; checked again.
4. **Swap it in in one step**: SQLite's backup API copies it into the live
   database file as one write transaction. Every process that has the
   database open — ``serve`` above all — reads the restored content from its
   next transaction on; a ``kill -9`` before the commit leaves the old
   database whole. Only when the live file is missing or unreadable is the
   prepared file renamed into its place instead (``serve`` notices the new
   file and reopens it).
5. **Re-apply what arrived during the restore**: the ledger lines written
   since step 2 began and the one-click opt-outs waiting in the spool, then
   remove the prepared file.

While Litestream replicates the live database the swap is one more
transaction for it to copy, so the replica follows the restore; the
prepared database keeps Litestream's two tables then (and drops them
otherwise), as :func:`mailcli.store.litestream.match_tables` says why.

A rerun removes the ``.restore-*`` files a killed run left (``privacy purge``
does too). The whole restore holds the maintenance lock (no purge or second
restore interleaves), the import lock (an import waits for it, and it waits
for an import, since an import committed during the restore would vanish
under the swap) and the restore lock: it is refused while a send runs, and a
send refuses to start while it holds that.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import audit, audithead
from ..config import Settings
from ..durable import fsync_folder
from ..errors import ConfigError, InputFileError, MailcliError
from ..ledgers import ledger_end
from ..lifeline import dead_process_folders
from ..locks import Holder, import_lock, maintenance_lock, refuse_while_sending, restore_lock
from ..optouts import optout_ledger_path, read_optouts
from ..store import Store, backups, litestream, open_store
from ..store import audit as audit_table
from ..store import schema as sql
from ..store.db import Connection, apply_migrations, busy_timeout, connect
from ..store.facts import SECRET_FINGERPRINT, get_fact
from ..store.migrations import MIGRATIONS
from ..store.suppressions import Suppression, all_suppressions
from ..store.written import WrittenFile, all_files, carry_files
from ..tokens import audit_key, secret_fingerprint
from .backup import (
    backup_key_for,
    copy_database,
    new_backup_path,
    remove_partial_copies,
)
from .encryption import BackupKey, backup_key, decrypt_file, is_encrypted
from .ledger import ledger_path, read_entries
from .reapply import Counts, Later, carry_audit, reapply

PREFIX = ".restore-"
SENDING = "A send is running on this database, and a restore would replace the database under it"
SENDING_HINT = "run the restore when the send has finished (Ctrl-C stops a send; a rerun resumes it)"
# Folders a restore from a Litestream replica works in: REPLICA_PREFIX + the pid + a random tail.
REPLICA_PREFIX = ".replica-restore-"


@dataclass(frozen=True, slots=True)
class RestoreResult:
    source: Path
    safety_copy: Path | None
    reerased: int
    optouts_reapplied: int
    suppressions_merged: int
    audit_carried: int
    warnings: tuple[str, ...]


# -- checking ---------------------------------------------------------------------

# Complexity: one check per way a file can fail to be an intact mailcli database, each with its message.
def check_backup(path: Path, settings: Settings | None = None, *, shown: Path | None = None) -> None:
    """Refuse anything that is not an intact mailcli database with mailcli's own
    schema; with ``settings``, also one made with another secret (exit 4), or
    whose audit log is not whole against the head it carries. ``shown`` is
    the name to give in messages (the encrypted file a decrypted copy came from)."""
    if not path.is_file():
        raise InputFileError(f"Backup not found: {path}", hint="`mailcli backup list` shows the backups")
    try:
        conn = backups.open_read_only(path)
    except sqlite3.Error as exc:
        raise InputFileError(f"Cannot open the backup {shown or path}: {exc}") from None
    name = shown or path
    try:
        damage = sql.integrity_problems(conn)
        tables = set(sql.table_names(conn))
        applied = sql.applied_migrations(conn)
        newer = applied - {name for name, _ in MIGRATIONS}
        problems = [] if newer or damage else sql.schema_differences(conn)
        if settings is not None and not (damage or newer or problems) and "audit_log" in tables:
            check_secret_and_log(conn, settings, name, "project_facts" in tables)
    except sqlite3.DatabaseError as exc:
        raise InputFileError(f"{name} is not a usable database ({exc}); nothing was changed") from None
    finally:
        conn.close()
    path = name
    if damage:
        raise InputFileError(f"{path} failed the integrity check ({'; '.join(damage[:3])}); nothing was changed",
                           hint="pick an older backup with `mailcli backup list`")
    if not {"contacts", "migrations", "suppressions"} <= tables:
        raise InputFileError(f"{path} is not a mailcli database; nothing was changed")
    if newer:
        raise MailcliError(f"{path} was written by a newer mailcli ({', '.join(sorted(newer))}); nothing was changed",
                           hint="upgrade mailcli, then restore")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MailcliError(f"{path} has {problems[0]}{more}; it was not written by mailcli as it is,"
                           " so nothing was changed", hint="pick another backup with `mailcli backup list`")


def check_secret_and_log(conn: Connection, settings: Settings, name: Path, has_facts: bool) -> None:
    """A backup made with another secret, or whose audit log was cut or edited, is not restored."""
    from ..audithead import CARRIED, carried_head
    from .auditlog import verify_log

    fingerprint = get_fact(conn, SECRET_FINGERPRINT) if has_facts else None
    if fingerprint is not None and fingerprint != secret_fingerprint(settings.secret()):
        raise ConfigError(f"{name} was made with another HMAC secret; nothing was changed",
                          hint="restore it with the secret it was made with (.mailcli/secret or"
                               f" {settings.unsubscribe.secret_env}), or pick another backup")
    head = carried_head(get_fact(conn, CARRIED)) if has_facts else None
    legacy = None if has_facts else 1 << 62  # a backup from before keyed entries: every entry is plain
    result = verify_log(conn, audit_key(settings.secret()), head, head_missing=None, legacy=legacy)
    if result.problems:
        first = result.problems[0]
        where = f"entry #{first.id} " if first.id is not None else ""
        raise MailcliError(f"{name}: its audit log is not as mailcli wrote it ({where}{first.problem});"
                           " nothing was changed", hint="pick another backup with `mailcli backup list`")


# -- leftovers --------------------------------------------------------------------

def leftover_files(database: Path) -> list[Path]:
    """Files a killed restore left beside the database (prepared copies and their journals)."""
    try:
        return sorted(database.parent.glob(f"{PREFIX}*"))
    except OSError:
        return []


def remove_leftovers(settings: Settings) -> int:
    """Delete what a killed restore left: prepared copies beside the database
    and half-written safety copies; call only while holding the maintenance lock."""
    database = settings.project.database
    removed = remove_partial_copies(settings.backups_dir)
    for path in leftover_files(database):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    for folder in dead_process_folders(database.parent, REPLICA_PREFIX):  # a killed restore from a replica's
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


# -- the steps --------------------------------------------------------------------

@dataclass
class _Live:
    """What the database being replaced holds (or why it could not be read)."""

    usable: bool
    replicated: bool = False  # Litestream replicates it (its tables are there)
    page_size: int | None = None
    suppressions: list[Suppression] = field(default_factory=list)
    audit_rows: list[tuple[object, ...]] = field(default_factory=list)
    written: list[WrittenFile] = field(default_factory=list)
    problem: str | None = None


def _read_live(target: Path) -> _Live:
    if not target.exists():
        return _Live(usable=False)
    try:
        conn = connect(target)
        try:
            # Whatever else is damaged in it does not matter: the swap
            # rewrites every page.
            return _Live(usable=True, replicated=litestream.is_replicated(conn), page_size=sql.page_size(conn),
                         suppressions=all_suppressions(conn), audit_rows=audit_table.rows_with_hashes(conn),
                         written=_written(conn))
        finally:
            conn.close()
    except (sqlite3.Error, MailcliError) as exc:
        return _Live(usable=False, problem=f"could not read the replaced database ({exc}); only the ledgers"
                                           " were re-applied")


def _written(conn: Connection) -> list[WrittenFile]:
    try:
        return all_files(conn)
    except sqlite3.OperationalError:  # a database from before the register: nothing to carry
        return []


def _keep_safety_copy(settings: Settings, target: Path, key: BackupKey | None, warnings: list[str]) -> Path | None:
    from ..audithead import head_path

    try:
        head = head_path(target).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        head = None
    try:
        conn = connect(target)
        try:
            safety = new_backup_path(settings, "pre-restore", encrypted=key is not None)
            copy_database(conn, safety, head=head, key=key)
            return safety
        finally:
            conn.close()
    except (sqlite3.Error, MailcliError, OSError) as exc:
        warnings.append(f"could not keep a copy of the replaced database ({exc})")
        return None


def private_file(folder: Path, suffix: str, *, prefix: str = PREFIX) -> Path:
    """A new empty file of this user's only (0600) in ``folder``, named so that
    ``remove_leftovers`` finds it should the restore be killed."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    os.close(fd)
    os.chmod(name, 0o600)
    return Path(name)


def _prepare(settings: Settings, source: Path, target: Path, live: _Live, later: Later, counts: Counts, *,
             shown: Path) -> Path:
    """The restored database, complete, in a private file beside the live one."""
    prepared = private_file(target.parent, ".db")
    backups.copy_file(source, prepared)
    conn = backups.open_aside(prepared)
    store = Store(path=prepared, conn=conn, anchored=False)  # the live head is set once the swap is done
    try:
        apply_migrations(conn)
        litestream.match_tables(conn, live.replicated)
        reapply(store, settings, later, counts)
        counts.audit += carry_audit(store, settings, live.audit_rows)
        with store.transaction() as tx:
            counts.files += carry_files(tx, live.written)
        audit.record_access(
            store, settings, "restore", command="backup restore",
            detail={"file": shown.name, "reerased": counts.reerased, "optouts_reapplied": counts.optouts,
                    "suppressions_merged": counts.merged, "audit_carried": counts.audit},
        )
        if live.page_size is not None and live.page_size != sql.page_size(conn):
            backups.compact(conn, live.page_size)  # the backup API copies only between equal page sizes
        elif counts.reerased:
            backups.compact(conn)  # no page keeps a trace of the re-erased
        damage = sql.integrity_problems(conn)
        if damage:
            raise MailcliError(f"The restored database failed its integrity check ({damage[0]}); nothing was changed")
    finally:
        store.close()
    with open(prepared, "rb") as handle:
        os.fsync(handle.fileno())
    return prepared


def _swap(prepared: Path, target: Path, live: _Live, on_wait: Callable[[str], None] | None) -> None:
    """Make the prepared database the live one, in one step."""
    if live.usable:
        dst = open_store(target, on_wait=on_wait)
        try:
            backups.copy_into(dst, prepared, "restore it")
        finally:
            dst.close()
        return
    # Nothing usable to copy into: the prepared file takes the name. A stale
    # -wal would be replayed into it, so those go first.
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{target}{suffix}")
    os.replace(prepared, target)
    with contextlib.suppress(OSError):
        fsync_folder(target.parent)


def restore_backup(settings: Settings, source: Path, *, on_wait: Callable[[str], None] | None = None,
                   on_lock_wait: Callable[[Holder | None], None] | None = None) -> RestoreResult:
    """Replace the database with ``source`` (see the module docstring).

    ``on_wait(what)`` is told when the swap has to wait for another
    process's write, ``on_lock_wait(holder)`` when the restore waits for an
    import to finish.
    """

    source = Path(source)
    target = settings.project.database
    if target.exists() and source.resolve() == target.resolve():
        raise MailcliError(f"{source} is the database itself; pick a backup from `mailcli backup list`")
    safety_key = backup_key_for(settings)  # the replaced database is kept encrypted too
    if not source.is_file():
        check_backup(source)  # says it is not there
    key = backup_key(settings, why=f"{source.name} is encrypted") if is_encrypted(source) else None
    if key is None:
        check_backup(source, settings)
    with restore_lock(settings), maintenance_lock(settings, "backup restore"):
        refuse_while_sending(target, SENDING, SENDING_HINT)
        with import_lock(settings, "backup restore", wait=busy_timeout(), on_wait=on_lock_wait):
            return _restore(settings, source, target, on_wait, key, safety_key)


def _decrypted(source: Path, target: Path, key: BackupKey, settings: Settings) -> Path:
    """The encrypted backup, decrypted into a private file beside the database and checked."""
    plain = private_file(target.parent, ".db", prefix=PREFIX + "plain-")
    plain.unlink()
    decrypt_file(source, plain, key)
    check_backup(plain, settings, shown=source)
    return plain


def _restore(settings: Settings, source: Path, target: Path, on_wait: Callable[[str], None] | None,
             key: BackupKey | None, safety_key: BackupKey | None) -> RestoreResult:
    """Steps 2 to 5 of the module docstring, with every lock held."""
    from ..feedback.actions import apply_spooled_optouts

    warnings: list[str] = []
    counts = Counts()
    remove_leftovers(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        plain = _decrypted(source, target, key, settings) if key is not None else source
    except BaseException:
        remove_leftovers(settings)
        raise
    # Whatever is appended to the ledgers from here on is re-applied to
    # the live database after the swap as well.
    marks = (ledger_end(ledger_path(settings)), ledger_end(optout_ledger_path(settings)))
    live = _read_live(target)
    if live.problem:
        warnings.append(live.problem)
    safety = _keep_safety_copy(settings, target, safety_key, warnings) if live.usable else None
    later = Later(suppressions=live.suppressions, erasures=list(read_entries(settings)),
                   optouts=list(read_optouts(settings)))
    prepared = _prepare(settings, plain, target, live, later, counts, shown=source)
    try:
        _swap(prepared, target, live, on_wait)
        store = open_store(target)
        try:
            store.audit_key = audit_key(settings.secret())
            audithead.reset(store)  # the restored log, as checked, is what later entries follow
            late = Later(erasures=list(read_entries(settings, marks[0])),
                          optouts=list(read_optouts(settings, marks[1])))
            reapply(store, settings, late, counts)
            apply_spooled_optouts(store, settings)
            if not backups.checkpoint(store.conn) and not live.replicated:
                warnings.append("another process is reading the database; its WAL is folded in later")
        finally:
            store.close()
    finally:
        remove_leftovers(settings)
    return RestoreResult(source=source, safety_copy=safety, reerased=counts.reerased,
                         optouts_reapplied=counts.optouts, suppressions_merged=counts.merged,
                         audit_carried=counts.audit, warnings=tuple(warnings))


__all__ = ["REPLICA_PREFIX", "RestoreResult", "check_backup", "leftover_files", "remove_leftovers", "restore_backup"]
