"""Opt-outs as they happen, for a send that is running.

A send renders messages ahead of the connections, so the check made when a
page of deliveries is read is not the last word: someone may unsubscribe,
be erased, restricted or object a moment later, from another process. Every
such change raises ``optout_counter`` in its own transaction (triggers,
migration m005). A send notes the counter before it reads each page; right
before a message's MAIL FROM it asks ``OptoutCounter.optouts_since`` whether
the counter moved since that recipient was read, and only then checks the
recipient again (``withdrawal_reason``).

These two are the one way in for "has anyone opted out since, and is this
recipient still to be mailed", and both include the one-click opt-outs that
``serve`` wrote to the spool beside the database while it was busy
(:mod:`mailcli.store.spool`): a new spool entry moves the counter too, and
a recipient whose contact and list it names is withdrawn, before serve or
anyone has recorded it in the database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from pathlib import Path

from ..tokens import address_hmac
from .spool import SpoolWatch
from .suppressions import is_service_blocked, is_suppressed

# Why a delivery must not go out (NULL when it may), from the contact and its
# membership of the campaign's list (``m``, LEFT JOINed). Shared with the
# page query of the send ledger, so both checks say the same.
SKIP_REASON_SQL = """CASE
         WHEN c.status != 'active' THEN 'contact is ' || c.status
         WHEN c.restricted_at IS NOT NULL THEN 'processing restricted (art. 18)'
         WHEN c.no_marketing_at IS NOT NULL THEN 'objected to direct marketing'
         WHEN m.status IS NULL THEN 'no longer a member of the list'
         WHEN m.status != 'subscribed' THEN 'membership is ' || m.status
       END"""

# The same for a service message: only what stops mail of every kind — a
# bounce, a complaint, a restriction of processing, leaving the relationship
# (the membership gone) — not an unsubscribe from or objection to marketing.
SERVICE_SKIP_REASON_SQL = """CASE
         WHEN c.status IN ('bounced', 'complained') THEN 'contact is ' || c.status
         WHEN c.restricted_at IS NOT NULL THEN 'processing restricted (art. 18)'
         WHEN m.status IS NULL THEN 'no longer a member of the list'
         WHEN m.status NOT IN ('subscribed', 'unsubscribed') THEN 'membership is ' || m.status
       END"""
SKIP_REASON_BY_KIND = {"marketing": SKIP_REASON_SQL, "service": SERVICE_SKIP_REASON_SQL}

GONE = "erased or purged during the send"
SPOOLED = "unsubscribed with one click (recorded in the spool)"


class OptoutCounter:
    """The opt-out counter as one connection sees it, read only when needed.

    ``PRAGMA data_version`` changes when another connection commits, and
    costs no read; only then is the counter itself read again. With
    ``spool`` (the database file), every change to the opt-outs waiting in
    the spool adds one too; looking costs a ``stat`` of its folder.
    """

    def __init__(self, conn: sqlite3.Connection, spool: Path | None = None) -> None:
        self._conn = conn
        self._version = -1
        self._value = 0
        self._spool = SpoolWatch(spool) if spool is not None else None
        self._spool_moves = 0
        self.spooled: frozenset[tuple[str, int]] = frozenset()  # (contact uid, list id) waiting in the spool

    def now(self) -> int:
        """The counter now: note it before reading recipients."""
        version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self._version:
            self._version = version
            row = self._conn.execute("SELECT n FROM optout_counter WHERE id = 1").fetchone()
            self._value = int(row[0]) if row else 0
        if self._spool is not None and self._spool.changed():
            spooled = frozenset(self._spool.optouts())
            if spooled != self.spooled:
                self.spooled = spooled
                self._spool_moves += 1
        return self._value + self._spool_moves

    def optouts_since(self, noted: int) -> bool:
        """Whether anyone may have opted out, or been erased, since the
        counter read ``noted``."""
        return self.now() != noted


# One delivery, checked again: the contact and its membership of the list.
_RECHECK_SQL = """
SELECT c.email_key, {reason}, c.uid
FROM deliveries d
JOIN contacts c ON c.id = d.contact_id
LEFT JOIN memberships m ON m.contact_id = c.id AND m.list_id = ?
WHERE d.id = ?
"""
_RECHECK_BY_KIND = {kind: _RECHECK_SQL.format(reason=sql) for kind, sql in SKIP_REASON_BY_KIND.items()}


def withdrawal_reason(conn: sqlite3.Connection, delivery_id: int, list_id: int | None, list_name: str,
                      secret: bytes, spooled: Collection[tuple[str, int]] = (), kind: str = "marketing") -> str | None:
    """Why this delivery must not go out now, or None if it still may.

    A delivery whose row is gone belonged to someone erased or purged;
    ``spooled`` are the (contact uid, list id) of one-click opt-outs still
    in the spool, which a service message (``kind``) does not heed.
    """
    row = conn.execute(_RECHECK_BY_KIND[kind], (list_id if list_id is not None else -1, delivery_id)).fetchone()
    if row is None:
        return GONE
    if row[1] is not None:
        return str(row[1])
    hmac = address_hmac(secret, row[0])
    if kind == "service":
        return "address bounced, complained or was erased" if is_service_blocked(conn, hmac) else None
    if spooled and (str(row[2]), list_id) in spooled:
        return SPOOLED
    suppressed = is_suppressed(conn, hmac, list_name)
    return "address is on the suppression list" if suppressed else None


def delivery_exists(conn: sqlite3.Connection, delivery_id: int) -> bool:
    return conn.execute("SELECT 1 FROM deliveries WHERE id = ?", (delivery_id,)).fetchone() is not None
