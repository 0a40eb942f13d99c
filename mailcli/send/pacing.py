"""How fast a send goes, and what a relay's refusal says about that.

A token bucket shared by all connections holds the configured ``rate``. When
the relay answers that mail comes too fast, the rate is halved from what the
relay really took lately, at most once per round trip (only a refusal of a
message handed out after the last decrease counts), down to ``rate_floor``;
after ``RECOVER_EVERY`` seconds or ``probe_after`` messages accepted without a
slow-down, whichever comes first, it is raised by a quarter again, up to the
configured ceiling (docs/guarantees.md#relay-limits). After a 421 every
connection waits a moment before reconnecting.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import deque

from mailcli import clock
from mailcli.send.replies import Reply, refuses_connections

# The rate a slowdown goes to at the lowest: one message a second, unless
# the configured rate is lower (``rate_floor``).
MIN_RATE = 1.0
# Seconds without a slow-down reply after which a lowered rate rises by a
# quarter (as it does after ``probe_after`` calm messages): from the floor
# back to 50 messages/s takes some three minutes, not hours.
RECOVER_EVERY = 10.0

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


def rate_floor(configured: float, in_flight: int, retry_window: float) -> float:
    """The lowest rate a slowdown goes to.

    One message a second, and never below the rate at which every message
    that can be in flight at once (``in_flight``: connections times the
    messages queued on each) gets its next attempt inside ``retry_window``:
    slower than that, messages the relay refused in a burst would wait for
    the bucket until their retry window ran out and end deferred although
    the relay would take them again in seconds (as they did with a floor of
    one message every 20 s). Never above the configured rate (0: unlimited).
    """
    floor = max(MIN_RATE, in_flight / max(retry_window, 1.0))
    return min(floor, configured) if configured > 0 else floor


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

    def __init__(self, rate: float, *, ceiling: float | None, probe_after: int, backoff_base: float,
                 floor: float = MIN_RATE) -> None:
        configured = ceiling if ceiling is not None else rate
        if ceiling is not None:
            # A rate found by an earlier run: never below the floor, and once
            # it is the configured rate, nothing holds this run back.
            rate = max(rate, floor)
            if ceiling > 0 and rate >= ceiling:
                rate, ceiling = ceiling, None
        self.bucket = TokenBucket(rate)
        self._configured = configured
        self._ceiling = ceiling  # set when ``rate`` is a rate found before: the configured one
        self.remembered = ceiling is not None  # this run starts below the configured rate for that
        self.floor = floor
        self._probe_after = probe_after
        self._backoff_base = backoff_base
        self._calm = 0  # messages accepted since the relay last pushed back
        self._accepted: deque[float] = deque(maxlen=50)
        self._below = ceiling is not None  # the rate is held below the configured one
        self._since = clock.monotonic()  # when the rate last changed
        self.taken = 0  # messages handed to a connection so far (each message's ``pace_seq``)
        self._decreased_seq = 0  # ``taken`` when the rate was last lowered
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

    def hand_out(self) -> int:
        """A message goes to a connection: its number in hand-out order (what ``slow_down`` is told)."""
        self.taken += 1
        return self.taken

    @property
    def configured(self) -> float:
        """The configured rate (0 = unlimited)."""
        return self._configured

    def accepted(self) -> bool:
        """A message was accepted. While the rate is held below the configured
        one it rises by a quarter after ``RECOVER_EVERY`` seconds or
        ``probe_after`` messages without a slow-down, whichever comes first.
        True after such a calm stretch of messages: one more connection may be tried."""
        now = clock.monotonic()
        self._accepted.append(now)
        self._calm += 1
        if self._calm < self._probe_after:
            if self._below and now - self._since >= RECOVER_EVERY:
                self._raise(now)
            return False
        self._calm = 0
        if self._below:
            self._raise(now)
        return True

    def _raise(self, now: float) -> None:
        rate = self.bucket.rate
        ceiling = self._ceiling if self._ceiling is not None else self._configured
        raised = rate * 1.25
        if ceiling and raised >= ceiling:
            raised = ceiling
        elif not ceiling and raised > 1000:
            raised = 0.0  # far beyond any relay's limit: unlimited again
        self.bucket.set_rate(raised)
        self._since = now
        self._below = raised > 0 and not (ceiling and raised >= ceiling)

    def pushed_back(self) -> None:
        """The relay refused something: the calm stretch starts again."""
        self._calm = 0

    def slow_down(self, reply: Reply, seq: int) -> float | None:
        """The relay says mail comes too fast about the message handed out as
        number ``seq``: halve the rate, from what the relay really took lately.

        Once per round trip: only a message handed out after the last decrease
        says that the lower rate is still too fast; replies about messages
        sent before it (in flight then, or refused then and retried since are
        handed out anew) change nothing. Returns the new rate, or None when
        the rate stays (such an older message, or the floor reached)."""
        if seq <= self._decreased_seq:
            return None
        now = clock.monotonic()
        self._decreased_seq = self.taken
        self._since = now
        self._calm = 0
        self.rate_reply = str(reply)
        # What the relay took lately, over at least a second: a burst that
        # it accepted all at once says nothing about a rate per second.
        recent = [t for t in self._accepted if now - t <= 10.0]
        observed = len(recent) / max(1.0, now - recent[0]) if recent else 0.0
        current = self.bucket.rate if self.bucket.rate > 0 else observed or 2.0
        if observed:
            current = min(current, observed)
        new = max(self.floor, current / 2)
        if self.bucket.rate > 0 and new >= self.bucket.rate:
            return None  # at the floor already
        self.bucket.set_rate(new)
        self.rate_found = new
        self._below = True
        return new

    def host_backoff(self) -> None:
        """After a 421 every connection waits a little before reconnecting."""
        delay = self._backoff_base * (0.5 + random.random() / 2)
        self.backoff_until = max(self.backoff_until, time.monotonic() + delay)
