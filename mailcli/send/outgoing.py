"""What the transport is given and what it reports back: one message to one
recipient, the result of its delivery, and the hooks through which the
engine makes each transmission durable.

The one rule that makes "exactly once" possible: ``hooks.before_dot(msg)``
is awaited after the server said 354 and *before* the final ``.`` is
written. The engine makes the "sending" mark durable there. A message can
therefore only be accepted without our knowing it if the process dies (or
the link drops) between that write and the reply — such a message is
reported ``uncertain``, never resent automatically (RFC 1047,
docs/guarantees.md#crash-safety).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from mailcli.send.replies import Reply


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
    pace_seq: int = 0  # the order in which it was last handed to a connection (``Pace.hand_out``)

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


def classify(reply: Reply) -> Result:
    """The first digit decides (2xx sent, 4xx retry, 5xx failed); an enhanced
    status code refines: 5.1.x means the address does not exist (a hard bounce)."""
    if reply.code < 400:
        return Result(Status.SENT, str(reply))
    if reply.code < 500:
        return Result(Status.RETRY, str(reply))
    hard = bool(reply.enhanced and reply.enhanced.startswith("5.1."))
    return Result(Status.FAILED, str(reply), hard_bounce=hard)


def dot_stuff(data: bytes, *, crlf: bool = False) -> bytes:
    """RFC 5321 §4.5.2 transparency plus a guaranteed CRLF ending.

    A bare LF or CR must never reach the wire: bytes of unknown origin are
    checked (three counts at C speed) and normalised if something slipped
    through. ``crlf=True`` skips that for ``MessageSkeleton`` output, CRLF by
    construction (and by test): the counts are a measurable part of a message's
    cost (benchmarks/README.md).
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
