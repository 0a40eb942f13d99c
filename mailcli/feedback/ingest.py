"""Applying a mailbox of feedback: the core of ``mailcli bounces``.

Each message is applied once (``processed_messages`` holds a SHA-256 of its
Message-ID, or of its bytes when it has none), recognised by
``reports`` and applied through ``actions``, all in one transaction with
the processed mark, so a crash half-way neither loses nor doubles anything.

Attribution never guesses (:mod:`mailcli.feedback.matching`,
``docs/guarantees.md#bounces-and-complaints``). A message to a VERP address
that cannot be read as a report at all still names its contact: it counts as
a soft bounce. Everything else is listed for a person, never acted on, and
listed again on every run until a person acknowledges it (``bounces --ack``).

Delay, relay and expansion notices (RFC 3464 ``delayed``, ``relayed``,
``expanded``) are recorded as events on the delivery — ``report --failed``
and ``contacts show`` list them — and never count towards ``soft_limit``.

Nothing here ever sends mail: no reply to a DSN, complaint, auto-reply or
unsubscribe request, whatever it says: an answer to a bounce or a complaint
would be mail to someone who did not ask for it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from email.message import Message
from email.utils import parseaddr
from typing import Any

from .. import clock
from ..config import Settings
from ..store import Store
from ..store.attribution import campaign_name
from ..store.processed import acknowledge_message, processed_message, record_processed
from ..tokens import parse_unsubscribe_token
from . import actions, matching, reports
from .matching import Target
from .sources import NotDeleted, NotMarked, Source, Unreadable
from .verdicts import NOTICES, Verdict

HANDLED = ("hard", "soft", "policy", "complaint", "unsubscribe", "ignored", *NOTICES)


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A message a person has to look at; no address or body is kept."""

    message_id: str | None
    from_domain: str | None
    subject: str
    reason: str
    first_seen: str | None = None  # when a run first listed it (this run: now)


@dataclass
class IngestResult:
    source: str = ""
    messages: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    policy_rejections: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    unmatched: int = 0
    ignored: int = 0
    delays: int = 0
    relayed: int = 0
    expanded: int = 0
    already_processed: int = 0
    acknowledged: int = 0  # unmatched messages marked handled by this run (--ack)
    suppressed: int = 0  # addresses newly put on the suppression list by this run
    unmatched_messages: list[Unmatched] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)  # entries skipped: the run is partial
    not_marked: list[NotMarked] = field(default_factory=list)  # processed, not flagged: the run is partial
    not_deleted: NotDeleted | None = None  # why --delete deleted nothing (or not all): the run is partial
    policy: Counter[tuple[str | None, str | None]] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "messages": self.messages,
            "hard_bounces": self.hard_bounces,
            "soft_bounces": self.soft_bounces,
            "policy_rejections": self.policy_rejections,
            "complaints": self.complaints,
            "unsubscribes": self.unsubscribes,
            "unmatched": self.unmatched,
            "ignored": self.ignored,
            "delays": self.delays,
            "relayed": self.relayed,
            "expanded": self.expanded,
            "already_processed": self.already_processed,
            "acknowledged": self.acknowledged,
            "suppressed": self.suppressed,
            "unmatched_messages": [asdict(u) for u in self.unmatched_messages],
            "unreadable": [asdict(u) for u in self.unreadable],
            "not_marked": [asdict(u) for u in self.not_marked],
            "not_deleted": self.not_deleted.reason if self.not_deleted else None,
            "policy_details": [
                {"campaign": campaign, "status": status, "messages": count}
                for (campaign, status), count in sorted(self.policy.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))
            ],
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # hard | soft | policy | complaint | unsubscribe | ignored | unmatched
    reason: str | None = None
    suppressed: int = 0
    campaign: str | None = None
    status: str | None = None


def message_ref(msg: Message, raw: bytes) -> str:
    """The idempotency key of one incoming message."""
    mid = " ".join(str(msg.get("Message-ID") or "").split())
    return hashlib.sha256(("mid:" + mid).encode("utf-8", "replace") if mid else b"raw:" + raw).hexdigest()


