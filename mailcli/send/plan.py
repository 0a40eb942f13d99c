"""Before a send transmits anything: create or resume the campaign, claim it,
freeze its audience, count what is left, and render one recipient of every
distinct set of contact fields (the preflight).

``prepare`` does all the writing in one transaction, so another process
(another configuration naming this database) that creates or claims the same
campaign at the same moment is seen, not collided with. The confirmation and
a dry run use the same transaction rolled back: "no", or no terminal,
changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailcli.addresses import mask_address
from mailcli.config import Settings
from mailcli.errors import (
    HeaderInjectionError,
    MailcliError,
    NoLawfulBasisError,
    TemplateError,
    UsageError,
)
from mailcli.locks import Holder, LockedError, busy_message
from mailcli.segments import Segment
from mailcli.send import ledger
from mailcli.send.message import MessageFactory
from mailcli.send.results import FreezeFn, SendPlan, TemplateChange
from mailcli.store import Store
from mailcli.store import campaigns as campaign_rows
from mailcli.store.claims import take_claim

if TYPE_CHECKING:
    from ..store.db import Connection


@dataclass(frozen=True, slots=True)
class SendOptions:
    campaign: str
    template: str | None = None
    list_name: str | None = None
    subject: str | None = None
    dry_run: bool = False
    limit: int | None = None
    rate: float | None = None
    concurrency: int | None = None
    include_new: bool = False
    resend_uncertain: bool = False
    expect_count: int | None = None
    # Message-IDs or addresses (or "all") of uncertain messages found accepted in the relay's log.
    accept_uncertain: tuple[str, ...] = ()
    # "service": a message people cannot opt out of (an outage, a change to
    # the terms), with the reason it is one; None keeps a resumed
    # campaign's kind (a new one is marketing).
    kind: str | None = None
    reason: str | None = None
    segment: Segment | None = None  # part of the list (``mailcli.segments.choose_segment``)
    not_before: datetime | None = None  # (aware) no message before this moment


@dataclass(frozen=True, slots=True)
class RunClaim:
    """This run's claim on its campaign inside the database (``store.claims``)."""

    owner: str
    holder: Holder

    def name(self, campaign: ledger.Campaign) -> str:
        return f"send:{campaign.uid}"


class DryRunRollback(Exception):
    """Raised inside ``prepare``'s transaction to undo it, with the numbers
    and the recipients gathered before."""

    def __init__(self, campaign: ledger.Campaign, counts: dict[str, int], added: int, created: bool,
                 recipients: list[ledger.Recipient], accepted: int = 0, no_basis: int = 0,
                 template_change: TemplateChange | None = None) -> None:
        self.campaign, self.counts, self.added, self.created = campaign, counts, added, created
        self.recipients, self.accepted, self.no_basis = recipients, accepted, no_basis
        self.template_change = template_change


Collect = Callable[[Any, ledger.Campaign], list[ledger.Recipient]]
# Checks the template for the campaign; returns its version (``CompiledTemplate.version``).
Check = Callable[[ledger.Campaign], "str | None"]


