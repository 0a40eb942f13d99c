"""Contacts and list memberships: the import write path and the queries behind
``lists``, ``contacts`` and ``contacts show``/``set``.

How an import is written, and why this way:

* **One transaction.** Everything — staging, contacts, memberships, the audit
  row — happens inside ``store.transaction()``; any exception, Ctrl-C
  included, rolls it all back and the database is as it was.
* **Staging in SQLite, not in Python.** Parsed rows go, in batches of
  ``executemany`` (or as whole frames from the import workers, see
  :mod:`mailcli.importfeed`), into a TEMP table in file order; one sorted
  ``INSERT ... SELECT`` then builds a table keyed by the comparison key, where
  a repeated address merges into the earlier row (``ON CONFLICT DO UPDATE``:
  later non-empty values win, attributes merge with ``json_patch``), so
  dedupe inside the file costs no Python memory: memory stays flat however
  big the file is. Then a handful of set-based statements classify and write
  every staged address at C speed, each sweeping the indexes in key order.
  Row-by-row upserts through sqlite-utils were about 4x slower and cannot
  count outcomes.
* **Outcomes.** Per address: ``suppressed`` (on the suppression list for all
  marketing or this list, opted out of marketing, restricted, bounced or
  erased, or unsubscribed from this list — an import never resubscribes, B14,
  E19), ``imported`` (a new membership of the list, for a new or an existing
  contact), ``updated`` (an existing member whose fields changed, or a pending
  opt-in now imported as subscribed) or ``unchanged``. Each file row counts
  once, duplicates in the bucket of the address they merged into, so the five
  counts add up to the data rows of the file; ``duplicates`` says how many
  rows were merges. Nothing is written for unchanged addresses, so importing
  the same file twice leaves the database byte-for-byte the same.
* **Consent evidence** is written once per membership, when it is created
  (E01): source (``--consent-source``, default the file name) with the file
  line, time from the file or now, the /24 or /48 network, method
  ``import``. A later import never rewrites it.
* **Suppression** is checked by HMAC of the address key (E17), in Python, only
  when the suppression list has entries for this list or all marketing. The
  list is read inside the transaction (which holds the write lock), so no
  opt-out can slip in between the check and the commit.
* **Opt-outs in the file** (Mailchimp's unsubscribed and cleaned exports, see
  :class:`~mailcli.importer.OptOut`) are staged apart; every row with such an
  address is left out and counted as suppressed, and ``on_opt_outs``
  records them (suppression, membership, event) in the same transaction.
* **Where the time goes** at 1M rows on two cores (first load, 8-11 s
  depending on the machine's moment): 3-4 s reading and checking rows (two
  workers; the import process only loads their frames), then, after the last
  row, one writer: the sorted merge 1-1.6 s, contacts (table and two unique
  indexes) 1.2-1.5 s, memberships 0.9-1.3 s, the commit and its checkpoint.
  New databases and the stage use 16 KiB pages (fewer, fuller pages: a third
  off each insert). A re-import writes nothing and classifies in ~2 s instead.
* **Always through the WAL.** Every new page goes to the WAL and again into
  the database at the checkpoint (~500 MB twice at 1M rows). A rollback
  journal would write it once, but while an import holds one no other
  process can even read the database: ``serve``, ``report`` and a send would
  stall for the whole import. In WAL mode they go on reading the database as
  it was until the import commits; only writers wait for it.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..clock import now_iso
from ..errors import UsageError
from ..importer import ImportRow, OptOut, RowReject
from ..importfeed import BATCH, Batch, BatchSource, Suppression, batch_rows, insert_rows, staged
from .audience import CONTACT_STATUSES, MEMBER_STATUS_SQL, MEMBER_STATUSES, list_not_found
from .db import PAGE_SIZE, Store
from .suppressions import suppressed_hmacs

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
            "rejects": [{"line": r.line, "reason": r.reason} for r in self.rejects],
        }


# Rows land here first, in file order, as fast as executemany can append
# (inserting straight into a table keyed by address costs a random B-tree
# write per row, several times more once it outgrows the page cache).
_RAW = """
CREATE TEMP TABLE import_raw (
    line INTEGER NOT NULL,
    email TEXT,  -- NULL: the key
    key TEXT NOT NULL,
    first_name TEXT,
    last_name TEXT,
    attributes TEXT NOT NULL,
    consent_at TEXT,
    consent_ip TEXT
)
"""
_RAW_FROM_FRAME = "INSERT INTO temp.import_raw SELECT * FROM import_feed.rows"

# Rejected rows wait here (on disk, not in memory) to be reported in file
# order: the workers' rows arrive interleaved.
_REJECTS = "CREATE TEMP TABLE import_rejects (line INTEGER NOT NULL, reason TEXT NOT NULL, raw TEXT NOT NULL)"
_REJECT_INSERT = "INSERT INTO temp.import_rejects VALUES (?, ?, ?)"
_REJECTS_FROM_FRAME = "INSERT INTO temp.import_rejects SELECT * FROM import_feed.rejects"

# Rows of people who left the list at the file's source (importer.OptOut).
_OPTOUTS = "CREATE TEMP TABLE import_optouts (line INTEGER NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, at TEXT)"
_OPTOUT_INSERT = "INSERT INTO temp.import_optouts VALUES (?, ?, ?, ?)"
_OPTOUTS_FROM_FRAME = "INSERT INTO temp.import_optouts SELECT * FROM import_feed.optouts"

# One row per address. Filled from import_raw sorted by key — the B-trees are
# built by appending, and the writes to the contacts indexes later sweep them
# in order — and, per key, in file order (by line), so a repeated address
# merges into the first row with it: later non-empty names win, attributes
# merge key by key (json_patch); the first row's spelling of the address and
# its consent evidence stay. Rows are appended in key order and a repeated
# address updates its row instead of adding one, so the rowid is the rank of
# the address: 1, 2, 3... in key order (checked before it is relied on).
_STAGE = """
CREATE TEMP TABLE import_stage (
    key TEXT NOT NULL UNIQUE,
    line INTEGER NOT NULL,
    email TEXT,  -- NULL: the key
    first_name TEXT,
    last_name TEXT,
    attributes TEXT NOT NULL,
    consent_at TEXT,
    consent_ip TEXT,
    n INTEGER NOT NULL DEFAULT 1
)
"""
_MERGE_UPDATE = """
INSERT INTO temp.import_stage (key, line, email, first_name, last_name, attributes, consent_at, consent_ip)
SELECT key, line, email, first_name, last_name, attributes, consent_at, consent_ip
FROM temp.import_raw WHERE true ORDER BY key, line
ON CONFLICT (key) DO UPDATE SET
    n = n + 1,
    first_name = coalesce(excluded.first_name, first_name),
    last_name = coalesce(excluded.last_name, last_name),
    attributes = CASE WHEN excluded.attributes = '{}' THEN attributes
                      ELSE json_patch(attributes, excluded.attributes) END,
    consent_at = coalesce(consent_at, excluded.consent_at),
    consent_ip = coalesce(consent_ip, excluded.consent_ip)
