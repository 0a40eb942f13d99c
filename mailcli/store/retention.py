"""The SQL of ``privacy purge``: what each retention rule removes, and removing it.

The plan is worked out with reads only, into two TEMP tables, which live
outside the database file, so a dry run changes nothing and counts exactly
what a real run removes:

* ``temp.purge_members`` (contact_id, list_id): unconfirmed memberships to delete;
* ``temp.purge_contacts`` (id, rule): contacts to erase, and the rule that
  erases each.

Contacts under restriction are left out of every rule and of the send log.
The conditions are written for SQLite: TEMP tables, the many-argument
``max()``, row values in ``IN``, and the partial index ``contacts_status``.
On PostgreSQL (:func:`_run`) the TEMP tables are ``pg_temp``'s and the
many-argument ``max()`` is ``greatest()``; the rest is the same SQL.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .archive import archive_deliveries, archive_events
from .db import is_postgres

if TYPE_CHECKING:
    from .db import Connection

_LEFT = "(c.status IN ('unsubscribed', 'complained') OR c.no_marketing_at IS NOT NULL" \
        " OR EXISTS (SELECT 1 FROM memberships m WHERE m.contact_id = c.id AND m.status = 'unsubscribed'))"
# Live membership: subscribed, or unconfirmed and not being deleted by this purge.
_NO_LIVE = ("NOT EXISTS (SELECT 1 FROM memberships m WHERE m.contact_id = c.id AND m.status IN"
            " ('subscribed', 'unconfirmed') AND NOT EXISTS (SELECT 1 FROM temp.purge_members p"
            " WHERE p.contact_id = m.contact_id AND p.list_id = m.list_id))")
_FREE = "c.restricted_at IS NULL AND c.id NOT IN (SELECT id FROM temp.purge_contacts)"
_LEFT_SINCE = (
    "COALESCE(NULLIF(max(COALESCE(c.no_marketing_at, ''),"
    " COALESCE((SELECT max(m.unsubscribed_at) FROM memberships m WHERE m.contact_id = c.id), ''),"
    " COALESCE((SELECT max(e.created_at) FROM events e WHERE e.contact_id = c.id"
    "   AND e.kind IN ('unsubscribed', 'complained', 'objected')), '')), ''), c.updated_at)"
)
_BOUNCED_SINCE = ("COALESCE((SELECT max(e.created_at) FROM events e WHERE e.contact_id = c.id AND e.kind = 'bounced'),"
                  " c.updated_at)")
# The last time the person did something, or the data changed at their word:
# created, imported with changes, rectified (last_activity_at); a membership
# made, confirmed or changed; any event of theirs (an unsubscribe, a click, a
# bounce). Receiving mail is not activity: the subscribed are never inactive.
_ACTIVE_SINCE = (
    "max(c.last_activity_at, c.created_at,"
    " COALESCE((SELECT max(max(m.created_at, m.updated_at, COALESCE(m.consent_at, ''), COALESCE(m.confirmed_at, '')))"
    "   FROM memberships m WHERE m.contact_id = c.id), ''),"
    " COALESCE((SELECT max(e.created_at) FROM events e WHERE e.contact_id = c.id), ''))"
)
# The same on PostgreSQL, whose max() takes one argument: greatest() (no
# argument is NULL here, so its ignoring NULLs changes nothing).
_LEFT_SINCE_PG = _LEFT_SINCE.replace("NULLIF(max(", "NULLIF(greatest(")
_ACTIVE_SINCE_PG = _ACTIVE_SINCE.replace("max(c.last_activity_at", "greatest(c.last_activity_at").replace(
    "max(max(m.created_at", "max(greatest(m.created_at")
# Send-log rows past the cut-off, but not of restricted contacts nor of those
# erased by this purge. Written as NOT IN the few restricted contacts, so the
# send log is read once in order: "IN the unrestricted ones" made SQLite walk
# every contact and fetch its deliveries one by one through the index, ten
# million random reads at a million contacts (a foreign key keeps every
# delivery's contact, so the two say the same).
_OLD_DELIVERIES = "updated_at < ? AND contact_id NOT IN (SELECT id FROM contacts WHERE restricted_at IS NOT NULL)" \
                  " AND contact_id NOT IN (SELECT id FROM temp.purge_contacts)"
_OLD_EVENTS = "created_at < ? AND (contact_id IS NULL OR (contact_id NOT IN (SELECT id FROM contacts" \
              " WHERE restricted_at IS NOT NULL) AND contact_id NOT IN (SELECT id FROM temp.purge_contacts)))"
# Contacts each person rule erases, one after the other: a contact goes by the first rule that takes it.
_CONTACT_RULES = (
    ("unsubscribed", f"{_LEFT} AND {_NO_LIVE} AND {_LEFT_SINCE} < ?"),
    # "!= 'active'" lets SQLite use the partial index contacts_status.
    ("bounced", f"c.status != 'active' AND c.status = 'bounced' AND {_BOUNCED_SINCE} < ?"),
    ("inactive", f"c.last_activity_at < ? AND {_NO_LIVE} AND {_ACTIVE_SINCE} < ?"),
)


@functools.lru_cache(maxsize=64)
def _postgres(sql: str) -> str:
    return sql.replace(_LEFT_SINCE, _LEFT_SINCE_PG).replace(_ACTIVE_SINCE, _ACTIVE_SINCE_PG).replace(
        "temp.", "pg_temp.")


def _run(conn: Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    """Run ``sql`` as the connection's engine writes it."""
    return conn.execute(_postgres(sql) if is_postgres(conn) else sql, tuple(params))


