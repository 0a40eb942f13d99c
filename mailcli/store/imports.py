"""The import's write path: one transaction that stages a file's rows and
writes them to contacts and list memberships.

* **One transaction.** Everything — staging, contacts, memberships, opt-outs,
  the audit row — happens inside ``store.transaction()``; any exception,
  Ctrl-C included, rolls it all back and the database is as it was
  (docs/guarantees.md#atomic-import).
* **Staging in SQLite, not in Python.** Parsed rows go, in batches of
  ``executemany`` (or as whole frames from the import's worker processes),
  into TEMP tables in file order; :mod:`mailcli.store.import_merge` then
  merges repeated addresses and classifies and writes every staged address
  with a handful of set-based statements, so memory stays flat however big
  the file is. Row-by-row upserts were several times slower and cannot count
  outcomes (benchmarks/README.md, "Import staging").
* **Each engine its own bulk path.** Loading a worker's frame (a serialized
  SQLite database, ``deserialize``), the PRAGMAs around the import and the
  ``ATTACH`` of the schema frames are loaded into are in the functions named
  ``sqlite_*``. On PostgreSQL (:func:`postgres_import_session`) the rows are
  staged with ``COPY`` into TEMP tables
  (:func:`~mailcli.store.staging.postgres_stage_rows`), one import runs at a
  time (an advisory lock held to the commit, instead of a lock file on one
  machine), and :func:`~mailcli.store.import_merge.postgres_write_staged`
  merges.
* **Suppression** is checked by the keyed hash of the address, in Python, by
  the reader (:class:`~mailcli.importrows.Suppression`), only when the
  suppression list has entries for this list or all marketing
  (docs/guarantees.md#suppression). The list is read inside the transaction
  (which holds the write lock), so no opt-out can slip in between the check
  and the commit.
* **Opt-outs in the file** (Mailchimp's unsubscribed and cleaned exports, see
  :class:`~mailcli.importrows.OptOut`) are staged apart; every row with such
  an address is left out and counted as suppressed, and ``on_opt_outs``
  records them (suppression, membership, event) in the same transaction.
* **Always through the WAL.** Every new page goes to the WAL and again into
  the database at the checkpoint. A rollback journal would write it once,
  but while an import holds one no other process can even read the
  database: ``serve``, ``report`` and a send would stall for the whole
  import. In WAL mode they go on reading the database as it was until the
  import commits; only writers wait for it
  (docs/guarantees.md#many-processes-one-database).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from ..clock import now_iso
from ..errors import UsageError
from ..importrows import Batch, BatchSource, OptOut, RowReject, Suppression
from .db import PAGE_SIZE, Connection, Store, is_postgres
from .import_merge import MERGE_TABLES, POSTGRES_MERGE_TABLES, postgres_write_staged, write_staged
from .lists import given_name, list_id, same_but_case
from .staging import (
    STAGING_TABLES,
    create_staging,
    postgres_stage_rows,
    retract,
    sqlite_stage_frame,
    stage_rows,
)
from .suppressions import suppressed_hmacs

if TYPE_CHECKING:
    from .postgres import PgConnection

MAX_REJECTS_KEPT = 10_000  # listed in the result; the rejects file gets them all
IMPORT_STATUSES = ("subscribed", "unconfirmed")


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did.

    ``imported``, ``updated`` and ``unchanged`` count addresses, so
    ``imported`` is exactly how many members the list gained (what ``lists``
    and the next send show); rows repeating an address earlier in the file
    are ``duplicates`` (merged into it). With ``suppressed`` and ``rejected``
    (rows) the counts add up to the rows of the file.
    """

    imported: int
    updated: int
    unchanged: int
    suppressed: int
    rejected: int
    duplicates: int = 0
    opted_out: int = 0  # rows that left the list at the file's source (counted in suppressed)
    rejects: list[RowReject] = field(default_factory=list)
    needs_smtputf8: int = 0  # addresses with a non-ASCII local part: sendable only through SMTPUTF8
    kept_rectified: int = 0  # rows that disagreed with a field the person had corrected, which was kept
    basis: str | None = None  # the lawful basis stated (--basis); None: the file's evidence
    basis_stated: int = 0  # members of the list without a basis that got the one stated
    no_basis: int = 0  # the file's addresses subscribed without a basis: a send leaves them out

    @property
    def total(self) -> int:
        return self.imported + self.updated + self.unchanged + self.suppressed + self.rejected + self.duplicates

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "suppressed": self.suppressed,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "opted_out": self.opted_out,
            "needs_smtputf8": self.needs_smtputf8,
            "kept_rectified": self.kept_rectified,
            "basis": self.basis,
            "basis_stated": self.basis_stated,
            "no_basis": self.no_basis,
            "rejects": [{"line": r.line, "reason": r.reason} for r in self.rejects],
        }


