"""The messages ``mailcli bounces`` has read: one row per message, keyed by a hash.

A message nobody could match (a person's reply, an unknown bounce) keeps its
reason and stays open until someone acknowledges it (``bounces --ack``):
until then every run lists it again, so it cannot scroll out of sight after
the first run. No address or body is kept, only the reason in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Connection


@dataclass(frozen=True, slots=True)
class Processed:
    outcome: str
    reason: str | None
    processed_at: str
    acknowledged_at: str | None

    @property
    def open(self) -> bool:
        """Unmatched and not yet acknowledged: a person still has to see it."""
        return self.outcome == "unmatched" and self.acknowledged_at is None


def processed_message(conn: Connection, ref: str) -> Processed | None:
    row = conn.execute(
        "SELECT outcome, reason, processed_at, acknowledged_at FROM processed_messages WHERE ref = ?", (ref,)
    ).fetchone()
    return Processed(*row) if row else None


def record_processed(conn: Connection, ref: str, outcome: str, reason: str | None, now: str) -> None:
    """Remember one message as read (inside the transaction that applied it)."""
    conn.execute(
        "INSERT INTO processed_messages (ref, outcome, reason, processed_at) VALUES (?, ?, ?, ?)",
        (ref, outcome, reason if outcome == "unmatched" else None, now),
    )


def acknowledge_message(conn: Connection, ref: str, now: str) -> bool:
    """Mark an unmatched message as seen to by a person; False if it was not open."""
    cursor = conn.execute(
        "UPDATE processed_messages SET acknowledged_at = ? WHERE ref = ? AND outcome = 'unmatched'"
        " AND acknowledged_at IS NULL",
        (now, ref),
    )
    return cursor.rowcount > 0
