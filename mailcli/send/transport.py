"""The SMTP transport: a pool of persistent connections that delivers messages
and reports, per message, exactly what happened.

What it owns (and why it is here rather than in the engine):

* up to ``concurrency`` persistent connections, adapted to what the relay
  accepts, like Postfix's destination concurrency feedback: a connection
  refused (at connect, greeting, EHLO or AUTH, or with "too many
  connections") while others work lowers the number of connections to those
  that work, and they keep sending; after ``probe_after`` calm messages one
  more is tried. A refusal while nothing works is retried with backoff for
  ``retry_window``; only then does the run stop with ``TransportError``
  naming host:port. No more connections are opened than messages are left.
* a token-bucket ``rate`` shared by all connections, halved when the relay
  answers that mail comes too fast and raised again after calm stretches,
  and an optional per-recipient-domain cap on messages in flight.
* a per-session limit ("452 4.5.3 too many recipients", "421 too many
  messages") ends that session: the message goes to a new connection,
  without counting as a failed attempt.
* a sending quota used up for the day ("Daily message quota exceeded")
  stops the run: that message is deferred and the rest stay pending for a
  later run, instead of all failing as if their addresses were wrong.
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

The engine may also withdraw a message it handed over (its recipient opted
out or was erased since it was rendered): ``hooks.withdrawn(msg)`` is asked
right before the message's MAIL FROM is written and again right before its
final dot. Withdrawn before MAIL FROM, it is skipped; withdrawn after its
envelope went out, the connection is closed without the dot, so the server
discards the transaction. Only a message whose dot was already written when
the opt-out was committed can still be delivered: at most one per connection.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import re
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
    refuses_connections,
)
from mailcli.store.deliveries import LOST_AFTER_DOT

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
    SKIPPED = "skipped"  # withdrawn by the engine before the final dot; not sent
    RETRY = "retry"  # interim: will be tried again in this run


@dataclass(frozen=True, slots=True)
class Result:
    """What happened to one message (final unless ``status`` is RETRY)."""

    status: Status
    reply: str  # the server's reply, or why there is none
    hard_bounce: bool = False  # 5.1.x: the address does not exist; suppress it
    needs_smtputf8: bool = False  # the relay cannot take this (non-ASCII) address at all


class DeliveryHooks(Protocol):
    """The engine's side: durable bookkeeping around each transmission."""

    def before_dot(self, msg: OutgoingMessage) -> Awaitable[None]:
        """Make 'sending' durable, after the server's 354; the end-of-data
        dot is written only once the returned awaitable is done."""

    async def on_result(self, msg: OutgoingMessage, result: Result) -> None:
        """Record a final (or RETRY) result."""

    def withdrawn(self, msg: OutgoingMessage) -> Result | None:
        """Asked right before MAIL FROM and right before the final dot, with
        nothing written in between: a result (``SKIPPED``) when the message
        must not go out after all, else None. Must be quick and must not block."""


@dataclass(frozen=True, slots=True)
class TransportOptions:
    params: ConnectParams
    concurrency: int = 4  # the most connections ever opened at once
    start_connections: int | None = None  # a limit found before: start there
    expected: int | None = None  # the most messages the source will yield
    rate: float = 0.0  # messages per second over all connections; 0 = unlimited
    rate_ceiling: float | None = None  # set when ``rate`` is a rate found before: the configured one
    retry_window: float = 120.0
    domain_concurrency: int = 0
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    connect_backoff: float = 1.0  # first wait after a refused connection, doubling
    probe_after: int = 100  # accepted messages without trouble before one more connection (or 25% more rate)
    queue_per_connection: int = 12


# Smallest rate a slowdown goes to: one message every 20 seconds.
MIN_RATE = 0.05

# "Too many recipients/messages" for this session (Postfix, Exchange, Exim),
# as opposed to per client and time ("... from 192.0.2.1", "rate").
_SESSION_LIMIT = re.compile(r"too many (?:recipients|messages)", re.IGNORECASE)
_RATE_LIMIT = re.compile(
    r"rate|throttl|too much mail|too (?:many|much) \w+ from|slow down|too fast|per (?:second|minute|hour)"
    r"|sending limit|submission limit|limit exceeded|peak|quota|try again later",
    re.IGNORECASE,
)
# The sender's allowance for the day, not anything about the recipient (a
# recipient's full mailbox is "5.2.2 ... over quota" and stays that one's).
_QUOTA = re.compile(
    r"daily|per day|sending quota|submission ?quota", re.IGNORECASE)


