"""Has this recipient opted out since their row was read?

Asked right before each message's MAIL FROM and again right before its final
dot (``SmtpTransport`` calls ``DeliveryHooks.withdrawn``), so an unsubscribe,
erasure, restriction or objection committed by another process — a command,
a one-click POST to ``serve``, ``bounces``, a purge — stops every message that
has not gone out yet, however far ahead it was rendered.

It has to be cheap: it runs twice per message, thousands of times a second.
The engine notes the opt-out counter (``store.optouts``) before it reads each
page of deliveries; a check compares it with the counter now, which costs a
``PRAGMA data_version`` unless another connection committed, and a ``stat``
of the spool where ``serve`` keeps one-click opt-outs while the database is
busy. Only a recipient read before the counter moved is checked again, once
per move.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mailcli.store.optouts import OptoutCounter, withdrawal_reason


class OptoutWatch:
    """Opt-outs committed by others since each recipient was read."""

    def __init__(self, conn: sqlite3.Connection, *, list_id: int | None, list_name: str, secret: bytes,
                 database: Path | None = None, kind: str = "marketing") -> None:
        self._conn = conn
        self._kind = kind
        self._list_id = list_id
        self._list_name = list_name
        self._secret = secret
        self._counter = OptoutCounter(conn, spool=database)
        self._read_at: dict[int, int] = {}  # delivery id -> counter when it was last known mailable

    def mark(self) -> int:
        """The counter now; call right before reading a page of deliveries."""
        return self._counter.now()

    def note(self, delivery_id: int, mark: int) -> None:
        """``delivery_id`` was read (and found mailable) after ``mark()`` said ``mark``."""
        self._read_at[delivery_id] = mark

    def forget(self, delivery_id: int) -> None:
        self._read_at.pop(delivery_id, None)

    def reason(self, delivery_id: int) -> str | None:
        """Why this delivery must not go out now, or None."""
        noted = self._read_at.get(delivery_id)
        if noted is not None and not self._counter.optouts_since(noted):
            return None
        now = self._counter.now()
        reason = withdrawal_reason(self._conn, delivery_id, self._list_id, self._list_name, self._secret,
                                   self._counter.spooled, self._kind)
        if reason is None:
            self._read_at[delivery_id] = now  # still mailable as of now
        return reason