"""
# --on-conflict skip: the first row with an address wins, inside the file too.
_MERGE_SKIP = """
INSERT INTO temp.import_stage (key, line, email, first_name, last_name, attributes, consent_at, consent_ip)
SELECT key, line, email, first_name, last_name, attributes, consent_at, consent_ip
FROM temp.import_raw WHERE true ORDER BY key, line
ON CONFLICT (key) DO UPDATE SET n = n + 1
"""

# The addresses that already have a contact, classified in one read of the
# stage joined to contacts and this list's memberships, both in key order.
# Those that need something written go to a narrow table of their own,
# appended in key order: rewriting every stage row instead (an UPDATE) cost
# more than twice as much in a re-import, where every address matches, and
# leaving the unchanged ones out saves another fifth.
#
# suppressed: opted out of all marketing, restricted (art. 18), not active
#   (bounced, complained, erased), or unsubscribed from this very list (B14);
#   nothing is written for them.
# imported:   a contact without a membership of this list (it gets one).
# updated:    a member whose fields change (--on-conflict update), or a
#   pending opt-in now imported as subscribed.
# unchanged:  the rest; nothing is written.
# ``changed`` says whether the contact row itself is rewritten.
_MATCH = """
CREATE TEMP TABLE import_match (
    key TEXT PRIMARY KEY,
    contact_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    changed INTEGER NOT NULL,
    outcome TEXT NOT NULL
) WITHOUT ROWID
"""
_CLASSIFY = """
INSERT INTO temp.import_match (key, contact_id, n, changed, outcome)
SELECT key, contact_id, n, NOT blocked AND differs, CASE
        WHEN blocked THEN 'suppressed'
        WHEN member IS NULL THEN 'imported'
        WHEN differs THEN 'updated'
        WHEN :status = 'subscribed' AND member = 'unconfirmed' THEN 'updated'
        ELSE 'unchanged' END
FROM (
    SELECT s.key AS key, c.id AS contact_id, s.n AS n, m.status AS member,
           c.no_marketing_at IS NOT NULL OR c.restricted_at IS NOT NULL OR c.status != 'active'
               OR m.status IS 'unsubscribed' AS blocked,
           :update AND (
               c.email != coalesce(s.email, s.key)
               OR (s.first_name IS NOT NULL AND c.first_name != s.first_name)
               OR (s.last_name IS NOT NULL AND c.last_name != s.last_name)
               OR (s.attributes != '{}' AND s.attributes != c.attributes
                   AND json_patch(c.attributes, s.attributes) != c.attributes)) AS differs
    FROM temp.import_stage s
    CROSS JOIN contacts c ON c.email_key = s.key
    LEFT JOIN memberships m ON m.contact_id = c.id AND m.list_id = :list
)
WHERE blocked OR member IS NULL OR differs OR (:status = 'subscribed' AND member = 'unconfirmed')
"""
# How many staged addresses already have a contact: the unchanged ones are
# these minus the match table's.
_EXISTING = """
SELECT count(*) FROM temp.import_stage s
WHERE EXISTS (SELECT 1 FROM contacts c WHERE c.email_key = s.key)
"""

# What has no contact yet is new (the unchanged ones, not in the match table,
# conflict and are skipped): create the contacts in key order, so the
# email_key index is swept once instead of hit at random and the new ids
# (after the highest one) follow key order too. The uid comes from SQL rather
# than a Python function (a call per row cost a third of this statement); see
# _uid_sql for how it stays unpredictable yet increasing. {new} leaves out the
# addresses in the match table (when it has any).
_INSERT_CONTACTS = """
INSERT INTO contacts (uid, email, email_key, first_name, last_name, attributes, source,
                      created_at, updated_at, last_activity_at)
