"""Merging an import's staged rows into contacts and list memberships.

The rows of a file are staged in file order (:mod:`mailcli.store.imports`);
these statements then merge each repeated address into its first row and
classify and write every staged address at C speed, each sweeping the
indexes in key order.

* **Outcomes.** Per address: ``suppressed`` (opted out of all marketing,
  restricted, bounced, complained or erased, or unsubscribed from this list:
  an import never resubscribes anyone, docs/guarantees.md#suppression),
  ``imported`` (a new membership of the list, for a new or an existing
  contact), ``updated`` (an existing member whose fields changed, or a
  pending opt-in now imported as subscribed) or ``unchanged``. Nothing is
  written for unchanged addresses, so importing the same file twice leaves
  the database byte-for-byte the same.
* **Consent evidence** is written once per membership, when it is created
  (docs/guarantees.md#consent): source (``--consent-source``, default the
  file name) with the file line, time from the file or now, the /24 or /48
  network, method ``import``. A later import never rewrites it.

The SQL is SQLite's (``json_patch``, ``printf`` and ``last_insert_rowid()``
in the uids (:func:`_uid_sql`), ``PRAGMA threads`` around the merge, the
stage's rowid as each address's rank); :func:`postgres_write_staged` does the
same on PostgreSQL in its own SQL.
"""

from __future__ import annotations

import secrets
import sqlite3
from typing import TYPE_CHECKING, NamedTuple

from ..clock import now_iso

if TYPE_CHECKING:
    from .db import Connection

# The temp tables made here (the import drops them with its own).
MERGE_TABLES = ("import_stage", "import_match", "import_uid_base")


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
# much more in a re-import, where every address matches, and leaving the
# unchanged ones out saves more again (benchmarks/README.md, "Import staging").
#
# suppressed: opted out of all marketing, restricted (art. 18), not active
#   (bounced, complained, erased), or unsubscribed from this very list;
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
# than a Python function (a call per row made this statement much slower); see
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
# same scan numbers them again instead of looking each address up (which
# cost as much as the insert): when every staged address is new, the
# id is base + the stage's rowid (its rank, see _STAGE); when some already
# had a contact, a counter over the new ones — if no unchanged address sits
# among them.
_INSERT_MEMBERSHIPS = """
INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_method, consent_at,
                         consent_ip, confirmed_at, created_at, updated_at, basis)
SELECT :base + {rank}, :list, :status,
       :source_prefix || s.line || :source_suffix, 'import', coalesce(s.consent_at, :now), s.consent_ip,
       CASE WHEN :status = 'subscribed' THEN coalesce(s.consent_at, :now) END, :now, :now, {basis}
FROM temp.import_stage s
{new}
ORDER BY s.rowid
"""
# The same by lookup, for imports with unchanged addresses too, or should the
# ids not be dense (never seen; a safety net).
_INSERT_MEMBERSHIPS_BY_KEY = """
INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_method, consent_at,
                         consent_ip, confirmed_at, created_at, updated_at, basis)
SELECT c.id, :list, :status,
       :source_prefix || s.line || :source_suffix, 'import', coalesce(s.consent_at, :now), s.consent_ip,
       CASE WHEN :status = 'subscribed' THEN coalesce(s.consent_at, :now) END, :now, :now, {basis}
FROM contacts c JOIN temp.import_stage s ON s.key = c.email_key
WHERE c.id > :base
"""
_INSERT_MEMBERSHIPS_EXISTING = """
INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_method, consent_at,
                         consent_ip, confirmed_at, created_at, updated_at, basis)
SELECT x.contact_id, :list, :status,
       :source_prefix || s.line || :source_suffix, 'import', coalesce(s.consent_at, :now), s.consent_ip,
       CASE WHEN :status = 'subscribed' THEN coalesce(s.consent_at, :now) END, :now, :now, {basis}
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
    updated_at = :now,
    basis = {basis}
FROM temp.import_match x JOIN temp.import_stage s ON s.key = x.key
WHERE :status = 'subscribed' AND x.outcome = 'updated' AND memberships.contact_id = x.contact_id
  AND memberships.list_id = :list AND memberships.status = 'unconfirmed'
"""


