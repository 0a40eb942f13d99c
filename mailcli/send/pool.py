"""Rendering on the other cores: worker processes that turn recipients into
signed wire bytes, returned in order.

Rendering, MIME and DKIM take a little more CPU per message than the SMTP and
ledger work, so on a two-core machine one worker process renders most
messages and the sending process the rest: it renders the next recipient
itself whenever the connections would otherwise wait (``pipeline.RenderAhead``).
Small sends render in-process: below about a thousand messages, starting a
worker costs more than it saves (benchmarks/README.md).

Workers are started with ``spawn`` (no fork of a process that already runs a
writer thread) before the preflight, so they load meanwhile; they ignore
SIGINT (the parent decides when to stop: a Ctrl-C on a terminal reaches the
whole process group) and build their own ``MessageFactory`` from the same
settings and campaign, under the same render limits. They see nothing but the recipients they are given
and hold no database connection. They end when the sending process ends,
even by ``kill -9`` (``lifeline``), or when it closes their pipe.

A worker compiles the template a moment after the sending process did. If a
file of the templates folder was saved in between, the two would render
different versions: a worker whose template is not the one the sending
process checked (``CompiledTemplate.stamp``), or no longer compiles, renders
nothing and answers ``TemplateChanged``, and the sending process renders the
rest of the run itself, from the version its preflight checked.

Each worker has a pipe each way of its own, and the sending process reads the
rendered batches on its event loop (``add_reader``): no thread in between.
``concurrent.futures``' process pool took a management thread and a feeder
thread in the sending process, which competed with the event loop and the
ledger thread for the interpreter on every batch (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import select
import signal
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from mailcli.errors import MailcliError

# Recipient fields sent to a worker, in ledger.Recipient order.
RecipientTuple = tuple[Any, ...]
# What building one message showed: None when it built, else the problem and
# whether the template (not the contact) caused it.
Problem = tuple[str, bool] | None
CHECK_BATCH = 64  # recipients per batch of a dry run

_FACTORY: Any = None
_INIT_ERROR: BaseException | None = None
_VERIFIED = False


def _init(parent: int, settings: Any, campaign: Any, sign: bool, stamp: bytes | None,
          limits: tuple[float, float]) -> None:
    global _FACTORY, _INIT_ERROR
    from mailcli.errors import NotFoundError, TemplateError
    from mailcli.lifeline import die_with_parent
    from mailcli.render.limits import configure

    die_with_parent(parent)  # a killed send must not leave its workers behind
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure(*limits)  # [render] timeout and max_size_mb, as the sending process has them
    from mailcli.send.message import MessageFactory

    try:
        _FACTORY = MessageFactory(settings, campaign, sign=sign)
    except (TemplateError, NotFoundError) as exc:
        # The sending process compiled this template: it was changed since
        # (saved broken, or moved away), and that process renders the run.
        _INIT_ERROR = TemplateChanged(f"The template changed after the sending process compiled it: {exc.message}")
        return
    except Exception as exc:  # noqa: BLE001 - raised again with the first batch, in the sending process
        # (an initializer's exception would only print a traceback here)
        _INIT_ERROR = exc
        return
    compiled = _FACTORY.template.stamp
    if compiled is None or compiled != stamp:
        _INIT_ERROR = TemplateChanged(f"The templates folder changed after the sending process compiled template"
                                      f" {campaign.template!r}")


def _build(batch: list[RecipientTuple], samples: list[RecipientTuple], links: dict[str, int] | None = None,
           eightbit: bool = False) -> list[tuple[bytes | None, Problem]]:
    """Each recipient's wire bytes, or the problem that kept it from being built."""
    global _VERIFIED
    from mailcli.send import ledger
    from mailcli.send.results import problem_of

    if _INIT_ERROR is not None:
        raise _INIT_ERROR
    if not _VERIFIED:
        # The preflight's recipients, one per set of contact fields: the
        # same check of the inline-once path as in the sending process.
        _FACTORY.verify_inlining(samples)
        # The campaign's tracked links, known only after the preflight, and
        # whether the relay takes 8-bit bodies, known once it answered.
        _FACTORY.links = links
        _FACTORY.use_eightbit(eightbit)
        _VERIFIED = True
    out: list[tuple[bytes | None, Problem]] = []
    for fields in batch:
        try:
            # Rendered and dot-stuffed here, off the SMTP core.
            out.append((_FACTORY.wire(ledger.Recipient(*fields)), None))
        except Exception as exc:  # one contact's problem (or the template's), reported back
            out.append((None, problem_of(exc)))
    return out


