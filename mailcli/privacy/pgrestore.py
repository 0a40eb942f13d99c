"""``backup restore`` on a PostgreSQL server: the archive loaded, completed and swapped in by one transaction.

The guarantees are those of the SQLite restore (:mod:`mailcli.privacy.restore`):
never the raw backup as the live database, no opt-out or erasure lost, and
the database as it was whenever the restore fails or is killed. On a server
one transaction gives all of that:

1. **Read the archive** without touching the database: decrypted into a
   private file beside the project when it is encrypted, and turned into SQL
   by ``pg_restore`` (a file that is no archive is refused here).
2. **Keep the replaced database** as a ``pre-restore`` backup (``pg_dump``),
   and read what it knows that the backup may not: its suppression list, its
   audit log and the definition of its schema.
3. **In one transaction**: set the live schema aside under another name,
   load the archive in its place, check it (mailcli's tables, no migration
   newer than this mailcli, made with this project's secret, an audit log
   whose chain holds, and after migrating it exactly the tables, columns,
   constraints, indexes, triggers and functions the live schema had), re-apply
   every later erasure, opt-out and restriction (the ledgers and the replaced
   database's suppressions), carry over the audit entries it lacks, record
   the restore, and drop the schema set aside. Until the commit every other
   session reads the old rows; from the commit on, the restored ones. Any
   failure, a kill included, rolls it all back.
4. **Re-apply what arrived during the restore** (ledger lines written since
   step 2 began), vacuum, and remove the private files.

The restore holds the same locks as on SQLite, as advisory locks on the
server: it is refused while a send runs (and a send while it runs), waits
for an import, and excludes a purge or a second restore.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .. import audit
from ..config import Settings
from ..errors import ConfigError, InputFileError, MailcliError
from ..ledgers import ledger_end
from ..locks import Holder, import_lock, maintenance_lock, refuse_while_sending, restore_lock
from ..optouts import optout_ledger_path, read_optouts
from ..store import Store, open_store, pgdump
from ..store import audit as audit_table
from ..store import schema as sql
from ..store.backups import SQLITE_HEADER, begins_with
from ..store.db import apply_migrations, busy_timeout
from ..store.migrations import MIGRATIONS
from ..store.suppressions import all_suppressions
from ..store.written import WrittenFile, all_files, carry_files
from ..tokens import audit_key
from .backup import backup_key_for, dump_database, new_backup_path
from .encryption import BackupKey, backup_key, decrypt_file, is_encrypted
from .ledger import ledger_path, read_entries
from .reapply import Counts, Later, carry_audit, reapply
from .restore import SENDING, SENDING_HINT, RestoreResult, private_file, remove_leftovers
from .scrub import scrub

if TYPE_CHECKING:
    from ..store.postgres import PgConnection


def restore_postgres_backup(settings: Settings, source: Path, *,
                            on_lock_wait: Callable[[Holder | None], None] | None = None) -> RestoreResult:
    """Replace the server's database with the archive ``source`` (see the module docstring)."""
    url = settings.project.database_url
    assert url is not None
    source = Path(source)
    if not source.is_file():
        raise InputFileError(f"Backup not found: {source}", hint="`mailcli backup list` shows the backups")
    safety_key = backup_key_for(settings)
    key = backup_key(settings, why=f"{source.name} is encrypted") if is_encrypted(source) else None
    with restore_lock(settings), maintenance_lock(settings, "backup restore"):
        refuse_while_sending(url, SENDING, SENDING_HINT)
        with import_lock(settings, "backup restore", wait=busy_timeout(), on_wait=on_lock_wait):
            remove_leftovers(settings)
            try:
                return _restore(settings, source, key, safety_key)
            finally:
                remove_leftovers(settings)


def _archive(source: Path, folder: Path, key: BackupKey | None) -> Path:
    """The archive in plain form: ``source`` itself, or decrypted into a private file."""
    plain = source
    if key is not None:
        plain = private_file(folder, ".dump")
        plain.unlink()
        decrypt_file(source, plain, key)
    if not pgdump.is_archive(plain):
        if begins_with(plain, SQLITE_HEADER):
            raise ConfigError(f"{source} is a backup of a SQLite database, and this project's database is on a"
                              " PostgreSQL server; nothing was changed",
                              hint="`mailcli migrate-store --to URL` copies a SQLite database to a server")
        raise InputFileError(f"{source} is not a pg_dump archive of a mailcli database; nothing was changed",
                           hint="pick another backup with `mailcli backup list`")
    return plain


