"""Sending a campaign: freeze or resume, preflight, render, transmit, record.

``send_campaign`` is the core of ``mailcli send``. One run:

0. checks what needs no database: the template compiles and has a subject
   (a new campaign), and, unless it is a dry run, the SMTP password and DKIM
   key the configuration names are there;
1. takes the campaign lock beside the database (``locks``), then, in one
   transaction, creates the campaign on first use, claims it inside the
   database (``store.claims``: a second line of defence should the lock file
   be lost) and freezes its audience; rows a killed run left in ``sending``
   become ``uncertain`` (``plan.prepare``). On a PostgreSQL server senders on
   several machines may run one campaign at once: each holds the campaign's
   lock shared, claims batches of deliveries with a lease instead of the
   whole campaign (``store.leases``, ``ledger.iter_claimed``), and the last
   to end completes the campaign;
2. preflights, last in that transaction: compiles the template and renders
   one real recipient of every distinct set of contact fields, so a missing
   merge field stops the run before any connection is made, with zero sent
   and the transaction undone: no campaign is left behind (``plan.preflight``).
   ``--dry-run`` renders and builds every message instead, and sends nothing;
3. asks the caller to confirm (the command shows the audience and server),
   before that transaction, from a freeze that is rolled back;
4. opens the first SMTP connection (an unreachable server, bad certificate or
   wrong password ends here with exit 5, nothing sent);
5. streams pages of deliveries, checking each contact as its page is read,
   renders, builds the MIME bytes, DKIM-signs last (``message``), and hands
   the message to the transport (``pipeline``); a per-contact problem (a
   name with a line break, a render error) fails that delivery with the
   reason and the run goes on;
6. right before each MAIL FROM and again right before each final dot, asks
   whether the recipient opted out, was erased or restricted since their
   page was read (``watch.OptoutWatch``, through ``DeliveryHooks.withdrawn``);
   such a message is not sent and counts as skipped.

Every result is written by ``writer.LedgerWriter``, which also makes the
``sending`` mark durable before each final dot (docs/guarantees.md#crash-safety).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mailcli import audit, clock, interrupts
from mailcli.config import Settings
from mailcli.errors import MailcliError
from mailcli.locks import LockedError, busy_message, lock_holder, send_lock
from mailcli.send import ledger
from mailcli.send.message import MessageFactory
from mailcli.send.pipeline import RenderAhead, outgoing
from mailcli.send.plan import (
    DryRunRollback,
    RunClaim,
    SendOptions,
    plan_of,
    preflight,
    prepare,
    schedule,
)
from mailcli.send.pool import build_all, start_pool, worker_count
from mailcli.send.relay import remember_relay, remember_smtputf8, smtp_password, transport_options
from mailcli.send.results import ConfirmFn, FreezeFn, ProgressFn, SendPlan, SendSummary
from mailcli.send.session import DATA_END_TIMEOUT
from mailcli.send.transport import SmtpTransport
from mailcli.send.watch import OptoutWatch
from mailcli.send.writer import LedgerHooks, LedgerWriter
from mailcli.store import Store, leases
from mailcli.store import campaigns as campaign_rows
from mailcli.store.claims import release_claim
from mailcli.store.db import is_postgres
from mailcli.store.deliveries import delivery_status_counts
from mailcli.store.relays import get_relay
from mailcli.tokens import new_uid

__all__ = ["SendOptions", "SendPlan", "SendSummary", "send_campaign"]


def send_campaign(
    store: Store,
    settings: Settings,
    options: SendOptions,
    *,
    confirm: ConfirmFn | None = None,
    progress: ProgressFn | None = None,
    on_plan: Callable[[SendPlan], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    on_freeze: FreezeFn | None = None,
) -> SendSummary:
    """Create-or-resume and send one campaign (see the module docstring).

    ``on_notice`` hears, as it happens, when the relay pushes back: a
    connection refused, a request to slow down, a server that is down.
    ``on_freeze`` hears how far the freeze of the audience got (or its count,
    for the question and a dry run), which takes seconds for a million."""
    with send_lock(settings, options.campaign) as me:
        existing = ledger.get_campaign(store.conn, options.campaign)
        if options.template and existing is None:
            # A template that does not exist or compile, or has no subject,
            # stops a new campaign before it is created: its name is not
            # taken by a broken one.
            from mailcli.render import compile_template

            compile_template(settings.templates_dir, options.template).check_subject(options.subject)
        if options.dry_run:
            return _dry_run(store, settings, options, on_plan=on_plan, progress=progress, on_freeze=on_freeze)
        waiting = _not_yet(store, settings, options, existing)
        if waiting is not None:
            return waiting
        restoring = lock_holder(settings.project.store_location, "restore")
        if restoring is not None:  # it would replace the database under this run
            raise LockedError(busy_message("A restore is replacing the database", restoring), holder=restoring,
                              hint="run the send again when the restore has finished")
        # On PostgreSQL senders share the campaign, each with leases of its
        # own; on SQLite this run claims the whole campaign.
        shared = is_postgres(store.conn)
        claim = None if shared else RunClaim(owner=new_uid(), holder=me)
        _check_sending(settings)
        if confirm is not None:
            _ask(store, settings, options, claim, confirm, on_freeze)
        with _run_number(store, shared) as lease:
            ready: list[Ready] = []

            def check(campaign: ledger.Campaign) -> str | None:
                # Inside the freeze's transaction: a template that does not
                # render for this audience leaves no campaign behind.
                # A --limit run shared with other senders (PostgreSQL) sends
                # whatever it claims, not its first N: it checks the whole audience.
                factory = MessageFactory(settings, campaign)
                ready.append(Ready(factory, preflight(store, factory, campaign, factory.secret,
                                                      options.resend_uncertain,
                                                      limit=None if shared else options.limit,
                                                      relay=_relay_as_known(store.conn, settings))))
                return factory.template.version

            campaign, plan = prepare(store, settings, options, claim=claim, check=check, on_freeze=on_freeze)
            try:
                return _send_prepared(store, settings, options, campaign, plan, claim, ready[0], progress=progress,
                                      on_plan=on_plan, on_notice=on_notice, lease=lease)
            finally:
                if claim is not None:
                    release_claim(store.conn, claim.name(campaign), claim.owner)


def _relay_as_known(conn: Any, settings: Settings) -> tuple[str, bool | None]:
    """The relay's address, and whether it offered SMTPUTF8 when a run last
    met it (None: not known), for the recipients a run skips before it connects."""
    known = get_relay(conn, settings.smtp.host, settings.smtp.port, settings.smtp.username)
    return settings.smtp.address, known.smtputf8 if known else None


def _check_sending(settings: Settings) -> None:
    """What a real run needs of the configuration, checked before it asks or
    writes anything: the SMTP password where [smtp] username is set, and the
    DKIM key where [dkim] signing is configured."""
    from mailcli.deliverability.dkim import load_signer

    smtp_password(settings)
    load_signer(settings)


@dataclass(frozen=True, slots=True)
class Ready:
    """The campaign's message factory and the preflight's samples, made before the campaign was committed."""

    factory: MessageFactory
    samples: list[tuple[Any, ...]]


def _ask(store: Store, settings: Settings, options: SendOptions, claim: RunClaim | None, confirm: ConfirmFn,
         on_freeze: FreezeFn | None) -> None:
    """Ask before anything is written: the plan comes from a freeze that is
    rolled back, so "no" (or no terminal) changes nothing. The question
    says when the template changed since the campaign's first run sent."""
    from mailcli.render import compile_template

    def version(campaign: ledger.Campaign) -> str | None:
        try:
            return compile_template(settings.templates_dir, campaign.template).version
        except MailcliError:
            return None  # the run's preflight stops it, saying why

    try:
        prepare(store, settings, options, rollback=True, claim=claim, check=version, on_freeze=on_freeze)
    except DryRunRollback as marker:
        preview = plan_of(settings, options, marker.campaign, marker.counts, marker.created, marker.added,
                          accepted=marker.accepted, no_basis=marker.no_basis,
                          template_change=marker.template_change)
    if preview.to_send:
        confirm(preview)