SELECT {uid}, coalesce(s.email, s.key), s.key, coalesce(s.first_name, ''), coalesce(s.last_name, ''),
       s.attributes, :source, :now, :now, :now
FROM temp.import_stage s
{new}
ORDER BY s.rowid
ON CONFLICT (email_key) DO NOTHING
"""
_NEW_ONLY = "WHERE NOT EXISTS (SELECT 1 FROM temp.import_match x WHERE x.key = s.key)"

_UPDATE_CONTACTS = """
UPDATE contacts SET
    email = coalesce(s.email, s.key),
    first_name = coalesce(s.first_name, contacts.first_name),
    last_name = coalesce(s.last_name, contacts.last_name),
    attributes = CASE WHEN s.attributes = '{}' THEN contacts.attributes
                      ELSE json_patch(contacts.attributes, s.attributes) END,
    updated_at = :now,
    last_activity_at = :now
FROM temp.import_match x JOIN temp.import_stage s ON s.key = x.key
WHERE x.changed AND contacts.id = x.contact_id
"""

# New memberships for the contacts created above. SQLite gave them the ids
# max+1, max+2, ... in the order inserted (key order, checked below), so the
# same scan numbers them again instead of looking each address up (the
# lookup cost as much as the insert): when every staged address is new, the
# id is base + the stage's rowid (its rank, see _STAGE); when some already
# had a contact, a counter over the new ones — if no unchanged address sits
# among them.
_INSERT_MEMBERSHIPS = """
INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_method, consent_at,
                         consent_ip, confirmed_at, created_at, updated_at)
SELECT :base + {rank}, :list, :status,
       :source_prefix || s.line || :source_suffix, 'import', coalesce(s.consent_at, :now), s.consent_ip,
       CASE WHEN :status = 'subscribed' THEN coalesce(s.consent_at, :now) END, :now, :now
FROM temp.import_stage s
{new}
ORDER BY s.rowid
"""
# The same by lookup, for imports with unchanged addresses too, or should the
# ids not be dense (never seen; a safety net).
_INSERT_MEMBERSHIPS_BY_KEY = """
INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_method, consent_at,
                         consent_ip, confirmed_at, created_at, updated_at)
SELECT c.id, :list, :status,
       :source_prefix || s.line || :source_suffix, 'import', coalesce(s.consent_at, :now), s.consent_ip,
       CASE WHEN :status = 'subscribed' THEN coalesce(s.consent_at, :now) END, :now, :now
FROM contacts c JOIN temp.import_stage s ON s.key = c.email_key
WHERE c.id > :base
"""
_INSERT_MEMBERSHIPS_EXISTING = """
INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_method, consent_at,
                         consent_ip, confirmed_at, created_at, updated_at)
SELECT x.contact_id, :list, :status,
       :source_prefix || s.line || :source_suffix, 'import', coalesce(s.consent_at, :now), s.consent_ip,
       CASE WHEN :status = 'subscribed' THEN coalesce(s.consent_at, :now) END, :now, :now
FROM temp.import_match x JOIN temp.import_stage s ON s.key = x.key
WHERE x.outcome = 'imported'
"""

# A pending double opt-in imported again as subscribed: the new consent
# evidence replaces the pending one (it is the confirmation).
_CONFIRM_MEMBERSHIPS = """
UPDATE memberships SET
    status = 'subscribed',
    consent_source = :source_prefix || s.line || :source_suffix,
    consent_method = 'import',
    consent_at = coalesce(s.consent_at, :now),
    consent_ip = s.consent_ip,
    confirmed_at = coalesce(s.consent_at, :now),
    updated_at = :now
FROM temp.import_match x JOIN temp.import_stage s ON s.key = x.key
WHERE :status = 'subscribed' AND x.outcome = 'updated' AND memberships.contact_id = x.contact_id
  AND memberships.list_id = :list AND memberships.status = 'unconfirmed'