# The lawful basis of a membership the import writes: the one stated
# (``--basis``), else consent where the row shows evidence of it (an opt-in
# time or an IP address from the file), else none. A pending opt-in has none
# until it is confirmed.
_BASIS = ("CASE WHEN :status != 'subscribed' THEN 'none' WHEN :basis IS NOT NULL THEN :basis"
          " WHEN s.consent_at IS NOT NULL OR s.consent_ip IS NOT NULL THEN 'consent' ELSE 'none' END")

# A basis stated on the command line (``--basis``) for members of the list
# that had none (made before the basis was recorded): the file's line is the
# evidence, replacing nothing that was there. Unchanged addresses are not in
# the match table, so this reads the stage.
_STATE_BASIS = """
UPDATE memberships SET
    basis = :basis,
    consent_source = :source_prefix || (SELECT s.line FROM contacts c JOIN temp.import_stage s ON s.key = c.email_key
                                        WHERE c.id = memberships.contact_id) || :source_suffix,
    consent_method = 'import',
    updated_at = :now
WHERE list_id = :list AND basis = 'none' AND status = 'subscribed'
  AND EXISTS (SELECT 1 FROM contacts c JOIN temp.import_stage s ON s.key = c.email_key
              WHERE c.id = memberships.contact_id)
"""


class Merged(NamedTuple):
    """What the merge found: addresses by outcome, and how many there were."""

    imported: int
    updated: int
    unchanged: int
    suppressed: int  # addresses blocked by their contact's or membership's status
    addresses: int  # distinct addresses staged (the rows, repeated addresses merged)
    needs_smtputf8: int  # addresses with a non-ASCII local part
    kept_rectified: int = 0  # addresses whose file row disagreed with a field the person had corrected
    basis_stated: int = 0  # existing members without a basis given the one stated
    no_basis: int = 0  # members the import left (or made) subscribed without a basis


def write_staged(conn: sqlite3.Connection, *, list_id: int, status: str, on_conflict: str, source: str,
                 source_prefix: str, source_suffix: str, rows: int, overwrite_rectified: bool = False,
                 basis: str | None = None) -> Merged:
    """Merge the ``rows`` staged rows by address, classify every address,
    and write contacts and memberships. Fields a person had corrected stay
    as corrected unless ``overwrite_rectified`` (:mod:`.rectified`);
    ``basis`` is the lawful basis stated for every row, else each row's
    evidence decides."""
    from .rectified import keep_rectified

    now = now_iso()
    _merge(conn, on_conflict)
    kept = keep_rectified(conn) if on_conflict == "update" and not overwrite_rectified else 0
    (base,) = conn.execute("SELECT coalesce(max(id), 0) FROM contacts").fetchone()
    params = {"list": list_id, "now": now, "status": status, "source": source, "base": base,
              "source_prefix": source_prefix, "source_suffix": source_suffix, "basis": basis}
    conn.execute(_MATCH)
    conn.execute(_CLASSIFY, {"list": list_id, "status": status, "update": on_conflict == "update"})
    counts = {"imported": 0, "updated": 0, "unchanged": 0, "suppressed": 0}
    for outcome, addresses in conn.execute("SELECT outcome, count(*) FROM temp.import_match GROUP BY outcome"):
        counts[outcome] += addresses
    matched = sum(counts.values())
    # Unchanged addresses are not written to the match table (in a re-import
    # that is nearly all of them); they are the existing ones not in it.
    (keys,) = conn.execute("SELECT count(*) FROM temp.import_stage").fetchone()
    existing = conn.execute(_EXISTING).fetchone()[0] if base else 0
    counts["unchanged"] = existing - matched
    counts["imported"] += keys - existing  # the new addresses
    if keys > existing:  # new addresses (a re-import of the same file has none: skip two scans)
        _insert_new(conn, params, base=base, rows=rows, keys=keys, existing=existing, unchanged=counts["unchanged"])
    conn.execute(_UPDATE_CONTACTS, {"now": now})
    conn.execute(_INSERT_MEMBERSHIPS_EXISTING.format(basis=_BASIS), params)
    conn.execute(_CONFIRM_MEMBERSHIPS.format(basis=_BASIS), params)
    stated = conn.execute(_STATE_BASIS, params).rowcount if basis is not None and status == "subscribed" else 0
    (utf8,) = conn.execute(_NEEDS_SMTPUTF8).fetchone()
    (no_basis,) = conn.execute(_NO_BASIS, {"list": list_id}).fetchone()
    return Merged(**counts, addresses=keys, needs_smtputf8=utf8, kept_rectified=kept, basis_stated=stated,
                  no_basis=no_basis)