# Complexity: one branch per state of a message (unreadable, read before, unmatched and acknowledged) and per option.
def ingest(
    store: Store, settings: Settings, source: Source, *, progress: Callable[[int], None] | None = None,
    acknowledge: bool = False,
) -> IngestResult:
    """Read every message of ``source`` and apply what it reports.

    An unmatched message is listed on every run until a run with
    ``acknowledge`` lists it once more and marks it handled (in the mailbox
    too: seen, or deleted with ``--delete``).
    """
    result = IngestResult(source=source.name)
    conn = store.conn
    for raw in source.messages():
        if isinstance(raw, Unreadable):  # skipped, named to the user; the rest goes on
            result.unreadable.append(raw)
            continue
        result.messages += 1
        try:
            msg = reports.parse_bytes(raw.data)
        except Exception:  # noqa: BLE001 - the stdlib parser is lenient; this is a last resort
            msg = Message()
        ref = message_ref(msg, raw.data)
        seen = processed_message(conn, ref)
        if seen is not None and not seen.open:
            # Applied, or acknowledged by a person: marked in the mailbox (again), as a run
            # that lost the connection before it could do so would have.
            result.already_processed += 1
            _done(result, source, raw.key, handled=True)
            continue
        if seen is not None:  # unmatched on an earlier run, not yet acknowledged
            outcome = Outcome("unmatched", seen.reason)
        else:
            with store.transaction() as tx:
                try:
                    outcome = _handle(store, settings, msg, ref)
                except (ValueError, LookupError, TypeError, UnicodeError) as exc:
                    outcome = Outcome("unmatched", f"could not be read ({type(exc).__name__})")
                record_processed(tx, ref, outcome.kind, outcome.reason, clock.now_iso())
        _count(result, outcome, msg, first_seen=seen.processed_at if seen is not None else None)
        handled = outcome.kind in HANDLED
        if outcome.kind == "unmatched" and acknowledge:
            with store.transaction() as tx:
                result.acknowledged += acknowledge_message(tx, ref, clock.now_iso())
            handled = True
        _done(result, source, raw.key, handled=handled)
        if progress:
            progress(result.messages)
    result.not_deleted = source.finish()
    return result


def _done(result: IngestResult, source: Source, key: str, *, handled: bool) -> None:
    """Mark a message processed in its mailbox (it is recorded as processed already)."""
    missed = source.done(key, handled=handled)
    if missed is not None:  # named to the user; the next run finds it processed and marks it
        result.not_marked.append(missed)


# The IngestResult count each outcome adds to (anything else is unmatched).
_COUNTS = {
    "hard": "hard_bounces", "soft": "soft_bounces", "policy": "policy_rejections", "complaint": "complaints",
    "unsubscribe": "unsubscribes", "ignored": "ignored", "delayed": "delays", "relayed": "relayed",
    "expanded": "expanded",
}


# Complexity: one counter per outcome, and the details of an unmatched message.
def _count(result: IngestResult, outcome: Outcome, msg: Message, *, first_seen: str | None = None) -> None:
    result.suppressed += outcome.suppressed
    counter = _COUNTS.get(outcome.kind)
    if counter is not None:
        setattr(result, counter, getattr(result, counter) + 1)
        if outcome.kind == "policy":
            result.policy[(outcome.campaign, outcome.status)] += 1
    else:
        result.unmatched += 1
        sender = parseaddr(str(msg.get("From") or ""))[1]
        subject = " ".join(str(msg.get("Subject") or "").split())
        result.unmatched_messages.append(Unmatched(
            message_id=" ".join(str(msg.get("Message-ID") or "").split()) or None,
            from_domain=sender.rpartition("@")[2].lower() or None if "@" in sender else None,
            subject=subject if len(subject) <= 60 else subject[:59] + "…",
            reason=outcome.reason or "not recognised",
            first_seen=first_seen,
        ))


# ---------------------------------------------------------------------------
# One message


