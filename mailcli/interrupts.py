"""What a Ctrl-C or SIGTERM must not cut in two.

A commit and what follows it at once (the audit head moving on to the entry
just committed) belong together: a signal between them would leave the head
behind the log, and the command would report "Interrupted" for changes that
are in the database. ``held`` keeps SIGINT and SIGTERM back for such a block
and hands a signal that came meanwhile to its handler when the block ends.
Where that handler is Python's own Ctrl-C (or mailcli's SIGTERM, which acts
the same), it raises ``InterruptedAfterSaving`` instead, so the command says
that what it committed is kept. A command with a handler of its own (``send``
finishing the messages in flight) gets the signal as it would have.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)


class InterruptedAfterSaving(KeyboardInterrupt):
    """A Ctrl-C or SIGTERM that came while changes were being committed: they are kept."""


_raising: set[Callable[..., Any]] = {signal.default_int_handler}


def ignored(signum: int) -> bool:
    """Was the signal ignored when mailcli started (a job in the background of a
    script, ``nohup``, a service manager)? Then it stays ignored: a command
    installs no handler of its own for it, as Python does for SIGINT."""
    return signal.getsignal(signum) is signal.SIG_IGN


def install(handler: Callable[[int, FrameType | None], Any], *signums: int) -> dict[int, Any]:
    """``handler`` for each of ``signums`` not ignored; returns the handlers it replaced."""
    return {signum: signal.signal(signum, handler) for signum in signums if not ignored(signum)}


def restore(previous: dict[int, Any]) -> None:
    """Put back the handlers ``install`` replaced (one set outside Python stays as it is)."""
    for signum, handler in previous.items():
        if handler is not None:
            signal.signal(signum, handler)


def raises_interrupt(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a signal handler that only raises KeyboardInterrupt (so ``held`` may
    raise ``InterruptedAfterSaving`` in its place)."""
    _raising.add(handler)
    return handler


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Keep SIGINT and SIGTERM back for the block (see the module docstring).

    Only the main thread can change signal handlers, and only it receives
    signals: elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append((signum, frame))

    previous: dict[int, Any] = {}
    try:
        for number in _SIGNALS:
            if signal.getsignal(number) is not None:  # None: set outside Python, left as it is
                previous[number] = signal.signal(number, hold)
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if caught:
            _deliver(*caught[0], previous.get(caught[0][0]))


def _deliver(signum: int, frame: FrameType | None, handler: Any) -> None:
    if handler in _raising:
        raise InterruptedAfterSaving
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)  # the default action, now that the block is over
