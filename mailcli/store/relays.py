"""What sending learns about SMTP relays, and what it marks on the way.

A relay is known by host, port and the login used (Microsoft 365, for one,
counts connections per mailbox). ``send`` reads the row before it connects
and starts with the connection limit and rate found last time; it writes
back what this run found. ``NULL`` means "not known" throughout.

An address whose local part is not ASCII can only be sent with SMTPUTF8
(RFC 6531). When the relay does not offer it, the one failed message leaves
a ``needs_smtputf8`` event naming the relay on the contact, and later
campaigns through the same relay skip the address instead of failing it
again; a relay that offers SMTPUTF8, or another relay, lifts the skip.
The event is the contact's data: an erasure removes it with the contact.

``delivery_notices`` lists what RFC 3464 calls ``delayed``, ``relayed`` and
``expanded``: facts about a delivery that are not failures.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..clock import now_iso
from .db import is_postgres

if TYPE_CHECKING:
    from .db import Connection

NEEDS_SMTPUTF8 = "needs_smtputf8"
NOTICE_KINDS = ("delayed", "relayed", "expanded")


@dataclass(frozen=True, slots=True)
class RelayMemory:
    """One relay as the last send left it."""

    host: str
    port: int
    login: str
    connections_limit: int | None
    rate_limit: float | None  # messages per second
    smtputf8: bool | None
    updated_at: str  # when anything in the row last changed
    rate_found_at: str | None  # when a send found ``rate_limit``: its age counts from here

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def get_relay(conn: Connection, host: str, port: int, login: str | None) -> RelayMemory | None:
    row = conn.execute(
        "SELECT host, port, login, connections_limit, rate_limit, smtputf8, updated_at, rate_found_at FROM relays"
        " WHERE host = ? AND port = ? AND login = ?",
        (host.lower(), port, login or ""),
    ).fetchone()
    if row is None:
        return None
    return RelayMemory(row[0], row[1], row[2], row[3], row[4], None if row[5] is None else bool(row[5]), row[6],
                       row[7])


_UNCHANGED = object()


def save_relay(conn: Connection, host: str, port: int, login: str | None, *,
               connections_limit: object = _UNCHANGED, rate_limit: object = _UNCHANGED,
               smtputf8: object = _UNCHANGED) -> None:
    """Insert or update what is known about a relay; omitted fields keep their value.

    A rate different from the one kept is recorded as found now; the same
    rate written again (with a new connection limit, say) keeps its time,
    as nothing new was learnt about it.
    """
    key = (host.lower(), port, login or "")
    conn.execute(
        "INSERT INTO relays (host, port, login, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (host, port, login) DO NOTHING",
        (*key, now_iso()),
    )
    # Each field its own statement: the column names come from this function,
    # never from the caller.
    if connections_limit is not _UNCHANGED:
        conn.execute("UPDATE relays SET connections_limit = ?, updated_at = ? WHERE host = ? AND port = ? AND login = ?",
                     (connections_limit, now_iso(), *key))
    if rate_limit is not _UNCHANGED:
        if rate_limit is None:
            conn.execute("UPDATE relays SET rate_found_at = NULL WHERE host = ? AND port = ? AND login = ?", key)
        else:
            conn.execute("UPDATE relays SET rate_found_at = ? WHERE host = ? AND port = ? AND login = ?"
                         " AND (rate_limit IS NULL OR rate_limit != ?)",
                         (now_iso(), *key, rate_limit))
        conn.execute("UPDATE relays SET rate_limit = ?, updated_at = ? WHERE host = ? AND port = ? AND login = ?",
                     (rate_limit, now_iso(), *key))
    if smtputf8 is not _UNCHANGED:
        value = None if smtputf8 is None else int(bool(smtputf8))
        conn.execute("UPDATE relays SET smtputf8 = ?, updated_at = ? WHERE host = ? AND port = ? AND login = ?",
                     (value, now_iso(), *key))


def mark_needs_smtputf8(conn: Connection, contact_id: int, campaign_id: int | None, relay: str) -> None:
    """Record that ``relay`` could not take this contact's address (no SMTPUTF8)."""
    conn.execute(
        "INSERT INTO events (contact_id, campaign_id, kind, channel, scope, detail, created_at)"
        " VALUES (?, ?, ?, 'send', '*', ?, ?)",
        (contact_id, campaign_id, NEEDS_SMTPUTF8, json.dumps({"relay": relay}, separators=(",", ":")), now_iso()),
    )


# The relay an event's JSON detail names, in each engine's JSON functions.
_DETAIL_RELAY = {False: "json_extract(e.detail, '$.relay')", True: "(e.detail::jsonb ->> 'relay')"}


def smtputf8_marked(conn: Connection, contact_ids: Iterable[int], relay: str) -> dict[int, str | None]:
    """Contacts among ``contact_ids`` marked for ``relay``: id -> the campaign that failed them."""
    ids = list(contact_ids)
    if not ids:
        return {}
    marks = ",".join("?" for _ in ids)
    rows = conn.execute(
        "SELECT e.contact_id, c.name FROM events e LEFT JOIN campaigns c ON c.id = e.campaign_id"  # noqa: S608 - placeholders only
        f" WHERE e.kind = ? AND e.contact_id IN ({marks}) AND {_DETAIL_RELAY[is_postgres(conn)]} = ?"
        " ORDER BY e.id",
        (NEEDS_SMTPUTF8, *ids, relay),
    ).fetchall()
    return {int(contact_id): name for contact_id, name in rows}


@dataclass(frozen=True, slots=True)
class Notice:
    """A delay, relay or expansion notice about one delivery of a campaign."""

    email: str
    kind: str
    status: str | None
    detail: str | None
    at: str


def delivery_notices(conn: Connection, campaign_id: int) -> list[Notice]:
    """The campaign's delivery notices, oldest first (they are never failures)."""
    marks = ",".join("?" for _ in NOTICE_KINDS)
    rows = conn.execute(
        "SELECT c.email, e.kind, e.detail, e.created_at FROM events e JOIN contacts c ON c.id = e.contact_id"  # noqa: S608 - placeholders only
        f" WHERE e.campaign_id = ? AND e.kind IN ({marks}) ORDER BY e.id",
        (campaign_id, *NOTICE_KINDS),
    ).fetchall()
    notices = []
    for email, kind, detail_text, at in rows:
        detail = json.loads(detail_text or "{}")
        notices.append(Notice(email=email, kind=kind, status=detail.get("status"),
                              detail=detail.get("diagnostic") or detail.get("will_retry_until"), at=at))
    return notices