def import_batches(
    store: Store,
    batches: BatchSource,
    *,
    list_name: str,
    secret: bytes,
    source: str,
    consent_source: str | None = None,
    on_conflict: str = "update",
    status: str = "subscribed",
    basis: str | None = None,
    on_reject: Callable[[RowReject], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_opt_outs: Callable[[int, Iterator[OptOut]], None] | None = None,
    before_commit: Callable[[ImportResult], None] | None = None,
    overwrite_rectified: bool = False,
) -> ImportResult:
    """Write batches of parsed rows to list ``list_name`` in one transaction.

    ``batches(suppression, frames)`` is called inside the transaction with
    the suppression list and whether worker frames can be taken (see
    :mod:`mailcli.importer.feed`); it leaves suppressed addresses out and
    counts them. ``source`` is the file name (recorded on new contacts and,
    unless ``consent_source`` is given, as the consent source with the line).
    ``basis`` is the lawful basis stated for every row (``consent`` or
    ``customer``); None lets each row's evidence decide (an opt-in time or IP
    address: consent; nothing: none, which a send leaves out).
    ``on_batch(position)`` is called after each batch for progress;
    ``on_reject`` for each rejected row, in file order, before the commit;
    ``on_opt_outs(list_id, rows)`` records the rows of people who left the
    list at the file's source (needed when the file has any: their addresses
    are left out of every row and counted as suppressed);
    ``before_commit(result)`` runs inside the transaction (the audit entry).
    Any exception, KeyboardInterrupt included, leaves the database unchanged.
    """
    if on_conflict not in ("update", "skip"):
        raise UsageError(f"--on-conflict: expected update or skip, not {on_conflict!r}")
    if status not in IMPORT_STATUSES:
        raise UsageError(f"--status: expected subscribed or unconfirmed, not {status!r}")
    if basis not in (None, "consent", "customer"):
        raise UsageError(f"--basis: expected consent or customer, not {basis!r}")
    if consent_source:
        prefix, suffix = f"{consent_source} ({source} line ", ")"
    else:
        prefix, suffix = f"{source} line ", ""
    conn = store.conn
    postgres = is_postgres(conn)
    outermost = store._depth == 0  # only then can the import's PRAGMAs change
    session = postgres_import_session(conn) if postgres else sqlite_import_session(conn, outermost)
    with session, store.transaction():
        if postgres:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (POSTGRES_IMPORT_LOCK,))
        _drop_temp(conn)
        create_staging(conn)
        list_id = ensure_list(conn, list_name)
        suppression = _suppression(conn, secret, given_name(list_name))
        staged, suppressed = _stage(conn, batches(suppression, outermost and not postgres), on_batch)
        rejected, rejects = _rejects(conn, on_reject)
        opted_out, left = _take_opt_outs(conn, list_id, on_opt_outs)
        if postgres:
            merged = postgres_write_staged(conn, list_id=list_id, status=status, on_conflict=on_conflict,
                                           source=source, source_prefix=prefix, source_suffix=suffix,
                                           overwrite_rectified=overwrite_rectified, basis=basis)
        else:
            merged = write_staged(conn, list_id=list_id, status=status, on_conflict=on_conflict, source=source,
                                  source_prefix=prefix, source_suffix=suffix, rows=staged - left,
                                  overwrite_rectified=overwrite_rectified, basis=basis)
        result = ImportResult(
            imported=merged.imported, updated=merged.updated, unchanged=merged.unchanged,
            suppressed=suppressed + opted_out + left + merged.suppressed, rejected=rejected,
            duplicates=staged - left - merged.addresses, opted_out=opted_out, rejects=rejects,
            needs_smtputf8=merged.needs_smtputf8, kept_rectified=merged.kept_rectified, basis=basis,
            basis_stated=merged.basis_stated, no_basis=merged.no_basis)
        if before_commit is not None:
            before_commit(result)
    _drop_temp(conn)
    return result


@contextlib.contextmanager
def sqlite_import_session(conn: sqlite3.Connection, outermost: bool) -> Iterator[None]:
    """SQLite's settings for an import, around its transaction (they can only
    change outside one): foreign keys unchecked, the stage in pages as big as
    the database's, and the schema worker frames are loaded into attached.

    Foreign keys are right by construction here (ids just inserted or looked
    up), and checking them per row made the membership insert slower
    (benchmarks/README.md, "Import staging"). Nested in another transaction
    (``outermost`` False) nothing changes, and frames are not taken.
    """
    if not outermost:
        yield
        return
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute(f"PRAGMA temp.page_size={PAGE_SIZE}")  # the stage, like the database (if not made yet)
    conn.execute("ATTACH ':memory:' AS import_feed")
    try:
        yield
    finally:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("DETACH import_feed")


# The advisory lock that lets one import at a time write to a PostgreSQL
# database, from any machine (the lock file SQLite projects use is local).
POSTGRES_IMPORT_LOCK = 0x6D61696C696D7074


