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
sees its pipe close and ends too.
"""

from __future__ import annotations

import os
import signal
from typing import Any

# Recipient fields sent to a worker, in ledger.Recipient order.
RecipientTuple = tuple[Any, ...]

_FACTORY: Any = None
_INIT_ERROR: BaseException | None = None
_VERIFIED = False


def _init(parent: int, settings: Any, campaign: Any) -> None:
    global _FACTORY, _INIT_ERROR
    from mailcli.lifeline import die_with_parent

    die_with_parent(parent)  # a killed send must not leave its workers behind
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from mailcli.send.message import MessageFactory

    try:
        _FACTORY = MessageFactory(settings, campaign)
    except Exception as exc:  # noqa: BLE001 - raised again with the first batch, in the sending process
        # (an initializer's exception would only print a traceback here)
        _INIT_ERROR = exc


def _build(batch: list[RecipientTuple], samples: list[RecipientTuple], links: dict[str, int] | None = None
           ) -> list[tuple[bytes | None, str | None]]:
    global _VERIFIED
    from mailcli.send import ledger
    from mailcli.send.results import describe_problem

    if _INIT_ERROR is not None:
        raise _INIT_ERROR
    if not _VERIFIED:
        # The preflight's recipients, one per set of contact fields: the
        # same check of the inline-once path as in the sending process.
        _FACTORY.verify_inlining(samples)
        # The campaign's tracked links, known only after the preflight.
        _FACTORY.links = links
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


def start_pool(workers: int, settings: Any, campaign: Any) -> Any:
    """Start the workers now (not on the first batch), so their interpreters
    load and compile the template while the sending process prepares."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_init, initargs=(os.getpid(), settings, campaign),
    )
    for _ in range(workers):
        pool.submit(_warm)
    return pool


def _warm() -> None:
    """Nothing: submitting it makes the pool start its processes."""


def build_batch(batch: list[RecipientTuple], samples: list[RecipientTuple], links: dict[str, int] | None = None
                ) -> list[tuple[bytes | None, str | None]]:
    """The function the pool runs (module level, so it pickles by name)."""
    return _build(batch, samples, links)
