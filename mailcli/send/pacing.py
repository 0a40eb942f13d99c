"""How fast a send goes, and what a relay's refusal says about that.

A token bucket shared by all connections holds the configured ``rate``. When
the relay answers that mail comes too fast, the rate is halved (at most once
a second, from what the relay really took lately); after ``probe_after``
messages accepted without trouble it is raised by a quarter again, up to the
configured ceiling (docs/guarantees.md#relay-limits). After a 421 every
connection waits a moment before reconnecting.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import deque

from mailcli.send.replies import Reply, refuses_connections

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


class Pace:
    """The send's rate over all connections, as the relay lets it be."""

    def __init__(self, rate: float, *, ceiling: float | None, probe_after: int, backoff_base: float) -> None:
        self.bucket = TokenBucket(rate)
        self._configured = rate
        self._ceiling = ceiling  # set when ``rate`` is a rate found before: the configured one
        self._probe_after = probe_after
        self._backoff_base = backoff_base
        self._calm = 0  # messages accepted since the relay last pushed back
        self._accepted: deque[float] = deque(maxlen=50)
        self._last_slowdown = 0.0
        self.backoff_until = 0.0  # no connection opens before (monotonic)
        self.rate_found: float | None = None
        self.rate_reply: str | None = None

    @property
    def rate_in_effect(self) -> float | None:
        """The rate the relay holds this run to, when it does (else None)."""
        if self.rate_found is None and self._ceiling is None:
            return None
        ceiling = self._ceiling if self._ceiling is not None else self._configured
        rate = self.bucket.rate
        if rate <= 0 or (ceiling and rate >= ceiling):
            return None
        return rate

    def accepted(self) -> bool:
        """A message was accepted. True after a calm stretch, when the rate
        (if the relay lowered it) was raised and one more connection may be tried."""
        self._accepted.append(time.monotonic())
        self._calm += 1
        if self._calm < self._probe_after:
            return False
        self._calm = 0
        rate = self.bucket.rate
        if rate > 0 and (self.rate_found is not None or self._ceiling is not None):
            ceiling = self._ceiling if self._ceiling is not None else self._configured
            raised = rate * 1.25
            if ceiling and raised >= ceiling:
                raised = ceiling
            elif not ceiling and raised > 1000:
                raised = 0.0  # far beyond any relay's limit: unlimited again
            self.bucket.set_rate(raised)
        return True

    def pushed_back(self) -> None:
        """The relay refused something: the calm stretch starts again."""
        self._calm = 0

    def slow_down(self, reply: Reply) -> float | None:
        """The relay says mail comes too fast: halve the rate (once a second
        at most). Returns the new rate, or None when it was just halved."""
        now = time.monotonic()
        if now - self._last_slowdown < 1.0:
            return None
        self._last_slowdown = now
        # What the relay took lately, over at least a second: a burst that
        # it accepted all at once says nothing about a rate per second.
        recent = [t for t in self._accepted if now - t <= 10.0]
        observed = len(recent) / max(1.0, now - recent[0]) if recent else 0.0
        current = self.bucket.rate if self.bucket.rate > 0 else observed or 2.0
        if observed:
            current = min(current, observed)
        new = max(MIN_RATE, current / 2)
        self.bucket.set_rate(new)
        self.rate_found = new
        self.rate_reply = str(reply)
        self._calm = 0
        return new

    def host_backoff(self) -> None:
        """After a 421 every connection waits a little before reconnecting."""
        delay = self._backoff_base * (0.5 + random.random() / 2)
        self.backoff_until = max(self.backoff_until, time.monotonic() + delay)