def _restore(settings: Settings, source: Path, key: BackupKey | None, safety_key: BackupKey | None) -> RestoreResult:
    url = settings.project.database_url
    assert url is not None
    folder = settings.project.root
    warnings: list[str] = []
    counts = Counts()
    plain = _archive(source, folder, key)
    store = open_store(url)
    try:
        store.audit_key = audit_key(settings.secret())
        script = private_file(folder, ".sql")
        pgdump.archive_to_sql(store.conn, plain, script, shown=source)
        marks = (ledger_end(ledger_path(settings)), ledger_end(optout_ledger_path(settings)))
        safety = _keep_safety_copy(settings, store, safety_key, warnings)
        later = Later(suppressions=all_suppressions(store.conn), erasures=list(read_entries(settings)),
                      optouts=list(read_optouts(settings)))
        live_rows = audit_table.rows_with_hashes(store.conn)
        written = all_files(store.conn)
        _swap_in(settings, store, script, source, later, (live_rows, written), counts)
        late = Later(erasures=list(read_entries(settings, marks[0])), optouts=list(read_optouts(settings, marks[1])))
        reapply(store, settings, late, counts)
        scrub(store)
    finally:
        store.close()
    return RestoreResult(source=source, safety_copy=safety, reerased=counts.reerased,
                         optouts_reapplied=counts.optouts, suppressions_merged=counts.merged,
                         audit_carried=counts.audit, warnings=tuple(warnings))


def _keep_safety_copy(settings: Settings, store: Store, key: BackupKey | None, warnings: list[str]) -> Path | None:
    safety = new_backup_path(settings, "pre-restore", encrypted=key is not None, engine=store.engine)
    try:
        dump_database(store.conn, safety, key=key)
    except (MailcliError, OSError) as exc:
        if isinstance(exc, ConfigError):
            raise  # no pg_dump: pg_restore is missing too, most likely; say it before changing anything
        warnings.append(f"could not keep a copy of the replaced database ({exc})")
        return None
    return safety


def _swap_in(settings: Settings, store: Store, script: Path, source: Path, later: Later,
             live: tuple[list[tuple[object, ...]], list[WrittenFile]], counts: Counts) -> None:
    """Step 3 of the module docstring: one transaction, committed only when all of it holds."""
    conn = store.conn
    schema = pgdump.current_schema(conn)
    aside = f"{schema}_replaced_by_restore"
    expected = pgdump.schema_signature(conn)
    with store.transaction():
        if pgdump.schema_exists(conn, aside):
            raise MailcliError(f"The database has a schema {aside!r} already; nothing was changed",
                               hint="it is not mailcli's: rename or drop it, then restore")
        pgdump.set_schema_aside(conn, schema, aside)
        pgdump.load_script(conn, script)
        if not pgdump.schema_exists(conn, schema):
            raise MailcliError(f"{source} holds no schema {schema!r} (it was taken from another schema);"
                               " nothing was changed")
        _check_loaded(conn, settings, source)
        apply_migrations(conn, nested=True)
        _check_schema(conn, expected, source)
        reapply(store, settings, later, counts)
        counts.audit += carry_audit(store, settings, live[0])
        counts.files += carry_files(conn, live[1])
        audit.record_access(
            store, settings, "restore", command="backup restore",
            detail={"file": source.name, "reerased": counts.reerased, "optouts_reapplied": counts.optouts,
                    "suppressions_merged": counts.merged, "audit_carried": counts.audit},
        )
        pgdump.drop_schema(conn, aside)


def _check_loaded(conn: PgConnection, settings: Settings, source: Path) -> None:
    """mailcli's tables, no newer migration, this project's secret and a whole audit chain."""
    from .restore import check_secret_and_log

    tables = set(sql.table_names(conn))
    if not {"contacts", "migrations", "suppressions", "audit_log"} <= tables:
        raise InputFileError(f"{source} is not a backup of a mailcli database; nothing was changed")
    newer = sql.applied_migrations(conn) - {name for name, _ in MIGRATIONS}
    if newer:
        raise MailcliError(f"{source} was written by a newer mailcli ({', '.join(sorted(newer))}); nothing was changed",
                           hint="upgrade mailcli, then restore")
    check_secret_and_log(conn, settings, source, "project_facts" in tables)


def _check_schema(conn: PgConnection, expected: dict[tuple[str, str], str], source: Path) -> None:
    """The restored schema, migrated, must be exactly the live one mailcli's migrations made."""
    found = pgdump.schema_signature(conn)
    problems = [f"a {kind} mailcli does not create: {name!r}" for kind, name in sorted(found.keys() - expected.keys())]
    problems += [f"no {kind} {name!r}" for kind, name in sorted(expected.keys() - found.keys())]
    problems += [f"a {kind} {name!r} defined differently from mailcli's"
                 for kind, name in sorted(found.keys() & expected.keys()) if found[(kind, name)] != expected[(kind, name)]]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MailcliError(f"{source} has {problems[0]}{more}; it was not written by mailcli as it is,"
                           " so nothing was changed", hint="pick another backup with `mailcli backup list`")
