"""Bounds on one render: time and size (``docs/guarantees.md#template-sandbox``).

The sandbox keeps a template away from Python's internals, but not from
work: nested ``range(100000)`` loops run for hours, and ``'x' * 10**8``
builds a string of 100 MB in one step. So each render of a template (the
subject, the HTML, the text part: each separately) has

* a **time limit** (``[render] timeout``, 5 seconds): checked while a
  ``range`` loop runs and while the output is joined, so a loop that writes
  nothing is stopped too;
* a **size limit** (``[render] max_size_mb``, 10 MB): on the output as it
  grows, on a string or list made by ``*``, and on a number a template passes
  to a function (``'x'.center(10**9)``), checked before the work is done.

Exceeding one raises :class:`RenderLimit`, which becomes a ``TemplateError``
naming the template file and line: that message fails (``send``), or the
command does (``render``, ``lint``). The limits are process-wide, set once
from the configuration (:func:`configure`), and a send's render workers are
given the sending process's (:func:`current`); the deadline is per thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

DEFAULT_SECONDS = 5.0
DEFAULT_MB = 10
_BLOCK = 64  # output chunks joined between two checks

_limits = {"seconds": DEFAULT_SECONDS, "chars": DEFAULT_MB * 1024 * 1024}
_local = threading.local()


class RenderLimit(Exception):  # noqa: N818 - reads as what it is: a limit reached
    """A render went past its time or size limit."""

    filename: str | None = None  # the template, when no frame of it names the line


def configure(seconds: float = DEFAULT_SECONDS, max_mb: float = DEFAULT_MB) -> None:
    """Set the limits for every later render in this process."""
    _limits["seconds"] = float(seconds)
    _limits["chars"] = int(max_mb * 1024 * 1024)


def current() -> tuple[float, float]:
    """The limits in force, as ``configure`` takes them (seconds, MB): for a
    process that renders on behalf of this one (a send's render workers)."""
    return _limits["seconds"], _limits["chars"] / 1024 / 1024


def start() -> bool:
    """Start the time limit of one render, unless one runs already (an include
    renders inside its parent); whether it started one, to ``stop`` after."""
    if getattr(_local, "deadline", None) is not None:
        return False
    _local.deadline = time.monotonic() + _limits["seconds"]
    return True


def stop() -> None:
    _local.deadline = None


def check_time() -> None:
    deadline = getattr(_local, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise RenderLimit(f"rendering took longer than {_limits['seconds']:g} s, the limit ([render] timeout)")


def too_big(what: str, size: int) -> RenderLimit:
    return RenderLimit(f"{what} of {size / 1024 / 1024:.0f} MB or more is past the limit of"
                       f" {_limits['chars'] / 1024 / 1024:g} MB ([render] max_size_mb)")


def check_size(what: str, size: int) -> None:
    if size > _limits["chars"]:
        raise too_big(what, size)


def bounded_range(*args: Any) -> Iterator[int]:
    """``range`` for templates: the time limit is checked as the loop runs."""
    from jinja2.sandbox import safe_range

    for index, value in enumerate(safe_range(*args)):
        if not index & 255:
            check_time()
        yield value


def bounded_concat(chunks: Iterable[str]) -> str:
    """Join a template's output, checking its size and the time every few chunks."""
    it = iter(chunks)
    parts = list(islice(it, _BLOCK))
    size = sum(map(len, parts))
    if len(parts) == _BLOCK:
        while True:
            check_size("the output", size)
            check_time()
            block = list(islice(it, _BLOCK))
            if not block:
                break
            parts += block
            size += sum(map(len, block))
    check_size("the output", size)
    return "".join(parts)


# Complexity: the two operators that can make a large value, each checked before it is computed.
def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``*`` and ``**`` whose result would be past the size limit, before computing it."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and not isinstance(times, bool):
                check_size("a value", len(seq) * max(times, 0))
    elif operator == "**" and isinstance(right, int) and isinstance(left, int) and abs(left) > 1:
        # The result has about right * log2(left) bits: refuse one past the limit's digits.
        if right * abs(left).bit_length() > 8 * _limits["chars"]:
            raise too_big("a number", right * abs(left).bit_length() // 8)


def check_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a number past the size limit passed to a function (``'x'.center(10**9)``)."""
    limit = _limits["chars"]
    for value in (*args, *kwargs.values()):
        if type(value) is int and value > limit:
            raise too_big("an argument", value)
