"""Events: what happened to a person, one row per fact, appended only.

Subscriptions, opt-outs, bounces, complaints, delay notices, restrictions
and objections each append a row (kind, channel, scope, campaign when it can
be attributed, a JSON detail without personal data, the message or file line
it came from). ``report`` counts them per campaign; ``contacts show`` and a
subject access export list them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .rows import dicts, json_value

if TYPE_CHECKING:
    from .db import Connection


def add_event(
    conn: Connection, *, contact_id: int | None, kind: str, channel: str, scope: str, now: str,
    campaign_id: int | None = None, detail: Mapping[str, Any] | None = None, source_ref: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO events (contact_id, campaign_id, kind, channel, scope, detail, source_ref, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (contact_id, campaign_id, kind, channel, scope,
         json.dumps(dict(detail or {}), sort_keys=True, separators=(",", ":")), source_ref, now),
    )


def soft_bounced_campaigns(conn: Connection, contact_id: int) -> int:
    """How many distinct campaigns soft-bounced for this contact (a soft bounce
    no campaign can be found for counts on its own)."""
    row = conn.execute(
        "SELECT COUNT(DISTINCT COALESCE(campaign_id, -id)) FROM events WHERE contact_id = ? AND kind = 'soft_bounced'",
        (contact_id,),
    ).fetchone()
    return int(row[0])


def events_of(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    """One contact's events, oldest first, with the campaign's name and the detail decoded."""
    rows = dicts(conn, "SELECT e.created_at, e.kind, e.channel, e.scope, c.name AS campaign, e.detail, e.source_ref"
                       " FROM events e LEFT JOIN campaigns c ON c.id = e.campaign_id"
                       " WHERE e.contact_id = ? ORDER BY e.id", (contact_id,))
    for row in rows:
        row["detail"] = json_value(row["detail"])
    return rows
