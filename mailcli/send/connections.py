"""How many connections a relay takes, found while sending, and opening them.

Like Postfix's destination concurrency feedback: a connection refused (at
connect, greeting, EHLO or AUTH, or with "too many connections") while
others work lowers the number of connections to those that work, and they
keep sending; the transport tries one more after a calm stretch. A refusal
while nothing works is retried with backoff for ``retry_window``; only then
does the run stop with ``TransportError`` naming host:port
(docs/guarantees.md#relay-limits).
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailcli.errors import TransportError
from mailcli.send.pacing import Pace
from mailcli.send.replies import SmtpConnectFailed, SmtpFatal
from mailcli.send.smtp import SmtpConnection

if TYPE_CHECKING:
    from mailcli.send.transport import TransportOptions


class Connections:
    """The number of connections wanted, how many work, and opening one."""

    def __init__(self, opts: TransportOptions, tls: ssl.SSLContext | None, pace: Pace,
                 notice: Callable[[str], None], stopping: Callable[[], bool]) -> None:
        self._opts = opts
        self._tls = tls
        self._pace = pace
        self._notice = notice
        self._stopping = stopping
        ceiling = max(1, opts.concurrency)
        self.limit = max(1, min(ceiling, opts.start_connections or ceiling))
        self.working = 0
        self._opening = 0
        self._changed = asyncio.Event()
        self._retrier: asyncio.Task[None] | None = None  # the one worker retrying while nothing works
        self._down_since: float | None = None
        # What this run found out, for the report and the next run.
        self.extensions: dict[str, str] = {}  # of the first connection
        self.limit_found: int | None = None
        self.limit_reply: str | None = None
        self.max_working = 0

    def wake(self) -> None:
        """Stop waiting for connections being set up (the run stops)."""
        self._changed.set()

    async def connect(self) -> SmtpConnection | None:
        """A working connection, or None when this slot should close instead
        (the relay refused it while others work, or another slot already
        retries). Raises ``TransportError`` when nothing could be kept for
        ``retry_window``, or at once for a fault no waiting fixes."""
        attempt = 0
        while True:
            if self._stopping():
                return None
            wait = self._pace.backoff_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            conn = SmtpConnection(self._opts.params, self._tls)
            self._opening += 1
            try:
                await conn.open()
            except (SmtpFatal, SmtpConnectFailed) as exc:
                self._setup_done(None)
                if not await self._retry_after(exc, attempt):
                    return None
                attempt += 1
                continue
            if self._retrier is asyncio.current_task():
                self._retrier = None
            self._setup_done(conn)
            return conn

    async def _retry_after(self, exc: SmtpFatal | SmtpConnectFailed, attempt: int) -> bool:
        """A connection failed to open: False when this slot should close,
        True after waiting to try again; raises ``TransportError`` to stop."""
        # How many others work decides what a refusal means: wait for the
        # ones being set up at the same moment.
        while self._opening > 0 and not self._stopping():
            self._changed.clear()
            await self._changed.wait()
        if self.working > 0:
            self.refused(exc)
            return False
        if isinstance(exc, SmtpFatal):
            raise TransportError(str(exc), hint="check [smtp] in mailcli.toml; a rerun resumes") from None
        me = asyncio.current_task()
        if self._retrier is not None and self._retrier is not me and not self._retrier.done():
            return False  # one slot retries; the others come back when it works
        self._retrier = me
        now = time.monotonic()
        window = self._opts.retry_window
        if self._down_since is None:
            self._down_since = now
            self._notice(f"{exc}; trying again for up to {window:g} s ([smtp] retry_window)")
        left = self._down_since + window - now
        if left <= 0:
            raise TransportError(
                f"{exc}; no connection to {self._opts.params.where} could be kept for {window:g} s"
                " ([smtp] retry_window)",
                hint="state saved; when the server takes connections again, rerun the same command",
            ) from None
        delay = min(self._opts.backoff_max, self._opts.connect_backoff * 2 ** attempt)
        await asyncio.sleep(min(left, delay * (0.5 + random.random() / 2)))
        return True

    def _setup_done(self, conn: SmtpConnection | None) -> None:
        self._opening -= 1
        if conn is not None:
            self.working += 1
            self.max_working = max(self.max_working, self.working)
            self._down_since = None
            if not self.extensions:
                self.extensions = dict(conn.extensions)
        self._changed.set()

    def refused(self, exc: BaseException, *, others: int | None = None) -> None:
        """The relay refused one more connection while ``others`` work: that
        is its limit for now (Postfix's concurrency feedback, in one step)."""
        working = self.working if others is None else others
        reply = getattr(exc, "reply", None)
        new = max(1, working)
        lowered = new < self.limit
        if lowered:
            self.limit = new
        self.limit_found = self.limit
        self.limit_reply = str(reply) if reply is not None else str(exc)
        self._pace.pushed_back()
        if lowered:  # the slots refused at the same moment say it once
            self._notice(f"{self._opts.params.where} refused connection {working + 1} ({self.limit_reply});"
                         f" going on with {self.limit}")

    async def close(self, conn: SmtpConnection, *, polite: bool) -> None:
        """End a working connection (QUIT when polite)."""
        if polite:
            await conn.quit()
        else:
            conn.abort()
        self.working -= 1
        self._changed.set()