"""


def ensure_list(conn: sqlite3.Connection, name: str) -> int:
    """The id of list ``name``, created if new."""
    name = name.strip()
    if not name:
        raise UsageError("--list: a list needs a name")
    conn.execute("INSERT OR IGNORE INTO lists (name, created_at) VALUES (?, ?)", (name, now_iso()))
    row = conn.execute("SELECT id FROM lists WHERE name = ?", (name,)).fetchone()
    return int(row[0])


def _suppression(conn: sqlite3.Connection, secret: bytes, list_name: str) -> Suppression | None:
    """The suppression list for this list and all marketing, or None if empty."""
    digests = suppressed_hmacs(conn, list_name)
    return Suppression(secret, digests) if digests else None


def import_rows(
    store: Store,
    rows: Iterable[ImportRow | RowReject | OptOut],
    **options: Any,
) -> ImportResult:
    """Write parsed rows to a list in one transaction (see :func:`import_batches`)."""

    def batches(suppression: Suppression | None, frames: bool) -> Iterator[Batch]:
        staged_rows = (staged(row) if isinstance(row, ImportRow) else row for row in rows)
        return batch_rows(staged_rows, BATCH, suppression, None, lambda: 0)

    return import_batches(store, batches, **options)


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
    on_reject: Callable[[RowReject], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_opt_outs: Callable[[int, Iterator[OptOut]], None] | None = None,
    before_commit: Callable[[ImportResult], None] | None = None,
) -> ImportResult:
    """Write batches of parsed rows to list ``list_name`` in one transaction.

    ``batches(suppression, frames)`` is called inside the transaction with
    the suppression list and whether worker frames can be taken (see
    :mod:`mailcli.importfeed`); it leaves suppressed addresses out and
    counts them. ``source`` is the file name (recorded on new contacts and,
    unless ``consent_source`` is given, as the consent source with the line).
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
    if consent_source:
        prefix, suffix = f"{consent_source} ({source} line ", ")"
    else:
        prefix, suffix = f"{source} line ", ""
    conn = store.conn
    suppressed_rows = staged_count = 0
    # Foreign keys are checked by construction here (ids just inserted or
    # looked up); turning the per-row check off for the import saves a fifth
    # of the membership insert. It can only change outside a transaction,
    # like attaching the in-memory schema that worker frames are loaded into.
    outermost = store._depth == 0
    if outermost:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute(f"PRAGMA temp.page_size={PAGE_SIZE}")  # the stage, like the database (if not made yet)
        conn.execute("ATTACH ':memory:' AS import_feed")
    try:
        with store.transaction():
            _drop_temp(conn)
            conn.execute(_RAW)
            conn.execute(_STAGE)
            conn.execute(_REJECTS)
            conn.execute(_OPTOUTS)
            list_id = ensure_list(conn, list_name)
            for batch in batches(_suppression(conn, secret, list_name.strip()), outermost):
                suppressed_rows += batch.suppressed
                if batch.frame is not None:
                    conn.deserialize(batch.frame, name="import_feed")  # type: ignore[attr-defined]
                    staged_count += conn.execute(_RAW_FROM_FRAME).rowcount
                    conn.execute(_REJECTS_FROM_FRAME)
                    conn.execute(_OPTOUTS_FROM_FRAME)
                elif batch.retract_from:
                    staged_count -= conn.execute("DELETE FROM temp.import_raw WHERE line >= ?",
                                                 (batch.retract_from,)).rowcount
                    conn.execute("DELETE FROM temp.import_rejects WHERE line >= ?", (batch.retract_from,))
                    conn.execute("DELETE FROM temp.import_optouts WHERE line >= ?", (batch.retract_from,))
                else:
                    staged_count += len(batch.rows)
                    insert_rows(conn, "temp.import_raw", batch.rows)
                    if batch.rejects:
                        conn.executemany(_REJECT_INSERT, [(r.line, r.reason, json.dumps(r.raw))
                                                          for r in batch.rejects])
                    if batch.optouts:
                        conn.executemany(_OPTOUT_INSERT, batch.optouts)
                if on_batch is not None:
                    on_batch(batch.position)
            rejected, rejects = _rejects(conn, on_reject)
            (opted_out,) = conn.execute("SELECT count(*) FROM temp.import_optouts").fetchone()
            if opted_out:
                # Whoever left the list at the source is subscribed by no row
                # of the file, even one that names them again.
                left = conn.execute("DELETE FROM temp.import_raw WHERE key IN"
                                    " (SELECT key FROM temp.import_optouts)").rowcount
                staged_count -= left
                suppressed_rows += opted_out + left
                if on_opt_outs is None:
                    raise ValueError("the file has opt-outs and nothing was given to record them")
                on_opt_outs(list_id, (OptOut(*row) for row in conn.execute(
                    "SELECT line, key, kind, at FROM temp.import_optouts ORDER BY line, rowid")))
            result = _write_staged(conn, list_id=list_id, status=status, on_conflict=on_conflict,
                                   source=source, prefix=prefix, suffix=suffix, staged=staged_count,
                                   suppressed_rows=suppressed_rows, rejected=rejected, rejects=rejects,
                                   opted_out=opted_out)
            if before_commit is not None:
                before_commit(result)
    finally:
        if outermost:
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("DETACH import_feed")
    _drop_temp(conn)
    return result


def _rejects(conn: sqlite3.Connection, on_reject: Callable[[RowReject], None] | None
             ) -> tuple[int, list[RowReject]]:
    """Every rejected row in file order to ``on_reject``; the count and the first ones."""
    kept: list[RowReject] = []
    count = 0
    for line, reason, raw in conn.execute("SELECT line, reason, raw FROM temp.import_rejects ORDER BY line, rowid"):
        reject = RowReject(line, reason, json.loads(raw))
        count += 1
        if count <= MAX_REJECTS_KEPT:
            kept.append(reject)
        if on_reject is not None:
            on_reject(reject)
    return count, kept


