"""Writing a running send's ledger: group commit on a connection and thread
of its own, and the transport's hooks that feed it.

Durability (why "exactly once" holds, docs/guarantees.md#crash-safety):
after the server's 354 the transport awaits the ``sending`` mark
(``LedgerHooks.before_dot``) and writes the message and its final dot only
once the row is committed *and fsynced*. Results are queued and committed in
the next batch, together with the next ``sending`` marks, so one fsync
covers every connection's pending work (group commit) and the event loop
never waits on the disk. Hence at any moment each connection has at most one
row in ``sending``, and a crash — even a power cut — leaves at most
``concurrency`` uncertain messages.

On a PostgreSQL campaign shared with other senders the writer also renews
this run's leases (``store.leases``), and its transactions take turns with
the other senders' (an advisory lock per campaign), so their group commits
never deadlock each other; a batch the server breaks off to end a deadlock
with another command is written again.

The ``sending`` mark is taken only from a status this run may send: a row
another run marked or finished, or one erased meanwhile, is not transmitted
(``store.deliveries``). A result that arrives for a row erasure or purge
deleted under the run corrects the campaign's archived totals instead, so
``sent`` in the report stays what the server accepted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from mailcli import clock
from mailcli.config import Settings
from mailcli.locks import LockedError
from mailcli.send import ledger
from mailcli.send.outgoing import OutgoingMessage, Result, Status
from mailcli.send.results import ProgressFn, SendSummary, masked_problem
from mailcli.send.watch import OptoutWatch
from mailcli.store import Store
from mailcli.store.claims import HEARTBEAT_EVERY, refresh_claim
from mailcli.store.db import StoreConflictError
from mailcli.store.deliveries import (
    durable_connection,
    mark_and_record,
    mark_sending,
    record_result,
    record_skip,
)
from mailcli.store.leases import bound_idle_transactions, lock_campaign, renew
from mailcli.store.optouts import GONE
from mailcli.store.relays import mark_needs_smtputf8

# How often a batch the server broke off for a deadlock is tried again.
_CONFLICT_RETRIES = 5


class LedgerWriter:
    """Applies delivery updates in batches, one fsynced transaction each.

    A thread of its own waits for work and commits everything queued since
    its last commit (group commit); the event loop only appends to a list and
    learns of each commit through ``call_soon_threadsafe``. Before the dot of
    every message a connection waits for its ``sending`` mark to be on disk,
    so this round trip bounds each connection's rate: going through an
    executor and a coroutine cost two extra turns of the loop per commit.
    """

    def __init__(self, store: Store, settings: Settings, campaign: ledger.Campaign, *,
                 statuses: tuple[str, ...] = ledger.SENDABLE, claim: tuple[str, str] | None = None,
                 lease: tuple[int, float] | None = None) -> None:
        self._conn = durable_connection(store.url if store.url is not None else store.path)
        self._store = Store(path=store.path, conn=self._conn, url=store.url, timeout=store.timeout)
        self._store.wait_natively()  # nobody presses Ctrl-C in this thread
        self._settings = settings
        self._campaign = campaign
        self._statuses = statuses  # what this run may mark 'sending'
        self._claim = claim  # (name, owner): refreshed every HEARTBEAT_EVERY seconds
        # (run number, seconds): this run's leases on a shared campaign
        # (PostgreSQL, ``store.leases``), renewed three times per lease.
        self._lease = lease
        if lease is not None:
            bound_idle_transactions(self._conn, lease[1])
        self._beat_every: float | None = (lease[1] / 3 if lease is not None
                                          else HEARTBEAT_EVERY if claim is not None else None)
        self._marked: set[int] = set()  # deliveries whose 'sending' mark is this run's (writer thread only)
        # Deliveries whose 'sending' mark found the row gone or taken by
        # another run; written before the mark's waiter is woken.
        self.outcomes: dict[int, str] = {}
        self._ops: list[tuple[Any, ...]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="mailcli-ledger", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.error: BaseException | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def submit(self, op: tuple[Any, ...], *, wait: bool = False) -> asyncio.Future[None] | None:
        assert self._loop is not None
        fut: asyncio.Future[None] | None = self._loop.create_future() if wait else None
        with self._cond:
            if self.error is not None:
                raise self.error
            self._ops.append(op)
            if fut is not None:
                self._waiters.append(fut)
            self._cond.notify()
        return fut

    # Complexity: the ledger thread's loop: group commit, waits for durability and errors, inline.
    def _work(self) -> None:
        assert self._loop is not None
        last_beat = time.monotonic()
        while True:
            with self._cond:
                while not self._ops and not self._closed:
                    if self._beat_every is None:
                        self._cond.wait()
                        continue
                    left = self._beat_every - (time.monotonic() - last_beat)
                    if left > 0:
                        self._cond.wait(left)
                        continue
                    break  # time for a heartbeat
                if not self._ops and self._closed:
                    return
                ops, self._ops = self._ops, []
                waiters, self._waiters = self._waiters, []
            beat = self._beat_every is not None and time.monotonic() - last_beat >= self._beat_every
            if beat:
                last_beat = time.monotonic()
            try:
                self._apply(ops, beat=beat)
            except BaseException as exc:  # a full disk, a locked database...
                with self._cond:  # later submits raise; fail the ones queued meanwhile too
                    self.error = exc
                    waiters += self._waiters
                    self._ops, self._waiters = [], []
                self._resolve_soon(waiters, exc)
                return
            self._resolve_soon(waiters, None)

    def _resolve_soon(self, waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
        if not waiters:
            return
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_resolve, waiters, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _apply(self, ops: list[tuple[Any, ...]], *, beat: bool = False) -> None:
        for attempt in range(_CONFLICT_RETRIES):
            marked, outcomes = set(self._marked), dict(self.outcomes)
            try:
                bounces, lost = self._commit(ops, beat=beat)
                break
            except StoreConflictError:
                # The server rolled the batch back to break a deadlock with
                # another transaction (an erasure, say): write it all again.
                self._marked, self.outcomes = marked, outcomes
                if attempt == _CONFLICT_RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        for contact_id, status in bounces:
            # 5.1.x: the address does not exist. Suppress it from all mail
            # through the one place that records bounces (its own transaction).
            from mailcli.feedback.actions import record_bounce

            record_bounce(self._store, self._settings, contact_id, hard=True, campaign_id=self._campaign.id,
                          status=status, command="send")
        if lost:
            # Its heartbeat stopped long enough (a suspended process) for
            # another run to take the campaign over: stop sending now.
            raise LockedError(f"Campaign {self._campaign.name!r} was taken over by another process; this run stopped",
                              hint=f"see mailcli report {self._campaign.name}")

    # Complexity: one branch per kind of ledger operation (sending mark, result, skip, bounce, SMTPUTF8 mark), all in one group commit.
    def _commit(self, ops: list[tuple[Any, ...]], *, beat: bool) -> tuple[list[tuple[int, str]], bool]:
        """Write ``ops`` in one transaction; the hard bounces to record after
        it, and whether the campaign's claim was found taken over."""
        now = clock.now_iso()
        if not beat and self._one_statement(ops, now):
            return [], False
        campaign_id = self._campaign.id
        bounces: list[tuple[int, str]] = []
        lost = False
        with self._store.transaction() as conn:
            if self._lease is not None:
                lock_campaign(conn, self._campaign.uid)  # senders of the campaign write one at a time
            for op in ops:
                kind = op[0]
                if kind == "sending":
                    outcome = mark_sending(conn, op[1], self._statuses, now,
                                           lease=self._lease[1] if self._lease is not None else None)
                    if outcome == "ok":
                        self._marked.add(op[1])
                    else:
                        self.outcomes[op[1]] = outcome
                elif kind == "result":
                    _, delivery_id, status, reply = op
                    record_result(conn, campaign_id, delivery_id, status, reply, now,
                                  was_sending=delivery_id in self._marked)
                    self._marked.discard(delivery_id)
                elif kind == "skip":
                    _, delivery_id, reason = op
                    record_skip(conn, campaign_id, delivery_id, reason, now, self._statuses,
                                was_sending=delivery_id in self._marked)
                    self._marked.discard(delivery_id)
                elif kind == "bounce":
                    bounces.append((op[1], op[2]))
                elif kind == "needs_smtputf8":
                    _, contact_id, relay = op
                    mark_needs_smtputf8(conn, contact_id, self._campaign.id, relay)
            if beat and self._claim is not None:
                lost = not refresh_claim(conn, *self._claim)
            if beat and self._lease is not None:
                renew(conn, campaign_id, self._lease[0], self._lease[1])
        return bounces, lost

    def _one_statement(self, ops: list[tuple[Any, ...]], now: str) -> bool:
        """The usual group commit — marks and results, each delivery once —
        written as one statement (``store.deliveries.mark_and_record``);
        False when it was not, and the operations are to be written one by one."""
        split = _marks_and_results(ops) if self._store.url is None and self._lease is None else None
        if split is None:
            return False
        marks, results = split
        if not self._store.wait_for("write", lambda: mark_and_record(self._conn, marks, results, self._statuses, now)):
            return False
        self._marked.update(marks)
        self._marked.difference_update(r[0] for r in results)
        return True

    async def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._store.close()
        if self.error is not None:
            raise self.error