def _q_condition(conn: Connection, condition: str) -> str:
    return _postgres(condition) if is_postgres(conn) else condition


def plan(conn: Connection, cut: dict[str, str]) -> dict[str, int]:
    """Fill temp.purge_members and temp.purge_contacts by the cut-off time of
    each rule; the number of memberships, contacts per rule, and send-log
    rows (deliveries and events) that go (a rule that takes nothing may be
    missing)."""
    _run(conn, "DROP TABLE IF EXISTS temp.purge_members")
    _run(conn, "DROP TABLE IF EXISTS temp.purge_contacts")
    _run(conn, "CREATE TEMP TABLE purge_members (contact_id INTEGER, list_id INTEGER, PRIMARY KEY (contact_id, list_id))")
    _run(conn, "CREATE TEMP TABLE purge_contacts (id INTEGER PRIMARY KEY, rule TEXT NOT NULL)")
    _run(conn,
        "INSERT INTO temp.purge_members SELECT m.contact_id, m.list_id FROM memberships m"
        " JOIN contacts c ON c.id = m.contact_id WHERE m.status = 'unconfirmed'"
        " AND COALESCE(m.consent_at, m.created_at) < ? AND c.restricted_at IS NULL",
        (cut["unconfirmed"],),
    )
    # A contact left with no membership at all is erased with them.
    _run(conn,
        "INSERT INTO temp.purge_contacts SELECT c.id, 'unconfirmed' FROM contacts c"
        " WHERE c.id IN (SELECT contact_id FROM temp.purge_members) AND NOT EXISTS (SELECT 1 FROM memberships m"
        " WHERE m.contact_id = c.id AND NOT EXISTS (SELECT 1 FROM temp.purge_members p"
        " WHERE p.contact_id = m.contact_id AND p.list_id = m.list_id))"
    )
    for rule, condition in _CONTACT_RULES:
        params = (cut[rule],) * condition.count("?")
        _run(conn,
            f"INSERT INTO temp.purge_contacts SELECT c.id, '{rule}' FROM contacts c WHERE {_FREE} AND {condition}",  # noqa: S608
            params,
        )
    counts = {"unconfirmed": _run(conn, "SELECT count(*) FROM temp.purge_members").fetchone()[0]}
    for rule, n in _run(conn, "SELECT rule, count(*) FROM temp.purge_contacts GROUP BY rule"):
        if rule != "unconfirmed":  # those are counted as memberships
            counts[rule] = n
    counts["send_log"] = (
        _run(conn, f"SELECT count(*) FROM deliveries WHERE {_OLD_DELIVERIES}", (cut["send_log"],)).fetchone()[0]  # noqa: S608
        + _run(conn, f"SELECT count(*) FROM events WHERE {_OLD_EVENTS}", (cut["send_log"],)).fetchone()[0]  # noqa: S608
    )
    return counts


@contextlib.contextmanager
def read_only(conn: Connection) -> Iterator[None]:
    """One read snapshot, rolled back at the end: a dry run's plan sees one
    state of the database and leaves nothing behind (TEMP tables are not the
    database file)."""
    _run(conn, "BEGIN")
    try:
        yield
    finally:
        _run(conn, "ROLLBACK")


def planned_contact_count(conn: Connection) -> int:
    return int(_run(conn, "SELECT count(*) FROM temp.purge_contacts").fetchone()[0])


def planned_contacts(conn: Connection) -> list[tuple[int, str, str]]:
    """(id, rule, email_key) of every contact the plan erases, in id order."""
    return _run(conn, "SELECT p.id, p.rule, c.email_key FROM temp.purge_contacts p"
                        " JOIN contacts c ON c.id = p.id ORDER BY p.id").fetchall()


def delete_planned_memberships(conn: Connection) -> None:
    """The planned unconfirmed memberships, with the sign-ups never confirmed that asked for them."""
    _run(conn, "DELETE FROM memberships WHERE (contact_id, list_id) IN"
               " (SELECT contact_id, list_id FROM temp.purge_members)")
    _run(conn, "DELETE FROM signups WHERE confirmed_at IS NULL AND (contact_id, list_id) IN"
               " (SELECT contact_id, list_id FROM temp.purge_members)")


def cut_send_log(conn: Connection, cutoff: str) -> None:
    """Fold the deliveries and events older than ``cutoff`` into their
    campaigns' totals and delete them (restricted contacts' are kept)."""
    archive_deliveries(conn, _q_condition(conn, _OLD_DELIVERIES), (cutoff,))
    _run(conn, f"DELETE FROM deliveries WHERE {_OLD_DELIVERIES}", (cutoff,))  # noqa: S608
    archive_events(conn, _q_condition(conn, _OLD_EVENTS), (cutoff,))
    _run(conn, f"DELETE FROM events WHERE {_OLD_EVENTS}", (cutoff,))  # noqa: S608


def drop_plan(conn: Connection) -> None:
    _run(conn, "DROP TABLE temp.purge_members")
    _run(conn, "DROP TABLE temp.purge_contacts")