def _write_staged(
    conn: sqlite3.Connection, *, list_id: int, status: str, on_conflict: str, source: str, prefix: str,
    suffix: str, staged: int, suppressed_rows: int, rejected: int, rejects: list[RowReject], opted_out: int = 0,
) -> ImportResult:
    """Classify every staged address and write contacts and memberships."""
    now = now_iso()
    params = {"list": list_id, "now": now, "status": status, "source": source,
              "source_prefix": prefix, "source_suffix": suffix}
    # The sort behind the merge may use a helper thread: the other core is
    # idle by now (the workers are done), and it takes a fifth off the merge.
    conn.execute("PRAGMA threads=1")
    try:
        conn.execute(_MERGE_UPDATE if on_conflict == "update" else _MERGE_SKIP)
    finally:
        conn.execute("PRAGMA threads=0")
    conn.execute("DROP TABLE temp.import_raw")
    (base,) = conn.execute("SELECT coalesce(max(id), 0) FROM contacts").fetchone()
    params["base"] = base
    conn.execute(_MATCH)
    conn.execute(_CLASSIFY, {"list": list_id, "status": status, "update": on_conflict == "update"})
    counts = {"imported": 0, "updated": 0, "unchanged": 0, "suppressed": suppressed_rows}
    matched_keys = 0
    for outcome, keys_n in conn.execute("SELECT outcome, count(*) FROM temp.import_match GROUP BY outcome"):
        counts[outcome] += keys_n  # addresses: a repeated row is counted as a duplicate
        matched_keys += keys_n
    # Unchanged addresses are not written to the match table (in a re-import
    # that is nearly all of them); they are the existing ones not in it.
    (keys,) = conn.execute("SELECT count(*) FROM temp.import_stage").fetchone()
    existing_keys = 0
    if base:
        existing_keys = conn.execute(_EXISTING).fetchone()[0]
    unchanged_keys = existing_keys - matched_keys
    counts["unchanged"] = unchanged_keys
    counts["imported"] += keys - existing_keys  # the new addresses
    created = 0
    if keys > existing_keys:  # new addresses (a re-import of the same file has none: skip two scans)
        all_new = not existing_keys  # then the match table is empty too
        uid_sql, uid_params = _uid_sql(conn, staged, base)
        created = conn.execute(_INSERT_CONTACTS.format(uid=uid_sql, new="" if all_new else _NEW_ONLY),
                               {"source": source, "now": now, **uid_params}).rowcount
        (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM contacts").fetchone()
        (last_rank,) = conn.execute("SELECT max(rowid) FROM temp.import_stage").fetchone()
        if top == base + created and all_new and last_rank == keys == created:
            conn.execute(_INSERT_MEMBERSHIPS.format(rank="s.rowid", new=""), params)
        elif top == base + created and not unchanged_keys:
            conn.execute(_INSERT_MEMBERSHIPS.format(rank="row_number() OVER (ORDER BY s.rowid)", new=_NEW_ONLY),
                         params)
        else:
            conn.execute(_INSERT_MEMBERSHIPS_BY_KEY, params)
    conn.execute(_UPDATE_CONTACTS, {"now": now})
    conn.execute(_INSERT_MEMBERSHIPS_EXISTING, params)
    conn.execute(_CONFIRM_MEMBERSHIPS, params)
    (utf8,) = conn.execute(_NEEDS_SMTPUTF8).fetchone()
    return ImportResult(rejected=rejected, duplicates=staged - keys, opted_out=opted_out, rejects=rejects,
                        needs_smtputf8=utf8, **counts)


# Addresses of the file whose local part is not ASCII (domains are A-labels
# by then): a relay must offer SMTPUTF8 to take them. A key with a non-ASCII
# character is longer in bytes than in characters; the scan reads only the
# key index (~85 ms for a million addresses).
_NEEDS_SMTPUTF8 = "SELECT count(*) FROM temp.import_stage WHERE length(key) != length(CAST(key AS BLOB))"


def _drop_temp(conn: sqlite3.Connection) -> None:
    # The stage is a scratch copy in SQLite's temp file (deleted on close);
    # zeroing its pages on drop would cost a tenth of a big import.
    conn.execute("PRAGMA temp.secure_delete=OFF")
    for table in ("import_raw", "import_stage", "import_match", "import_uid_base", "import_rejects", "import_optouts"):
        conn.execute(f"DROP TABLE IF EXISTS temp.{table}")


# 72-bit uids as 18 hex digits: a 24-bit high part that increases with each
# new contact and a random 48-bit low part.
_UID_HIGH = 1 << 24
_UID_LOW_MASK = (1 << 48) - 1


def _uid_sql(conn: sqlite3.Connection, count: int, base: int) -> tuple[str, dict[str, int]]:
    """The SQL expression giving each new contact its uid, and its parameters.

    A uid is 72 random-looking bits (18 hex digits, like ``tokens.new_uid``).
    New contacts are inserted in key order; had their uids been independent
    random values, every insert would land on a random page of the uid index,
    which costs more than everything else in a big import once the index
    outgrows the page cache. So the uids increase in insert order: the i-th
    new contact's high 24 bits lie in the i-th of ``count`` equal slots after
    a random start, at a random place in its slot, and the low 48 bits are
    random (SQLite's ``random()``, from its CSPRNG). The uids are still
    unpredictable and spread out, but the index is swept once. (Unsubscribe
    tokens are MACs; a uid is no secret.)

    ``i`` is ``last_insert_rowid() - base``: inside the INSERT ... SELECT it is
    the id of the contact inserted just before, starting from ``base`` set
    here. Had SQLite evaluated it once per statement instead, the uids would
    merely lose their order (the low bits keep them distinct); a test checks
    the order.

    More new contacts than slots (over 16 million in one import) fall back
    to a Python function per row.
    """
    if count >= _UID_HIGH // 2:
        conn.create_function("mailcli_uid", 0, SortedUids(count))
        return "mailcli_uid()", {}
    slot = 1
    while slot * 2 * (count + 1) <= _UID_HIGH:
        slot *= 2
    start = secrets.randbelow(_UID_HIGH - slot * (count + 1) + 1)
    conn.execute("CREATE TEMP TABLE import_uid_base (x)")
    conn.execute("INSERT INTO temp.import_uid_base (rowid) VALUES (?)", (base,))  # last_insert_rowid() = base
    return ("printf('%06x%012x', :uid_start + (last_insert_rowid() - :uid_base) * :uid_slot"
            " + (random() & :uid_jitter), random() & :uid_low)",
            {"uid_start": start, "uid_base": base, "uid_slot": slot, "uid_jitter": slot - 1,
             "uid_low": _UID_LOW_MASK})


class SortedUids:
    """Random contact uids handed out in increasing order, one Python call
    each: the fallback of :func:`_uid_sql` for imports beyond its slots.

    Each uid is the previous one plus a random step of up to ~2x the average
    gap, so the uids are still unpredictable and spread over the whole space.
    """

    SPACE = 1 << 72

    def __init__(self, count: int) -> None:
        import random

        self._random = random.Random(secrets.token_bytes(16))
        self._bits = max(1, (self.SPACE // (count + 1)).bit_length())
        self._value = self._random.getrandbits(self._bits - 1) if self._bits > 1 else 0

    def __call__(self) -> str:
        self._value += 1 + self._random.getrandbits(self._bits)
        if self._value >= self.SPACE:  # astronomically unlikely; stay valid anyway
            return secrets.token_hex(9)
        return f"{self._value:018x}"


# ------------------------------------------------------------------ queries


@dataclass(frozen=True, slots=True)
class ContactRow:
    """One contact as ``contacts`` lists it.

    ``status`` is the membership status when listing one list, else the
    contact's own status (active, unsubscribed, bounced, complained).
    """

    id: int
    email: str
    first_name: str
    last_name: str
    status: str
    lists: list[str]
    attributes: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"email": self.email, "first_name": self.first_name, "last_name": self.last_name,
                "status": self.status, "lists": self.lists, "attributes": self.attributes}


def _list_id(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT id FROM lists WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise list_not_found(conn, name)
    return int(row[0])


def check_status(status: str, *, list_name: str | None) -> str:
    """``status`` if a listing can filter on it, else a UsageError with a suggestion."""
    import difflib

    allowed = MEMBER_STATUSES if list_name is not None else tuple(dict.fromkeys(CONTACT_STATUSES + MEMBER_STATUSES))
    if status in allowed:
        return status
    guess = difflib.get_close_matches(status.lower(), allowed, n=1, cutoff=0.5)
    raise UsageError(f"--status {status!r} is not a status" + (f" (did you mean {guess[0]}?)" if guess else ""),
                     hint=f"{'members of a list' if list_name else 'contacts'} are {', '.join(allowed)}")


def _contact_filter(conn: sqlite3.Connection, list_name: str | None, status: str | None
                    ) -> tuple[str, list[Any], str, list[Any]]:
    """WHERE clause (fixed SQL, bound values) and the status column for a listing.

    With a list, the status is the member's (``audience.MEMBER_STATUS_SQL``),
    the one ``lists`` counts and a send freezes.
    """
    member = f"(SELECT {MEMBER_STATUS_SQL} FROM memberships m WHERE m.contact_id = c.id AND m.list_id = ?)"  # noqa: S608
    if list_name is not None:
        list_id = _list_id(conn, list_name)
        if status is not None:
            members = f"c.id IN (SELECT m.contact_id FROM memberships m JOIN contacts c ON c.id = m.contact_id WHERE m.list_id = ? AND ({MEMBER_STATUS_SQL}) = ?)"  # noqa: S608
            return (members, [list_id, status], member, [list_id])
        return ("c.id IN (SELECT contact_id FROM memberships WHERE list_id = ?)", [list_id], member, [list_id])
    if status is not None:
        any_member = f"EXISTS (SELECT 1 FROM memberships m WHERE m.contact_id = c.id AND ({MEMBER_STATUS_SQL}) = ?)"  # noqa: S608
        return (f"(c.status = ? OR {any_member})", [status, status], "c.status", [])
    return ("1", [], "c.status", [])


def iter_contacts(
    store: Store,
    *,
    list_name: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Iterator[ContactRow]:
    """Contacts in address order, optionally one list's members with one status."""
    conn = store.conn
    where, params, status_sql, status_params = _contact_filter(conn, list_name, status)
    # The SQL text is fixed; only bound values vary (F15).
    sql = (
        f"SELECT c.id, c.email, c.first_name, c.last_name, {status_sql},"  # noqa: S608
        " (SELECT json_group_array(l.name) FROM memberships m JOIN lists l ON l.id = m.list_id"
        "  WHERE m.contact_id = c.id AND m.status != 'unsubscribed'),"
        f" c.attributes FROM contacts c WHERE {where} ORDER BY c.email_key LIMIT ? OFFSET ?"
    )
    args = [*status_params, *params, -1 if limit is None else limit, offset]
    for contact_id, email, first, last, row_status, lists, attributes in conn.execute(sql, args):
        yield ContactRow(contact_id, email, first, last, row_status, sorted(json.loads(lists)),
                         json.loads(attributes))


def count_contacts(store: Store, *, list_name: str | None = None, status: str | None = None) -> int:
    """How many contacts ``iter_contacts`` would yield without a limit."""
    where, params, _, _ = _contact_filter(store.conn, list_name, status)
    sql = f"SELECT count(*) FROM contacts c WHERE {where}"  # noqa: S608 - fixed SQL, bound values
    return int(store.conn.execute(sql, params).fetchone()[0])


@dataclass(frozen=True, slots=True)
class ContactDetail:
    """Everything ``contacts show`` prints about one person."""

    id: int
    uid: str
    email: str
    first_name: str
    last_name: str
    status: str
    attributes: dict[str, Any]
    source: str | None
    created_at: str
    updated_at: str
    restricted_at: str | None
    no_marketing_at: str | None
    memberships: list[dict[str, Any]]
    history: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "email": self.email, "first_name": self.first_name, "last_name": self.last_name,
            "status": self.status, "attributes": self.attributes, "source": self.source,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "restricted_at": self.restricted_at, "no_marketing_at": self.no_marketing_at,
            "lists": [m["list"] for m in self.memberships if m["status"] != "unsubscribed"],
            "memberships": self.memberships, "history": self.history,
        }


def find_contact_id(store: Store, key: str) -> int | None:
    row = store.conn.execute("SELECT id FROM contacts WHERE email_key = ?", (key,)).fetchone()
    return int(row[0]) if row else None


def contact_detail(store: Store, key: str) -> ContactDetail | None:
    """One contact by comparison key, with memberships (consent) and history."""
    conn = store.conn
    row = conn.execute(
        "SELECT id, uid, email, first_name, last_name, status, attributes, source, created_at, updated_at,"
        " restricted_at, no_marketing_at FROM contacts WHERE email_key = ?", (key,)).fetchone()
    if row is None:
        return None
    contact_id = row[0]
    memberships = [
        {"list": name, "status": status, "consent_source": source, "consent_method": method,
         "consent_at": consent_at, "consent_ip": ip, "consent_text": text, "confirmed_at": confirmed,
         "unsubscribed_at": unsub_at, "unsubscribe_channel": channel, "created_at": created}
        for (name, status, source, method, consent_at, ip, text, confirmed, unsub_at, channel, created)
        in conn.execute(
            # The member's status as `lists` counts it (a bounced member is "bounced").
            f"SELECT l.name, {MEMBER_STATUS_SQL}, m.consent_source, m.consent_method, m.consent_at, m.consent_ip,"  # noqa: S608
            " m.consent_text, m.confirmed_at, m.unsubscribed_at, m.unsubscribe_channel, m.created_at"
            " FROM memberships m JOIN lists l ON l.id = m.list_id JOIN contacts c ON c.id = m.contact_id"
            " WHERE m.contact_id = ? ORDER BY l.name",
            (contact_id,))
    ]
    history = [
        {"at": at, "kind": kind, "channel": channel, "scope": scope, "campaign": campaign,
         "note": _event_note(kind, detail)}
        for (at, kind, channel, scope, campaign, detail) in conn.execute(
            "SELECT e.created_at, e.kind, e.channel, e.scope, c.name, e.detail FROM events e"
            " LEFT JOIN campaigns c ON c.id = e.campaign_id WHERE e.contact_id = ? ORDER BY e.id",
            (contact_id,))
    ]
    history += [
        {"at": sent_at or updated_at, "kind": f"delivery {status}", "channel": None, "scope": None,
         "campaign": campaign, "note": None}
        for (sent_at, updated_at, status, campaign) in conn.execute(
            "SELECT d.sent_at, d.updated_at, d.status, c.name FROM deliveries d"
            " JOIN campaigns c ON c.id = d.campaign_id WHERE d.contact_id = ? ORDER BY d.id", (contact_id,))
    ]
    history.sort(key=lambda event: event["at"] or "")
    return ContactDetail(
        id=contact_id, uid=row[1], email=row[2], first_name=row[3], last_name=row[4], status=row[5],
        attributes=json.loads(row[6]), source=row[7], created_at=row[8], updated_at=row[9],
        restricted_at=row[10], no_marketing_at=row[11], memberships=memberships, history=history,
    )


def _event_note(kind: str, detail_text: str | None) -> str | None:
    """A few words from an event's detail: the status of a bounce or notice,
    the relay that could not take an address."""
    try:
        detail = json.loads(detail_text or "{}")
    except ValueError:
        return None
    if not isinstance(detail, dict):
        return None
    parts = [str(detail[key]) for key in ("status", "diagnostic") if detail.get(key)]
    if detail.get("will_retry_until"):
        parts.append(f"retried until {detail['will_retry_until']}")
    if detail.get("relay"):
        parts.append(f"relay {detail['relay']} offers no SMTPUTF8")
    return "; ".join(parts) or None


NAME_FIELDS = ("first_name", "last_name")
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class Change:
    """One ``FIELD=VALUE`` of ``contacts set``; an empty value clears it."""

    field: str
    value: str


def parse_changes(assignments: Iterable[str]) -> list[Change]:
    """``["first_name=Anna", "city="]`` → changes; raises UsageError on bad input."""
    changes = []
    for text in assignments:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"{text!r}: expected FIELD=VALUE")
        if name not in ("email", *NAME_FIELDS) and not _IDENTIFIER.fullmatch(name):
            raise UsageError(
                f"{name!r}: a field is email, first_name, last_name or an attribute name"
                " (lower case letters, digits and _)")
        if name in ("lists", "status", "uid", "id"):
            raise UsageError(f"{name!r} cannot be set here",
                             hint="use mailcli unsubscribe or mailcli import for list membership")
        if "\x00" in value:
            raise UsageError(f"{name}: NUL bytes are not allowed")
        changes.append(Change(name, value))
    if not changes:
        raise UsageError("nothing to set", hint="give one or more FIELD=VALUE")
    return changes


def attribute_in_use(conn: sqlite3.Connection, name: str) -> bool:
    """Does any contact have the attribute ``name``? (A text search first: cheap, no JSON parsed.)"""
    row = conn.execute(
        "SELECT 1 FROM contacts WHERE instr(attributes, ?) > 0 AND json_type(attributes, ?) IS NOT NULL LIMIT 1",
        (json.dumps(name) + ":", "$." + json.dumps(name)),
    ).fetchone()
    return row is not None


def known_fields(conn: sqlite3.Connection, sample: int = 5000) -> set[str]:
    """The fields people usually set: the standard ones and the attributes of recent contacts."""
    names = {"email", *NAME_FIELDS}
    for (text,) in conn.execute("SELECT attributes FROM contacts ORDER BY id DESC LIMIT ?", (sample,)):
        names.update(json.loads(text))
    return names


def _new_attributes(conn: sqlite3.Connection, changes: list[Change], attributes: dict[str, Any], *,
                    allow_lookalikes: bool) -> list[str]:
    """The attributes set here that no contact has yet. Unless
    ``allow_lookalikes``, a UsageError when one looks like a misspelt known field."""
    import difflib

    new = [c.field for c in changes
           if c.field not in ("email", *NAME_FIELDS) and c.field not in attributes and c.value.strip()
           and not attribute_in_use(conn, c.field)]
    if new and not allow_lookalikes:
        known = sorted(known_fields(conn) | set(attributes))
        for name in new:
            guess = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            if guess:
                raise UsageError(f"Unknown field {name!r} (did you mean {guess[0]}?); nothing was changed",
                                 hint=f"to add {name} as a new field anyway, pass --new-field")
    return new


def set_fields(store: Store, key: str, changes: list[Change], *, secret: bytes,
               normalise: Callable[[str], tuple[str, str]], new_fields: bool = False
               ) -> tuple[int, list[str], list[str]] | None:
    """Rectify one contact (art. 16). Returns (contact id, changed field names,
    attributes no other contact has), or None when no contact has this key.
    A field no contact has that looks like a misspelling of a known one is
    refused unless ``new_fields``. One transaction."""
    with store.transaction() as conn:
        row = conn.execute("SELECT id, email, first_name, last_name, attributes FROM contacts"
                           " WHERE email_key = ?", (key,)).fetchone()
        if row is None:
            return None
        contact_id, email, first, last, attributes_text = row
        values: dict[str, Any] = {"email": email, "first_name": first, "last_name": last}
        attributes = json.loads(attributes_text)
        added = _new_attributes(conn, changes, attributes, allow_lookalikes=new_fields)
        new_key = key
        for change in changes:
            if change.field == "email":
                try:
                    address, new_key = normalise(change.value)
                except UsageError as exc:  # AddressError
                    raise UsageError(f"email={change.value.strip()!r} is not a valid address: {exc}") from None
                values["email"] = address
            elif change.field in NAME_FIELDS:
                values[change.field] = " ".join(change.value.split())
            elif change.value.strip():
                attributes[change.field] = change.value.strip()
            else:
                attributes.pop(change.field, None)
        if new_key != key:
            if conn.execute("SELECT 1 FROM contacts WHERE email_key = ?", (new_key,)).fetchone():
                raise UsageError("Another contact already has that address",
                                 hint="two records of one person: erase one with mailcli privacy erase")
            digest = hmac.digest(secret, b"address:" + new_key.encode("utf-8"), "sha256").hex()
            if conn.execute("SELECT 1 FROM suppressions WHERE hmac = ?", (digest,)).fetchone():
                raise UsageError("The new address is on the suppression list; it will not be used")
        new_attributes = json.dumps(attributes, ensure_ascii=False, separators=(",", ":"))
        changed = [name for name in ("email", *NAME_FIELDS) if values[name] != row[("email", *NAME_FIELDS).index(name) + 1]]
        if new_attributes != attributes_text:
            changed += sorted({c.field for c in changes if c.field not in ("email", *NAME_FIELDS)})
        if changed:
            conn.execute(
                "UPDATE contacts SET email = ?, email_key = ?, first_name = ?, last_name = ?, attributes = ?,"
                " updated_at = ? WHERE id = ?",
                (values["email"], new_key, values["first_name"], values["last_name"], new_attributes,
                 now_iso(), contact_id))
    return contact_id, changed, added


def template_fields(conn: sqlite3.Connection, key: str) -> tuple[str, str, str, str, str | None] | None:
    """(address, first name, last name, attributes JSON, restricted at) of the
    contact with comparison key ``key``: what a template sees of it."""
    row = conn.execute(
        "SELECT email, first_name, last_name, attributes, restricted_at FROM contacts WHERE email_key = ?", (key,)
    ).fetchone()
    return None if row is None else (row[0], row[1] or "", row[2] or "", row[3] or "{}", row[4])