@contextlib.contextmanager
def _run_number(store: Store, shared: bool) -> Iterator[Lease | None]:
    """For a campaign shared with other senders: this run's number, alive for the block."""
    if not shared:
        yield None
        return
    seconds = leases.lease_seconds()
    lease = Lease(leases.begin_run(store.conn), seconds)
    try:
        yield lease
    finally:
        if store.alive():
            leases.end_run(store.conn, lease.owner)


def _not_yet(store: Store, settings: Settings, options: SendOptions,
             existing: ledger.Campaign | None) -> SendSummary | None:
    """Before the campaign's moment (``--not-before``, or the one it was
    scheduled for): create or reschedule it, send nothing, and say until when."""
    not_before = options.not_before
    if not_before is None and existing is not None and existing.frozen_at is None and existing.not_before_at:
        not_before = clock.parse_iso(existing.not_before_at)
    if not_before is None or clock.now() >= not_before:
        return None
    campaign = schedule(store, settings, options, clock.to_iso(not_before))
    summary = SendSummary(campaign=campaign.name, dry_run=False)
    summary.not_before = not_before
    summary.counts = ledger.campaign_counts(store.conn, campaign)
    return summary


@dataclass(frozen=True, slots=True)
class Lease:
    """This run's part in a campaign shared with other senders (``store.leases``)."""

    owner: int  # the run's number
    seconds: float  # how long a claim lasts without renewal


