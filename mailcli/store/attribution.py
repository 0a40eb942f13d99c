"""Which campaign an opt-out or a report is about.

An opt-out is counted against the campaign that last reached the person; a
bounce or complaint names its delivery by the Message-ID mailcli gave it, or
by the campaign uid that Message-ID is built from when the delivery row is
gone (the send log's retention purges it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Connection


def latest_campaign(conn: Connection, contact_id: int, list_id: int | None) -> int | None:
    """The most recent campaign sent to this contact (on this list), for attribution."""
    sql = (
        "SELECT d.campaign_id FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id"
        " WHERE d.contact_id = ? AND d.status IN ('sent', 'uncertain', 'sending')"
    )
    params: list[object] = [contact_id]
    if list_id is not None:
        sql += " AND c.list_id = ?"
        params.append(list_id)
    sql += " ORDER BY COALESCE(d.sent_at, d.updated_at) DESC, d.id DESC LIMIT 1"
    row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row else None


def delivery_by_message_id(conn: Connection, message_id: str) -> tuple[int, int] | None:
    """(contact id, campaign id) of the delivery sent with this Message-ID (with or without <>)."""
    bare = message_id.strip().strip("<>")
    row = conn.execute(
        "SELECT contact_id, campaign_id FROM deliveries WHERE message_id IN (?, ?) ORDER BY id DESC LIMIT 1",
        (f"<{bare}>", bare),
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def campaign_id_by_uid(conn: Connection, uid: str) -> int | None:
    row = conn.execute("SELECT id FROM campaigns WHERE uid = ?", (uid,)).fetchone()
    return int(row[0]) if row else None


def campaign_name(conn: Connection, campaign_id: int | None) -> str | None:
    if campaign_id is None:
        return None
    row = conn.execute("SELECT name FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
    return str(row[0]) if row else None