def worker_count(messages: int) -> int:
    """How many render processes: none for small sends, else cores - 1 (max 4)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if messages < 1000 or cores < 2:
        return 0
    return min(4, cores - 1)


class WorkerStopped(MailcliError):
    """A render worker process ended in the middle of a send."""


class TemplateChanged(MailcliError):
    """A render worker compiled another version of the template than the
    sending process checked: the sending process renders its batches."""


# A frame on a worker's pipes: its length, then a pickle.
_HEADER = struct.Struct("!I")


def _write_frame(fd: int, payload: bytes) -> None:
    view = memoryview(_HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _serve(requests: Any, replies: Any, parent: int, settings: Any, campaign: Any, sign: bool,
           stamp: bytes | None, limits: tuple[float, float]) -> None:
    """A worker's life: ``(seq, kind, args)`` in, ``(seq, ok, value)`` out, until its pipe closes."""
    import queue
    import threading

    _init(parent, settings, campaign, sign, stamp, limits)
    rfd, wfd = requests.fileno(), replies.fileno()
    calls: dict[str, Callable[..., Any]] = {"build": _build, "check": check_batch}
    # Requests are read as they come, by a thread of their own: the sending
    # process then never waits to hand over a batch while this process waits
    # for it to take a reply (both pipes full).
    inbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def receive() -> None:
        while True:
            header = _read_exactly(rfd, _HEADER.size)
            body = None if header is None else _read_exactly(rfd, _HEADER.unpack(header)[0])
            inbox.put(body)
            if body is None:
                return

    threading.Thread(target=receive, name="mailcli-render-requests", daemon=True).start()
    while True:
        body = inbox.get()
        if body is None:  # the sending process closed the pipe, or ended
            return
        seq, kind, args = pickle.loads(body)  # noqa: S301 - from the parent process, over its own pipe
        try:
            data = reply_frame(seq, True, calls[kind](*args))
        except Exception as exc:  # noqa: BLE001 - raised again in the sending process
            data = reply_frame(seq, False, exc)
        _write_frame(wfd, data)


def reply_frame(seq: int, ok: bool, value: Any) -> bytes:
    """A worker's reply, pickled. An exception that would not come out of
    the pickle whole on the other side (one whose constructor wants more than
    its message) goes as a ``MailcliError`` with its text: the sending process
    must always be able to read a reply, or the batch would never be settled."""
    if ok:
        return pickle.dumps((seq, ok, value), pickle.HIGHEST_PROTOCOL)  # rendered messages and problems
    try:
        data = pickle.dumps((seq, ok, value), pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)  # noqa: S301 - our own bytes
    except Exception:  # noqa: BLE001 - sent as its text instead
        return pickle.dumps((seq, False, MailcliError(str(value) or type(value).__name__)), pickle.HIGHEST_PROTOCOL)
    return data


