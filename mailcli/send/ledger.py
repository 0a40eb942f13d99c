"""The campaign ledger: campaigns, their frozen audience and one delivery row
per (campaign, contact). The SQL is in the store (``store.campaigns``,
``store.deliveries``, ``store.audience``); this module holds the rules.

A delivery moves ``pending → sending → sent | failed | deferred | uncertain``
(plus ``skipped`` when a contact unsubscribed, was suppressed or restricted
after the audience was frozen). The rules that make "every person exactly
once" hold (docs/guarantees.md#exactly-once):

* The audience is frozen into ``deliveries`` by the first send, inside one
  transaction, and ``UNIQUE (campaign_id, contact_id)`` makes a second freeze
  (``--include-new``) add only newcomers.
* ``sending`` is written — and committed — right before the end-of-data dot
  (see ``writer.LedgerWriter``). A row found in ``sending`` when a run starts
  belongs to a process that died in that window; it becomes ``uncertain`` and
  is not resent unless asked (``--resend-uncertain``).
* Everything else that is not ``sent``/``failed``/``skipped`` is simply sent
  again by a rerun.

Totals survive purge and erasure: code that deletes delivery rows or events
must first call ``mailcli.store.archive.archive_deliveries`` /
``archive_events`` in the same transaction (re-exported here); ``report``
adds ``campaigns.archived_counts`` to the live counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailcli import clock
from mailcli.addresses import AddressError, normalise_pair
from mailcli.errors import NotFoundError, UsageError
from mailcli.segments import Segment, parse_segment
from mailcli.store import campaigns as campaign_rows
from mailcli.store import deliveries as delivery_rows
from mailcli.store import leases
from mailcli.store.archive import REPORT_KEYS, archive_deliveries, archive_events, archived_counts
from mailcli.store.audience import audience_page, list_not_found, members_by_row
from mailcli.store.campaigns import Campaign, get_campaign, list_campaigns
from mailcli.store.db import is_postgres
from mailcli.store.deliveries import (
    IN_FLIGHT,
    KILLED_AFTER_DOT,
    delivery_status_counts,
    shared_status_counts,
    uncertain_causes,
)
from mailcli.store.lists import list_id
from mailcli.store.relays import smtputf8_marked
from mailcli.store.segments import check_segment_fields
from mailcli.store.suppressions import service_blocked_hmacs, suppressed_hmacs
from mailcli.tokens import address_hasher, message_id, new_uid

if TYPE_CHECKING:
    from mailcli.send.results import FreezeFn

    from ..store.db import Connection

__all__ = [
    "REPORT_KEYS", "Campaign", "Recipient", "archive_deliveries", "archive_events", "campaign_counts",
    "create_campaign", "freeze_audience", "get_campaign", "iter_audience", "iter_sendable", "list_campaigns",
    "recover_interrupted", "failures", "uncertain_causes",
]

# Delivery statuses a run sends (``uncertain`` only with --resend-uncertain).
SENDABLE = ("pending", "deferred")
# How the skip reason of an address the relay cannot take begins.
SKIP_SMTPUTF8 = "the address needs SMTPUTF8"


@dataclass(frozen=True, slots=True)
class Recipient:
    """A delivery joined with what is needed to render and re-check it."""

    delivery_id: int
    contact_id: int
    contact_uid: str
    email: str
    email_key: str
    first_name: str
    last_name: str
    attributes: str  # JSON text, parsed only when rendering
    message_id: str
    skip_reason: str | None  # set when the check at send time says no

    def as_tuple(self) -> tuple[Any, ...]:
        """The fields in order (cheap to pickle to a render worker)."""
        return (self.delivery_id, self.contact_id, self.contact_uid, self.email, self.email_key,
                self.first_name, self.last_name, self.attributes, self.message_id, self.skip_reason)


def list_id_of(conn: Connection, list_name: str) -> int:
    """The id of the list, or NotFoundError naming the lists there are."""
    found = list_id(conn, list_name)
    if found is None:
        raise list_not_found(conn, list_name)
    return found


def create_campaign(conn: Connection, *, name: str, template: str, list_name: str, subject: str | None,
                    segment: Segment | None = None, subject_line: str | None = None,
                    not_before_at: str | None = None, kind: str = "marketing",
                    service_reason: str | None = None) -> Campaign:
    """Insert a campaign row of ``kind`` (not yet frozen; scheduled with ``not_before_at``)."""
    if not name.strip() or any(ord(c) < 32 for c in name):
        raise UsageError(f"Invalid campaign name {name!r}")
    found = list_id_of(conn, list_name)
    if segment is not None:
        check_segment_fields(conn, segment)
    campaign_rows.insert_campaign(conn, uid=new_uid(), name=name, template=template,
                                  list_id=found, list_name=list_name, subject=subject,
                                  created_at=clock.now_iso(), segment=segment.name if segment else None,
                                  segment_where=segment.text if segment else None, subject_line=subject_line,
                                  not_before_at=not_before_at, kind=kind, service_reason=service_reason)
    campaign = get_campaign(conn, name)
    assert campaign is not None
    return campaign


AUDIENCE_PAGE = 10_000


def campaign_segment(campaign: Campaign) -> Segment | None:
    """The segment a campaign was started with, as it was written then."""
    if not campaign.segment_where:
        return None
    return parse_segment(campaign.segment_where, source=f"campaign {campaign.name}", name=campaign.segment)


def iter_audience(conn: Connection, campaign_id: int, list_id: int, list_name: str, secret: bytes,
                  *, page: int | None = None, kind: str = "marketing",
                  segment: Segment | None = None) -> Iterator[list[tuple[int, str]]]:
    """Pages of (contact id, uid) of members not yet in the campaign, minus suppressed.

    The audience is the list's subscribed members as ``store.audience``
    defines them (contact active, not restricted, no objection to
    marketing): the count ``lists`` shows. Suppression is checked here
    because it needs the HMAC of the address. Each page is read in full
    before it is handed out, so the caller may write deliveries for it
    before asking for the next. A service message (``kind``) reaches the
    members ``store.audience`` says it does, minus addresses that bounced,
    complained or were erased. With ``segment``, only the members it
    matches, whatever the kind.
    """
    suppressed = service_blocked_hmacs(conn) if kind == "service" else suppressed_hmacs(conn, list_name)
    hmac_of = address_hasher(secret)
    after = 0
    while True:
        rows = audience_page(conn, list_id, campaign_id, after, page or AUDIENCE_PAGE, kind, segment)
        if not rows:
            return
        after = rows[-1][0]
        if not suppressed:
            yield [(contact_id, uid) for contact_id, uid, _ in rows]
            continue
        yield [(contact_id, uid) for contact_id, uid, email_key in rows if hmac_of(email_key) not in suppressed]


def freeze_audience(conn: Connection, campaign: Campaign, secret: bytes, domain: str, *,
                    keep: int | None = None, progress: FreezeFn | None = None) -> int:
    """Insert a pending delivery for every audience member not yet in it.

    Run inside a transaction. Returns the number of members added. The
    Message-ID is derived from campaign and contact, so it is the same in
    every run and a bounce can be traced back to this delivery.
    ``keep`` writes only the first ``keep`` of them and counts the rest, for
    a transaction that is rolled back (a dry run, the confirmation's plan).
    ``progress`` hears how far it got (a million members take seconds).
    """
    if campaign.list_id is None:
        raise NotFoundError(f"The list of campaign {campaign.name!r} ({campaign.list_name}) no longer exists")
    now = clock.now_iso()
    added = 0
    expected = _expected_members(conn, campaign) if progress is not None else None
    if progress is not None:
        progress(0, expected, keep is None)
    with delivery_rows.pending_inserts(conn, campaign.id) as inserts:
        for members in iter_audience(conn, campaign.id, campaign.list_id, campaign.list_name, secret,
                                     kind=campaign.kind, segment=campaign_segment(campaign)):
            wanted = members if keep is None else members[: max(0, keep - added)]
            added += len(members)
            inserts.insert([(campaign.id, contact_id, message_id(campaign.uid, uid, domain), now)
                            for contact_id, uid in wanted])
            if progress is not None:
                progress(added, expected, keep is None)
    campaign_rows.mark_frozen(conn, campaign.id, now)
    return added


def _expected_members(conn: Connection, campaign: Campaign) -> int | None:
    """About how many members a freeze adds: the list's members by their
    membership row, when the whole list is frozen for the first time (a
    segment, or the newcomers of --include-new, are a part nobody counted
    beforehand: None)."""
    if campaign.list_id is None or campaign.frozen_at is not None or campaign.segment_where:
        return None
    reached = ("subscribed", "unsubscribed") if campaign.kind == "service" else ("subscribed",)
    return members_by_row(conn, campaign.list_id, reached)


def recover_interrupted(conn: Connection, campaign_id: int) -> int:
    """A run starts: rows left in 'sending' by a dead process become 'uncertain'.

    Only a process killed between writing the end-of-data dot and recording
    the reply leaves such a row (RFC 1047), so the server may have the message.
    (The reply of the interrupted attempt, if any, was an earlier one's.)
    """
    return delivery_rows.mark_interrupted(conn, campaign_id, KILLED_AFTER_DOT, clock.now_iso())


def accept_uncertain(conn: Connection, campaign: Campaign, which: Sequence[str]) -> int:
    """Count uncertain messages as sent, after their sender found them in the
    relay's log: each of ``which`` is a Message-ID or a recipient's address,
    or ``all``. A value that names no uncertain message of the campaign is an
    error (and, raised inside the run's transaction, changes nothing)."""
    rows = delivery_rows.uncertain_ids(conn, campaign.id)
    chosen: list[int] = []
    for value in which:
        wanted = value.strip()
        if wanted.lower() == "all":
            chosen += [row[0] for row in rows]
            continue
        match = _uncertain_matching(rows, wanted)
        if not match:
            raise UsageError(
                f"--accept-uncertain {value}: campaign {campaign.name!r} has no uncertain message"
                " with that Message-ID or address; nothing was changed",
                hint=f"mailcli report {campaign.name} --failed lists the uncertain ones",
            )
        chosen += match
    return delivery_rows.accept_uncertain(conn, sorted(set(chosen)), clock.now_iso())


def _uncertain_matching(rows: Sequence[tuple[int, str, str]], wanted: str) -> list[int]:
    """The ids of the uncertain rows whose Message-ID (with or without <>) or
    recipient address is ``wanted``."""
    bare = wanted.strip("<>")
    try:
        key = normalise_pair(wanted)[1] if "@" in wanted and not wanted.startswith("<") else None
    except AddressError:
        key = None
    return [row[0] for row in rows if row[1].strip("<>") == bare or (key is not None and row[2] == key)]


def sendable_statuses(resend_uncertain: bool) -> tuple[str, ...]:
    return (*SENDABLE, "uncertain") if resend_uncertain else SENDABLE


def iter_sendable(
    conn: Connection, campaign: Campaign, secret: bytes, *, resend_uncertain: bool = False, page: int = 100,
    relay: tuple[str, bool | None] | None = None,
) -> Iterator[list[Recipient]]:
    """Pages of deliveries still to send, each re-checked right before use.

    Pages are small and fetched lazily, so the check happens moments before
    each message is rendered and transmitted; an unsubscribe recorded during
    a long send stops every later message
    (docs/guarantees.md#opt-outs-during-a-send). ``relay`` is the relay's
    address and whether it offers SMTPUTF8: an address with a non-ASCII
    local part that this relay already failed is skipped while it does not.
    """
    statuses = sendable_statuses(resend_uncertain)
    # The walk by id starts at the campaign's first delivery, not at the
    # first row of the table: the first page stepped over every older
    # campaign's deliveries (0.67 s for ten million, benchmarks/README.md).
    last = (delivery_rows.first_delivery_id(conn, campaign.id) or 1) - 1
    while True:
        rows = delivery_rows.sendable_page(conn, campaign.id, campaign.list_id, statuses, last, page, campaign.kind)
        if not rows:
            return
        last = rows[-1][0]
        yield _checked(conn, campaign, secret, rows, relay)


def iter_claimed(
    conn: Connection, campaign: Campaign, secret: bytes, owner: int, *, lease: float,
    resend_uncertain: bool = False, page: int = 100, relay: tuple[str, bool | None] | None = None,
) -> Iterator[list[Recipient]]:
    """``iter_sendable`` for a run that shares the campaign with other
    senders (PostgreSQL): each page is a batch this run claimed
    (``store.leases``). An empty page means nothing is free now but other
    live runs still hold pending deliveries: wait a moment and ask again,
    since a run that ends or dies lets go of what it did not send. The
    iteration ends when nothing is free and nobody else holds any."""
    statuses = sendable_statuses(resend_uncertain)
    while True:
        ids = leases.claim(conn, campaign.id, owner, statuses, page, lease)
        if ids:
            rows = delivery_rows.sendable_rows(conn, campaign.id, campaign.list_id, statuses, ids, campaign.kind)
            if rows:
                yield _checked(conn, campaign, secret, rows, relay)
            continue
        if not leases.held_by_others(conn, campaign.id, owner):
            return
        yield []


# Complexity: per recipient of a page: each reason a row is no longer sendable, checked inline.
def _checked(conn: Connection, campaign: Campaign, secret: bytes, rows: list[Any],
             relay: tuple[str, bool | None] | None = None) -> list[Recipient]:
    """Rows of ``sendable_page`` as Recipients, the suppression list checked too."""
    hmac_of = address_hasher(secret)
    digests = {hmac_of(row[4]): i for i, row in enumerate(rows)}
    blocked = (service_blocked_hmacs(conn, among=list(digests)) if campaign.kind == "service"
               else suppressed_hmacs(conn, campaign.list_name, among=list(digests)))
    suppressed_rows = {digests[d] for d in blocked}
    marked: dict[int, str | None] = {}
    if relay is not None and relay[1] is False:
        # Only addresses that need SMTPUTF8 are looked up, and only while the
        # relay does not offer it: nearly every page skips this.
        utf8 = [row[1] for row in rows if not row[3].isascii()]
        marked = smtputf8_marked(conn, utf8, relay[0]) if utf8 else {}
    out = []
    for i, row in enumerate(rows):
        reason = row[9]
        if reason is None and i in suppressed_rows:
            reason = "address is on the suppression list"
        if reason is None and row[1] in marked:
            reason = _smtputf8_reason(relay[0] if relay else "the relay", marked[row[1]])
        out.append(Recipient(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], reason))
    return out


def _smtputf8_reason(relay: str, failed_in: str | None) -> str:
    return (f"{SKIP_SMTPUTF8}, which {relay} does not offer"
            + (f" (it failed in campaign {failed_in})" if failed_in else "")
            + "; skipped until the relay offers it")


def preflight_samples(conn: Connection, campaign: Campaign, secret: bytes, *,
                      resend_uncertain: bool = False, per_group: int = 3, first: int | None = None,
                      relay: tuple[str, bool | None] | None = None) -> list[tuple[str | None, Recipient]]:
    """``(field-set key, recipient)`` for the first ``per_group`` sendable
    deliveries of each distinct set of contact fields, in delivery order.

    With ``first``, only among the first ``first`` recipients a run sends
    to, read as the run reads them (``iter_sendable`` with ``relay``, the
    ones it skips passed over): what a run with --limit sends, not the
    whole audience."""
    if first is not None:
        return _samples_among_first(conn, campaign, secret, resend_uncertain, per_group, first, relay)
    statuses = sendable_statuses(resend_uncertain)
    signatures = delivery_rows.samples_by_fields(conn, campaign.id, campaign.list_id, statuses, per_group,
                                                 campaign.kind)
    out: list[tuple[str | None, Recipient]] = []
    ids = list(signatures)
    for start in range(0, len(ids), 500):
        found = delivery_rows.sendable_rows(conn, campaign.id, campaign.list_id, statuses, ids[start:start + 500],
                                            campaign.kind)
        if found:
            out.extend((signatures[r.delivery_id], r) for r in _checked(conn, campaign, secret, found))
    return out


def _samples_among_first(conn: Connection, campaign: Campaign, secret: bytes, resend_uncertain: bool,
                         per_group: int, first: int,
                         relay: tuple[str, bool | None] | None) -> list[tuple[str | None, Recipient]]:
    out: list[tuple[str | None, Recipient]] = []
    taken: dict[str | None, int] = {}
    left = first
    for page in iter_sendable(conn, campaign, secret, resend_uncertain=resend_uncertain, page=min(first, 1000),
                              relay=relay):
        for r in page:
            if r.skip_reason:
                continue
            key = fields_key(r.attributes)
            if taken.get(key, 0) < per_group:
                taken[key] = taken.get(key, 0) + 1
                out.append((key, r))
            left -= 1
            if not left:
                return out
    return out


def fields_key(attributes: str) -> str | None:
    """A contact's set of attribute names as ``samples_by_fields`` writes it
    in SQL: sorted, joined by U+001F; None when there are none or the text
    is not a JSON object."""
    try:
        value = json.loads(attributes)
    except (TypeError, ValueError):
        return None
    if not isinstance(value, dict) or not value:
        return None
    return "\x1f".join(sorted(value))


def campaign_counts(conn: Connection, campaign: Campaign) -> dict[str, int]:
    """The report keys for one campaign: live rows + archived totals.

    ``sending`` counts as ``uncertain`` (outside a running send it can only be
    a row a killed process left behind); on PostgreSQL, where several senders
    may run, a ``sending`` row of a live sender counts as ``pending``. bounced/unsubscribed/complained are
    the events attributed to the campaign (written by ``bounces``/``serve``).

    An uncertain message whose row is gone (its person erased, or the send
    log purged) counts as ``uncertain_erased``, not ``uncertain``: nothing
    can resend it or accept it by its Message-ID any more, so it must not keep
    the campaign from completing nor make every later run end as partial.
    Every member of the audience is in exactly one of ``sent``, ``failed``,
    ``deferred``, ``pending``, ``uncertain``, ``uncertain_erased``, ``skipped``.
    """
    counts = {key: 0 for key in (*REPORT_KEYS, "uncertain_erased", "skipped")}
    if is_postgres(conn):
        # A message a live sender has in flight is not uncertain: its result
        # is not known yet, as for a pending one.
        by_status = shared_status_counts(conn, campaign.id)
        live = by_status.pop(IN_FLIGHT, 0)
        by_status["sending"] = by_status.get("sending", 0) - live
        by_status["pending"] = by_status.get("pending", 0) + live
    else:
        by_status = delivery_status_counts(conn, campaign.id)
    for status, n in by_status.items():
        key = "uncertain" if status == "sending" else status
        counts[key] = counts.get(key, 0) + n
        counts["audience"] += n
    for kind, n in campaign_rows.feedback_counts(conn, campaign.id).items():
        counts[kind] += n
    for key, n in archived_counts(conn, campaign.id, (*REPORT_KEYS, "skipped")).items():
        counts["uncertain_erased" if key == "uncertain" else key] += n
    return counts


@dataclass(frozen=True, slots=True)
class Failure:
    email: str
    status: str
    reply: str
    attempts: int
    updated_at: str
    message_id: str


def failures(conn: Connection, campaign: Campaign) -> list[Failure]:
    """Failed, deferred and uncertain deliveries with the server's last reply."""
    return [Failure(*row) for row in delivery_rows.failed_deliveries(conn, campaign.id)]


def set_campaign_status(conn: Connection, campaign_id: int, counts: dict[str, Any]) -> bool:
    """'sent' once nothing is left to send or retry; otherwise 'sending'.

    True when this call completed the campaign: it was not 'sent' before.
    Only the call that completes it sets its ``finished_at``."""
    done = counts.get("pending", 0) + counts.get("deferred", 0) == 0
    if done:
        return campaign_rows.complete_campaign(conn, campaign_id, clock.now_iso())
    campaign_rows.set_campaign_status(conn, campaign_id, "sending", None)
    return False
