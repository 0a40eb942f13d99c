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
settings and campaign. They see nothing but the recipients they are given
and hold no database connection. They end when the sending process ends,
even by ``kill -9`` (``lifeline``); multiprocessing's resource tracker then
sees its pipe close, unlinks the pool's semaphores and ends too, without
printing its leak warning (``_quiet_resource_tracker``).
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

# Recipient fields sent to a worker, in ledger.Recipient order.
RecipientTuple = tuple[Any, ...]
# What building one message showed: None when it built, else the problem and
# whether the template (not the contact) caused it.
Problem = tuple[str, bool] | None
CHECK_BATCH = 64  # recipients per batch of a dry run

_FACTORY: Any = None
_INIT_ERROR: BaseException | None = None
_VERIFIED = False


def _init(parent: int, settings: Any, campaign: Any, sign: bool = True) -> None:
    global _FACTORY, _INIT_ERROR
    from mailcli.lifeline import die_with_parent

    die_with_parent(parent)  # a killed send must not leave its workers behind
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from mailcli.send.message import MessageFactory

    try:
        _FACTORY = MessageFactory(settings, campaign, sign=sign)
    except Exception as exc:  # noqa: BLE001 - raised again with the first batch, in the sending process
        # (an initializer's exception would only print a traceback here)
        _INIT_ERROR = exc


def _build(batch: list[RecipientTuple], samples: list[RecipientTuple], links: dict[str, int] | None = None,
           eightbit: bool = False) -> list[tuple[bytes | None, str | None]]:
    global _VERIFIED
    from mailcli.send import ledger
    from mailcli.send.results import describe_problem

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
    out: list[tuple[bytes | None, str | None]] = []
    for fields in batch:
        try:
            # Rendered and dot-stuffed here, off the SMTP core.
            out.append((_FACTORY.wire(ledger.Recipient(*fields)), None))
        except Exception as exc:  # one contact's problem, reported back
            out.append((None, describe_problem(exc)))
    return out


def worker_count(messages: int) -> int:
    """How many render processes: none for small sends, else cores - 1 (max 4)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if messages < 1000 or cores < 2:
        return 0
    return min(4, cores - 1)


def _quiet_resource_tracker() -> None:
    """Keep the resource tracker's leak count off the user's terminal.

    The pool's queues hold a few semaphores, which multiprocessing's resource
    tracker (a process of its own, started with the first of them) unlinks
    when the sending process ends without doing so: after ``kill -9``. It
    then prints "There appear to be 5 leaked semaphore objects to clean up"
    with its own source line: Python's diagnostic about objects it has just
    cleaned up, nothing the user can act on. The tracker is started with
    this process's warning options (``sys.warnoptions``, passed on as
    ``-W``), so one more option silences it there. An option cannot name a
    message with a colon in it, so it names the line of that one warning in
    the tracker's source: its other warnings (a semaphore it failed to
    unlink) still show. This process's own warnings are unchanged, its
    filters having been set up when it started. Called before the pool
    makes its first semaphore."""
    import sys
    from multiprocessing import resource_tracker

    try:
        with open(resource_tracker.__file__, encoding="utf-8") as source:
            line = next((n for n, text in enumerate(source, 1) if "There appear to be" in text), None)
    except (OSError, TypeError, UnicodeError):  # no source to read: the warning stays as Python prints it
        return
    option = f"ignore::UserWarning:multiprocessing.resource_tracker:{line}"
    if line is not None and option not in sys.warnoptions:
        sys.warnoptions.append(option)


def start_pool(workers: int, settings: Any, campaign: Any, *, sign: bool = True) -> Any:
    """Start the workers now (not on the first batch), so their interpreters
    load and compile the template while the sending process prepares."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _quiet_resource_tracker()
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_init, initargs=(os.getpid(), settings, campaign, sign),
    )
    for _ in range(workers):
        pool.submit(_warm)
    return pool


def _warm() -> None:
    """Nothing: submitting it makes the pool start its processes."""


def build_batch(batch: list[RecipientTuple], samples: list[RecipientTuple], links: dict[str, int] | None = None,
                eightbit: bool = False) -> list[tuple[bytes | None, str | None]]:
    """The function the pool runs (module level, so it pickles by name)."""
    return _build(batch, samples, links, eightbit)


def _try_build(factory: Any, r: Any) -> Problem:
    from mailcli.errors import TemplateError
    from mailcli.send.results import describe_problem

    try:
        factory.build(r)
    except Exception as exc:  # one contact's problem (or the template's), reported
        return describe_problem(exc), isinstance(exc, TemplateError)
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
        for r in recipients:
            on_result(r, _try_build(factory, r))
        return
    pool = start_pool(workers, settings, campaign, sign=factory.signer is not None)
    try:
        inflight: deque[tuple[Any, Sequence[Any]]] = deque()
        for start in range(0, len(recipients), CHECK_BATCH):
            batch = recipients[start : start + CHECK_BATCH]
            while inflight and inflight[0][0].done():
                _settle(*inflight.popleft(), on_result)
            if len(inflight) < 2 * workers:
                inflight.append((pool.submit(check_batch, [r.as_tuple() for r in batch], factory.eightbit), batch))
            else:
                for r in batch:
                    on_result(r, _try_build(factory, r))
                    # Let the executor's thread in: it hands the workers their
                    # next batch and takes their results, and a thread that
                    # only renders would keep it waiting for the interpreter.
                    time.sleep(0)
        while inflight:
            _settle(*inflight.popleft(), on_result)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _settle(future: Any, batch: Sequence[Any], on_result: Callable[[Any, Problem], None]) -> None:
    for r, problem in zip(batch, future.result(), strict=True):
        on_result(r, problem)
