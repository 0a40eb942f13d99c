"""Keeping campaign totals when per-message rows are deleted.

Purge (``send_log`` retention) and erasure delete delivery rows and events,
but a campaign's report must not change (a sent message stays sent). Before
deleting, callers fold what they delete into ``campaigns.archived_counts``, a
JSON object with the report keys; ``report`` adds it to the live counts.

* deliveries: ``audience`` += rows, and ``<status>`` += rows per status
  (``sent``, ``failed``, ``uncertain``, ``skipped``; ``sending``→``uncertain``;
  ``pending`` and ``deferred``→``skipped``: a row that is gone can never be
  sent, so the campaign counts it as skipped and can complete). ``report``
  shows an archived ``uncertain`` as ``uncertain_erased``: a message whose
  row is gone can be neither resent nor accepted by its Message-ID, so it
  does not keep the campaign from completing
* events with a campaign: ``bounced`` / ``unsubscribed`` / ``complained``
  += rows of that kind

Always call these inside the same transaction as the delete.

A send that is running when its delivery rows are deleted still learns what
the server said about the messages in flight; ``settle_archived`` moves such a
message from what the archive assumed (``uncertain`` for a row deleted while
``sending``, ``skipped`` for one deleted before) to what really happened, so
``sent`` stays equal to what the server accepted.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .db import Connection

REPORT_KEYS = ("audience", "sent", "failed", "deferred", "pending", "uncertain", "bounced", "unsubscribed", "complained")
EVENT_KINDS = ("bounced", "unsubscribed", "complained")
# How a deleted delivery row is counted, by its status (others as themselves).
ARCHIVED_AS = {"sending": "uncertain", "pending": "skipped", "deferred": "skipped"}


def _fold(conn: Connection, additions: dict[int, dict[str, int]]) -> None:
    for campaign_id, counts in additions.items():
        row = conn.execute("SELECT archived_counts FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
        if row is None:
            continue
        current: dict[str, int] = json.loads(row[0] or "{}")
        for key, value in counts.items():
            current[key] = current.get(key, 0) + value
        conn.execute(
            "UPDATE campaigns SET archived_counts = ? WHERE id = ?",
            (json.dumps(current, sort_keys=True), campaign_id),
        )


def archive_deliveries(conn: Connection, where: str, params: Sequence[Any] = ()) -> int:
    """Fold the delivery rows matching ``where`` into their campaigns' totals.

    ``where`` is a fixed SQL condition on ``deliveries`` written by the caller
    (never user text); values go in ``params``. Returns the number of rows.
    The caller deletes the rows afterwards, in the same transaction.
    """
    additions: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    total = 0
    sql = f"SELECT campaign_id, status, count(*) FROM deliveries WHERE {where} GROUP BY campaign_id, status"  # noqa: S608 - fixed condition
    for campaign_id, status, count in conn.execute(sql, tuple(params)):
        additions[campaign_id][ARCHIVED_AS.get(status, status)] += count
        additions[campaign_id]["audience"] += count
        total += count
    _fold(conn, additions)
    return total


def settle_archived(conn: Connection, campaign_id: int, was: str, now: str) -> None:
    """One archived delivery of the campaign turned out ``now`` rather than
    ``was`` (both archive keys: sent, failed, uncertain, skipped)."""
    if was == now:
        return
    _fold(conn, {campaign_id: {was: -1, now: 1}})


def archive_events(conn: Connection, where: str, params: Sequence[Any] = ()) -> int:
    """Fold the campaign-attributed events matching ``where`` into totals."""
    additions: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    total = 0
    placeholders = ",".join("?" for _ in EVENT_KINDS)
    sql = (
        f"SELECT campaign_id, kind, count(*) FROM events WHERE campaign_id IS NOT NULL"  # noqa: S608 - fixed condition
        f" AND kind IN ({placeholders}) AND ({where}) GROUP BY campaign_id, kind"
    )
    for campaign_id, kind, count in conn.execute(sql, (*EVENT_KINDS, *params)):
        additions[campaign_id][kind] += count
        total += count
    _fold(conn, additions)
    return total


def archived_counts(conn: Connection, campaign_id: int,
                    keys: Sequence[str] = REPORT_KEYS) -> dict[str, int]:
    """The campaign's archived totals for ``keys`` (0 where none were archived)."""
    row = conn.execute("SELECT archived_counts FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
    data = json.loads(row[0]) if row and row[0] else {}
    return {key: int(data.get(key, 0)) for key in keys}