def _marks_and_results(ops: list[tuple[Any, ...]]) -> tuple[list[int], list[tuple[int, str, str]]] | None:
    """The marks and results of a batch that has nothing else, and no
    delivery twice (nor a reply with a NUL, which SQLite's JSON cuts short)."""
    marks: list[int] = []
    results: list[tuple[int, str, str]] = []
    for op in ops:
        if op[0] == "sending":
            marks.append(op[1])
        elif op[0] == "result" and "\0" not in op[3]:
            results.append((op[1], op[2], op[3]))
        else:
            return None
    if len({*marks, *(r[0] for r in results)}) != len(ops):
        return None
    return marks, results


def _resolve(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for w in waiters:
        if not w.done():
            if error is None:
                w.set_result(None)
            else:
                w.set_exception(error)


class LedgerHooks:
    """The transport's hooks (``DeliveryHooks``), bound to the ledger writer,
    the opt-out watch and the summary."""

    def __init__(self, writer: LedgerWriter, summary: SendSummary, contacts: dict[int, ledger.Recipient],
                 progress: ProgressFn | None, watch: OptoutWatch, relay: str = "") -> None:
        self.writer = writer
        self.summary = summary
        self.contacts = contacts  # delivery id -> recipient (only while in flight)
        self.progress = progress
        self.relay = relay
        self.watch = watch
        self.foreign: set[int] = set()  # deliveries another run had marked: never written by this one

    def before_dot(self, msg: OutgoingMessage) -> asyncio.Future[None]:
        fut = self.writer.submit(("sending", msg.key), wait=True)
        assert fut is not None
        return fut

    def withdrawn(self, msg: OutgoingMessage) -> Result | None:
        outcome = self.writer.outcomes.pop(msg.key, None)
        if outcome == "taken":
            self.foreign.add(msg.key)
            return Result(Status.SKIPPED, "being sent by another run")
        if outcome == "gone":
            return Result(Status.SKIPPED, GONE)
        reason = self.watch.reason(msg.key)
        return Result(Status.SKIPPED, reason) if reason is not None else None

    async def on_result(self, msg: OutgoingMessage, result: Result) -> None:
        s = self.summary
        if result.status is Status.RETRY:
            # Back to pending: after a 4xx at end of data it was 'sending'.
            self.writer.submit(("result", msg.key, "pending", result.reply))
            return
        r = self.contacts.pop(msg.key, None)
        self.watch.forget(msg.key)
        if result.status is Status.SKIPPED:
            if msg.key in self.foreign:
                self.foreign.discard(msg.key)  # the other run records it
            else:
                self.writer.submit(("skip", msg.key, result.reply))
                s.skipped += 1
        else:
            self.writer.submit(("result", msg.key, result.status.value, result.reply))
            s.attempted += 1
            if result.status is Status.SENT:
                s.sent += 1
            elif result.status is Status.FAILED:
                self._failed(msg, result, r.contact_id if r is not None else None)
            elif result.status is Status.DEFERRED:
                s.deferred += 1
            elif result.status is Status.UNCERTAIN:
                s.uncertain += 1
        if self.progress is not None:
            self.progress(s)

    def _failed(self, msg: OutgoingMessage, result: Result, contact_id: int | None) -> None:
        s = self.summary
        s.failed += 1
        if len(s.problems) < 5:
            s.problems.append(masked_problem(msg.rcpt_to, result.reply))
        if contact_id is None:
            return
        if result.hard_bounce:
            code = result.reply.split(" ")[1] if " " in result.reply else None
            self.writer.submit(("bounce", contact_id, code))
        if result.needs_smtputf8:
            # Later campaigns through this relay skip the address (ledger.iter_sendable).
            self.writer.submit(("needs_smtputf8", contact_id, self.relay))
