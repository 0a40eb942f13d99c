"""The SMTP transport: a pool of persistent connections that delivers messages
and reports, per message, exactly what happened.

What it owns (and why it is here rather than in the engine):

* ``concurrency`` persistent connections with reconnect; many consecutive
  connection failures stop the run with ``TransportError`` naming host:port.
* a token-bucket ``rate`` shared by all connections, and an optional
  per-recipient-domain cap on messages in flight.
* RFC 2920 pipelining: MAIL FROM + RCPT TO + DATA in one write, and the next
  message's envelope written right behind the previous end-of-data dot, so a
  message costs one round trip instead of two.
* Reply classification (C05): 2xx sent, 4xx retry, 5xx failed, 5.1.x failed and
  a hard bounce; 421 closes the connection, requeues and backs off (C06);
  drops and timeouts before the dot are retried like a 451 (C09).
* Retries with exponential backoff and jitter inside ``retry_window``; after
  that the message is reported ``deferred`` for the next run.

The one rule that makes "exactly once" possible: ``hooks.before_dot(msg)`` is
awaited after the server said 354 and *before* the final ``.`` is written.
The engine makes the "sending" mark durable there. A message can therefore only be
accepted without our knowing it if the process dies (or the link drops) between
that write and the reply — such a message is reported ``uncertain``, never
resent automatically (RFC 1047, STANDARDS C16).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from mailcli.errors import TransportError
from mailcli.net import tls_context
from mailcli.send.smtp import (
    ConnectionDropped,
    ConnectParams,
    PartialReplies,
    Reply,
    ReplyTimeout,
    SmtpConnectFailed,
    SmtpConnection,
    SmtpFatal,
    SmtpProtocolError,
)

log = logging.getLogger("mailcli.send")

# RFC 5321 §4.5.3.2.6: wait at least 10 minutes for the reply to the final dot;
# giving up earlier turns a slow server into an uncertain message.
DATA_END_TIMEOUT = 600.0


@dataclass(slots=True)
class OutgoingMessage:
    """One message to one recipient, ready for the wire."""

    key: int  # the delivery id; opaque to the transport
    mail_from: str
    rcpt_to: str
    data: bytes  # CRLF wire bytes, already signed; dot-stuffed here unless ``stuffed``
    attempts: int = 0  # attempts made in this run (for backoff)
    first_try: float = 0.0  # monotonic time of the first attempt in this run
    settled: bool = True  # False while a connection holds it without a result
    stuffed: bool = False  # ``data`` is already dot_stuff()ed (done by a render worker)

    @property
    def domain(self) -> str:
        return self.rcpt_to.rpartition("@")[2].lower()


class Status(str, enum.Enum):
    SENT = "sent"
    FAILED = "failed"
    DEFERRED = "deferred"
    UNCERTAIN = "uncertain"
    RETRY = "retry"  # interim: will be tried again in this run


@dataclass(frozen=True, slots=True)
class Result:
    """What happened to one message (final unless ``status`` is RETRY)."""

    status: Status
    reply: str  # the server's reply, or why there is none
    hard_bounce: bool = False  # 5.1.x: the address does not exist; suppress it


class DeliveryHooks(Protocol):
    """The engine's side: durable bookkeeping around each transmission."""

    def before_dot(self, msg: OutgoingMessage) -> Awaitable[None]:
        """Make 'sending' durable, after the server's 354; the end-of-data
        dot is written only once the returned awaitable is done."""

    async def on_result(self, msg: OutgoingMessage, result: Result) -> None:
        """Record a final (or RETRY) result."""


@dataclass(frozen=True, slots=True)
class TransportOptions:
    params: ConnectParams
    concurrency: int = 4
    rate: float = 0.0  # messages per second over all connections; 0 = unlimited
    retry_window: float = 120.0
    domain_concurrency: int = 0
    max_connect_failures: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    queue_per_connection: int = 12


def classify(reply: Reply) -> Result:
    """C05: first digit decides, an enhanced status code refines."""
    if reply.code < 400:
        return Result(Status.SENT, str(reply))
    if reply.code < 500:
        return Result(Status.RETRY, str(reply))
    hard = bool(reply.enhanced and reply.enhanced.startswith("5.1."))
    return Result(Status.FAILED, str(reply), hard_bounce=hard)


