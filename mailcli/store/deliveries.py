"""What a running send writes about each delivery, and what it does when the
row is no longer there.

A delivery row can vanish under a running send: ``privacy erase`` and
``privacy purge`` fold it into the campaign's archived totals and delete it.
The send still learns what happened to a message that was in flight, and
``settle_archived`` corrects the archived totals with it, so ``sent`` in the
report stays what the server accepted.

The ``sending`` mark is taken only from a status this run may send: a row that
another run marked, sent or skipped in the meantime is left alone, and the
message is not sent (a second line of defence behind the campaign lock and
claim).

A campaign's deliveries are counted without reading them: ``delivery_counts``
holds, per campaign and status, how many rows there are, and triggers keep it
right on every insert, status change and delete (migration
``m008_delivery_counts``), so a report costs the same for a campaign of a
hundred as for one of a million. A freeze on SQLite counts the rows it
inserts once instead (``pending_inserts``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .archive import settle_archived
from .audience import SERVICE_REACHABLE_SQL
from .db import is_postgres
from .optouts import SKIP_REASON_BY_KIND, delivery_exists
from .url import DatabaseURL

if TYPE_CHECKING:
    from .db import Connection

# Ids given as one JSON array (SQLite's json_each).
_IDS_SQL = "SELECT value FROM json_each(?)"

# The server's clock in seconds, as leases are written (``store.leases``).
LEASE_NOW = "extract(epoch FROM clock_timestamp())::float8"

# Why a message is uncertain: the two ways the reply to its final dot can go missing.
KILLED_AFTER_DOT = "the sending process ended after the final dot, before the server's reply was recorded"
LOST_AFTER_DOT = "connection lost after the final dot, before the server's reply"

# A result's status -> how an archived (deleted) delivery counts it: a row that
# is gone is never retried, so what was not delivered is a skip.
_ARCHIVE_KEY = {"sent": "sent", "failed": "failed", "uncertain": "uncertain"}


def _marks(statuses: Sequence[object]) -> str:
    return ",".join("?" for _ in statuses)


def mark_sending(conn: Connection, delivery_id: int, statuses: Sequence[str], now: str, *,
                 lease: float | None = None) -> str:
    """Mark a delivery ``sending`` (right before its final dot).

    Returns ``"ok"``, ``"gone"`` (the row was deleted: erased or purged) or
    ``"taken"`` (its status is no longer one this run sends). With ``lease``
    (a campaign shared by senders on PostgreSQL), the row's lease is renewed
    for that many seconds too, so a message in flight never looks abandoned.
    """
    renewed = f", lease_until = {LEASE_NOW} + ?" if lease is not None else ""
    cursor = conn.execute(
        f"UPDATE deliveries SET status = 'sending', updated_at = ?{renewed} WHERE id = ? AND status IN ({_marks(statuses)})",  # noqa: S608 - placeholders
        (now, *((lease,) if lease is not None else ()), delivery_id, *statuses),
    )
    if cursor.rowcount:
        return "ok"
    return "taken" if delivery_exists(conn, delivery_id) else "gone"


def record_result(conn: Connection, campaign_id: int, delivery_id: int, status: str, reply: str, now: str,
                  *, was_sending: bool) -> None:
    """The outcome of one attempt (``pending`` again for a retry).

    ``was_sending``: this run's ``sending`` mark was on the row, so a row
    deleted since was archived as ``uncertain``, else as ``skipped``.
    """
    cursor = conn.execute(
        "UPDATE deliveries SET status = ?, last_reply = ?, attempts = attempts + 1, updated_at = ?,"
        " sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE id = ?",
        (status, reply, now, status, now, delivery_id),
    )
    if cursor.rowcount == 0:
        settle_archived(conn, campaign_id, "uncertain" if was_sending else "skipped", _ARCHIVE_KEY.get(status, "skipped"))


_MARK_AND_RECORD_SQL = (
    "UPDATE deliveries SET status = j.new_status,"
    " last_reply = CASE WHEN j.is_result THEN j.reply ELSE last_reply END,"
    " attempts = attempts + j.is_result, updated_at = ?,"
    " sent_at = CASE WHEN j.new_status = 'sent' THEN ? ELSE sent_at END"
    " FROM (SELECT json_extract(value, '$[0]') AS delivery_id, json_extract(value, '$[1]') AS new_status,"
    " json_extract(value, '$[2]') AS reply, json_extract(value, '$[3]') AS is_result FROM json_each(?)) AS j"
    " WHERE deliveries.id = j.delivery_id AND (j.is_result OR deliveries.status IN ({wanted}))"
    " AND (SELECT count(*) FROM deliveries WHERE id IN ({ids}) AND status IN ({wanted})) = ?"
    " AND (SELECT count(*) FROM deliveries WHERE id IN ({ids})) = ?"
)


def mark_and_record(conn: Connection, marks: Sequence[int], results: Sequence[tuple[int, str, str]],
                    statuses: Sequence[str], now: str) -> bool:
    """A running send's group commit in one statement (SQLite, outside a
    transaction: the statement is its own): ``mark_sending`` for every id of
    ``marks``, ``record_result`` for every (id, status, reply) of
    ``results``, all ids distinct.

    All or nothing: True when every one was written; False, with nothing
    written, when a mark would not take (the row erased, or another run's)
    or a result's row is gone — the caller then writes them one by one,
    which tells which. One statement is one wait for the interpreter after
    the disk instead of one per row (benchmarks/README.md).
    """
    rows = [[i, "sending", None, 0] for i in marks] + [[i, status, reply, 1] for i, status, reply in results]
    wanted = _marks(statuses)
    cursor = conn.execute(_MARK_AND_RECORD_SQL.format(wanted=wanted, ids=_IDS_SQL), (
        now, now, json.dumps(rows), *statuses, json.dumps(list(marks)), *statuses, len(marks),
        json.dumps([r[0] for r in results]), len(results)))
    if cursor.rowcount not in (0, len(rows)):  # the guards above make this impossible
        raise RuntimeError(f"group commit wrote {cursor.rowcount} of {len(rows)} deliveries")
    return bool(cursor.rowcount)


def record_skip(conn: Connection, campaign_id: int, delivery_id: int, reason: str, now: str,
                statuses: Sequence[str], *, was_sending: bool) -> None:
    """A delivery that will not be sent (opted out, erased... since the run began).

    Only a row in one of ``statuses`` (or in this run's ``sending`` mark) is
    changed; another run's row is left alone.
    """
    allowed = (*statuses, "sending") if was_sending else tuple(statuses)
    cursor = conn.execute(
        f"UPDATE deliveries SET status = 'skipped', last_reply = ?, updated_at = ? WHERE id = ? AND status IN ({_marks(allowed)})",  # noqa: S608
        (reason, now, delivery_id, *allowed),
    )
    if cursor.rowcount == 0 and was_sending and not delivery_exists(conn, delivery_id):
        settle_archived(conn, campaign_id, "uncertain", "skipped")


def delivery_status_counts(conn: Connection, campaign_id: int) -> dict[str, int]:
    """Rows per status of one campaign's deliveries (statuses with none left out)."""
    return {
        status: n
        for status, n in conn.execute(
            "SELECT status, n FROM delivery_counts WHERE campaign_id = ? AND n != 0", (campaign_id,)
        )
    }


# The key under which ``shared_status_counts`` gives the ``sending`` rows of live senders.
IN_FLIGHT = "sending, in flight"


def shared_status_counts(conn: Connection, campaign_id: int) -> dict[str, int]:
    """``delivery_status_counts`` on PostgreSQL, where other senders may work
    the campaign: also how many of its ``sending`` rows a live sender holds
    (under ``IN_FLIGHT``), read in the same statement, so from the same
    moment as the counts."""
    from .leases import LIVE_SQL

    return {
        status: int(n)
        for status, n in conn.execute(
            "SELECT status, n FROM delivery_counts WHERE campaign_id = ? AND n != 0"  # noqa: S608 - fixed text
            " UNION ALL SELECT ?, count(*) FROM deliveries d WHERE d.campaign_id = ? AND d.status = 'sending'"
            f" AND {LIVE_SQL}", (campaign_id, IN_FLIGHT, campaign_id))
        if n
    }


def uncertain_causes(conn: Connection, campaign_id: int) -> dict[str, int]:
    """Uncertain messages of a campaign by cause: ``killed`` (the sending
    process ended), ``lost`` (the connection ended) or ``other``."""
    counts = {"killed": 0, "lost": 0, "other": 0}
    present = delivery_status_counts(conn, campaign_id)
    if not present.get("uncertain") and not present.get("sending"):
        return counts  # none: no need to read the campaign's rows
    for status, reply in conn.execute(
        "SELECT d.status, COALESCE(d.last_reply, '') FROM deliveries d WHERE d.campaign_id = ?"  # noqa: S608
        f" AND d.status IN ('uncertain', 'sending'){_not_in_flight(conn)}",
        (campaign_id,),
    ):
        # "interrupted after" and "no reply to end of data" are how older versions said it.
        if status == "sending" or reply.startswith(("interrupted after", KILLED_AFTER_DOT)):
            counts["killed"] += 1
        elif reply.startswith((LOST_AFTER_DOT, "no reply to end of data")):
            counts["lost"] += 1
        else:
            counts["other"] += 1
    return counts


ACCEPTED_BY_HAND = "counted as sent by hand after a check of the relay's log"


def uncertain_ids(conn: Connection, campaign_id: int) -> list[tuple[int, str, str]]:
    """(delivery id, Message-ID, contact's address key) of a campaign's uncertain messages."""
    return conn.execute(
        "SELECT d.id, d.message_id, c.email_key FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
        " WHERE d.campaign_id = ? AND d.status = 'uncertain' ORDER BY d.id",
        (campaign_id,),
    ).fetchall()


def accept_uncertain(conn: Connection, delivery_ids: Sequence[int], now: str) -> int:
    """Count uncertain deliveries as sent: their sender found them accepted in the relay's log."""
    done = 0
    for delivery_id in delivery_ids:
        done += conn.execute(
            "UPDATE deliveries SET status = 'sent', sent_at = COALESCE(sent_at, ?), updated_at = ?,"
            " last_reply = ? WHERE id = ? AND status = 'uncertain'",
            (now, now, ACCEPTED_BY_HAND, delivery_id),
        ).rowcount
    return done


_INSERT_PENDING_SQL = (
    "INSERT INTO deliveries (campaign_id, contact_id, status, message_id, created_at, updated_at)"
    " VALUES (?, ?, 'pending', ?, ?, ?) ON CONFLICT (campaign_id, contact_id) DO NOTHING")


def insert_pending(conn: Connection, rows: Iterable[tuple[int, int, str, str]]) -> int:
    """A pending delivery per (campaign id, contact id, Message-ID, now); a
    contact already in the campaign keeps the row it has. Returns how many
    rows were added."""
    if is_postgres(conn):
        return _postgres_insert_pending(conn, rows)
    return int(conn.executemany(
        _INSERT_PENDING_SQL,
        ((campaign_id, contact_id, message_id, now, now) for campaign_id, contact_id, message_id, now in rows),
    ).rowcount)


# A statement that runs a trigger first copies every page it changes into a
# statement journal, so that an error can undo the trigger's writes with its
# own. Each pending delivery changes four or five 16 KiB pages (the table,
# three indexes, its campaign's count), and the count trigger made inserting
# a frozen audience's rows take twice as long (benchmarks/README.md). A
# freeze on SQLite therefore takes that trigger out while it inserts, and
# counts the rows it added in one statement afterwards. All three happen in
# the freeze's transaction, under a savepoint that an error rolls back
# whole: no other connection sees the trigger missing or a row uncounted,
# and the trigger is put back exactly as it was written.
_COUNT_ON_INSERT = "deliveries_count_insert"


# The message_id index takes a freeze's rows in no order (a Message-ID holds
# the contact's random uid): with SQLite's default 2 MB page cache nearly
# every insert read its leaf page again and wrote pages out to the WAL to
# make room, again and again. A freeze of many rows lets the cache grow to
# 64 MiB and gives it back afterwards (benchmarks/README.md); one of a few
# (a dry run with --limit) does not, or the pages its count of the rest
# reads would fill it.
FREEZE_CACHE_KIB = 65_536
FREEZE_CACHE_FROM = 1_000  # rows in one insert


class PendingInserts:
    """``insert_pending`` for the many pages of one campaign's freeze; ``close``
    after the last, in the same transaction (``pending_inserts``)."""

    def __init__(self, conn: Connection, campaign_id: int) -> None:
        self.conn, self.campaign_id = conn, campaign_id
        self.added = 0
        self._started = False
        self._trigger: str | None = None  # the count trigger taken out, as written
        self._cache: int | None = None  # the cache size to give back

    def insert(self, rows: Sequence[tuple[int, int, str, str]]) -> None:
        if not rows:
            return
        if not self._started and not is_postgres(self.conn):  # PostgreSQL counts once per statement
            self._start()
        self._started = True
        if len(rows) >= FREEZE_CACHE_FROM and self._cache is None and not is_postgres(self.conn):
            self._grow_cache()
        self.added += insert_pending(self.conn, rows)

    def _grow_cache(self) -> None:
        (cache,) = self.conn.execute("PRAGMA cache_size").fetchone()
        (page_size,) = self.conn.execute("PRAGMA page_size").fetchone()
        if (-cache if cache < 0 else cache * page_size // 1024) < FREEZE_CACHE_KIB:
            self._cache = int(cache)
            self.conn.execute(f"PRAGMA cache_size = -{FREEZE_CACHE_KIB}")

    def _start(self) -> None:
        conn = self.conn
        found = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?",
                             (_COUNT_ON_INSERT,)).fetchone()
        if found is not None:
            conn.execute("SAVEPOINT pending_inserts")
            conn.execute(f"DROP TRIGGER {_COUNT_ON_INSERT}")
            self._trigger = str(found[0])

    def close(self) -> None:
        """Count the rows added, as the trigger would have, and put it back."""
        if self._trigger is not None:
            if self.added:
                self.conn.execute(
                    "INSERT INTO delivery_counts (campaign_id, status, n) VALUES (?, 'pending', ?)"
                    " ON CONFLICT (campaign_id, status) DO UPDATE SET n = n + excluded.n",
                    (self.campaign_id, self.added))
            self.conn.execute(self._trigger)
            self.conn.execute("RELEASE pending_inserts")
            self._trigger = None
        self._give_back_cache()

    def abandon(self) -> None:
        """Undo what was inserted and put the trigger back (an error on the way)."""
        if self._trigger is not None:
            self.conn.execute("ROLLBACK TO pending_inserts")
            self.conn.execute("RELEASE pending_inserts")
            self._trigger = None
        self._give_back_cache()

    def _give_back_cache(self) -> None:
        if self._cache is not None:
            self.conn.execute(f"PRAGMA cache_size = {self._cache}")
            self._cache = None


@contextlib.contextmanager
def pending_inserts(conn: Connection, campaign_id: int) -> Iterator[PendingInserts]:
    """Insert the pending deliveries of one campaign's freeze page by page
    (``PendingInserts.insert``), counted once at the end. Inside a transaction."""
    inserts = PendingInserts(conn, campaign_id)
    try:
        yield inserts
    except BaseException:
        inserts.abandon()
        raise
    inserts.close()


def _postgres_insert_pending(conn: Connection, rows: Iterable[tuple[int, int, str, str]]) -> int:
    """``insert_pending`` on PostgreSQL: a few thousand rows per statement, as arrays (one round
    trip, and one run of the counting trigger, per statement instead of per row)."""
    batch: list[tuple[int, int, str, str]] = []
    added = 0
    for row in rows:
        batch.append(row)
        if len(batch) >= _PG_BATCH:
            added += _postgres_insert_batch(conn, batch)
            batch = []
    if batch:
        added += _postgres_insert_batch(conn, batch)
    return added


_PG_BATCH = 5000


def _postgres_insert_batch(conn: Connection, batch: list[tuple[int, int, str, str]]) -> int:
    campaigns, contacts, message_ids, nows = (list(column) for column in zip(*batch, strict=True))
    return int(conn.execute(
        "INSERT INTO deliveries (campaign_id, contact_id, status, message_id, created_at, updated_at)"
        " SELECT r.campaign_id, r.contact_id, 'pending', r.message_id, r.now, r.now"
        " FROM unnest(?::bigint[], ?::bigint[], ?::text[], ?::text[]) AS r (campaign_id, contact_id, message_id, now)"
        " ORDER BY r.contact_id ON CONFLICT (campaign_id, contact_id) DO NOTHING",
        (campaigns, contacts, message_ids, nows)).rowcount)


def mark_interrupted(conn: Connection, campaign_id: int, reason: str, now: str) -> int:
    """Rows left in ``sending`` become ``uncertain`` with ``reason``; returns how many.

    On PostgreSQL, where other senders may work the campaign, only the rows
    of runs that are gone (``store.leases``)."""
    if is_postgres(conn):
        from .leases import recover_sending

        return recover_sending(conn, campaign_id, reason, now)
    cursor = conn.execute(
        "UPDATE deliveries SET status = 'uncertain', updated_at = ?, last_reply = ?"
        " WHERE campaign_id = ? AND status = 'sending'",
        (now, reason, campaign_id),
    )
    return cursor.rowcount


# Deliveries to send, joined with the live state of the contact: the
# membership must still be 'subscribed', the contact active, unrestricted and
# without a marketing objection (``reason`` is NULL then, else why not).
# ``where`` chooses the rows: the next page by primary key, or given ids. The
# unary "+" is SQLite's way to keep the planner off the campaign's indexes,
# which would read and sort every remaining row for each page: quadratic
# (benchmarks/README.md). PostgreSQL has no such operator on text (its
# planner walks the primary key by itself): there the "+" goes.
_SENDABLE_SQL = """
SELECT d.id, c.id, c.uid, c.email, c.email_key, c.first_name, c.last_name, c.attributes, d.message_id,
       {reason} AS reason
FROM deliveries d
JOIN contacts c ON c.id = d.contact_id
LEFT JOIN memberships m ON m.contact_id = c.id AND m.list_id = ?
WHERE +d.campaign_id = ? AND +d.status IN ({{marks}}) AND {{where}}
ORDER BY d.id
LIMIT ?
"""
# A service message skips only whom every kind of mail skips (store.optouts).
_SENDABLE_BY_KIND = {kind: _SENDABLE_SQL.format(reason=sql) for kind, sql in SKIP_REASON_BY_KIND.items()}


_SENDABLE_BY_KIND_POSTGRES = {kind: sql.replace("+d.", "d.") for kind, sql in _SENDABLE_BY_KIND.items()}


def _sendable_sql(conn: Connection, kind: str) -> str:
    return (_SENDABLE_BY_KIND_POSTGRES if is_postgres(conn) else _SENDABLE_BY_KIND)[kind]


def first_delivery_id(conn: Connection, campaign_id: int) -> int | None:
    """The lowest id of a campaign's deliveries (None when it has none), read
    from the campaign's index: about 50 ms for a million."""
    (found,) = conn.execute("SELECT min(id) FROM deliveries WHERE campaign_id = ?", (campaign_id,)).fetchone()
    return int(found) if found is not None else None


def sendable_page(conn: Connection, campaign_id: int, list_id: int | None, statuses: Sequence[str],
                  after: int, limit: int, kind: str = "marketing") -> list[tuple[Any, ...]]:
    """The next ``limit`` deliveries in ``statuses`` after delivery ``after``
    (keyset pagination), each with the reason it must be skipped, or None."""
    sql = _sendable_sql(conn, kind).format(marks=_marks(statuses), where="d.id > ?")
    return conn.execute(sql, (_list_or_none(list_id), campaign_id, *statuses, after, limit)).fetchall()


def sendable_rows(conn: Connection, campaign_id: int, list_id: int | None, statuses: Sequence[str],
                  ids: Sequence[int], kind: str = "marketing") -> list[tuple[Any, ...]]:
    """The deliveries ``ids`` (at most a few hundred) that are in ``statuses``,
    as ``sendable_page`` returns them."""
    if not ids:
        return []
    sql = _sendable_sql(conn, kind).format(marks=_marks(statuses), where=f"d.id IN ({_marks(ids)})")
    return conn.execute(sql, (_list_or_none(list_id), campaign_id, *statuses, *ids, len(ids))).fetchall()


def _list_or_none(list_id: int | None) -> int:
    return list_id if list_id is not None else -1  # a list that was deleted: no membership matches


# The first few sendable deliveries of every distinct set of contact fields
# (attribute names, sorted), for the preflight render. SQLite's JSON
# functions group 100,000 contacts in a fraction of the time Python would
# take to parse them; attributes that are not a JSON object form one group.
_SAMPLE_SQL = """
SELECT did, sig FROM (
  SELECT did, sig, row_number() OVER (PARTITION BY sig ORDER BY did) AS n FROM (
    SELECT d.id AS did,
           CASE WHEN {is_object} THEN ({keys}) ELSE NULL END AS sig
    FROM deliveries d
    JOIN contacts c ON c.id = d.contact_id
    JOIN memberships m ON m.contact_id = c.id AND m.list_id = ?
    WHERE d.campaign_id = ? AND d.status IN ({{marks}}) AND {{who}}
    {order}
  ) AS signed
) AS numbered WHERE n <= ? ORDER BY did
"""
_SAMPLE_SQLITE = _SAMPLE_SQL.format(
    is_object="json_valid(c.attributes) AND json_type(c.attributes) = 'object'",
    keys="SELECT group_concat(key, char(31)) FROM (SELECT key FROM json_each(c.attributes) ORDER BY key)",
    # keeps this subquery whole: flattened, each row's signature was computed twice
    order="ORDER BY d.id")
# PostgreSQL: jsonb's keys; mailcli writes every attributes text as a JSON
# object, so one that does not start like one forms the group without a key.
_SAMPLE_POSTGRES = _SAMPLE_SQL.format(
    is_object="left(ltrim(c.attributes), 1) = '{{'",
    keys="SELECT string_agg(k, chr(31) ORDER BY k COLLATE \"C\") FROM jsonb_object_keys(c.attributes::jsonb) AS k",
    order="")


_SAMPLE_WHO = {
    "marketing": "c.status = 'active' AND c.restricted_at IS NULL AND c.no_marketing_at IS NULL"
                 " AND m.status = 'subscribed'",
    "service": SERVICE_REACHABLE_SQL,
}


def samples_by_fields(conn: Connection, campaign_id: int, list_id: int | None,
                      statuses: Sequence[str], per_group: int, kind: str = "marketing") -> dict[int, str | None]:
    """Delivery id -> field-set key, for the first ``per_group`` sendable
    deliveries of each distinct set of contact attribute names (each
    engine's JSON functions), in delivery order."""
    sql = _SAMPLE_POSTGRES if is_postgres(conn) else _SAMPLE_SQLITE
    rows = conn.execute(sql.format(marks=_marks(statuses), who=_SAMPLE_WHO[kind]),
                        (_list_or_none(list_id), campaign_id, *statuses, per_group)).fetchall()
    return dict(rows)


def _not_in_flight(conn: Connection) -> str:
    """A condition that leaves out (on PostgreSQL) the ``sending`` rows of
    ``d`` that a live sender holds: in flight now, not uncertain."""
    if not is_postgres(conn):
        return ""
    from .leases import LIVE_SQL

    return f" AND NOT (d.status = 'sending' AND {LIVE_SQL})"


def failed_deliveries(conn: Connection, campaign_id: int) -> list[tuple[str, str, str, int, str, str]]:
    """(address, status, last reply, attempts, updated at, Message-ID) of the
    failed, deferred and uncertain deliveries, by status and address."""
    return conn.execute(
        "SELECT c.email, d.status, coalesce(d.last_reply, ''), d.attempts, d.updated_at, d.message_id"  # noqa: S608
        " FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
        f" WHERE d.campaign_id = ? AND d.status IN ('failed', 'deferred', 'uncertain', 'sending'){_not_in_flight(conn)}"
        " ORDER BY d.status, c.email",
        (campaign_id,),
    ).fetchall()


def durable_connection(path: Path | DatabaseURL) -> Connection:
    """A connection of its own for a send's ledger writer, whose commits
    reach the disk before they return (a ``sending`` mark must survive a
    power cut, not only a crash): SQLite's ``synchronous=FULL``; on
    PostgreSQL ``synchronous_commit = on`` (whatever the server's default),
    so a commit returns once the server has flushed it to its WAL."""
    if isinstance(path, DatabaseURL):
        from . import postgres

        pg = postgres.connect(path)
        pg.execute("SET synchronous_commit = on")
        return pg
    from .db import connect

    conn = connect(path)
    conn.execute("PRAGMA synchronous=FULL")
    return conn
