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
hundred as for one of a million.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from .archive import settle_archived
from .optouts import delivery_exists

# Why a message is uncertain: the two ways the reply to its final dot can go missing.
KILLED_AFTER_DOT = "the sending process ended after the final dot, before the server's reply was recorded"
LOST_AFTER_DOT = "connection lost after the final dot, before the server's reply"

# A result's status -> how an archived (deleted) delivery counts it: a row that
# is gone is never retried, so what was not delivered is a skip.
_ARCHIVE_KEY = {"sent": "sent", "failed": "failed", "uncertain": "uncertain"}


def _marks(statuses: Sequence[str]) -> str:
    return ",".join("?" for _ in statuses)


def mark_sending(conn: sqlite3.Connection, delivery_id: int, statuses: Sequence[str], now: str) -> str:
    """Mark a delivery ``sending`` (right before its final dot).

    Returns ``"ok"``, ``"gone"`` (the row was deleted: erased or purged) or
    ``"taken"`` (its status is no longer one this run sends).
    """
    cursor = conn.execute(
        f"UPDATE deliveries SET status = 'sending', updated_at = ? WHERE id = ? AND status IN ({_marks(statuses)})",  # noqa: S608 - placeholders
        (now, delivery_id, *statuses),
    )
    if cursor.rowcount:
        return "ok"
    return "taken" if delivery_exists(conn, delivery_id) else "gone"


def record_result(conn: sqlite3.Connection, campaign_id: int, delivery_id: int, status: str, reply: str, now: str,
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


def record_skip(conn: sqlite3.Connection, campaign_id: int, delivery_id: int, reason: str, now: str,
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


def delivery_status_counts(conn: sqlite3.Connection, campaign_id: int) -> dict[str, int]:
    """Rows per status of one campaign's deliveries (statuses with none left out)."""
    return {
        status: n
        for status, n in conn.execute(
            "SELECT status, n FROM delivery_counts WHERE campaign_id = ? AND n != 0", (campaign_id,)
        )
    }


def uncertain_causes(conn: sqlite3.Connection, campaign_id: int) -> dict[str, int]:
    """Uncertain messages of a campaign by cause: ``killed`` (the sending
    process ended), ``lost`` (the connection ended) or ``other``."""
    counts = {"killed": 0, "lost": 0, "other": 0}
    present = delivery_status_counts(conn, campaign_id)
    if not present.get("uncertain") and not present.get("sending"):
        return counts  # none: no need to read the campaign's rows
    for status, reply in conn.execute(
        "SELECT status, COALESCE(last_reply, '') FROM deliveries WHERE campaign_id = ? AND status IN ('uncertain', 'sending')",
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
