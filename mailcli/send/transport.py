"""The SMTP transport: a pool of persistent connections that delivers a
stream of messages and reports, per message, exactly what happened.

What it owns (and why it is here rather than in the engine):

* up to ``concurrency`` persistent connections, adapted to what the relay
  accepts (``connections.py``); after ``probe_after`` calm messages one more
  is tried. No more connections are opened than messages are left.
* a token-bucket ``rate`` shared by all connections, halved (once per round
  trip) when the relay answers that mail comes too fast and raised again
  after calm stretches
  (``pacing.py``), and an optional per-recipient-domain cap on messages in
  flight.
* a per-session limit ("452 4.5.3 too many recipients", "421 too many
  messages") ends that session: the message goes to a new connection,
  without counting as a failed attempt.
* a sending quota used up for the day ("Daily message quota exceeded")
  stops the run: that message is deferred and the rest stay pending for a
  later run, instead of all failing as if their addresses were wrong.
* retries with exponential backoff and jitter inside ``retry_window``; after
  that the message is reported ``deferred`` for the next run.

Each connection runs its transactions in a ``session.Session``: the SMTP
steps, pipelining, and what each reply means. The messages, results and the
engine's hooks are in ``outgoing.py``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from mailcli.errors import TransportError
from mailcli.net import tls_context
from mailcli.send.connections import Connections
from mailcli.send.outgoing import DeliveryHooks, OutgoingMessage, Result, Status
from mailcli.send.pacing import RECOVER_EVERY, Pace, rate_floor
from mailcli.send.replies import Reply, SmtpProtocolError
from mailcli.send.session import Reconnect, Retire, Session
from mailcli.send.smtp import ConnectParams, SmtpConnection


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


class SmtpTransport:
    """Delivers a stream of messages over a pool of connections."""

    def __init__(self, options: TransportOptions, hooks: DeliveryHooks, *,
                 notice: Callable[[str], None] | None = None) -> None:
        self.opts = options
        self.hooks = hooks
        # What a person watching should know as it happens (the relay pushed back).
        self._notice = notice or (lambda text: None)
        p = options.params
        tls = tls_context(p.ca_file) if p.security in ("tls", "starttls") else None
        configured = options.rate if options.rate_ceiling is None else options.rate_ceiling
        floor = rate_floor(configured, max(1, options.concurrency) * options.queue_per_connection,
                           options.retry_window)
        self.pace = Pace(options.rate, ceiling=options.rate_ceiling, probe_after=options.probe_after,
                         backoff_base=options.backoff_base, floor=floor)
        self.connections = Connections(options, tls, self.pace, self._notice, lambda: self._stopping)
        self._ready: deque[OutgoingMessage] = deque()
        self._wakeup = asyncio.Event()
        self._capacity = asyncio.Semaphore(max(1, options.concurrency) * options.queue_per_connection)
        self._outstanding = 0
        self._feeding_done = False
        self._stopping = False
        self._fatal: TransportError | None = None
        self._domain_busy: dict[str, int] = {}
        self._retry_handles: dict[int, tuple[asyncio.TimerHandle, OutgoingMessage, Result]] = {}
        self._first: SmtpConnection | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._alive = 0
        self._finals = 0
        self.quota_reply: str | None = None  # the relay said the day's allowance is used up
        self.awaiting_dot = 0  # messages whose final dot went out, their reply not read yet
        self._abandoned = False  # stopped now: in-flight transactions were cut off

    # -- public ----------------------------------------------------------------
    async def open(self) -> None:
        """Open the first connection now, so an unreachable server, a bad
        certificate or a wrong password stop the run before anything is sent.

        A server that refuses or cannot be reached is tried again with
        backoff for ``retry_window`` before ``TransportError`` is raised."""
        self._say_remembered_rate()
        self._first = await self.connections.connect()

    def _say_remembered_rate(self) -> None:
        """Once, before anything is sent: this run starts slower than
        configured because an earlier run was held to a lower rate."""
        pace = self.pace
        if not pace.remembered:
            return
        configured = f"{pace.configured:.2f}" if pace.configured > 0 else "unlimited"
        self._notice(f"{self.opts.params.where}: starting at {pace.bucket.rate:.2f} message(s)/s, not the configured"
                     f" {configured}, because an earlier run was held to that; it rises by a quarter every"
                     f" {RECOVER_EVERY:g} s without a slow-down reply, a remembered rate doubles with every hour"
                     " of age, and a run that reaches the configured rate forgets it")

    def stop(self) -> None:
        """Stop taking new messages; in-flight transactions finish (SIGINT/SIGTERM)."""
        self._stopping = True
        self._wakeup.set()
        self.connections.wake()

    def stop_now(self) -> None:
        """Stop at once (a second SIGINT/SIGTERM): cut every transaction off;
        a message whose final dot went out is recorded uncertain."""
        self._abandoned = True
        self.stop()
        for task in self._workers:
            task.cancel()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def hungry(self) -> bool:
        """Fewer messages are ready than there are connections to take them."""
        return len(self._ready) < max(1, self.connections.limit)

    @property
    def extensions(self) -> dict[str, str]:
        """What the first connection's EHLO offered."""
        return self.connections.extensions

    @property
    def working(self) -> int:
        """Connections open and working now."""
        return self.connections.working

    # Complexity: the transport's main loop: each way a connection ends, the retry window and Ctrl-C.
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
                    if not (self._abandoned and task.cancelled()):
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

    def take_nowait(self) -> OutgoingMessage | None:
        """The next message if one is ready and allowed right now (for sessions)."""
        if self._stopping or not self._ready:
            return None
        if self.opts.domain_concurrency > 0:
            for i, msg in enumerate(self._ready):
                if self._domain_busy.get(msg.domain, 0) < self.opts.domain_concurrency:
                    if not self.pace.bucket.try_take():
                        return None
                    del self._ready[i]
                    self._domain_busy[msg.domain] = self._domain_busy.get(msg.domain, 0) + 1
                    return self._handed(msg)
            return None
        if not self.pace.bucket.try_take():
            return None
        return self._handed(self._ready.popleft())

    def _handed(self, msg: OutgoingMessage) -> OutgoingMessage:
        """``msg`` goes to a connection now: held until its result, numbered in hand-out order."""
        msg.settled = False
        msg.pace_seq = self.pace.hand_out()
        return msg

    async def _take(self) -> OutgoingMessage | None:
        """Wait for the next message; None when the run is over."""
        while True:
            if self._finished:
                return None
            if self._ready:
                if self.pace.bucket.rate > 0:
                    await self.pace.bucket.take()
                    self.pace.bucket.tokens += 1  # take_nowait takes it again
                msg = self.take_nowait()
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
    async def final(self, msg: OutgoingMessage, result: Result) -> None:
        """Report a message's final result (for sessions)."""
        msg.settled = True
        self._release_domain(msg)
        await self.hooks.on_result(msg, result)
        self._done_with(msg)

    async def retry(self, msg: OutgoingMessage, reason: str, *, counted: bool = True) -> None:
        """Transient failure: back off and requeue, or give up as deferred (for sessions)."""
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

    # -- what sessions learn about the relay ------------------------------------
    def accepted_one(self, conn: SmtpConnection) -> None:
        """A message was accepted: count it, and after a calm stretch ask for more."""
        conn.delivered += 1
        if self.pace.accepted():
            connections = self.connections
            if connections.limit < self.opts.concurrency and self._left() > self._alive:
                connections.limit += 1
                self._top_up()

    def refused(self, exc: BaseException, *, others: int | None = None) -> None:
        """The relay refused a connection while ``others`` work: its limit for now."""
        self.connections.refused(exc, others=others)

    def slow_down(self, reply: Reply, msg: OutgoingMessage) -> None:
        """The relay says mail comes too fast (in its reply about ``msg``)."""
        new = self.pace.slow_down(reply, msg.pace_seq)
        if new is not None:
            self._notice(f"{self.opts.params.where} asks to slow down ({reply}); now {new:.2f} message(s)/s")

    def quota_used(self, reply: Reply) -> None:
        """The relay says the day's sending quota is used up: stop, the rest waits."""
        if self.quota_reply is None:
            self.quota_reply = str(reply)
            self._notice(f"{self.opts.params.where} says the sending quota is used up ({reply});"
                         " stopping, the rest stays for a later run")
        self.stop()

    # -- connections -----------------------------------------------------------
    def _spawn(self, conn: SmtpConnection | None = None) -> None:
        self._alive += 1
        self._workers.add(asyncio.create_task(self._worker(conn)))

    def _wanted(self) -> int:
        """Connections worth having now: the limit, and no more than messages left."""
        return max(1, min(self.connections.limit, self._left()))

    def _top_up(self) -> None:
        """Start workers until there are as many as connections are wanted."""
        if self._stopping or self._fatal is not None:
            return
        while self._alive < self._wanted():
            self._spawn()

    async def _worker(self, conn: SmtpConnection | None = None) -> None:
        try:
            while not self._finished and self._fatal is None:
                if conn is None:
                    conn = await self._open_slot()
                    if conn is None:
                        return
                msg = await self._take()
                if msg is None:
                    break
                ended = await self._session(conn, msg)
                if ended is not None:
                    conn = None
                    if ended == "retired":
                        return
        finally:
            self._alive -= 1
            if conn is not None:
                # Stopped now: no QUIT, whose reply a stalled relay would not send.
                await self.connections.close(conn, polite=not self._abandoned)
            self._wakeup.set()

    async def _open_slot(self) -> SmtpConnection | None:
        """A connection for this worker, or None when it should end."""
        if self._alive > self._wanted():
            return None  # more slots than the relay takes or messages are left
        try:
            conn = await self.connections.connect()
        except TransportError as exc:
            self._fatal = self._fatal or exc
            self.stop()
            return None
        if conn is not None:
            self._top_up()
        return conn

    async def _session(self, conn: SmtpConnection, msg: OutgoingMessage) -> str | None:
        """Run a session on ``conn`` starting with ``msg``. None when the
        connection is still open; "closed" when it ended, "retired" when its
        slot ends too (the relay wants fewer connections)."""
        holding: list[OutgoingMessage] = [msg]
        try:
            await Session(self, conn, holding).run()
        except (SmtpProtocolError, OSError) as exc:
            # Safety net: a message this connection held without a result
            # goes back for another try, never silently lost. Looked at
            # before anything awaits: a message requeued already may be
            # taken by another connection meanwhile.
            unsettled = [held for held in holding if not held.settled]
            for held in unsettled:
                await self.retry(held, f"connection error: {exc}")
            # Reconnect / Retire: the relay asked for it, say goodbye.
            await self.connections.close(conn, polite=isinstance(exc, (Reconnect, Retire)))
            return "retired" if isinstance(exc, Retire) else "closed"
        return None