def _send_prepared(store: Store, settings: Settings, options: SendOptions, campaign: ledger.Campaign,
                   plan: SendPlan, claim: RunClaim | None, ready: Ready, *, progress: ProgressFn | None,
                   on_plan: Callable[[SendPlan], None] | None,
                   on_notice: Callable[[str], None] | None, lease: Lease | None = None) -> SendSummary:
    if on_plan is not None:
        on_plan(plan)
    summary = SendSummary(campaign=campaign.name, dry_run=False, relay=settings.smtp.address, no_basis=plan.no_basis,
                          template_change=plan.template_change)
    # Render workers use "spawn", so starting them next to the ledger
    # writer thread later is safe. Started first, they load and compile
    # the template while this process finds the campaign's links.
    workers = worker_count(plan.to_send)
    factory, samples = ready.factory, ready.samples
    pool = start_pool(workers, settings, campaign, stamp=factory.template.stamp) if workers else None
    try:
        if settings.tracking.clicks:
            from mailcli.send.clicks import track_links

            factory.links = track_links(store, factory, samples)
        if plan.to_send == 0:
            # Nothing left: the status catches up with rows that erasure or
            # purge took away since the last run.
            _settle(store, campaign, summary, lease=lease)
            return summary
        # A service message reaches people who opted out of marketing: each
        # run says why, in the audit log.
        audit.append(store, "send", subject_hmac=None, command="send",
                     detail={"campaign": campaign.name, "list": campaign.list_name, "recipients": plan.to_send,
                             "kind": campaign.kind,
                             **({"segment": campaign.segment or "--where"}
                                if campaign.segment_where else {})},
                     reason=campaign.service_reason if campaign.kind == "service" else None)
        started = time.monotonic()
        started_at = clock.now_iso()
        try:
            asyncio.run(_run(store, settings, options, campaign, factory, summary, progress,
                             pool=pool, samples=samples, links=factory.links, expected=plan.to_send, notice=on_notice,
                             claim=(claim.name(campaign), claim.owner) if claim is not None else None, lease=lease))
        finally:
            summary.elapsed = time.monotonic() - started
            _settle(store, campaign, summary, started_at, lease=lease)
    finally:
        if pool is not None:
            pool.shutdown()
    return summary


def _settle(store: Store, campaign: ledger.Campaign, summary: SendSummary, started_at: str | None = None, *,
            lease: Lease | None = None) -> None:
    """The campaign's counts after the run, and its status from them; when
    the run sent something, its start and end as the campaign's first and last send.

    A run sharing the campaign (``lease``) first lets go of what it holds
    and turns the ``sending`` rows of runs that are gone into ``uncertain``;
    the settling runs take turns, so the last one to find nothing pending
    (no other sender holds any then) completes the campaign, once."""
    if lease is not None and not store.alive():
        return  # the server dropped the connection: the error says so; its leases die with it
    with store.transaction() as conn:
        if lease is not None:
            leases.lock_campaign(conn, campaign.uid)
            leases.release(conn, campaign.id, lease.owner)
            ledger.recover_interrupted(conn, campaign.id)
        if started_at is not None and summary.sent:
            campaign_rows.note_sent(conn, campaign.id, started_at, clock.now_iso())
        summary.counts = ledger.campaign_counts(conn, campaign)
        summary.uncertain_causes = ledger.uncertain_causes(conn, campaign.id)
        summary.completed = ledger.set_campaign_status(conn, campaign.id, summary.counts)