def _merge(conn: sqlite3.Connection, on_conflict: str) -> None:
    """The raw rows into the stage, one row per address."""
    conn.execute(_STAGE)
    # The sort behind the merge may use a helper thread: the other core is
    # idle by now (the workers are done), and it shortens the merge.
    conn.execute("PRAGMA threads=1")
    try:
        conn.execute(_MERGE_UPDATE if on_conflict == "update" else _MERGE_SKIP)
    finally:
        conn.execute("PRAGMA threads=0")
    conn.execute("DROP TABLE temp.import_raw")


def _insert_new(conn: sqlite3.Connection, params: dict[str, object], *, base: int, rows: int, keys: int,
                existing: int, unchanged: int) -> None:
    """Contacts for the addresses that have none yet, and their memberships."""
    all_new = not existing  # then the match table is empty too
    uid_sql, uid_params = _uid_sql(conn, rows, base)
    created = conn.execute(_INSERT_CONTACTS.format(uid=uid_sql, new="" if all_new else _NEW_ONLY),
                           {"source": params["source"], "now": params["now"], **uid_params}).rowcount
    (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM contacts").fetchone()
    (last_rank,) = conn.execute("SELECT max(rowid) FROM temp.import_stage").fetchone()
    if top == base + created and all_new and last_rank == keys == created:
        conn.execute(_INSERT_MEMBERSHIPS.format(rank="s.rowid", new="", basis=_BASIS), params)
    elif top == base + created and not unchanged:
        conn.execute(_INSERT_MEMBERSHIPS.format(rank="row_number() OVER (ORDER BY s.rowid)", new=_NEW_ONLY,
                                                basis=_BASIS), params)
    else:
        conn.execute(_INSERT_MEMBERSHIPS_BY_KEY.format(basis=_BASIS), params)


# Addresses of the file whose local part is not ASCII (domains are A-labels
# by then): a relay must offer SMTPUTF8 to take them. A key with a non-ASCII
# character is longer in bytes than in characters; the scan reads only the
# key index.
# The file's addresses that are subscribed members of the list without a
# lawful basis: a send leaves them out.
_NO_BASIS = """
SELECT count(*) FROM memberships m JOIN contacts c ON c.id = m.contact_id
WHERE m.list_id = :list AND m.basis = 'none' AND m.status = 'subscribed'
  AND EXISTS (SELECT 1 FROM temp.import_stage s WHERE s.key = c.email_key)
"""
_NEEDS_SMTPUTF8 = "SELECT count(*) FROM temp.import_stage WHERE length(key) != length(CAST(key AS BLOB))"


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



def _postgres(sql: str, *changes: tuple[str, str]) -> str:
    """A statement above as PostgreSQL spells it: each change must find its text."""
    for old, new in changes:
        if old not in sql:
            raise AssertionError(f"not in the statement: {old!r}")
        sql = sql.replace(old, new)
    return sql


# PostgreSQL: the same classification and writes, in its SQL. The stage is
# filled by grouping the raw rows by address (an INSERT may not update one
# row twice there); attributes merge as jsonb, later rows' keys winning; the
# uids are random (gen_random_uuid); memberships of new contacts are found
# by address. Plain set-based SQL, no engine-specific fast path yet.
_PG_STAGE = """
CREATE TEMP TABLE import_stage (
    rank BIGSERIAL,
    key TEXT NOT NULL UNIQUE,
    line BIGINT NOT NULL,
    email TEXT,
    first_name TEXT,
    last_name TEXT,
    attributes TEXT NOT NULL,
    consent_at TEXT,
    consent_ip TEXT,
    n BIGINT NOT NULL DEFAULT 1
)
"""
# --on-conflict update: the first row's address, line and consent evidence,
# the last non-empty names, attributes merged in file order.
_PG_MERGE_UPDATE = """
INSERT INTO pg_temp.import_stage (key, line, email, first_name, last_name, attributes, consent_at, consent_ip, n)
SELECT g.key, g.line, g.email, g.first_name, g.last_name,
       CASE WHEN g.n = 1 THEN g.attributes ELSE (
           SELECT coalesce(jsonb_object_agg(j.key, j.value ORDER BY r.line), '{}'::jsonb)::text
           FROM pg_temp.import_raw r, jsonb_each(r.attributes::jsonb) j WHERE r.key = g.key) END,
       g.consent_at, g.consent_ip, g.n
FROM (SELECT key, min(line) AS line, (array_agg(email ORDER BY line))[1] AS email,
             (array_agg(first_name ORDER BY line DESC) FILTER (WHERE first_name IS NOT NULL))[1] AS first_name,
             (array_agg(last_name ORDER BY line DESC) FILTER (WHERE last_name IS NOT NULL))[1] AS last_name,
             min(attributes) AS attributes,
             (array_agg(consent_at ORDER BY line) FILTER (WHERE consent_at IS NOT NULL))[1] AS consent_at,
             (array_agg(consent_ip ORDER BY line) FILTER (WHERE consent_ip IS NOT NULL))[1] AS consent_ip,
             count(*) AS n
      FROM pg_temp.import_raw GROUP BY key) g
ORDER BY g.key
"""
# --on-conflict skip: the first row with an address, whole.
_PG_MERGE_SKIP = """
INSERT INTO pg_temp.import_stage (key, line, email, first_name, last_name, attributes, consent_at, consent_ip, n)
SELECT DISTINCT ON (key) key, line, email, first_name, last_name, attributes, consent_at, consent_ip,
       count(*) OVER (PARTITION BY key)
FROM pg_temp.import_raw ORDER BY key, line
"""
_PG_MATCH = """
CREATE TEMP TABLE import_match (
    key TEXT PRIMARY KEY,
    contact_id BIGINT NOT NULL,
    n BIGINT NOT NULL,
    changed BOOLEAN NOT NULL,
    outcome TEXT NOT NULL
)
"""
_PG_CLASSIFY = _postgres(
    _CLASSIFY,
    ("temp.", "pg_temp."),
    ("CROSS JOIN", "JOIN"),
    ("m.status IS 'unsubscribed'", "m.status IS NOT DISTINCT FROM 'unsubscribed'"),
    ("json_patch(c.attributes, s.attributes) != c.attributes",
     "c.attributes::jsonb || s.attributes::jsonb != c.attributes::jsonb"),
    ("\n)\nWHERE blocked", "\n) AS q\nWHERE blocked"),
)
_PG_INSERT_CONTACTS = """
INSERT INTO contacts (uid, email, email_key, first_name, last_name, attributes, source,
                      created_at, updated_at, last_activity_at)
SELECT substr(md5(gen_random_uuid()::text), 1, 18), coalesce(s.email, s.key), s.key,
       coalesce(s.first_name, ''), coalesce(s.last_name, ''), s.attributes, :source, :now, :now, :now
FROM pg_temp.import_stage s
WHERE NOT EXISTS (SELECT 1 FROM pg_temp.import_match x WHERE x.key = s.key)
ORDER BY s.rank
ON CONFLICT (email_key) DO NOTHING
"""
_PG_UPDATE_CONTACTS = _postgres(
    _UPDATE_CONTACTS,
    ("temp.", "pg_temp."),
    ("json_patch(contacts.attributes, s.attributes)", "(contacts.attributes::jsonb || s.attributes::jsonb)::text"),
)
_CONCAT = (":source_prefix || s.line || :source_suffix", ":source_prefix::text || s.line::text || :source_suffix::text")
# The basis as _BASIS writes it; a parameter PostgreSQL compares with NULL needs its type.
_PG_BASIS = _postgres(_BASIS, (":basis", "CAST(:basis AS TEXT)"))
_PG_MEMBERSHIP_VALUES = f""":list, :status,
       :source_prefix::text || s.line::text || :source_suffix::text, 'import', coalesce(s.consent_at, :now),
       s.consent_ip, CASE WHEN :status = 'subscribed' THEN coalesce(s.consent_at, :now) END, :now, :now,
       {_PG_BASIS}"""
_PG_INSERT_MEMBERSHIPS_NEW = f"""
INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_method, consent_at,
                         consent_ip, confirmed_at, created_at, updated_at, basis)
SELECT c.id, {_PG_MEMBERSHIP_VALUES}
FROM pg_temp.import_stage s JOIN contacts c ON c.email_key = s.key
WHERE c.id > :base AND NOT EXISTS (SELECT 1 FROM pg_temp.import_match x WHERE x.key = s.key)
ORDER BY s.rank
"""  # noqa: S608 - fixed SQL
_PG_INSERT_MEMBERSHIPS_EXISTING = _postgres(_INSERT_MEMBERSHIPS_EXISTING, ("temp.", "pg_temp."), _CONCAT).format(
    basis=_PG_BASIS)
_PG_CONFIRM_MEMBERSHIPS = _postgres(_CONFIRM_MEMBERSHIPS, ("temp.", "pg_temp."), _CONCAT).format(basis=_PG_BASIS)
_PG_STATE_BASIS = _postgres(
    _STATE_BASIS,
    ("temp.", "pg_temp."),
    (":source_prefix || (SELECT s.line ", ":source_prefix::text || (SELECT s.line::text "),
    (") || :source_suffix", ") || :source_suffix::text"),
)
_PG_NO_BASIS = _postgres(_NO_BASIS, ("temp.", "pg_temp."))
_PG_NEEDS_SMTPUTF8 = "SELECT count(*) FROM pg_temp.import_stage WHERE length(key) != octet_length(key)"
POSTGRES_MERGE_TABLES = ("import_stage", "import_match")


def postgres_write_staged(conn: Connection, *, list_id: int, status: str, on_conflict: str, source: str,
                          source_prefix: str, source_suffix: str, overwrite_rectified: bool = False,
                          basis: str | None = None) -> Merged:
    """``write_staged`` on PostgreSQL: the same outcomes, counted the same way."""
    from .rectified import keep_rectified

    now = now_iso()
    conn.execute("CREATE INDEX ON pg_temp.import_raw (key)")
    conn.execute(_PG_STAGE)
    conn.execute(_PG_MERGE_UPDATE if on_conflict == "update" else _PG_MERGE_SKIP)
    kept = keep_rectified(conn) if on_conflict == "update" and not overwrite_rectified else 0
    (base,) = conn.execute("SELECT coalesce(max(id), 0) FROM contacts").fetchone()
    params = {"list": list_id, "now": now, "status": status, "source": source, "base": base,
              "source_prefix": source_prefix, "source_suffix": source_suffix, "basis": basis}
    conn.execute(_PG_MATCH)
    conn.execute(_PG_CLASSIFY, {"list": list_id, "status": status, "update": on_conflict == "update"})
    counts = {"imported": 0, "updated": 0, "unchanged": 0, "suppressed": 0}
    for outcome, addresses in conn.execute("SELECT outcome, count(*) FROM pg_temp.import_match GROUP BY outcome"):
        counts[outcome] += int(addresses)
    matched = sum(counts.values())
    (keys,) = conn.execute("SELECT count(*) FROM pg_temp.import_stage").fetchone()
    (existing,) = conn.execute("SELECT count(*) FROM pg_temp.import_stage s"
                               " WHERE EXISTS (SELECT 1 FROM contacts c WHERE c.email_key = s.key)").fetchone()
    counts["unchanged"] = int(existing) - matched
    counts["imported"] += int(keys) - int(existing)
    if keys > existing:
        conn.execute(_PG_INSERT_CONTACTS, {"source": source, "now": now})
        conn.execute(_PG_INSERT_MEMBERSHIPS_NEW, params)
    conn.execute(_PG_UPDATE_CONTACTS, {"now": now})
    conn.execute(_PG_INSERT_MEMBERSHIPS_EXISTING, params)
    conn.execute(_PG_CONFIRM_MEMBERSHIPS, params)
    stated = conn.execute(_PG_STATE_BASIS, params).rowcount if basis is not None and status == "subscribed" else 0
    (utf8,) = conn.execute(_PG_NEEDS_SMTPUTF8).fetchone()
    (no_basis,) = conn.execute(_PG_NO_BASIS, {"list": list_id}).fetchone()
    return Merged(**counts, addresses=int(keys), needs_smtputf8=int(utf8), kept_rectified=kept,
                  basis_stated=int(stated), no_basis=int(no_basis))