def _handle(store: Store, settings: Settings, msg: Message, ref: str) -> Outcome:
    arf = reports.parse_arf(msg)
    if arf is not None:
        return _complaint(store, settings, arf, ref)
    verp = matching.by_verp(store.conn, settings, msg)
    dsn = reports.parse_dsn(msg)
    if dsn is not None:
        return _dsn(store, settings, dsn, ref, verp)
    tokens = reports.mailto_tokens(msg, settings.unsubscribe.mailto)
    if tokens:
        return _mailto(store, settings, tokens, ref)
    if reports.addressed_to_mailto(msg, settings.unsubscribe.mailto):
        return Outcome("unmatched", "unsubscribe request without a token: unsubscribe the sender by hand")
    heuristic = reports.heuristic_bounce(msg)
    if heuristic is not None:
        return _heuristic(store, settings, heuristic, ref, verp)
    if reports.is_auto_reply(msg):
        return Outcome("ignored")
    return _unreadable(store, settings, verp, ref, "not a bounce, complaint or unsubscribe request")


def _unreadable(store: Store, settings: Settings, verp: Target | None, ref: str, reason: str) -> Outcome:
    """A message that says nothing we can read. Sent back to one recipient's
    return path (VERP), it is a failure of unknown kind, counted like a soft
    bounce; otherwise a person has to look at it."""
    if verp is not None:
        return _apply(store, settings, verp, Verdict("soft", None), ref)
    return Outcome("unmatched", reason)


def _apply(store: Store, settings: Settings, target: Target, verdict: reports.Verdict, ref: str) -> Outcome:
    if verdict.kind == "policy":
        actions.record_policy_rejection(store, target.contact_id, campaign_id=target.campaign_id,
                                        status=verdict.code, source_ref=ref)
        return Outcome("policy", campaign=campaign_name(store.conn, target.campaign_id), status=verdict.code)
    result = actions.record_bounce(store, settings, target.contact_id, hard=verdict.kind == "hard",
                                   campaign_id=target.campaign_id, status=verdict.code, source_ref=ref)
    return Outcome(verdict.kind, suppressed=int(result.changed), status=verdict.code)


_SEVERITY = {"hard": 3, "policy": 2, "soft": 1}
_NOTICE_ORDER = {"delayed": 3, "relayed": 2, "expanded": 1}


def _dsn(store: Store, settings: Settings, dsn: reports.Dsn, ref: str, verp: Target | None = None) -> Outcome:
    if not dsn.recipients:
        return _unreadable(store, settings, verp, ref, "delivery report without recipient fields")
    failures = [r for r in dsn.recipients if r.verdict.is_failure]
    if not failures:
        return _dsn_without_failures(store, settings, dsn, ref, verp)
    target = matching.attribute(store.conn, settings, dsn.original, dsn.envelope_id, verp)
    if target is None:
        return Outcome("unmatched", "bounce of a message mailcli has no record of")
    if target is False:
        return _dsn_by_recipients(store, settings, failures, ref)
    assert isinstance(target, Target)
    worst = max(failures, key=lambda r: _SEVERITY[r.verdict.kind])
    return _apply(store, settings, target, worst.verdict, ref)


def _dsn_without_failures(store: Store, settings: Settings, dsn: reports.Dsn, ref: str,
                          verp: Target | None) -> Outcome:
    notices = [r for r in dsn.recipients if r.verdict.is_notice]
    if notices:
        return _notice(store, settings, dsn, notices, ref, verp)
    if all(r.verdict.kind == "none" for r in dsn.recipients):
        return Outcome("ignored")  # a success notice (delivered)
    return _unreadable(store, settings, verp, ref, "delivery report without a status code")


def _dsn_by_recipients(store: Store, settings: Settings, failures: list[reports.RecipientStatus],
                       ref: str) -> Outcome:
    """A DSN that quotes no Message-ID: each failed recipient address, exact match only."""
    outcomes = []
    for recipient in failures:
        target = matching.recipient_target(store.conn, recipient)
        if target:
            outcomes.append(_apply(store, settings, target, recipient.verdict, ref))
    if not outcomes:
        return Outcome("unmatched", "bounce for an address that is not a contact")
    best = max(outcomes, key=lambda o: _SEVERITY[o.kind])
    return Outcome(best.kind, suppressed=sum(o.suppressed for o in outcomes), campaign=best.campaign,
                   status=best.status)


