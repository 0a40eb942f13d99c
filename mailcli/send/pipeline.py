"""The messages of a running send, rendered just in time, in ledger order.

Recipients come a page at a time from the ledger, each checked as its page
is read; skipped ones and per-contact failures (a name with a line break, a
render error) are recorded here and never reach the transport. With a pool
of render workers, batches of 16 are rendered a little ahead (three per
worker) so the event loop mostly does SMTP and bookkeeping; when the
connections want a message and no batch is back yet (the workers are
starting, or slower than the connections), this process renders the next
recipient itself, so neither core waits for the other. Workers that compiled
another version of the template than this process checked (it was saved as
the run started) are given nothing more: this process renders the rest.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

from mailcli.send import ledger
from mailcli.send.message import MessageFactory, envelope_rcpt
from mailcli.send.outgoing import OutgoingMessage
from mailcli.send.pool import TemplateChanged
from mailcli.send.results import ProgressFn, SendSummary
from mailcli.send.watch import OptoutWatch
from mailcli.send.writer import LedgerWriter

BATCH = 16  # recipients per batch sent to a render worker
CLAIM_POLL = 0.5  # seconds between looks for deliveries other senders let go of


class RenderAhead:
    """Recipients with their wire bytes, dot-stuffed (see the module docstring)."""

    def __init__(self, factory: MessageFactory, writer: LedgerWriter, summary: SendSummary, transport: Any,
                 progress: ProgressFn | None, watch: OptoutWatch, *, pool: Any = None,
                 samples: list[tuple[Any, ...]] | None = None, limit: int | None = None,
                 links: dict[str, int] | None = None) -> None:
        self.factory = factory
        self.writer = writer
        self.summary = summary
        self.transport = transport
        self.progress = progress
        self.watch = watch
        self.pool = pool
        self.samples = samples or []
        self.links = links  # tracked links, for the render workers' factories
        self.limit = limit
        self.inflight: deque[tuple[Any, list[ledger.Recipient]]] = deque()
        self.batch: list[ledger.Recipient] = []
        self.ahead = 3 * (pool.workers if pool is not None else 1)

    # Complexity: the render loop of a send: each outcome of a render (message, failure, withdrawn) inline.
    async def built(self, pages: Iterator[list[ledger.Recipient]]) -> AsyncIterator[tuple[ledger.Recipient, bytes]]:
        """(recipient, wire bytes) for every recipient of ``pages`` still to send."""
        for r in self._recipients(pages):
            if r is None:
                # Nothing to claim now; other senders still hold pending
                # deliveries. Hand out everything of ours first (they may be
                # waiting for it in turn), then look again in a moment.
                async for item in self._drain():
                    yield item
                await asyncio.sleep(CLAIM_POLL)
                continue
            if self.pool is not None and len(self.inflight) >= self.ahead:
                await self._wait_for_workers()
            while self.inflight and self.inflight[0][0].done():
                for item in await self._collect():
                    yield item
            if self.pool is None or len(self.inflight) >= self.ahead:
                data = self._build_here(r)
                if data is not None:
                    yield r, data
                await asyncio.sleep(0)  # let replies and the ledger run between renders
                continue
            self.batch.append(r)
            if len(self.batch) >= BATCH:
                self._submit()
        async for item in self._drain():
            yield item

    async def _drain(self) -> AsyncIterator[tuple[ledger.Recipient, bytes]]:
        """What the workers still render once every recipient was handed out."""
        if self.batch and not self.transport.stopping:
            self._submit()
        while self.inflight:
            if self.transport.stopping:
                # Rendered but never handed over: they stay pending for the rerun.
                self.inflight.popleft()[0].cancel()
                continue
            for item in await self._collect():
                yield item

    def _recipients(self, pages: Iterator[list[ledger.Recipient]]) -> Iterator[ledger.Recipient | None]:
        """The recipients to build, until ``--limit`` or a stop; skipped ones
        are recorded. The opt-out counter is noted before each page is read,
        so an opt-out committed after it is seen. An empty page (a sender
        sharing the campaign that finds nothing to claim yet) comes out as
        None."""
        handed = 0
        while True:
            mark = self.watch.mark()
            page = next(pages, None)
            if page is None or self._enough(handed):
                return
            if not page:
                yield None
            for r in page:
                if self._enough(handed):
                    return
                if r.skip_reason:
                    self._skip(r)
                    continue
                self.watch.note(r.delivery_id, mark)
                handed += 1
                yield r

    def _enough(self, handed: int) -> bool:
        """Stop handing out recipients: the run is stopping, or ``--limit`` is reached."""
        return self.transport.stopping or (self.limit is not None and handed >= self.limit)

    def _skip(self, r: ledger.Recipient) -> None:
        assert r.skip_reason is not None
        self.writer.submit(("skip", r.delivery_id, r.skip_reason))
        self.summary.skipped += 1
        if r.skip_reason.startswith(ledger.SKIP_SMTPUTF8):
            self.summary.skipped_smtputf8 += 1

    async def _wait_for_workers(self) -> None:
        """The workers have enough to do: wait for their oldest batch, unless
        the connections run dry first; then the next recipient is rendered
        here (the check costs a wake-up every 2 ms)."""
        while not self.inflight[0][0].done() and not self.transport.hungry:
            await asyncio.wait((self.inflight[0][0],), timeout=0.002)

    def _fail(self, r: ledger.Recipient, problem: Exception | tuple[str, bool]) -> None:
        """A message that could not be built: the exception, or a render
        worker's description of it (text, and whether the template caused it)."""
        summary = self.summary
        self.watch.forget(r.delivery_id)
        if isinstance(problem, Exception):
            reason = summary.note_failure(r.email, problem)
        else:
            reason, template = problem
            summary.note_problem(r.email, reason, template=template)
        self.writer.submit(("result", r.delivery_id, "failed", reason))
        summary.failed += 1
        summary.attempted += 1
        if self.progress is not None:
            self.progress(summary)

    def _build_here(self, r: ledger.Recipient) -> bytes | None:
        try:
            return self.factory.wire(r)
        except Exception as exc:  # one contact's data: fail that delivery, go on
            self._fail(r, exc)
            return None

    async def _collect(self) -> list[tuple[ledger.Recipient, bytes]]:
        fut, rs = self.inflight.popleft()
        try:
            results = await fut
        except TemplateChanged:
            # The workers render another version of the template: this
            # process renders their batches, the one being filled and the rest.
            self.pool = None
            rs, self.batch = rs + self.batch, []
            return [(r, data) for r in rs if (data := self._build_here(r)) is not None]
        ready = []
        for r, (data, problem) in zip(rs, results, strict=True):
            if data is None:
                self._fail(r, problem or ("could not build the message", False))
            else:
                ready.append((r, data))
        return ready

    def _submit(self) -> None:
        batch, self.batch = self.batch, []
        future = self.pool.submit("build", [x.as_tuple() for x in batch], self.samples, self.links,
                                  self.factory.eightbit)
        self.inflight.append((future, batch))


async def outgoing(source: AsyncIterator[tuple[ledger.Recipient, bytes]], factory: MessageFactory,
                   summary: SendSummary, contacts: dict[int, ledger.Recipient]) -> AsyncIterator[OutgoingMessage]:
    """Built (and dot-stuffed) messages as the transport's OutgoingMessage."""
    async for r, data in source:
        summary.rendered += 1
        contacts[r.delivery_id] = r
        yield OutgoingMessage(key=r.delivery_id, mail_from=factory.return_path(r), rcpt_to=envelope_rcpt(r.email),
                              data=data, stuffed=True)
