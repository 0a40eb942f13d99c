"""Campaign rows: created by the first send, frozen with their audience,
marked sent when nothing is left to send or retry.

A campaign's name is unique: two processes that create the same campaign at
the same moment (two configurations naming one database) end up with one row.
Per-message rows are in ``deliveries`` (``store.deliveries``); what purge and
erasure took away is folded into ``archived_counts`` (``store.archive``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

# What ``report`` counts of the events attributed to a campaign.
FEEDBACK_KINDS = ("bounced", "unsubscribed", "complained")
# What a campaign is: marketing (to subscribers) or a service message (to
# everyone with an active relationship, opted out of marketing or not).
CAMPAIGN_KINDS = ("marketing", "service")


@dataclass(frozen=True, slots=True)
class Campaign:
    id: int
    uid: str
    name: str
    template: str
    list_id: int | None
    list_name: str
    subject: str | None
    kind: str
    status: str
    created_at: str
    frozen_at: str | None
    finished_at: str | None
    service_reason: str | None = None  # why a service message goes to people who left marketing


_COLUMNS = ("id, uid, name, template, list_id, list_name, subject, kind, status, created_at, frozen_at, finished_at,"
            " service_reason")


def get_campaign(conn: sqlite3.Connection, name: str) -> Campaign | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM campaigns WHERE name = ?", (name,)).fetchone()  # noqa: S608 - fixed columns
    return Campaign(*row) if row else None


def list_campaigns(conn: sqlite3.Connection) -> list[Campaign]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM campaigns ORDER BY created_at, id").fetchall()  # noqa: S608
    return [Campaign(*row) for row in rows]


def insert_campaign(conn: sqlite3.Connection, *, uid: str, name: str, template: str, list_id: int, list_name: str,
                    subject: str | None, created_at: str, kind: str = "marketing",
                    service_reason: str | None = None) -> None:
    """A new campaign of ``kind``, not yet frozen; nothing when the name is
    taken (another process created it a moment ago: that row is the campaign)."""
    conn.execute(
        "INSERT INTO campaigns (uid, name, template, list_id, list_name, subject, kind, status, created_at,"
        " service_reason) VALUES (?, ?, ?, ?, ?, ?, ?, 'created', ?, ?) ON CONFLICT (name) DO NOTHING",
        (uid, name, template, list_id, list_name, subject, kind, created_at, service_reason),
    )


def mark_frozen(conn: sqlite3.Connection, campaign_id: int, now: str) -> None:
    """The audience is frozen: note when (the first time only) and start sending."""
    conn.execute(
        "UPDATE campaigns SET frozen_at = coalesce(frozen_at, ?),"
        " status = CASE WHEN status = 'created' THEN 'sending' ELSE status END WHERE id = ?",
        (now, campaign_id),
    )


def set_campaign_status(conn: sqlite3.Connection, campaign_id: int, status: str, finished_at: str | None) -> None:
    """The campaign's status; ``finished_at`` is set when given, else kept."""
    conn.execute(
        "UPDATE campaigns SET status = ?, finished_at = coalesce(?, finished_at) WHERE id = ?",
        (status, finished_at, campaign_id),
    )


def feedback_counts(conn: sqlite3.Connection, campaign_id: int) -> dict[str, int]:
    """Bounces, unsubscribes and complaints attributed to the campaign (kinds with none left out)."""
    marks = ",".join("?" for _ in FEEDBACK_KINDS)
    return {
        kind: n
        for kind, n in conn.execute(
            f"SELECT kind, count(*) FROM events WHERE campaign_id = ? AND kind IN ({marks}) GROUP BY kind",  # noqa: S608 - placeholders only
            (campaign_id, *FEEDBACK_KINDS),
        )
    }