@contextlib.contextmanager
def postgres_import_session(conn: Connection) -> Iterator[None]:
    """PostgreSQL needs no settings around an import; the stage goes when it ends."""
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            _drop_temp(conn)


def _drop_temp(conn: Connection) -> None:
    if is_postgres(conn):
        for table in (*STAGING_TABLES, *POSTGRES_MERGE_TABLES):
            conn.execute(f"DROP TABLE IF EXISTS pg_temp.{table}")
        return
    # The stage is a scratch copy in SQLite's temp file (deleted on close):
    # zeroing its pages on drop would cost time for nothing.
    conn.execute("PRAGMA temp.secure_delete=OFF")
    for table in (*STAGING_TABLES, *MERGE_TABLES):
        conn.execute(f"DROP TABLE IF EXISTS temp.{table}")


def ensure_list(conn: Connection, name: str) -> int:
    """The id of list ``name``, created if new; a UsageError for a new name
    that differs only in case from a list's (it would be a second list, and
    the people who left the first would be subscribed to it)."""
    import shlex

    name = given_name(name)
    if not name:
        raise UsageError("--list: a list needs a name")
    twin = same_but_case(conn, name)
    if twin is not None:
        raise UsageError(f"a list named {twin!r} exists (list names differ only in case);"
                         f" use --list {shlex.quote(twin)}")
    conn.execute("INSERT INTO lists (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                 (name, now_iso()))
    found = list_id(conn, name)
    assert found is not None
    return found


def _suppression(conn: Connection, secret: bytes, list_name: str) -> Suppression | None:
    """The suppression list for this list and all marketing, or None if empty."""
    digests = suppressed_hmacs(conn, list_name)
    return Suppression(secret, digests) if digests else None


def _stage(conn: Connection, batches: Iterable[Batch], on_batch: Callable[[int], None] | None
           ) -> tuple[int, int]:
    """Every batch into the stage: how many rows were staged, how many left out as suppressed."""
    staged = suppressed = 0
    for batch in batches:
        suppressed += batch.suppressed
        if batch.frame is not None:
            staged += sqlite_stage_frame(cast(sqlite3.Connection, conn), batch.frame)  # frames: SQLite only
        elif batch.retract_from:
            staged -= retract(conn, batch.retract_from, tables=_stage_prefix(conn))
        elif is_postgres(conn):
            staged += len(batch.rows)
            postgres_stage_rows(cast("PgConnection", conn), batch.rows, batch.rejects, batch.optouts)
        else:
            staged += len(batch.rows)
            stage_rows(conn, batch.rows, batch.rejects, batch.optouts)
        if on_batch is not None:
            on_batch(batch.position)
    return staged, suppressed


def _stage_prefix(conn: Connection) -> str:
    """Where the stage tables are: SQLite's ``temp`` schema, PostgreSQL's ``pg_temp``."""
    return "pg_temp.import_" if is_postgres(conn) else "temp.import_"


def _rejects(conn: Connection, on_reject: Callable[[RowReject], None] | None
             ) -> tuple[int, list[RowReject]]:
    """Every rejected row in file order to ``on_reject``; the count and the first ones."""
    kept: list[RowReject] = []
    count = 0
    order = "ctid" if is_postgres(conn) else "rowid"  # the order they were staged in
    for line, reason, raw in conn.execute(f"SELECT line, reason, raw FROM {_stage_prefix(conn)}rejects"  # noqa: S608
                                          f" ORDER BY line, {order}"):
        reject = RowReject(line, reason, json.loads(raw))
        count += 1
        if count <= MAX_REJECTS_KEPT:
            kept.append(reject)
        if on_reject is not None:
            on_reject(reject)
    return count, kept


def _take_opt_outs(conn: Connection, list_id: int,
                   on_opt_outs: Callable[[int, Iterator[OptOut]], None] | None) -> tuple[int, int]:
    """The file's opt-outs to ``on_opt_outs``, and every staged row of their
    addresses withdrawn: whoever left the list at the source is subscribed
    by no row of the file, even one that names them again. Returns how many
    opt-out rows there were and how many rows were withdrawn."""
    stage = _stage_prefix(conn)
    (opted_out,) = conn.execute(f"SELECT count(*) FROM {stage}optouts").fetchone()  # noqa: S608 - fixed names
    if not opted_out:
        return 0, 0
    left = int(conn.execute(f"DELETE FROM {stage}raw WHERE key IN"  # noqa: S608 - fixed names
                            f" (SELECT key FROM {stage}optouts)").rowcount)
    if on_opt_outs is None:
        raise ValueError("the file has opt-outs and nothing was given to record them")
    order = "ctid" if is_postgres(conn) else "rowid"
    on_opt_outs(list_id, (OptOut(*row) for row in conn.execute(
        f"SELECT line, key, kind, at FROM {stage}optouts ORDER BY line, {order}").fetchall()))  # noqa: S608
    return int(opted_out), left
