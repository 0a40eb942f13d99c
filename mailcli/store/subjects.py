"""One person's record as opt-outs, bounces, complaints, restriction and objection change it.

Every channel that ends someone's mail — an unsubscribe, a bounce, a
complaint, an objection, a restriction, an opt-out re-applied after a
restore — changes the same few columns, through these functions:

* memberships become ``unsubscribed`` with the time and the channel; the
  consent evidence of the membership is left as it was;
* ``contacts.no_marketing_at`` records an objection to all direct marketing;
* ``contacts.status`` becomes ``bounced`` or ``complained``;
* ``contacts.restricted_at`` marks processing as restricted (kept, never mailed).

Each returns whether it changed anything, so a repeated opt-out writes
nothing and never overwrites when the person first opted out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Connection


@dataclass(frozen=True, slots=True)
class ContactRef:
    """The few columns the opt-out code needs about a contact."""

    id: int
    uid: str
    email_key: str
    status: str
    no_marketing_at: str | None


# One lookup per unique column of contacts; the column comes from this table,
# never from the caller's data.
_CONTACT_BY = {
    column: f"SELECT id, uid, email_key, status, no_marketing_at FROM contacts WHERE {column} = ?"  # noqa: S608
    for column in ("id", "uid", "email_key")
}


def _contact_where(conn: Connection, column: str, value: object) -> ContactRef | None:
    row = conn.execute(_CONTACT_BY[column], (value,)).fetchone()
    return ContactRef(*row) if row else None


def contact_by_id(conn: Connection, contact_id: int) -> ContactRef | None:
    return _contact_where(conn, "id", contact_id)


def contact_by_uid(conn: Connection, uid: str) -> ContactRef | None:
    return _contact_where(conn, "uid", uid)


def contact_by_email_key(conn: Connection, email_key: str) -> ContactRef | None:
    return _contact_where(conn, "email_key", email_key)


def contact_id_by_email_key(conn: Connection, email_key: str) -> int | None:
    row = conn.execute("SELECT id FROM contacts WHERE email_key = ?", (email_key,)).fetchone()
    return int(row[0]) if row else None


def optout_flags(conn: Connection, contact_id: int) -> tuple[str, str | None]:
    """(status, no_marketing_at) of a contact."""
    status, no_marketing_at = conn.execute(
        "SELECT status, no_marketing_at FROM contacts WHERE id = ?", (contact_id,)).fetchone()
    return str(status), no_marketing_at


def unsubscribed_list_names(conn: Connection, contact_id: int) -> list[str]:
    """The lists a contact unsubscribed from."""
    rows = conn.execute("SELECT l.name FROM memberships m JOIN lists l ON l.id = m.list_id"
                        " WHERE m.contact_id = ? AND m.status = 'unsubscribed'", (contact_id,)).fetchall()
    return [str(name) for (name,) in rows]


def iter_contact_keys(conn: Connection) -> Iterator[tuple[int, str, str]]:
    """(id, email_key, created_at) of every contact."""
    for contact_id, key, created_at in conn.execute("SELECT id, email_key, created_at FROM contacts").fetchall():
        yield int(contact_id), str(key), str(created_at)


def end_memberships(conn: Connection, contact_id: int, channel: str, *, at: str, updated_at: str,
                    list_id: int | None = None, list_name: str | None = None) -> int:
    """Unsubscribe a contact as of ``at``: from one list (by id or by name) or,
    with neither, from every list. How many memberships changed."""
    sql = ("UPDATE memberships SET status = 'unsubscribed', unsubscribed_at = ?, unsubscribe_channel = ?,"
           " updated_at = ? WHERE contact_id = ? AND status != 'unsubscribed'")
    params: list[object] = [at, channel, updated_at, contact_id]
    if list_id is not None:
        sql += " AND list_id = ?"
        params.append(list_id)
    elif list_name is not None:
        sql += " AND list_id = (SELECT id FROM lists WHERE name = ?)"
        params.append(list_name)
    return conn.execute(sql, params).rowcount


def object_to_marketing(conn: Connection, contact_id: int, now: str) -> bool:
    """Record an objection to all direct marketing (an active contact becomes
    ``unsubscribed``); False when one was already recorded."""
    cursor = conn.execute(
        "UPDATE contacts SET no_marketing_at = ?, updated_at = ?,"
        " status = CASE WHEN status = 'active' THEN 'unsubscribed' ELSE status END"
        " WHERE id = ? AND no_marketing_at IS NULL",
        (now, now, contact_id),
    )
    return cursor.rowcount > 0


def set_no_marketing(conn: Connection, contact_id: int, at: str) -> bool:
    """``no_marketing_at`` as of ``at`` unless already set; the status is left as it is."""
    cursor = conn.execute("UPDATE contacts SET no_marketing_at = ?, updated_at = ? WHERE id = ?"
                          " AND no_marketing_at IS NULL", (at, at, contact_id))
    return cursor.rowcount > 0


def mark_status(conn: Connection, contact_id: int, status: str, now: str) -> bool:
    """The contact's status to ``bounced`` or ``complained``, unless it is already
    one of those or erased; True if it changed."""
    cursor = conn.execute(
        "UPDATE contacts SET status = ?, updated_at = ? WHERE id = ? AND status IN ('active', 'unsubscribed')",
        (status, now, contact_id),
    )
    return cursor.rowcount > 0


def mark_complained(conn: Connection, contact_id: int, now: str) -> bool:
    """A spam complaint: status ``complained`` over any other, and an objection
    to all marketing when none was recorded; True if it changed."""
    cursor = conn.execute(
        "UPDATE contacts SET status = 'complained', no_marketing_at = COALESCE(no_marketing_at, ?), updated_at = ?"
        " WHERE id = ? AND status != 'complained'",
        (now, now, contact_id),
    )
    return cursor.rowcount > 0


def no_marketing_since(conn: Connection, contact_id: int) -> str | None:
    row = conn.execute("SELECT no_marketing_at FROM contacts WHERE id = ?", (contact_id,)).fetchone()
    return row[0] if row else None


def restricted_since(conn: Connection, contact_id: int) -> str | None:
    row = conn.execute("SELECT restricted_at FROM contacts WHERE id = ?", (contact_id,)).fetchone()
    return row[0] if row else None


def set_restricted(conn: Connection, contact_id: int, since: str | None, updated_at: str | None) -> bool:
    """Restrict processing as of ``since``, or lift the restriction (``None``);
    ``updated_at`` None leaves that column as it is. True if it changed."""
    if since is None:
        cursor = conn.execute("UPDATE contacts SET restricted_at = NULL, updated_at = COALESCE(?, updated_at)"
                              " WHERE id = ? AND restricted_at IS NOT NULL", (updated_at, contact_id))
    else:
        cursor = conn.execute("UPDATE contacts SET restricted_at = ?, updated_at = COALESCE(?, updated_at)"
                              " WHERE id = ? AND restricted_at IS NULL", (since, updated_at, contact_id))
    return cursor.rowcount > 0