# Complexity: the steps of starting a run in order, in one transaction (claim, freeze, recover, accept, count, check).
def prepare(store: Store, settings: Settings, options: SendOptions, *,
            rollback: bool = False, claim: RunClaim | None = None, collect: Collect | None = None,
            check: Check | None = None, on_freeze: FreezeFn | None = None) -> tuple[ledger.Campaign, SendPlan]:
    """Create or resume the campaign, claim it and freeze its audience.

    With ``claim``, a campaign another live run holds is refused with one
    line naming it. With ``rollback`` (and for dry runs) nothing is kept: the
    numbers come back in a ``DryRunRollback`` exception after the
    transaction is undone, with what ``collect(conn, campaign)`` gathered
    from the frozen audience before that. ``check(campaign)`` runs last,
    inside the transaction (a dry run's and a confirmation's too, before it
    is undone): when it raises (a template that does not render for the
    frozen audience), the campaign is neither created nor frozen, and a
    corrected command starts it afresh. The version of the template it
    returns is compared with the one the campaign's first messages were sent
    from (``changed_template``), and a real run keeps it while nothing has
    been sent (``keep_template_version``). ``on_freeze`` hears how the
    freeze of the audience goes.
    """
    conn = store.conn
    secret = settings.secret()
    with store.transaction():
        campaign, created = _campaign(conn, settings, options)
        # A scheduled campaign is created before its moment and frozen at it.
        created = created or campaign.frozen_at is None
        if campaign.frozen_at is None:  # the first freeze: the subject as it is now
            campaign_rows.set_subject_line(conn, campaign.id, subject_line(settings, campaign.template,
                                                                           campaign.subject))
        if claim is not None:
            _take(conn, campaign, claim)
        # Rolled back anyway: the confirmation needs the numbers only, a dry
        # run with --limit N its first N recipients; the rest is counted.
        keep = _kept(options, rollback)
        added = no_basis = 0
        if created or options.include_new:
            added = ledger.freeze_audience(conn, campaign, secret, settings.sender.domain, keep=keep,
                                           progress=on_freeze)
            no_basis = _members_without_basis(conn, campaign, created=created, added=added)
        ledger.recover_interrupted(conn, campaign.id)
        accepted = ledger.accept_uncertain(conn, campaign, options.accept_uncertain) if options.accept_uncertain else 0
        counts = ledger.campaign_counts(conn, campaign)
        if keep is not None and added > keep:
            counts["audience"] += added - keep
            counts["pending"] += added - keep
        causes = ledger.uncertain_causes(conn, campaign.id)
        _check_expected(campaign, counts, options)
        if options.dry_run or rollback:
            # A dry run checks the template as the real run would, so a
            # template that fails for this audience is the same error (exit 1);
            # the confirmation only learns which version it is.
            version = check(ledger.get_campaign(conn, campaign.name) or campaign) if check is not None else None
            # A dry run changes nothing: undo the freeze, keep the numbers.
            collected = collect(conn, campaign) if collect is not None else []
            raise DryRunRollback(campaign, counts, added, created, collected, accepted, no_basis,
                                 changed_template(campaign, counts, version, options))
        campaign = ledger.get_campaign(conn, campaign.name) or campaign
        change = None
        if check is not None:
            change = keep_template_version(conn, campaign, counts, check(campaign), options)
    return campaign, plan_of(settings, options, campaign, counts, created, added, causes, accepted,
                             no_basis=no_basis, template_change=change)


def _went_out(counts: dict[str, int]) -> int:
    """Messages of the campaign that went out: sent, or uncertain (their final dot went out)."""
    return counts["sent"] + counts["uncertain"] + counts.get("uncertain_erased", 0)


def _left(counts: dict[str, int], options: SendOptions) -> int:
    """Messages this run and later ones send (whatever ``--limit`` leaves to a later run)."""
    return counts["pending"] + counts["deferred"] + (counts["uncertain"] if options.resend_uncertain else 0)


def changed_template(campaign: ledger.Campaign, counts: dict[str, int], version: str | None,
                     options: SendOptions) -> TemplateChange | None:
    """Whether the rest of a resumed campaign gets another version of its
    template than its first messages had (``version``: the template as this
    run checked it); None when not, or when that is not known (a campaign
    started before mailcli kept the version, a folder that would not hold
    still while it compiled). Every run that sends another version than the
    first recipients got says so, not only the first one after the edit:
    the comparison is always with what they got."""
    first, went_out, left = campaign.template_version, _went_out(counts), _left(counts, options)
    if first is None or version is None or version == first or not went_out or not left:
        return None
    sent_first = campaign.template_version_sent if campaign.template_version_sent is not None else went_out
    return TemplateChange(template=campaign.template, sent_first=sent_first, sent=went_out, left=left,
                          first_version=first, version=version)