def dot_stuff(data: bytes, *, crlf: bool = False) -> bytes:
    """RFC 5321 §4.5.2 transparency plus a guaranteed CRLF ending.

    Bare LF or CR would violate A09: bytes of unknown origin are checked
    (three counts at C speed) and normalised if something slipped through.
    ``crlf=True`` skips that for ``MessageSkeleton`` output, CRLF by
    construction (and by test): the counts cost 40 µs of a 20 KB message.
    """
    if not crlf:
        lines = data.count(b"\r\n")
        if data.count(b"\n") != lines or data.count(b"\r") != lines:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def _addr(address: str) -> bytes:
    return address.encode("utf-8")


class TokenBucket:
    """``rate`` tokens per second with a burst of one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = 1.0
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def try_take(self) -> bool:
        if self.rate <= 0:
            return True
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    async def take(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            while not self.try_take():
                await asyncio.sleep((1 - self.tokens) / self.rate)


class SmtpTransport:
    """Delivers a stream of messages over a pool of connections."""

    def __init__(self, options: TransportOptions, hooks: DeliveryHooks) -> None:
        self.opts = options
        self.hooks = hooks
        p = options.params
        self._tls = tls_context(p.ca_file) if p.security in ("tls", "starttls") else None
        self._bucket = TokenBucket(options.rate)
        self._ready: deque[OutgoingMessage] = deque()
        self._wakeup = asyncio.Event()
        self._capacity = asyncio.Semaphore(max(1, options.concurrency) * options.queue_per_connection)
        self._outstanding = 0
        self._feeding_done = False
        self._stopping = False
        self._fatal: TransportError | None = None
        self._connect_failures = 0
        self._last_connect_error = ""
        self._domain_busy: dict[str, int] = {}
        self._domain_cond = asyncio.Condition()
        self._retry_handles: dict[int, tuple[asyncio.TimerHandle, OutgoingMessage, Result]] = {}
        self._first: SmtpConnection | None = None
        self._backoff_until = 0.0

    # -- public ----------------------------------------------------------------
    async def open(self) -> None:
        """Open the first connection now, so an unreachable server, a bad
        certificate or a wrong password stop the run before anything is sent."""
        try:
            self._first = await self._connect_with_retries()
        except SmtpConnectFailed:
            if not self._stopping:
                raise
            # Interrupted while the server was unreachable: nothing to send.

    def stop(self) -> None:
        """Stop taking new messages; in-flight transactions finish (SIGINT/SIGTERM)."""
        self._stopping = True
        self._wakeup.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def hungry(self) -> bool:
        """Fewer messages are ready than there are connections to take them."""
        return len(self._ready) < max(1, self.opts.concurrency)

    async def run(self, source: AsyncIterator[OutgoingMessage]) -> None:
        """Send everything ``source`` yields; returns when each message has a
        final result, or raises ``TransportError`` after recording what it can."""
        workers = [asyncio.create_task(self._worker(i)) for i in range(max(1, self.opts.concurrency))]
        feeder = asyncio.create_task(self._feed(source))
        try:
            await asyncio.gather(*workers)
        except BaseException:
            self.stop()
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            # On a stop the feeder may wait for capacity that never frees up.
            if not feeder.done():
                feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            await self._flush_retries()
        if feeder.exception() if not feeder.cancelled() else None:
            raise feeder.exception()  # type: ignore[misc]
        if self._fatal is not None:
            raise self._fatal

    # -- feeding ---------------------------------------------------------------
    async def _feed(self, source: AsyncIterator[OutgoingMessage]) -> None:
        try:
            async for msg in source:
                await self._capacity.acquire()
                if self._stopping:
                    self._capacity.release()
                    break
                self._outstanding += 1
                self._ready.append(msg)
                self._wakeup.set()
        finally:
            self._feeding_done = True
            self._wakeup.set()
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    def _done_with(self, msg: OutgoingMessage) -> None:
        self._outstanding -= 1
        self._capacity.release()
        self._wakeup.set()

    @property
    def _finished(self) -> bool:
        if self._stopping:
            return True
        return self._feeding_done and self._outstanding == 0

    def _take_nowait(self) -> OutgoingMessage | None:
        """The next message if one is ready and allowed right now."""
        if self._stopping or not self._ready:
            return None
        if self.opts.domain_concurrency > 0:
            for i, msg in enumerate(self._ready):
                if self._domain_busy.get(msg.domain, 0) < self.opts.domain_concurrency:
                    if not self._bucket.try_take():
                        return None
                    del self._ready[i]
                    self._domain_busy[msg.domain] = self._domain_busy.get(msg.domain, 0) + 1
                    msg.settled = False
                    return msg
            return None
        if not self._bucket.try_take():
            return None
        msg = self._ready.popleft()
        msg.settled = False
        return msg

    async def _take(self) -> OutgoingMessage | None:
        """Wait for the next message; None when the run is over."""
        while True:
            if self._finished:
                return None
            if self._ready:
                if self.opts.rate > 0:
                    await self._bucket.take()
                    self._bucket.tokens += 1  # _take_nowait takes it again
                msg = self._take_nowait()
                if msg is not None:
                    return msg
            self._wakeup.clear()
            if self._finished:
                return None
            try:
                # The timeout covers a domain cap or bucket that frees up
                # without an explicit wake-up.
                await asyncio.wait_for(self._wakeup.wait(), 0.05 if self._ready else None)
            except asyncio.TimeoutError:
                pass

    def _release_domain(self, msg: OutgoingMessage) -> None:
        if self.opts.domain_concurrency > 0:
            n = self._domain_busy.get(msg.domain, 1) - 1
            if n <= 0:
                self._domain_busy.pop(msg.domain, None)
            else:
                self._domain_busy[msg.domain] = n
            self._wakeup.set()

    # -- results ---------------------------------------------------------------
    async def _final(self, msg: OutgoingMessage, result: Result) -> None:
        msg.settled = True
        self._release_domain(msg)
        await self.hooks.on_result(msg, result)
        self._done_with(msg)

    async def _retry(self, msg: OutgoingMessage, reason: str, *, counted: bool = True) -> None:
        """Transient failure: back off and requeue, or give up as deferred."""
        msg.settled = True
        self._release_domain(msg)
        now = time.monotonic()
        if not counted:
            # The message was never really attempted (the connection died
            # under the envelope pipelined behind another message).
            self._ready.appendleft(msg)
            self._wakeup.set()
            return
        if not msg.first_try:
            msg.first_try = now
        msg.attempts += 1
        delay = self._backoff(msg.attempts)
        if self._stopping or now + delay > msg.first_try + self.opts.retry_window:
            await self.hooks.on_result(msg, Result(Status.DEFERRED, reason))
            self._done_with(msg)
            return
        result = Result(Status.RETRY, reason)
        await self.hooks.on_result(msg, result)
        loop = asyncio.get_running_loop()
        handle = loop.call_later(delay, self._requeue, msg)
        self._retry_handles[id(msg)] = (handle, msg, result)

    def _requeue(self, msg: OutgoingMessage) -> None:
        self._retry_handles.pop(id(msg), None)
        self._ready.appendleft(msg)
        self._wakeup.set()

    async def _flush_retries(self) -> None:
        """On stop or fatal error, messages waiting for a retry become deferred."""
        pending = list(self._retry_handles.values())
        self._retry_handles.clear()
        for handle, msg, result in pending:
            handle.cancel()
            await self.hooks.on_result(msg, Result(Status.DEFERRED, result.reply))
            self._done_with(msg)

    def _backoff(self, attempt: int) -> float:
        base = min(self.opts.backoff_max, self.opts.backoff_base * (2 ** (attempt - 1)))
        return base * (0.5 + random.random() / 2)  # "equal jitter"

    # -- connections -----------------------------------------------------------
    async def _connect_with_retries(self) -> SmtpConnection:
        p = self.opts.params
        while True:
            wait = self._backoff_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            conn = SmtpConnection(p, self._tls)
            try:
                await conn.open()
            except SmtpFatal as exc:
                raise TransportError(str(exc), hint="check [smtp] in mailcli.toml; a rerun resumes") from None
            except SmtpConnectFailed as exc:
                self._connect_failures += 1
                self._last_connect_error = str(exc)
                if self._connect_failures >= self.opts.max_connect_failures:
                    raise TransportError(
                        f"{exc} ({self._connect_failures} attempts)",
                        hint="state saved; when the server is reachable again, rerun the same command",
                    ) from None
                await asyncio.sleep(min(5.0, 0.25 * 2 ** (self._connect_failures - 1)) * (0.5 + random.random() / 2))
                if self._stopping:
                    raise
                continue
            self._connect_failures = 0
            return conn

    async def _worker(self, index: int) -> None:
        conn: SmtpConnection | None = None
        if index == 0 and self._first is not None:
            conn, self._first = self._first, None
        try:
            while not self._finished and self._fatal is None:
                if conn is None or not conn.alive:
                    try:
                        conn = await self._connect_with_retries()
                    except TransportError as exc:
                        self._fatal = self._fatal or exc
                        self.stop()
                        return
                    except SmtpConnectFailed:
                        return  # stopping
                msg = await self._take()
                if msg is None:
                    break
                holding: list[OutgoingMessage] = [msg]
                try:
                    await self._session(conn, holding)
                except (SmtpProtocolError, OSError) as exc:
                    conn.abort()
                    conn = None
                    # Safety net: a message this connection held without a
                    # result goes back for another try, never silently lost.
                    for held in holding:
                        if not held.settled:
                            await self._retry(held, f"connection error: {exc}")
        finally:
            if conn is not None:
                await conn.quit()

    async def _session(self, conn: SmtpConnection, holding: list[OutgoingMessage]) -> None:
        """Run transactions on one connection until it has nothing to do.

        ``holding`` lists every message taken, so the caller can requeue any
        left without a result if the connection breaks.
        """
        pipelining = "PIPELINING" in conn.extensions
        msg: OutgoingMessage | None = holding[0]
        envelope_written = False
        while msg is not None:
            precheck = self._precheck(conn, msg)
            if precheck is not None:
                if envelope_written:
                    # Cannot happen: prechecks run before pipelining an envelope.
                    raise SmtpProtocolError("internal: precheck after envelope")
                await self._final(msg, precheck)
                msg = self._take_nowait()
                if msg is not None:
                    _hold(holding, msg)
                continue
            cmds = self._envelope(conn, msg, conn.need_rset)
            n_env = len(cmds)
            try:
                if not envelope_written:
                    if pipelining:
                        conn.write(b"".join(cmds))
                        replies = await conn.read_replies(n_env)
                    else:
                        replies = []
                        for c in cmds:
                            conn.write(c)
                            r = (await conn.read_replies(1))[0]
                            replies.append(r)
                            if not r.positive:
                                break
                else:
                    replies = await conn.read_replies(n_env)
            except (PartialReplies, ReplyTimeout, ConnectionDropped) as exc:
                # Nothing of this message was accepted: transient (C09), and
                # a 421 among the replies means "back off" (C06).
                got = exc.replies if isinstance(exc, PartialReplies) else []
                reason = next((str(r) for r in got if r.code == 421), None)
                if reason:
                    self._host_backoff()
                await self._retry(msg, reason or f"connection lost before data: {exc}")
                raise
            if conn.need_rset:
                replies = replies[1:]  # the RSET reply; its outcome does not matter
                conn.need_rset = False
            if not replies:
                raise SmtpProtocolError("RSET refused")
            mail_r, rcpt_r = replies[0], (replies[1] if len(replies) > 1 else None)
            data_r = replies[2] if len(replies) > 2 else None
            failed: Reply | None = None
            if not mail_r.positive:
                failed = mail_r
            elif rcpt_r is None or not rcpt_r.positive:
                failed = rcpt_r
            if failed is None:
                if data_r is None:
                    raise SmtpProtocolError("no reply to DATA")
                if data_r.code != 354:
                    failed = data_r
            elif data_r is not None and data_r.code == 354:
                # A server that accepts DATA without a recipient: end the
                # empty message so the session stays in sync.
                conn.write(b".\r\n")
                await conn.read_replies(1)
            if failed is not None:
                # Refused at MAIL, RCPT or DATA: record it, then the next message.
                conn.need_rset = True
                await self._outcome(msg, failed, conn)
                if failed.code == 421:
                    raise ConnectionDropped("server closing (421)")
                msg = self._take_nowait()
                if msg is not None:
                    _hold(holding, msg)
                envelope_written = False
                continue
            # 354: the durable "sending" mark, then body, dot and the next
            # envelope in one write. (Writing the body while the mark was
            # committed saved nothing measurable and cost a second send()
            # per message, and the server a second wake-up.)
            await self.hooks.before_dot(msg)
            nxt = self._take_nowait() if pipelining else None
            if nxt is not None:
                _hold(holding, nxt)
            payload = (msg.data if msg.stuffed else dot_stuff(msg.data)) + b".\r\n"
            if nxt is not None:
                pre = self._precheck(conn, nxt)
                if pre is not None:
                    await self._final(nxt, pre)
                    nxt = None
                else:
                    payload += b"".join(self._envelope(conn, nxt, False))
            try:
                conn.write(payload)
            except ConnectionDropped as exc:  # the dot was not written: nothing was accepted
                await self._retry(msg, f"connection lost before end of data: {exc}")
                if nxt is not None:
                    await self._retry(nxt, "connection lost", counted=False)
                raise
            try:
                await conn.drain()
                end = (await conn.read_replies(1, max(DATA_END_TIMEOUT, conn.params.timeout)))[0]
            except (PartialReplies, ReplyTimeout, ConnectionDropped) as exc:
                got = exc.replies if isinstance(exc, PartialReplies) else []
                if got:
                    await self._outcome(msg, got[0], conn)
                else:
                    # The dot may have been accepted: never resend blindly.
                    await self._final(msg, Result(Status.UNCERTAIN, f"no reply to end of data: {exc}"))
                if nxt is not None:
                    await self._retry(nxt, "connection lost", counted=False)
                raise
            await self._outcome(msg, end, conn)
            if end.code == 421:
                if nxt is not None:
                    await self._retry(nxt, str(end), counted=False)
                raise ConnectionDropped("server closing (421)")
            if nxt is not None:
                msg, envelope_written = nxt, True
            else:
                msg, envelope_written = self._take_nowait(), False
                if msg is not None:
                    _hold(holding, msg)

    def _precheck(self, conn: SmtpConnection, msg: OutgoingMessage) -> Result | None:
        """Failures known before any byte is sent (A21 SIZE, A13 SMTPUTF8)."""
        size = conn.extensions.get("SIZE", "")
        if size.isdigit() and int(size) > 0 and len(msg.data) > int(size):
            return Result(Status.FAILED, f"message is {len(msg.data)} bytes; {conn.params.where} accepts at most {size}")
        if not (msg.rcpt_to.isascii() and msg.mail_from.isascii()) and "SMTPUTF8" not in conn.extensions:
            return Result(Status.FAILED, f"{conn.params.where} does not support SMTPUTF8 for a non-ASCII address")
        return None

    def _envelope(self, conn: SmtpConnection, msg: OutgoingMessage, rset: bool) -> list[bytes]:
        params = b""
        if "SIZE" in conn.extensions:
            params += b" SIZE=%d" % len(msg.data)
        if not msg.data.isascii() and "8BITMIME" in conn.extensions:
            params += b" BODY=8BITMIME"
        if not (msg.rcpt_to.isascii() and msg.mail_from.isascii()):
            params += b" SMTPUTF8"
        cmds = [
            b"MAIL FROM:<" + _addr(msg.mail_from) + b">" + params + b"\r\n",
            b"RCPT TO:<" + _addr(msg.rcpt_to) + b">\r\n",
            b"DATA\r\n",
        ]
        if rset:
            cmds.insert(0, b"RSET\r\n")
        return cmds

    async def _outcome(self, msg: OutgoingMessage, reply: Reply, conn: SmtpConnection) -> None:
        result = classify(reply)
        if result.status is Status.RETRY:
            if reply.code == 421:
                self._host_backoff()
            await self._retry(msg, result.reply)
        else:
            await self._final(msg, result)

    def _host_backoff(self) -> None:
        """C06: after a 421 every connection waits a little before reconnecting."""
        delay = self.opts.backoff_base * (0.5 + random.random() / 2)
        self._backoff_until = max(self._backoff_until, time.monotonic() + delay)


def _hold(holding: list[OutgoingMessage], msg: OutgoingMessage) -> None:
    """Remember a message a connection took; forget the ones already settled."""
    if len(holding) > 4:
        holding[:] = [h for h in holding if not h.settled]
    holding.append(msg)


HookFn = Callable[[OutgoingMessage], Awaitable[None]]


async def _done() -> None:
    return None


@dataclass
class CallbackHooks:
    """Hooks from two plain coroutines (handy for tests and the benchmark)."""

    before: HookFn | None = None
    results: list[tuple[int, Result]] = field(default_factory=list)

    def before_dot(self, msg: OutgoingMessage) -> Awaitable[None]:
        return self.before(msg) if self.before is not None else _done()

    async def on_result(self, msg: OutgoingMessage, result: Result) -> None:
        self.results.append((msg.key, result))
