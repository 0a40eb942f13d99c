"""SMTP replies: parsing the byte stream into replies, what a reply says,
and the errors a connection raises.

``ReplyReader`` is an ``asyncio.Protocol`` that splits the stream into
replies as they arrive, so a pipelined batch of commands is answered by one
read of several replies.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")
# A reply line longer than this is a broken or hostile server, not SMTP
# (RFC 5321 §4.5.3.1.5 allows 512 octets; multiline replies repeat that).
_MAX_REPLY = 64 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete (possibly multiline) server reply."""

    code: int
    text: str  # lines joined with "\n", enhanced status code removed
    enhanced: str | None = None  # "5.1.1" when the server sent one (RFC 2034)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        first = self.text.split("\n", 1)[0]
        parts = [str(self.code)]
        if self.enhanced:
            parts.append(self.enhanced)
        if first:
            parts.append(first)
        return " ".join(parts)[:500]


class SmtpProtocolError(Exception):
    """The connection is unusable: dropped, timed out or spoke garbage."""


class ConnectionDropped(SmtpProtocolError):
    """The server closed the connection (or it reset) before replying."""


class ReplyTimeout(SmtpProtocolError):
    """No reply within the configured timeout."""


class SmtpConnectFailed(SmtpProtocolError):
    """Connecting or setting up the session failed; worth another try later.

    ``reply`` is the server's answer when it gave one (a 421 at the
    greeting, a 454 to AUTH ...), so the caller can tell "too many
    connections" from "down".
    """

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class SmtpFatal(Exception):
    """A failure that retrying cannot fix: TLS verification, AUTH refused,
    STARTTLS missing, a permanent refusal at the greeting. The transport
    stops the run with exit 5 unless other connections work."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class AuthRefused(SmtpFatal):
    """The server refused the credentials (535 and friends)."""


class NoAuthMechanism(SmtpFatal):
    """The server offers no AUTH mechanism mailcli speaks (PLAIN, LOGIN)."""


@functools.lru_cache(maxsize=256)
def _one_line_reply(line: bytes) -> Reply:
    return _parse_reply([line])


def parse_reply(lines: list[bytes]) -> Reply:
    """Build a Reply from its raw lines (CRLF already removed).

    A server answers most commands with the same few one-line replies
    ("250 2.1.0 Ok"); those are parsed once (Reply is immutable).
    """
    if len(lines) == 1 and len(lines[0]) < 100:
        return _one_line_reply(lines[0])
    return _parse_reply(lines)


def _parse_reply(lines: list[bytes]) -> Reply:
    # Every line of a reply carries the same code (RFC 5321 §4.2.1); a relay
    # that mixes them ("250-ok", "550 rejected") is taken at its worst line:
    # a reply that refuses anywhere never counts a message as sent.
    code = max(int(line[:3]) for line in lines) if len(lines) > 1 else int(lines[0][:3])
    texts: list[str] = []
    enhanced: str | None = None
    for raw in lines:
        text = raw[4:].decode("utf-8", "replace")
        m = _ENHANCED.match(text)
        if m and m.group(1) == str(code)[0]:
            enhanced = enhanced or f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
            text = text[m.end() :]
        texts.append(text)
    return Reply(code=code, text="\n".join(texts).strip(), enhanced=enhanced)


class ReplyReader(asyncio.Protocol):
    """Splits incoming bytes into replies and hands them to waiters in order.

    Pipelining means several replies may arrive in one segment, or one reply
    over several; a FIFO of parsed replies plus one waiter keeps that simple
    and cheap (no per-line future).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._lines: list[bytes] = []
        self.replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[Any] | None = None
        self._want = 0
        self.closed: BaseException | None = None
        self._can_write: asyncio.Event = asyncio.Event()
        self._can_write.set()

    # -- asyncio callbacks -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line = bytes(buf[start:end]).rstrip(b"\r")
            start = end + 1
            if len(line) < 3 or not line[:3].isdigit():
                self._fail(SmtpProtocolError(f"unexpected server line {line[:40]!r}"))
                return
            self._lines.append(line)
            if len(line) == 3 or line[3:4] != b"-":
                self.replies.append(parse_reply(self._lines))
                self._lines = []
        if start:
            del buf[:start]
        if len(buf) > _MAX_REPLY:
            self._fail(SmtpProtocolError("server reply too long"))
            return
        self._wake()

    def eof_received(self) -> bool | None:
        self._fail(ConnectionDropped("connection closed by server"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionDropped(f"connection lost: {exc}" if exc else "connection closed"))
        self._can_write.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # -- helpers -----------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if self.closed is None:
            self.closed = exc
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done() and len(self.replies) >= self._want:
            w.set_result(None)

    async def read(self, n: int, timeout: float) -> list[Reply]:
        """Wait for the next ``n`` replies (fewer only if the link dies)."""
        if len(self.replies) < n and self.closed is None:
            # One timer on the waiter instead of asyncio.wait_for, which
            # wraps it in two more futures: this runs for every reply batch.
            loop = asyncio.get_running_loop()
            self._want = n
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if waiter.result() is _EXPIRED:
                raise ReplyTimeout(f"no reply within {timeout:g} s")
        if len(self.replies) < n:
            # Replies that did arrive before the drop still count (a 421 is
            # usually followed by the close); callers look at what is there.
            got = [self.replies.popleft() for _ in range(len(self.replies))]
            raise PartialReplies(got, self.closed or ConnectionDropped("connection closed"))
        return [self.replies.popleft() for _ in range(n)]


_EXPIRED = object()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_EXPIRED)


class PartialReplies(SmtpProtocolError):
    """The connection ended after some of the expected replies arrived."""

    def __init__(self, replies: list[Reply], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.replies = replies
        self.cause = cause


_CONNECTIONS = re.compile(
    r"too many (?:concurrent |simultaneous |open |smtp )?(?:connections|sessions)|connection (?:count )?limit"
    r"|too many connections from|thread limit|concurrent connections? limit|maximum (?:number of )?connections",
    re.IGNORECASE,
)


def refuses_connections(reply: Reply) -> bool:
    """A reply that says "too many connections", whatever its code."""
    return not reply.positive and bool(_CONNECTIONS.search(reply.text))