def keep_template_version(conn: Connection, campaign: ledger.Campaign, counts: dict[str, int],
                          version: str | None, options: SendOptions) -> TemplateChange | None:
    """In a real run's transaction: while no message of the campaign has gone
    out, this run's version of the template becomes the one its first
    messages are sent from (a run that sent nothing, stopped or refused by
    the relay, leaves it to the next); once some have, it stays, and the
    first run that sends another version notes how many came from it."""
    if version is None:
        return None
    if not _went_out(counts):
        if campaign.template_version != version or campaign.template_version_sent is not None:
            campaign_rows.set_template_version(conn, campaign.id, version)
        return None
    change = changed_template(campaign, counts, version, options)
    if change is not None and campaign.template_version_sent is None:
        campaign_rows.note_template_change(conn, campaign.id, change.sent_first)
    return change


def _members_without_basis(conn: Connection, campaign: ledger.Campaign, *, created: bool, added: int) -> int:
    """How many members of the campaign's list the freeze left out for want
    of a lawful basis. A new campaign that would reach nobody because of
    them is refused (its transaction rolls back): a send must never drop a
    whole list quietly, say after an upgrade that found no evidence of
    consent for it."""
    from mailcli.store.audience import count_no_basis

    if campaign.list_id is None or campaign.kind == "service":  # a service message needs no consent
        return 0
    no_basis = count_no_basis(conn, campaign.list_id)
    if created and not added and no_basis:
        raise NoLawfulBasisError(
            f"Nobody on list {campaign.list_name!r} can be mailed: its {no_basis} subscribed member(s) have no"
            " lawful basis recorded (neither consent with its evidence nor the customer soft opt-in); nothing was"
            " sent or changed",
            hint=f"state it: mailcli import FILE --list {campaign.list_name} --basis consent --consent-source"
                 f' "where they agreed" (or --basis customer); or ask them: mailcli reconfirm --list'
                 f" {campaign.list_name}")
    return no_basis


def _campaign(conn: Connection, settings: Settings, options: SendOptions,
              not_before_at: str | None = None) -> tuple[ledger.Campaign, bool]:
    """The campaign and whether this run creates it."""
    existing = ledger.get_campaign(conn, options.campaign)
    check_existing(existing, options)
    _not_a_confirmation(existing.template if existing is not None else options.template or "", options)
    if existing is not None:
        return existing, False
    campaign = ledger.create_campaign(
        conn, name=options.campaign, template=options.template or "", list_name=options.list_name or "",
        subject=options.subject, segment=options.segment, not_before_at=not_before_at,
        subject_line=subject_line(settings, options.template or "", options.subject),
        kind=options.kind or "marketing", service_reason=options.reason if options.kind == "service" else None)
    # A sender that started at the same moment on a server may have created
    # and frozen it first (this insert waited for its commit): then this run
    # only joins in.
    return campaign, campaign.frozen_at is None


def _not_a_confirmation(template: str, options: SendOptions) -> None:
    """The confirmation mail goes out only through ``serve`` and ``reconfirm``:
    it carries each person's own confirmation link, which a send has not."""
    from mailcli.render.values import is_confirm_template

    if is_confirm_template(template):
        raise UsageError(f"Campaign {options.campaign!r}: the confirmation mail ({template}) is sent by `mailcli"
                         " reconfirm` and the sign-up form, not by send",
                         hint=f"mailcli reconfirm --list LIST (and mailcli report {options.campaign})")


def check_kind(options: SendOptions) -> None:
    """A service message needs its reason; only a service message takes one."""
    from mailcli.store.campaigns import CAMPAIGN_KINDS

    if options.kind is not None and options.kind not in CAMPAIGN_KINDS:
        raise UsageError(f"--kind: expected marketing or service, not {options.kind!r}")
    reason = (options.reason or "").strip()
    if options.kind == "service" and not reason:
        raise UsageError("--kind service needs --reason TEXT: why this message goes to people who opted out of"
                         " marketing (kept in the audit log)",
                         hint='e.g. --reason "storing 3 December: outage of the customer portal"')
    if options.reason is not None and options.kind != "service":
        raise UsageError("--reason is for service messages: give --kind service too")
    if any(ord(c) < 32 for c in reason):
        raise UsageError("--reason: one line of text, please")