class _Worker:
    def __init__(self, context: Any, settings: Any, campaign: Any, sign: bool, stamp: bytes | None) -> None:
        from mailcli.render.limits import current

        requests_r, self.requests = context.Pipe(duplex=False)
        self.replies, replies_w = context.Pipe(duplex=False)
        self.process = context.Process(target=_serve, args=(requests_r, replies_w, os.getpid(), settings, campaign,
                                                            sign, stamp, current()),
                                       name="mailcli-render", daemon=True)
        self.process.start()
        requests_r.close()
        replies_w.close()
        self.fd = self.replies.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = bytearray()
        self.waiting: dict[int, Callable[[bool, Any], None]] = {}

    def read(self) -> list[tuple[int, bool, Any]] | None:
        """The replies that arrived whole; None once the worker is gone."""
        try:
            while True:
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    return None
                self.buffer += chunk
        except BlockingIOError:
            pass
        out = []
        start = 0  # the frames that came whole are read in place, then dropped at once
        with memoryview(self.buffer) as view:
            while len(view) - start >= _HEADER.size:
                end = start + _HEADER.size + _HEADER.unpack_from(view, start)[0]
                if len(view) < end:
                    break
                out.append(pickle.loads(view[start + _HEADER.size:end]))  # noqa: S301 - from our own worker process
                start = end
        del self.buffer[:start]
        return out


class _Pending:
    """A result of ``RenderPool.call``: ``done()`` looks without waiting, ``result()`` waits."""

    def __init__(self, pool: RenderPool, worker: _Worker) -> None:
        self._pool, self._worker = pool, worker
        self._box: list[tuple[bool, Any]] = []

    def settle(self, ok: bool, value: Any) -> None:
        self._box.append((ok, value))

    def done(self) -> bool:
        if not self._box:
            self._pool._readable(self._worker)
        return bool(self._box)

    def result(self) -> Any:
        while not self.done():
            select.select([self._worker.fd], [], [])
        ok, value = self._box[0]
        if not ok:
            raise value
        return value


class RenderPool:
    """Render worker processes, each fed over a pipe of its own, batches
    handed out in turn; ``submit`` on the event loop, ``call`` without one.
    ``stamp`` is the ``CompiledTemplate.stamp`` of the template the sending
    process renders: a worker that compiles another refuses every batch
    with ``TemplateChanged``."""

    def __init__(self, workers: int, settings: Any, campaign: Any, *, stamp: bytes | None,
                 sign: bool = True) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.workers = workers
        self._all = [_Worker(context, settings, campaign, sign, stamp) for _ in range(workers)]
        self._turn = 0
        self._seq = 0
        self._loop: Any = None
        self._closed = False

    def _send(self, kind: str, args: tuple[Any, ...], done: Callable[[bool, Any], None]) -> None:
        worker = self._all[self._turn % self.workers]
        self._turn += 1
        self._seq += 1
        worker.waiting[self._seq] = done
        try:
            _write_frame(worker.requests.fileno(), pickle.dumps((self._seq, kind, args), pickle.HIGHEST_PROTOCOL))
        except OSError:  # its end of the pipe is closed: the worker is gone
            worker.process.join(timeout=1)
            self._settle(worker, None)

    def submit(self, kind: str, *args: Any) -> asyncio.Future[Any]:
        """Run ``kind`` ("build" or "check") with ``args`` on the next worker; its result, on the running loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            for worker in self._all:
                loop.add_reader(worker.fd, self._readable, worker)
        future: asyncio.Future[Any] = loop.create_future()
        # A worker that stops fails every batch it had: the first one awaited
        # says so; the others need not be looked at.
        future.add_done_callback(_looked_at)

        def done(ok: bool, value: Any) -> None:
            if future.done():
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        self._send(kind, args, done)
        return future

    def _readable(self, worker: _Worker) -> None:
        self._settle(worker, worker.read())

    def _settle(self, worker: _Worker, replies: list[tuple[int, bool, Any]] | None) -> None:
        if replies is None:
            if self._loop is not None:
                self._loop.remove_reader(worker.fd)
            waiting, worker.waiting = worker.waiting, {}
            code = worker.process.exitcode
            how = (f"killed by signal {-code}" if code is not None and code < 0
                   else f"exit status {code}" if code is not None else "its pipe closed")
            for done in waiting.values():
                done(False, WorkerStopped(f"A render worker process ended unexpectedly ({how})",
                                          hint="run the same command again; it goes on where this run stopped"))
            return
        for seq, ok, value in replies:
            if seq in worker.waiting:
                worker.waiting.pop(seq)(ok, value)

    def call(self, kind: str, *args: Any) -> _Pending:
        """Run ``kind`` with ``args`` on the next worker without an event loop."""
        pending = _Pending(self, self._all[self._turn % self.workers])
        self._send(kind, args, pending.settle)
        return pending

    def shutdown(self) -> None:
        """Close the workers' pipes (they end) and wait for them briefly."""
        if self._closed:
            return
        self._closed = True
        for worker in self._all:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(worker.fd)
            worker.requests.close()
        for worker in self._all:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.replies.close()