async def _run(store: Store, settings: Settings, options: SendOptions, campaign: ledger.Campaign,
               factory: MessageFactory, summary: SendSummary, progress: ProgressFn | None, *,
               pool: Any = None, samples: list[tuple[Any, ...]] | None = None,
               links: dict[str, int] | None = None, expected: int | None = None,
               notice: Callable[[str], None] | None = None, claim: tuple[str, str] | None = None,
               lease: Lease | None = None) -> None:
    smtp = settings.smtp
    relay = get_relay(store.conn, smtp.host, smtp.port, smtp.username)
    contacts: dict[int, ledger.Recipient] = {}
    statuses = ledger.sendable_statuses(options.resend_uncertain)
    writer = LedgerWriter(store, settings, campaign, statuses=statuses, claim=claim,
                          lease=(lease.owner, lease.seconds) if lease is not None else None)
    # Before the first page is read: every opt-out committed after it is seen.
    watch = OptoutWatch(store.conn, list_id=campaign.list_id, list_name=campaign.list_name, secret=factory.secret,
                        database=store.path, kind=campaign.kind)
    hooks = LedgerHooks(writer, summary, contacts, progress, watch, relay=smtp.address)
    transport = SmtpTransport(transport_options(settings, options, relay, expected), hooks, notice=notice)
    concurrency = transport.opts.concurrency

    main = asyncio.current_task()
    say = notice or (lambda text: None)
    opening = [True]

    def on_signal() -> None:
        # The first SIGINT/SIGTERM: no new message or connection; the ones in
        # flight finish and are recorded (a reply to a final dot may take
        # DATA_END_TIMEOUT, so this says so at once). The second: stop now;
        # a message whose dot went out stays uncertain, as after a crash.
        # Either way the command then exits 130.
        if not summary.interrupted:
            summary.interrupted = True
            transport.stop()
            if transport.awaiting_dot:
                wait = max(DATA_END_TIMEOUT, smtp.timeout)
                say(f"Stopping: no new message; waiting up to {wait:g} s for {smtp.address}'s reply to"
                    f" {transport.awaiting_dot} message(s) in flight. Ctrl-C again stops now (they stay uncertain)")
            else:
                say("Stopping: no new message; finishing the ones in flight. Ctrl-C again stops now")
            return
        if opening[0] and main is not None:
            main.cancel()  # still connecting: nothing is in flight
        else:
            transport.stop_now()

    installed = _install_signal_handlers(on_signal)
    others: asyncio.Task[None] | None = None
    writer.start()
    try:
        try:
            await transport.open()
        except asyncio.CancelledError:
            return  # stopped now while connecting: nothing was sent
        opening[0] = False
        if transport.stopping:
            return
        smtputf8 = "SMTPUTF8" in transport.extensions
        remember_smtputf8(store, settings, relay, smtputf8)
        factory.use_eightbit("8BITMIME" in transport.extensions)
        if lease is not None:
            pages = ledger.iter_claimed(store.conn, campaign, factory.secret, lease.owner, lease=lease.seconds,
                                        resend_uncertain=options.resend_uncertain, relay=(smtp.address, smtputf8))
        else:
            pages = ledger.iter_sendable(store.conn, campaign, factory.secret,
                                         resend_uncertain=options.resend_uncertain, relay=(smtp.address, smtputf8))
        ahead = RenderAhead(factory, writer, summary, transport, progress, watch, pool=pool, samples=samples,
                            limit=options.limit, links=links)
        if lease is not None and progress is not None:
            others = asyncio.create_task(_follow_others(store, campaign, summary, progress))
        await transport.run(outgoing(ahead.built(pages), factory, summary, contacts))
    finally:
        if others is not None:
            others.cancel()
        _restore_signal_handlers(installed)
        try:
            await writer.close()
        finally:
            remember_relay(store, settings, relay, transport, summary, concurrency)