def schedule(store: Store, settings: Settings, options: SendOptions, not_before_at: str) -> ledger.Campaign:
    """Create the campaign as scheduled, or move a campaign not yet started to
    ``not_before_at``: nothing is frozen and nothing sent before then."""
    with store.transaction() as conn:
        campaign, created = _campaign(conn, settings, options, not_before_at)
        if not created and campaign.frozen_at is None and campaign.not_before_at != not_before_at:
            campaign_rows.reschedule(conn, campaign.id, not_before_at)
    return ledger.get_campaign(store.conn, options.campaign) or campaign


def subject_line(settings: Settings, template: str, subject: str | None) -> str | None:
    """The subject of a campaign's messages, without anyone's data: rendered
    (now) for a contact whose fields are all empty, so ``{% if
    contact.first_name %}`` takes its other branch. A subject that cannot
    render so (it needs an attribute) is kept as written, merge fields and all."""
    from mailcli.render import compile_template
    from mailcli.send.preview import preview_context_for

    written = subject
    if not written:
        try:
            written = (settings.templates_dir / template / "subject.txt").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            written = None
    try:
        compiled = compile_template(settings.templates_dir, template)
        context = preview_context_for(settings, {"email": "", "first_name": "", "last_name": ""},
                                      subject=subject or "")
        return str(compiled.variables(context)["campaign"]["subject"])
    except MailcliError:
        return written or None


# Complexity: one check per thing a resumed campaign must keep (template, list, segment, subject, kind).
def check_existing(existing: ledger.Campaign | None, options: SendOptions) -> None:
    """A resumed campaign keeps its template, list, segment, subject and kind; a new one needs a template and a list."""
    check_kind(options)
    if existing is None:
        if not options.template or not options.list_name:
            raise UsageError(
                f"Campaign {options.campaign!r} does not exist yet; --template and --list are needed to start it",
                hint=f"mailcli send {options.campaign} --template NAME --list LIST",
            )
        return
    if options.kind is not None and options.kind != existing.kind:
        raise UsageError(f"Campaign {existing.name!r} is a {existing.kind} campaign, not {options.kind}",
                         hint="a campaign keeps its kind; use a new campaign name")
    if options.template and options.template != existing.template:
        raise UsageError(
            f"Campaign {existing.name!r} uses template {existing.template!r}, not {options.template!r}",
            hint="a campaign keeps its template; use a new campaign name for a different one",
        )
    if options.list_name and options.list_name != existing.list_name:
        raise UsageError(
            f"Campaign {existing.name!r} goes to list {existing.list_name!r}, not {options.list_name!r}",
            hint="use a new campaign name for another list",
        )
    if options.segment is not None and options.segment.text != (existing.segment_where or ""):
        was = f"segment {existing.segment_where!r}" if existing.segment_where else "the whole list"
        raise UsageError(f"Campaign {existing.name!r} was started for {was}, not {options.segment.label!r}",
                         hint="a campaign keeps its audience; use a new campaign name for another segment")
    if options.subject and options.subject != (existing.subject or ""):
        raise UsageError(f"Campaign {existing.name!r} was started with another subject",
                         hint="a resumed campaign keeps its subject")


def _take(conn: Connection, campaign: ledger.Campaign, claim: RunClaim) -> None:
    other = take_claim(conn, claim.name(campaign), claim.owner, claim.holder)
    if other is not None:
        raise LockedError(busy_message(f"Campaign {campaign.name!r} is being sent by another process", other),
                          hint="wait for it to finish; a rerun afterwards sends what is left", holder=other)


