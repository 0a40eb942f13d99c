"""The one place that records opt-outs, bounces and complaints.

Every channel — one-click POST (``serve``), mailto and DSN/ARF reports
(``bounces``), the manual ``unsubscribe`` command, and the unsubscribed and
cleaned rows of an imported export (``import``) — ends here, so each
opt-out is stored the same way (``docs/guarantees.md#suppression``):

* the membership(s) become ``unsubscribed`` with the UTC time and the channel;
  the consent evidence of the membership is kept as it was given;
* an opt-out from all marketing (scope ``*``) also sets
  ``contacts.no_marketing_at``, an objection to direct marketing (GDPR art. 21);
* a suppression row keyed by the HMAC of the normalised address, so a later
  import never resubscribes the person and send skips them even after the
  contact row is erased;
* an ``events`` row (kind, channel, scope, campaign when attributable) that
  ``report`` counts, and an audit entry.

All of it happens in one transaction. Repeating an opt-out changes nothing
and returns ``False``: the first record is never overwritten. Every
opt-out that changes something is also appended to the opt-out ledger
outside the database (:mod:`mailcli.optouts`) before the transaction
commits, so restoring an older backup re-applies it.

One-click unsubscribes that ``serve`` could not write at once wait in the
spool beside the database (:mod:`mailcli.store.spool`);
``apply_spooled_optouts`` records them here, with the time of the request.

Hard bounces and complaints suppress from all marketing; soft bounces only
count, until ``[bounces] soft_limit`` distinct campaigns have soft-bounced,
which then suppresses the address as bounced; a policy rejection never
suppresses (``docs/guarantees.md#bounces-and-complaints``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import audit, clock
from ..addresses import AddressError, normalise_address
from ..config import Settings
from ..errors import UsageError
from ..optouts import OptOutEntry, append_optouts
from ..store import Store, lists, spool
from ..store.attribution import latest_campaign
from ..store.events import add_event, soft_bounced_campaigns
from ..store.subjects import (
    contact_by_email_key,
    contact_by_id,
    contact_by_uid,
    end_memberships,
    mark_complained,
    mark_status,
    object_to_marketing,
)
from ..store.suppressions import ALL, add_suppression
from ..tokens import address_hmac

if TYPE_CHECKING:
    from ..importrows import OptOut

CHANNELS = ("one-click", "mailto", "cli", "complaint", "bounce", "import")


@dataclass(frozen=True, slots=True)
class AddressResult:
    """What ``unsubscribe_address`` did: was the address known, did anything change."""

    known: bool
    changed: bool
    scope: str


@dataclass(frozen=True, slots=True)
class BounceResult:
    """What ``record_bounce`` did."""

    suppressed: bool  # the address is (now) suppressed as bounced because of this report
    changed: bool  # a suppression or status was newly written
    soft_count: int  # distinct campaigns with soft bounces so far (soft only)


# Complexity: one branch per scope (a list, all marketing) and per state the person is already in.
def unsubscribe(
    store: Store,
    settings: Settings,
    contact_id: int,
    *,
    list_id: int | None = None,
    channel: str,
    campaign_id: int | None = None,
    source_ref: str | None = None,
    command: str | None = None,
    at: str | None = None,
) -> bool:
    """Opt a contact out of one list (``list_id``) or of all marketing (``None``).

    ``at`` is when the person asked (default now; a spooled one-click
    request keeps its own time). Returns True when something changed; a
    repeat returns False and writes nothing (no second event, no new
    timestamp).
    """
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    secret = settings.secret()
    with store.transaction() as conn:
        contact = contact_by_id(conn, contact_id)
        if contact is None:
            return False
        scope = ALL if list_id is None else lists.list_name(conn, list_id)
        if scope is None:  # the list was deleted: nothing left to leave
            return False
        now = at or clock.now_iso()
        changed = end_memberships(conn, contact.id, channel, at=now, updated_at=now, list_id=list_id) > 0
        if list_id is None:
            changed = object_to_marketing(conn, contact.id, now) or changed
        digest = address_hmac(secret, contact.email_key)
        changed = add_suppression(conn, digest, scope, "unsubscribed", channel, now) or changed
        if not changed:
            return False
        append_optouts(settings, [OptOutEntry(digest, scope, "unsubscribed", channel, now)])
        add_event(conn, contact_id=contact.id, campaign_id=campaign_id, kind="unsubscribed", channel=channel,
                  scope=scope, source_ref=source_ref, now=now)
        audit.append(store, "unsubscribe", subject_hmac=digest, command=command or channel,
                     detail={"channel": channel, "scope": scope}, settings=settings)
    return True


def unsubscribe_by_token(
    store: Store, settings: Settings, contact_uid: str, list_id: int, *, channel: str, command: str,
    source_ref: str | None = None, at: str | None = None,
) -> bool | None:
    """The opt-out an unsubscribe token asks for (one-click, mailto, spooled),
    attributed to the campaign that last reached the person on that list.

    None when the contact or the list is gone (erased or purged since the
    message was sent: the suppression list already holds them); else
    whether anything changed.
    """
    conn = store.conn
    contact = contact_by_uid(conn, contact_uid)
    if contact is None or lists.list_name(conn, list_id) is None:
        return None
    campaign = latest_campaign(conn, contact.id, list_id)
    return unsubscribe(store, settings, contact.id, list_id=list_id, channel=channel, campaign_id=campaign,
                       source_ref=source_ref, command=command, at=at)


def _soft_limit_reached(store: Store, settings: Settings, contact_id: int) -> tuple[bool, int]:
    """Count campaigns, not messages: two failures of the same campaign's
    message are one problem, not two. (Delay notices are events of their
    own kind and never count.)"""
    count = soft_bounced_campaigns(store.conn, contact_id)
    return count >= settings.bounces.soft_limit, count


def record_bounce(
    store: Store,
    settings: Settings,
    contact_id: int,
    *,
    hard: bool,
    campaign_id: int | None = None,
    status: str | None = None,
    source_ref: str | None = None,
    command: str = "bounces",
) -> BounceResult:
    """Record one bounce report for a contact.

    Hard: suppress from everything (reason ``bounced``) and mark the contact
    ``bounced``. Soft: an event only, until soft bounces from
    ``[bounces] soft_limit`` distinct campaigns have been seen.
    """
    secret = settings.secret()
    with store.transaction() as conn:
        contact = contact_by_id(conn, contact_id)
        if contact is None:
            return BounceResult(suppressed=False, changed=False, soft_count=0)
        now = clock.now_iso()
        klass = "hard" if hard else "soft"
        add_event(conn, contact_id=contact.id, campaign_id=campaign_id, kind="bounced" if hard else "soft_bounced",
                  channel="bounce", scope=ALL, detail={"status": status, "class": klass}, source_ref=source_ref,
                  now=now)
        soft_count = 0
        if not hard:
            reached, soft_count = _soft_limit_reached(store, settings, contact.id)
            if not reached:
                return BounceResult(suppressed=False, changed=False, soft_count=soft_count)
        changed = _suppress_bounced(store, settings, contact.id, address_hmac(secret, contact.email_key), now,
                                    detail={"reason": "bounced", "status": status,
                                            "class": klass if hard else "soft_limit"})
        if not hard and changed:
            # The escalation is its own fact, not attributed to a campaign, so
            # report does not count this message both as soft and as hard.
            add_event(conn, contact_id=contact.id, kind="bounced", channel="bounce", scope=ALL,
                      detail={"class": "soft_limit", "soft_bounces": soft_count}, source_ref=source_ref, now=now)
    return BounceResult(suppressed=True, changed=changed, soft_count=soft_count)


def _suppress_bounced(store: Store, settings: Settings, contact_id: int, digest: str, now: str, *,
                      detail: dict[str, Any], command: str = "bounces") -> bool:
    """Suppress a bounced address from everything and mark its contact
    ``bounced``; the ledger and the audit log hear of it when it is new."""
    conn = store.conn
    changed = add_suppression(conn, digest, ALL, "bounced", "bounce", now)
    changed = mark_status(conn, contact_id, "bounced", now) or changed
    if changed:
        append_optouts(settings, [OptOutEntry(digest, ALL, "bounced", "bounce", now)])
        audit.append(store, "suppress", subject_hmac=digest, command=command, detail=detail, settings=settings)
    return changed


def record_complaint(
    store: Store,
    settings: Settings,
    contact_id: int,
    *,
    campaign_id: int | None = None,
    feedback_type: str = "abuse",
    source_ref: str | None = None,
    command: str = "bounces",
) -> bool:
    """A spam complaint: suppress from all marketing at once, as an objection (GDPR art. 21).

    The complaint is recorded as an objection to all direct marketing: every
    membership is unsubscribed (channel ``complaint``), ``no_marketing_at`` is
    set and the address is suppressed with reason ``complained``.
    Returns True when the contact was not already suppressed this way.
    """
    secret = settings.secret()
    with store.transaction() as conn:
        contact = contact_by_id(conn, contact_id)
        if contact is None:
            return False
        now = clock.now_iso()
        digest = address_hmac(secret, contact.email_key)
        add_event(conn, contact_id=contact.id, campaign_id=campaign_id, kind="complained", channel="complaint",
                  scope=ALL, detail={"feedback_type": feedback_type}, source_ref=source_ref, now=now)
        changed = end_memberships(conn, contact.id, "complaint", at=now, updated_at=now) > 0
        changed = mark_complained(conn, contact.id, now) or changed
        changed = add_suppression(conn, digest, ALL, "complained", "complaint", now) or changed
        if changed:
            append_optouts(settings, [OptOutEntry(digest, ALL, "complained", "complaint", now)])
            audit.append(store, "suppress", subject_hmac=digest, command=command,
                         detail={"reason": "complained", "feedback_type": feedback_type}, settings=settings)
    return changed


def record_policy_rejection(
    store: Store, contact_id: int | None, *, campaign_id: int | None, status: str | None, source_ref: str | None,
) -> None:
    """A 5.7.x rejection: the sender's setup (SPF/DKIM/DMARC, reputation) is at fault.

    It never suppresses the contact, whose address is not at fault; the
    event lets the campaign show it.
    """
    with store.transaction() as conn:
        add_event(conn, contact_id=contact_id, campaign_id=campaign_id, kind="policy_rejected", channel="bounce",
                  scope=ALL, detail={"status": status}, source_ref=source_ref, now=clock.now_iso())


def record_delivery_notice(
    store: Store, contact_id: int, *, campaign_id: int | None, kind: str, status: str | None,
    diagnostic: str | None, will_retry_until: str | None, source_ref: str | None,
) -> None:
    """A delay, relay or expansion notice (RFC 3464): the delivery's news, not a bounce.

    It never suppresses and never counts towards ``soft_limit``: a delayed
    message is still being tried, and is usually delivered later.
    """
    detail: dict[str, Any] = {"status": status}
    if diagnostic:
        detail["diagnostic"] = diagnostic[:200]
    if will_retry_until:
        detail["will_retry_until"] = will_retry_until
    with store.transaction() as conn:
        add_event(conn, contact_id=contact_id, campaign_id=campaign_id, kind=kind, channel="bounce", scope=ALL,
                  detail=detail, source_ref=source_ref, now=clock.now_iso())


def unsubscribe_address(
    store: Store,
    settings: Settings,
    email: str,
    *,
    list_name: str | None = None,
    channel: str = "cli",
    command: str = "unsubscribe",
) -> AddressResult:
    """Opt an address out by hand, whether or not it is in the database.

    An unknown address is still put on the suppression list, so a later
    import can never add it: that is what a person asking to be left alone
    expects.
    """
    try:
        address = normalise_address(email)
    except AddressError as exc:
        raise UsageError(f"Not a valid email address: {email!r} ({exc.reason})") from None
    conn = store.conn
    list_id: int | None = None
    if list_name is not None:
        list_id = lists.list_id(conn, list_name)
        if list_id is None:
            from ..store.audience import list_not_found

            raise list_not_found(conn, list_name)
    scope = list_name if list_name is not None else ALL
    contact = contact_by_email_key(conn, address.key)
    if contact is not None:
        changed = unsubscribe(store, settings, contact.id, list_id=list_id, channel=channel, command=command)
        return AddressResult(known=True, changed=changed, scope=scope)
    digest = address_hmac(settings.secret(), address.key)
    with store.transaction() as tx:
        changed = add_suppression(tx, digest, scope, "unsubscribed", channel, clock.now_iso())
        if changed:
            append_optouts(settings, [OptOutEntry(digest, scope, "unsubscribed", channel, clock.now_iso())])
            add_event(tx, contact_id=None, campaign_id=None, kind="unsubscribed", channel=channel, scope=scope,
                      detail={"known": False}, source_ref=None, now=clock.now_iso())
            audit.append(store, "unsubscribe", subject_hmac=digest, command=command,
                         detail={"channel": channel, "scope": scope, "known": False}, settings=settings)
    return AddressResult(known=False, changed=changed, scope=scope)


# Complexity: one branch per kind of opt-out row (unsubscribed, cleaned) and scope, inside the import's transaction.
def record_imported_opt_outs(
    store: Store, settings: Settings, rows: Iterable[OptOut], *, list_id: int, list_name: str, source: str,
) -> int:
    """Carry over the opt-outs of an imported export, inside the import's
    transaction: an unsubscribed row leaves list ``list_name`` (the old
    service's list is the one imported into, and there an unsubscribe is per
    list too); a cleaned row is a hard bounce, suppressed from all marketing.
    Recorded like any opt-out, with channel ``import`` and the file line as
    the event's source; the membership keeps the file's time when it has one.
    Returns how many addresses changed (a repeat changes nothing).
    """
    conn = store.conn
    secret = settings.secret()
    now = clock.now_iso()
    changed_count = 0
    ledger: list[OptOutEntry] = []
    for line, key, kind, at in rows:
        digest = address_hmac(secret, key)
        contact = contact_by_email_key(conn, key)
        if kind == "bounced":
            scope = ALL
            changed = add_suppression(conn, digest, ALL, "bounced", "import", now)
            if contact is not None:
                changed = mark_status(conn, contact.id, "bounced", now) or changed
        else:
            scope = list_name
            changed = add_suppression(conn, digest, list_name, "unsubscribed", "import", now)
            if contact is not None:
                changed = end_memberships(conn, contact.id, "import", at=at or now, updated_at=now,
                                          list_id=list_id) > 0 or changed
        if changed:
            changed_count += 1
            ledger.append(OptOutEntry(digest, scope, kind, "import", now))
            add_event(conn, contact_id=contact.id if contact is not None else None, campaign_id=None, kind=kind,
                      channel="import", scope=scope, detail={"at": at} if at else None,
                      source_ref=f"{source} line {line}", now=now)
            audit.append(store, "unsubscribe" if kind == "unsubscribed" else "suppress", subject_hmac=digest,
                         command="import", detail={"channel": "import", "scope": scope, "reason": kind},
                         settings=settings)
    append_optouts(settings, ledger)
    return changed_count


def apply_spooled_optouts(store: Store, settings: Settings) -> int:
    """Record the one-click opt-outs waiting in the spool; how many were applied.

    All of them in one transaction, each with the time of its request and
    attributed like a direct one; the spool entries are removed only after
    the commit. A contact erased (or a list deleted) since has nothing left
    to unsubscribe: the suppression list already holds them.
    """
    entries = spool.pending_optouts(store.path)
    if not entries:
        return 0
    with store.transaction():
        for entry in entries:
            channel = entry.channel if entry.channel in CHANNELS else "one-click"
            unsubscribe_by_token(store, settings, entry.contact_uid, entry.list_id, channel=channel, command="serve",
                                 at=entry.at)
    spool.remove_applied(entries)
    return len(entries)