def _notice(store: Store, settings: Settings, dsn: reports.Dsn, notices: list[reports.RecipientStatus], ref: str,
            verp: Target | None) -> Outcome:
    """Delayed, relayed or expanded: an event on the delivery, never a bounce."""
    first = max(notices, key=lambda r: _NOTICE_ORDER[r.verdict.kind])
    target = matching.attribute(store.conn, settings, dsn.original, dsn.envelope_id, verp)
    if target is None:
        return Outcome("unmatched", f"{first.verdict.kind} notice about a message mailcli has no record of")
    if target is False:
        target = next((t for t in (matching.recipient_target(store.conn, r) for r in notices) if t), None)
        if target is None:
            return Outcome("unmatched", f"{first.verdict.kind} notice for an address that is not a contact")
    assert isinstance(target, Target)
    actions.record_delivery_notice(
        store, target.contact_id, campaign_id=target.campaign_id, kind=first.verdict.kind, status=first.verdict.code,
        diagnostic=first.diagnostic, will_retry_until=first.will_retry_until, source_ref=ref,
    )
    return Outcome(first.verdict.kind, campaign=campaign_name(store.conn, target.campaign_id),
                   status=first.verdict.code)


def _heuristic(store: Store, settings: Settings, bounce: reports.HeuristicBounce, ref: str,
               verp: Target | None = None) -> Outcome:
    if bounce.verdict.is_notice:
        return _heuristic_delay(store, settings, bounce, ref, verp)
    if bounce.verdict.kind not in ("hard", "soft", "policy"):
        return _unreadable(store, settings, verp, ref, "bounce without a status code")
    target = matching.attribute(store.conn, settings, bounce.original, None, verp)
    if target is None:
        return Outcome("unmatched", "bounce of a message mailcli has no record of")
    if target is False:
        targets = matching.by_addresses(store.conn, bounce.recipients)
        if len(targets) != 1:
            return Outcome("unmatched", "bounce for an address that is not a contact" if not targets
                           else "bounce naming several contacts")
        target = targets[0]
    assert isinstance(target, Target)
    return _apply(store, settings, target, bounce.verdict, ref)


def _heuristic_delay(store: Store, settings: Settings, bounce: reports.HeuristicBounce, ref: str,
                     verp: Target | None) -> Outcome:
    """A non-standard warning that delivery is still being tried: an event on the delivery."""
    target = matching.attribute(store.conn, settings, bounce.original, None, verp)
    if target is False:
        targets = matching.by_addresses(store.conn, bounce.recipients)
        target = targets[0] if len(targets) == 1 else None
    if not isinstance(target, Target):
        return Outcome("unmatched", "delay notice about a message mailcli has no record of")
    actions.record_delivery_notice(store, target.contact_id, campaign_id=target.campaign_id, kind="delayed",
                                   status=bounce.verdict.code, diagnostic=None, will_retry_until=None,
                                   source_ref=ref)
    return Outcome("delayed", status=bounce.verdict.code)


def _complaint(store: Store, settings: Settings, arf: reports.Arf, ref: str) -> Outcome:
    if arf.feedback_type != "abuse":
        return Outcome("unmatched", f"feedback report of type {arf.feedback_type or 'unknown'!r}")
    target = matching.attribute(store.conn, settings, arf.original)
    if target is False:
        target = matching.by_address(store.conn, arf.original_rcpt_to)
    if not isinstance(target, Target):
        return Outcome("unmatched", "complaint about a message mailcli has no record of")
    changed = actions.record_complaint(store, settings, target.contact_id, campaign_id=target.campaign_id,
                                       feedback_type=arf.feedback_type, source_ref=ref)
    return Outcome("complaint", suppressed=int(changed))


def _mailto(store: Store, settings: Settings, tokens: list[str], ref: str) -> Outcome:
    secret = settings.secret()
    for token in tokens:
        parsed = parse_unsubscribe_token(secret, token)
        if parsed is None:
            continue
        # A contact or list gone since (erased, purged) leaves nothing to do.
        changed = actions.unsubscribe_by_token(store, settings, parsed.contact_uid, parsed.list_id, channel="mailto",
                                               command="bounces", source_ref=ref)
        return Outcome("unsubscribe", suppressed=int(bool(changed)))
    return Outcome("unmatched", "unsubscribe request with an invalid token")