def _kept(options: SendOptions, rollback: bool) -> int | None:
    """How many frozen recipients a rolled-back freeze writes (None: all)."""
    if rollback and not options.dry_run:
        return 0
    if options.dry_run and options.limit is not None:
        return options.limit
    return None


def _check_expected(campaign: ledger.Campaign, counts: dict[str, int], options: SendOptions) -> None:
    if options.expect_count is not None and counts["audience"] != options.expect_count:
        raise UsageError(
            f"Campaign {campaign.name!r} has {counts['audience']} recipients, not the expected"
            f" {options.expect_count}; nothing was changed",
            hint="check the list (mailcli lists) or drop --expect-count",
        )


def plan_of(settings: Settings, options: SendOptions, campaign: ledger.Campaign, counts: dict[str, int],
            created: bool, added: int, causes: dict[str, int] | None = None, accepted: int = 0, *,
            no_basis: int = 0, template_change: TemplateChange | None = None) -> SendPlan:
    sendable = _left(counts, options)
    if options.limit is not None:
        sendable = min(sendable, options.limit)
    return SendPlan(
        campaign=campaign.name, template=campaign.template, list_name=campaign.list_name, created=created,
        segment=(campaign.segment or campaign.segment_where) if campaign.segment_where else None,
        audience=counts["audience"], added=added, to_send=sendable, uncertain=counts["uncertain"],
        server=settings.smtp.address, dry_run=options.dry_run, uncertain_causes=dict(causes or {}),
        accepted_uncertain=accepted,
        no_basis=no_basis,
        kind=campaign.kind, reason=campaign.service_reason, template_change=template_change,
    )


def _inlining_samples(candidates: list[tuple[str | None, ledger.Recipient]]) -> list[tuple[Any, ...]]:
    """One recipient of each of the first five sets of fields: each sample
    costs a per-message inlining here and in every worker (benchmarks/README.md)."""
    firsts: dict[str | None, tuple[Any, ...]] = {}
    for signature, r in candidates:
        if not r.skip_reason and len(firsts) < 5:
            firsts.setdefault(signature, r.as_tuple())
    return list(firsts.values())


# A run with --limit N, up to this many, checks the sets of fields of the N
# recipients it sends (read as it reads them) instead of grouping the whole
# audience by its fields, 3-4 s for a million (benchmarks/README.md); above
# it, sending takes far longer than the grouping.
PREFLIGHT_OWN_UP_TO = 10_000


def preflight(store: Store, factory: MessageFactory, campaign: ledger.Campaign, secret: bytes,
              resend_uncertain: bool, *, limit: int | None = None,
              relay: tuple[str, bool | None] | None = None) -> list[tuple[Any, ...]]:
    """Render one recipient per distinct set of contact fields
    (docs/guarantees.md#preflight).

    Every contact with the same fields renders through the same template
    paths, so a missing merge field shows here, before any connection. A
    problem that is one contact's own (a line break in a name) is left to the
    run, which fails that delivery only. Returns a few recipients (as
    tuples) for the render workers' own check of the inlining. ``limit``:
    the run sends only the first ``limit`` recipients (``relay`` as last
    seen says which it skips), so only their fields are checked, up to
    ``PREFLIGHT_OWN_UP_TO``; the run that reaches the others checks theirs.
    """
    first = limit if limit is not None and limit <= PREFLIGHT_OWN_UP_TO else None
    candidates = ledger.preflight_samples(store.conn, campaign, secret, resend_uncertain=resend_uncertain,
                                          first=first, relay=relay)
    samples = _inlining_samples(candidates)
    factory.verify_inlining(samples)
    seen: set[str | None] = set()
    for signature, r in candidates:
        if r.skip_reason or signature in seen:
            continue
        try:
            factory.build(r)
        except HeaderInjectionError:
            continue
        except TemplateError as exc:
            raise TemplateError(
                f"{exc.message} (contact {mask_address(r.email)}); nothing was sent or changed", hint=exc.hint or
                "fix the template or the contact data, then run the same command again",
            ) from None
        seen.add(signature)
    return samples