async def _follow_others(store: Store, campaign: ledger.Campaign, summary: SendSummary, progress: ProgressFn,
                         every: float = 0.5) -> None:
    """While senders share the campaign: how many messages the others settled
    since this run began (``summary.others``), read from the campaign's counts
    every ``every`` seconds, so this run's progress shows the whole campaign."""
    def left() -> int:
        counts = delivery_status_counts(store.conn, campaign.id)
        return sum(counts.get(status, 0) for status in (*ledger.SENDABLE, "sending"))

    try:
        at_start = left()
        while True:
            await asyncio.sleep(every)
            summary.others = max(0, at_start - left() - summary.attempted - summary.skipped)
            progress(summary)
    except MailcliError:
        return  # a lost server: the send itself says so; the bar just stops counting the others


def _install_signal_handlers(handler: Callable[[], None]) -> dict[signal.Signals, Any]:
    """``handler`` for SIGINT and SIGTERM on the running loop; returns the handlers it replaced."""
    loop = asyncio.get_running_loop()
    installed: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if interrupts.ignored(sig):
            continue
        try:
            previous = signal.getsignal(sig)
            loop.add_signal_handler(sig, handler)
            installed[sig] = previous
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / Windows
            pass
    return installed


def _restore_signal_handlers(installed: dict[signal.Signals, Any]) -> None:
    loop = asyncio.get_running_loop()
    for signum, previous in installed.items():
        loop.remove_signal_handler(signum)
        if previous is not None:
            signal.signal(signum, previous)  # asyncio leaves the default behind, not the command's own


# Complexity: the steps of a dry run in the order of a real send, each branch what it shows instead.
def _dry_run(store: Store, settings: Settings, options: SendOptions, *, on_plan: Callable[[SendPlan], None] | None,
             progress: ProgressFn | None, on_freeze: FreezeFn | None = None) -> SendSummary:
    """Freeze (in a transaction that is rolled back), render and build every message."""
    summary = SendSummary(campaign=options.campaign, dry_run=True)
    started = time.monotonic()

    def collect(conn: Any, frozen: ledger.Campaign) -> list[ledger.Recipient]:
        """The recipients a real run would send to, read from the freeze before it is undone."""
        recipients: list[ledger.Recipient] = []
        wanted = options.limit
        for page in ledger.iter_sendable(conn, frozen, settings.secret(), resend_uncertain=options.resend_uncertain,
                                         page=1000, relay=_relay_as_known(conn, settings)):
            recipients += page
            if wanted is not None:  # --limit N needs N recipients, not the whole audience
                wanted -= sum(1 for r in page if not r.skip_reason)
                if wanted <= 0:
                    break
        return recipients

    def check(frozen: ledger.Campaign) -> str | None:
        """The real run's preflight: a template that does not render for this
        audience is its one-line error (exit 1), not a count of failures."""
        checked = MessageFactory(settings, frozen, sign=False)
        preflight(store, checked, frozen, settings.secret(), options.resend_uncertain, limit=options.limit,
                  relay=_relay_as_known(store.conn, settings))
        return checked.template.version

    try:
        prepare(store, settings, options, collect=collect, check=check, on_freeze=on_freeze)
    except DryRunRollback as marker:  # prepare's transaction was rolled back
        campaign, counts, added, created = marker.campaign, marker.counts, marker.added, marker.created
        recipients, accepted = marker.recipients, marker.accepted
        summary.no_basis, summary.template_change = marker.no_basis, marker.template_change
    else:  # pragma: no cover - prepare always raises in a dry run
        raise AssertionError("dry run did not stop")
    summary.counts = counts
    plan = plan_of(settings, options, campaign, counts, created, added, accepted=accepted, no_basis=summary.no_basis,
                   template_change=summary.template_change)
    if on_plan is not None:
        on_plan(plan)
    chosen: list[ledger.Recipient] = []
    for r in recipients:
        if options.limit is not None and len(chosen) >= options.limit:
            break
        if r.skip_reason:
            summary.skipped += 1
        else:
            chosen.append(r)

    def on_result(r: ledger.Recipient, problem: tuple[str, bool] | None) -> None:
        if problem is None:
            summary.rendered += 1
        else:
            summary.failed += 1
            summary.note_problem(r.email, problem[0], template=problem[1])
        if progress is not None:
            progress(summary)

    factory = MessageFactory(settings, campaign, sign=False)
    factory.use_eightbit(True)  # as a send through a relay that takes 8-bit bodies, as nearly all do
    build_all(factory, chosen, settings, campaign, on_result)
    summary.elapsed = time.monotonic() - started
    return summary