def reply_kind(reply: Reply) -> str | None:
    """What a refusal says about the relay, beyond its code.

    ``connections``: too many connections at once; ``quota``: the sender's
    allowance for the day is used up; ``session``: this session has carried
    its share of recipients or messages; ``rate``: mail comes too fast;
    None: something about this message.
    """
    if refuses_connections(reply):
        return "connections"
    if _QUOTA.search(reply.text) and reply.enhanced != "5.2.2" and (reply.permanent or _RATE_LIMIT.search(reply.text)):
        return "quota"
    if _SESSION_LIMIT.search(reply.text) and not _RATE_LIMIT.search(reply.text):
        return "session"
    if reply.transient and _RATE_LIMIT.search(reply.text):
        return "rate"
    return None


class _Reconnect(SmtpProtocolError):
    """End this session politely and carry on over a new one."""


class _Retire(SmtpProtocolError):
    """End this session and this connection slot: the relay wants fewer."""


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

    def set_rate(self, rate: float) -> None:
        """A new rate from now on (0 = unlimited); earned tokens are kept up to the new burst."""
        self._refill()
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = min(self.tokens, self.capacity)

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

    def __init__(self, options: TransportOptions, hooks: DeliveryHooks, *,
                 notice: Callable[[str], None] | None = None) -> None:
        self.opts = options
        self.hooks = hooks
        # What a person watching should know as it happens (the relay pushed back).
        self._notice = notice or (lambda text: None)
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
        self._domain_busy: dict[str, int] = {}
        self._domain_cond = asyncio.Condition()
        self._retry_handles: dict[int, tuple[asyncio.TimerHandle, OutgoingMessage, Result]] = {}
        self._first: SmtpConnection | None = None
        self._backoff_until = 0.0
        # Connections: the number wanted, how many work, how many are being set up.
        ceiling = max(1, options.concurrency)
        self.limit = max(1, min(ceiling, options.start_connections or ceiling))
        self._working = 0
        self._opening = 0
        self._setup_changed = asyncio.Event()
        self._retrier: asyncio.Task[None] | None = None  # the one worker retrying while nothing works
        self._down_since: float | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._alive = 0
        self._finals = 0
        self._calm = 0  # messages accepted since the relay last pushed back
        self._accepted: deque[float] = deque(maxlen=50)
        self._last_slowdown = 0.0
        # What this run found out, for the report and the next run.
        self.extensions: dict[str, str] = {}  # of the first connection
        self.limit_found: int | None = None
        self.limit_reply: str | None = None
        self.max_working = 0
        self.rate_found: float | None = None
        self.rate_reply: str | None = None
        self.quota_reply: str | None = None  # the relay said the day's allowance is used up

    # -- public ----------------------------------------------------------------
    async def open(self) -> None:
        """Open the first connection now, so an unreachable server, a bad
        certificate or a wrong password stop the run before anything is sent.

        A server that refuses or cannot be reached is tried again with
        backoff for ``retry_window`` before ``TransportError`` is raised."""
        self._first = await self._connect()

    def stop(self) -> None:
        """Stop taking new messages; in-flight transactions finish (SIGINT/SIGTERM)."""
        self._stopping = True
        self._wakeup.set()
        self._setup_changed.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def hungry(self) -> bool:
        """Fewer messages are ready than there are connections to take them."""
        return len(self._ready) < max(1, self.limit)

    @property
    def rate_in_effect(self) -> float | None:
        """The rate the relay holds this run to, when it does (else None)."""
        if self.rate_found is None and self.opts.rate_ceiling is None:
            return None
        ceiling = self.opts.rate_ceiling if self.opts.rate_ceiling is not None else self.opts.rate
        rate = self._bucket.rate
        if rate <= 0 or (ceiling and rate >= ceiling):
            return None
        return rate

    async def run(self, source: AsyncIterator[OutgoingMessage]) -> None:
        """Send everything ``source`` yields; returns when each message has a
        final result, or raises ``TransportError`` after recording what it can."""
        feeder = asyncio.create_task(self._feed(source))
        first, self._first = self._first, None
        self._spawn(first)
        self._top_up()
        try:
            while self._workers:
                done, _ = await asyncio.wait(set(self._workers), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self._workers.discard(task)
                    task.result()  # a worker's bug is the run's error
                if not self._workers and not self._finished and self._fatal is None:
                    self._top_up()  # every connection retired: one carries on
        except BaseException:
            self.stop()
            for task in self._workers:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
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
        self._finals += 1
        self._capacity.release()
        self._wakeup.set()

    @property
    def _finished(self) -> bool:
        if self._stopping:
            return True
        return self._feeding_done and self._outstanding == 0

    def _left(self) -> int:
        """Messages that may still need a connection."""
        if self._feeding_done:
            return self._outstanding
        if self.opts.expected is None:
            return 1 << 30
        return max(self._outstanding, self.opts.expected - self._finals)

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
                if self._bucket.rate > 0:
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
            # under the envelope pipelined behind another message, or the
            # session had reached the relay's limit).
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
    def _spawn(self, conn: SmtpConnection | None = None) -> None:
        self._alive += 1
        self._workers.add(asyncio.create_task(self._worker(conn)))

    def _wanted(self) -> int:
        """Connections worth having now: the limit, and no more than messages left."""
        return max(1, min(self.limit, self._left()))

    def _top_up(self) -> None:
        """Start workers until there are as many as connections are wanted."""
        if self._stopping or self._fatal is not None:
            return
        while self._alive < self._wanted():
            self._spawn()

    def _setup_done(self, conn: SmtpConnection | None) -> None:
        self._opening -= 1
        if conn is not None:
            self._working += 1
            self.max_working = max(self.max_working, self._working)
            self._down_since = None
            if not self.extensions:
                self.extensions = dict(conn.extensions)
        self._setup_changed.set()

    def _lost(self) -> None:
        """A working connection ended."""
        self._working -= 1
        self._setup_changed.set()

    async def _connect(self) -> SmtpConnection | None:
        """A working connection, or None when this slot should close instead
        (the relay refused it while others work, or another slot already
        retries). Raises ``TransportError`` when nothing could be kept for
        ``retry_window``, or at once for a fault no waiting fixes."""
        p = self.opts.params
        attempt = 0
        while True:
            if self._stopping:
                return None
            wait = self._backoff_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            conn = SmtpConnection(p, self._tls)
            self._opening += 1
            try:
                await conn.open()
            except (SmtpFatal, SmtpConnectFailed) as exc:
                self._setup_done(None)
                # How many others work decides what a refusal means: wait
                # for the ones being set up at the same moment.
                while self._opening > 0 and not self._stopping:
                    self._setup_changed.clear()
                    await self._setup_changed.wait()
                if self._working > 0:
                    self._refused(exc)
                    return None
                if isinstance(exc, SmtpFatal):
                    raise TransportError(str(exc), hint="check [smtp] in mailcli.toml; a rerun resumes") from None
                me = asyncio.current_task()
                if self._retrier is not None and self._retrier is not me and not self._retrier.done():
                    return None  # one slot retries; the others come back when it works
                self._retrier = me
                now = time.monotonic()
                if self._down_since is None:
                    self._down_since = now
                    self._notice(f"{exc}; trying again for up to {self.opts.retry_window:g} s ([smtp] retry_window)")
                left = self._down_since + self.opts.retry_window - now
                if left <= 0:
                    raise TransportError(
                        f"{exc}; no connection to {p.where} could be kept for {self.opts.retry_window:g} s"
                        " ([smtp] retry_window)",
                        hint="state saved; when the server takes connections again, rerun the same command",
                    ) from None
                attempt += 1
                delay = min(self.opts.backoff_max, self.opts.connect_backoff * 2 ** (attempt - 1))
                await asyncio.sleep(min(left, delay * (0.5 + random.random() / 2)))
                continue
            if self._retrier is asyncio.current_task():
                self._retrier = None
            self._setup_done(conn)
            return conn

    def _refused(self, exc: BaseException, *, others: int | None = None) -> None:
        """The relay refused one more connection while ``others`` work: that
        is its limit for now (Postfix's concurrency feedback, in one step)."""
        working = self._working if others is None else others
        reply = getattr(exc, "reply", None)
        new = max(1, working)
        lowered = new < self.limit
        if lowered:
            self.limit = new
        self.limit_found = self.limit
        self.limit_reply = str(reply) if reply is not None else str(exc)
        self._calm = 0
        if lowered:  # the slots refused at the same moment say it once
            self._notice(f"{self.opts.params.where} refused connection {working + 1} ({self.limit_reply});"
                         f" going on with {self.limit}")

    def _accepted_one(self, conn: SmtpConnection) -> None:
        """A message was accepted: count it, and after a calm stretch ask for more."""
        conn.delivered += 1
        self._accepted.append(time.monotonic())
        self._calm += 1
        if self._calm < self.opts.probe_after:
            return
        self._calm = 0
        if self.limit < self.opts.concurrency and self._left() > self._alive:
            self.limit += 1
            self._top_up()
        rate = self._bucket.rate
        if rate > 0 and (self.rate_found is not None or self.opts.rate_ceiling is not None):
            ceiling = self.opts.rate_ceiling if self.opts.rate_ceiling is not None else self.opts.rate
            raised = rate * 1.25
            if ceiling and raised >= ceiling:
                raised = ceiling
            elif not ceiling and raised > 1000:
                raised = 0.0  # far beyond any relay's limit: unlimited again
            self._bucket.set_rate(raised)

    def _slow_down(self, reply: Reply) -> None:
        """The relay says mail comes too fast: halve the rate (once a second at most)."""
        now = time.monotonic()
        if now - self._last_slowdown < 1.0:
            return
        self._last_slowdown = now
        # What the relay took lately, over at least a second: a burst that
        # it accepted all at once says nothing about a rate per second.
        recent = [t for t in self._accepted if now - t <= 10.0]
        observed = len(recent) / max(1.0, now - recent[0]) if recent else 0.0
        current = self._bucket.rate if self._bucket.rate > 0 else observed or 2.0
        if observed:
            current = min(current, observed)
        new = max(MIN_RATE, current / 2)
        self._bucket.set_rate(new)
        self.rate_found = new
        self.rate_reply = str(reply)
        self._calm = 0
        self._notice(f"{self.opts.params.where} asks to slow down ({reply}); now {new:.2f} message(s)/s")

    async def _close(self, conn: SmtpConnection, *, polite: bool) -> None:
        if polite:
            await conn.quit()
        else:
            conn.abort()
        self._lost()

    async def _worker(self, conn: SmtpConnection | None = None) -> None:
        try:
            while not self._finished and self._fatal is None:
                if conn is None:
                    if self._alive > self._wanted():
                        return  # more slots than the relay takes or messages are left
                    try:
                        conn = await self._connect()
                    except TransportError as exc:
                        self._fatal = self._fatal or exc
                        self.stop()
                        return
                    if conn is None:
                        return
                    self._top_up()
                msg = await self._take()
                if msg is None:
                    break
                holding: list[OutgoingMessage] = [msg]
                try:
                    await self._session(conn, holding)
                except (SmtpProtocolError, OSError) as exc:
                    # Safety net: a message this connection held without a
                    # result goes back for another try, never silently lost.
                    # Looked at before anything awaits: a message requeued
                    # already may be taken by another connection meanwhile.
                    unsettled = [held for held in holding if not held.settled]
                    for held in unsettled:
                        await self._retry(held, f"connection error: {exc}")
                    # _Reconnect / _Retire: the relay asked for it, say goodbye.
                    await self._close(conn, polite=isinstance(exc, (_Reconnect, _Retire)))
                    conn = None
                    if isinstance(exc, _Retire):
                        return
        finally:
            self._alive -= 1
            if conn is not None:
                await self._close(conn, polite=True)
            self._wakeup.set()

    async def _session(self, conn: SmtpConnection, holding: list[OutgoingMessage]) -> None:
        """Run transactions on one connection until it has nothing to do.

        ``holding`` lists every message taken, so the caller can requeue any
        left without a result if the connection breaks.
        """
        pipelining = "PIPELINING" in conn.extensions
        msg: OutgoingMessage | None = holding[0]
        envelope_written = False
        while msg is not None:
            # A pipelined envelope was prechecked right before it was written.
            precheck = None if envelope_written else self._precheck(conn, msg)
            if precheck is not None:
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
                # a 421 among the replies means "back off" (C06) unless it
                # says why in a way that asks for something else.
                got = exc.replies if isinstance(exc, PartialReplies) else []
                closing = next((r for r in got if r.code == 421), None)
                if closing is not None:
                    await self._answer(conn, msg, closing)  # records msg; always raises for a 421
                await self._retry(msg, f"connection lost before data: {exc}")
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
                await self._answer(conn, msg, failed)
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
            withdrawn = self.hooks.withdrawn(msg)
            if withdrawn is not None:
                # Withdrawn since its envelope went out: close the connection
                # without the final dot, so the server discards the transaction.
                await self._final(msg, withdrawn)
                raise SmtpProtocolError("transaction abandoned before the final dot: the message was withdrawn")
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
                    await self._final(msg, Result(Status.UNCERTAIN, f"{LOST_AFTER_DOT} ({exc})"))
                if nxt is not None:
                    await self._retry(nxt, "connection lost", counted=False)
                raise
            try:
                await self._answer(conn, msg, end)
            except SmtpProtocolError:
                if nxt is not None:
                    await self._retry(nxt, str(end), counted=False)
                raise
            if nxt is not None:
                msg, envelope_written = nxt, True
            else:
                msg, envelope_written = self._take_nowait(), False
                if msg is not None:
                    _hold(holding, msg)

    def _precheck(self, conn: SmtpConnection, msg: OutgoingMessage) -> Result | None:
        """Failures known before any byte is sent (A21 SIZE, A13 SMTPUTF8), and
        a message the engine withdrew; called right before its MAIL FROM."""
        size = conn.extensions.get("SIZE", "")
        if size.isdigit() and int(size) > 0 and len(msg.data) > int(size):
            return Result(Status.FAILED, f"message is {len(msg.data)} bytes; {conn.params.where} accepts at most {size}")
        if not (msg.rcpt_to.isascii() and msg.mail_from.isascii()) and "SMTPUTF8" not in conn.extensions:
            return Result(
                Status.FAILED,
                f"the address has a non-ASCII local part, which needs SMTPUTF8 (RFC 6531), and {conn.params.where}"
                " does not offer it; later campaigns through this relay skip the address until it does",
                needs_smtputf8=True,
            )
        return self.hooks.withdrawn(msg)

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

    async def _answer(self, conn: SmtpConnection, msg: OutgoingMessage, reply: Reply) -> None:
        """Record the server's answer about ``msg`` and what it says about the relay.

        Raises to end the session when the relay asks for that: ``_Reconnect``
        (this session has carried its share), ``_Retire`` (too many
        connections: one fewer from now on) or ``ConnectionDropped`` (421).
        """
        kind = reply_kind(reply) if not reply.positive else None
        if kind == "quota":
            # Nothing more goes through today: this one waits with the rest.
            await self._final(msg, Result(Status.DEFERRED, str(reply)))
            if self.quota_reply is None:
                self.quota_reply = str(reply)
                self._notice(f"{self.opts.params.where} says the sending quota is used up ({reply});"
                             " stopping, the rest stays for a later run")
            self.stop()
            if reply.code == 421:
                raise ConnectionDropped(f"server closing: {reply}")
            return
        if kind == "session" and conn.delivered > 0:
            # Not the message's fault: it goes first on a fresh session.
            await self._retry(msg, str(reply), counted=False)
            raise _Reconnect(str(reply))
        if kind == "connections" and self._working > 1:
            await self._retry(msg, str(reply), counted=False)
            self._refused(SmtpConnectFailed(str(reply), reply), others=self._working - 1)
            raise _Retire(str(reply))
        if kind in ("rate", "session") and reply.transient:
            # "Too many recipients" on a fresh session is a rate, not a session limit.
            self._slow_down(reply)
            await self._retry(msg, str(reply))
            if reply.code == 421:
                raise ConnectionDropped(f"server closing: {reply}")
            return
        await self._outcome(msg, reply, conn)
        if reply.code == 421:
            raise ConnectionDropped(f"server closing: {reply}")

    async def _outcome(self, msg: OutgoingMessage, reply: Reply, conn: SmtpConnection) -> None:
        result = classify(reply)
        if result.status is Status.RETRY:
            if reply.code == 421:
                self._host_backoff()
            await self._retry(msg, result.reply)
        else:
            if result.status is Status.SENT:
                self._accepted_one(conn)
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
    withdraw: Callable[[OutgoingMessage], Result | None] | None = None

    def before_dot(self, msg: OutgoingMessage) -> Awaitable[None]:
        return self.before(msg) if self.before is not None else _done()

    async def on_result(self, msg: OutgoingMessage, result: Result) -> None:
        self.results.append((msg.key, result))

    def withdrawn(self, msg: OutgoingMessage) -> Result | None:
        return self.withdraw(msg) if self.withdraw is not None else None