def _looked_at(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def start_pool(workers: int, settings: Any, campaign: Any, *, stamp: bytes | None, sign: bool = True) -> RenderPool:
    """Start the workers now (not on the first batch), so their interpreters
    load and compile the template while the sending process prepares;
    ``stamp``: the version of the template the sending process compiled."""
    return RenderPool(workers, settings, campaign, stamp=stamp, sign=sign)


def _try_build(factory: Any, r: Any) -> Problem:
    from mailcli.send.results import problem_of

    try:
        factory.build(r)
    except Exception as exc:  # one contact's problem (or the template's), reported
        return problem_of(exc)
    return None


def check_batch(batch: list[RecipientTuple], eightbit: bool = False) -> list[Problem]:
    """Build every message of ``batch`` and drop it: all a dry run needs to know."""
    from mailcli.send import ledger

    if _INIT_ERROR is not None:
        raise _INIT_ERROR
    _FACTORY.use_eightbit(eightbit)
    return [_try_build(_FACTORY, ledger.Recipient(*fields)) for fields in batch]


def build_all(factory: Any, recipients: Sequence[Any], settings: Any, campaign: Any,
              on_result: Callable[[Any, Problem], None]) -> None:
    """Build every recipient's message and drop it, as a dry run does:
    ``on_result(recipient, problem)`` for each, in no particular order.

    A large audience is shared between this process and the render workers
    a real send would start, so a dry run takes about as long as the
    rendering of the send it rehearses: this process builds a batch itself
    whenever the workers already have enough queued.
    """
    workers = worker_count(len(recipients))
    if not workers:
        _build_here(factory, recipients, on_result)
        return
    pool = start_pool(workers, settings, campaign, stamp=factory.template.stamp, sign=factory.signer is not None)
    try:
        _share(pool, factory, recipients, on_result)
    except WorkerStopped as exc:
        # A dry run keeps nothing: run again, it starts over.
        raise WorkerStopped(exc.message, hint="run the same command again") from None
    finally:
        pool.shutdown()


def _share(pool: RenderPool, factory: Any, recipients: Sequence[Any], on_result: Callable[[Any, Problem], None]) -> None:
    """Batches to the workers while they have fewer than two each in hand, the others built here."""
    inflight: deque[tuple[Any, Sequence[Any]]] = deque()
    usable = True  # False once the workers turn out to have another version of the template
    for start in range(0, len(recipients), CHECK_BATCH):
        batch = recipients[start : start + CHECK_BATCH]
        while inflight and inflight[0][0].done():
            usable = _settle(*inflight.popleft(), factory, on_result) and usable
        if usable and len(inflight) < 2 * pool.workers:
            inflight.append((pool.call("check", [r.as_tuple() for r in batch], factory.eightbit), batch))
        else:
            _build_here(factory, batch, on_result)
    while inflight:
        _settle(*inflight.popleft(), factory, on_result)


def _settle(pending: Any, batch: Sequence[Any], factory: Any, on_result: Callable[[Any, Problem], None]) -> bool:
    """The results of a worker's batch; False when the worker had another
    version of the template, and this process built the batch instead."""
    try:
        problems = pending.result()
    except TemplateChanged:
        _build_here(factory, batch, on_result)
        return False
    for r, problem in zip(batch, problems, strict=True):
        on_result(r, problem)
    return True


def _build_here(factory: Any, batch: Sequence[Any], on_result: Callable[[Any, Problem], None]) -> None:
    for r in batch:
        on_result(r, _try_build(factory, r))
