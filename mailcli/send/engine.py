"""Sending a campaign: freeze or resume, preflight, render, transmit, record.

``send_campaign`` is the core of ``mailcli send``. One run:

1. takes the campaign lock beside the database (``locks``), then, in one
   transaction, creates the campaign on first use, claims it inside the
   database (``store.claims``: a second line of defence should the lock file
   be lost) and freezes its audience; rows a killed run left in ``sending``
   become ``uncertain`` (``ledger.recover_interrupted``);
2. preflights: compiles the template and renders one real recipient of every
   distinct set of contact fields, so a missing merge field stops the run
   before any connection is made, with zero sent (F08). ``--dry-run`` renders
   and builds every message instead, and sends nothing;
3. asks the caller to confirm (the command shows the audience and server);
4. opens the first SMTP connection (an unreachable server, bad certificate or
   wrong password ends here with exit 5, nothing sent);
5. streams pages of deliveries, checking each contact as its page is read,
   renders, builds the MIME bytes, DKIM-signs last (B05), and hands the
   message to the transport; a per-contact problem (a name with a line
   break, a render error) fails that delivery with the reason and the run
   goes on;
6. right before each MAIL FROM and again right before each final dot, asks
   whether the recipient opted out, was erased or restricted since their
   page was read (``watch.OptoutWatch``, through ``DeliveryHooks.withdrawn``);
   such a message is not sent and counts as skipped.

Durability (why "exactly once" holds): ``LedgerWriter`` owns a second SQLite
connection with ``synchronous=FULL`` on a thread of its own. After the
server's 354 the transport awaits the ``sending`` mark (``before_dot``) and
writes the message and its final dot only once the row is committed *and
fsynced*. Results are queued and committed in the next batch, together with
the next ``sending`` marks, so one fsync covers every connection's pending
work (group commit) and the event loop never waits on the disk. Hence at any
moment each connection has at most one row in ``sending``, and a crash —
even a power cut — leaves at most ``concurrency`` uncertain messages.

The ``sending`` mark is taken only from a status this run may send: a row
another run marked or finished, or one erased meanwhile, is not transmitted
(``store.deliveries``). A result that arrives for a row erasure or purge
deleted under the run corrects the campaign's archived totals instead, so
``sent`` in the report stays what the server accepted.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from mailcli import audit, clock
from mailcli.addresses import mask_address
from mailcli.config import Settings
from mailcli.errors import (
    HeaderInjectionError,
    MailcliError,
    TemplateError,
    UsageError,
)
from mailcli.locks import Holder, LockedError, busy_message, campaign_lock, lock_holder
from mailcli.send import ledger
from mailcli.send.headers import list_unsubscribe_header, unsubscribe_url
from mailcli.send.pool import build_batch, start_pool, worker_count
from mailcli.send.transport import OutgoingMessage, Result, Status, dot_stuff
from mailcli.send.watch import OptoutWatch
from mailcli.store import Store
from mailcli.store.claims import release_claim
from mailcli.store.optouts import GONE
from mailcli.store.relays import RelayMemory, get_relay, mark_needs_smtputf8, save_relay
from mailcli.tokens import make_unsubscribe_token, new_uid


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


@dataclass(frozen=True, slots=True)
class SendPlan:
    """What a run is about to do; shown before the confirmation."""

    campaign: str
    template: str
    list_name: str
    created: bool
    audience: int  # deliveries in the campaign
    added: int  # rows frozen now (first run or --include-new)
    to_send: int  # this run (after --limit)
    uncertain: int
    server: str
    dry_run: bool
    uncertain_causes: dict[str, int] = field(default_factory=dict)  # killed / lost / other


@dataclass(slots=True)
class SendSummary:
    campaign: str
    dry_run: bool
    attempted: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    uncertain: int = 0
    skipped: int = 0
    rendered: int = 0
    interrupted: bool = False
    elapsed: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)  # report keys after the run
    uncertain_causes: dict[str, int] = field(default_factory=dict)  # of the campaign after the run
    problems: list[str] = field(default_factory=list)  # first few per-contact failures
    relay: str = ""  # host:port
    connections_limit: int | None = None  # the relay's connection limit, found now or before
    connections_note: str | None = None  # the reply that showed it, when found in this run
    rate_limit: float | None = None  # messages/s the relay held us to, found now or before
    rate_note: str | None = None
    quota_note: str | None = None  # the relay's reply when the day's sending quota ran out
    skipped_smtputf8: int = 0  # skipped: the relay does not offer SMTPUTF8 (counted in skipped)
    # Failures the template causes, not the contact: message (naming the
    # file and line) -> how many messages it failed.
    template_errors: dict[str, int] = field(default_factory=dict)

    def note_failure(self, email: str, exc: Exception) -> str:
        """Count one failed message; returns the reason to record."""
        problem = describe_problem(exc)
        if isinstance(exc, TemplateError):
            self.template_errors[problem] = self.template_errors.get(problem, 0) + 1
        elif len(self.problems) < 5:
            self.problems.append(masked_problem(email, problem))
        return problem

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


ProgressFn = Callable[[SendSummary], None]
ConfirmFn = Callable[[SendPlan], None]


# ---------------------------------------------------------------------------
# Building one message


class MessageFactory:
    """Renders and builds the wire bytes of one campaign's messages."""

    def __init__(self, settings: Settings, campaign: ledger.Campaign, *, sign: bool = True) -> None:
        from mailcli.deliverability.dkim import load_signer
        from mailcli.render import MessageSkeleton, compile_template
        from mailcli.render.preview import sender_from_settings

        self.settings = settings
        self.campaign = campaign
        self.secret = settings.secret()
        self.template = compile_template(settings.templates_dir, campaign.template)
        s = settings.sender
        self.skeleton = MessageSkeleton(
            from_name=s.from_name, from_address=s.from_address, reply_to=s.reply_to,
            list_id=s.list_id, feedback_id=s.feedback_id, precedence="bulk",
        )
        self.sender = sender_from_settings(settings)
        self.signer = load_signer(settings) if sign else None
        self.mail_from = s.bounce_address or s.from_address
        self.verp = s.verp and s.bounce_address is not None
        self.campaign_vars = {"name": campaign.name, "subject": campaign.subject or ""}

    def context(self, r: ledger.Recipient) -> Any:
        from mailcli.render import RenderContext

        contact: dict[str, str] = {}
        try:
            attributes = json.loads(r.attributes or "{}")
        except ValueError:
            attributes = {}
        for key, value in attributes.items():
            contact[str(key)] = "" if value is None else str(value)
        contact.update(email=r.email, first_name=r.first_name or "", last_name=r.last_name or "")
        token = make_unsubscribe_token(self.secret, r.contact_uid, self.campaign.list_id or 0)
        ctx = RenderContext(
            contact=contact, campaign=self.campaign_vars, sender=self.sender,
            unsubscribe_url=unsubscribe_url(self.settings, token), now=clock.now(),
        )
        return ctx, token

    def return_path(self, r: ledger.Recipient) -> str:
        """The envelope sender: the bounce address, or with VERP its per-recipient form."""
        if not self.verp:
            return self.mail_from
        from mailcli.tokens import make_verp_token, verp_address

        return verp_address(self.mail_from, make_verp_token(self.secret, self.campaign.id, r.contact_uid))

    def verify_inlining(self, samples: list[tuple[Any, ...]]) -> None:
        """Check the inline-once fast path against real recipients (render API)."""
        contexts = []
        for fields in samples:
            try:
                contexts.append(self.context(ledger.Recipient(*fields))[0])
            except Exception:  # noqa: BLE001 - a bad sample is reported by the run
                continue
        if contexts:
            try:
                self.template.verify_inlining(contexts)
            except MailcliError:
                pass

    def build(self, r: ledger.Recipient) -> bytes:
        """Wire bytes for one recipient; raises MailcliError for per-contact problems."""
        ctx, token = self.context(r)
        parts = self.template.render(ctx)
        to_name = " ".join(p for p in (r.first_name, r.last_name) if p) or None
        data = self.skeleton.build(
            to_address=r.email, to_name=to_name, subject=parts.subject, text=parts.text, html=parts.html,
            message_id=r.message_id, date=ctx.now, list_unsubscribe=list_unsubscribe_header(self.settings, token),
        )
        if self.signer is not None:
            data = self.signer.sign(data)  # the very last step: nothing changes after (B05)
        return data

    def wire(self, r: ledger.Recipient) -> bytes:
        """:meth:`build`, dot-stuffed for DATA: what both the render workers
        and this process hand the transport (as ``stuffed``). The bytes are
        CRLF by construction, so the line-ending check is skipped."""
        return dot_stuff(self.build(r), crlf=True)


def masked_problem(email: str, problem: str) -> str:
    """``a***@example.nl: reason`` for status lines, the address masked in the reason too
    (a server's reply or a check often repeats it)."""
    masked = mask_address(email)
    text = problem
    for variant in {email, email.lower()}:
        text = text.replace(variant, masked)
    return f"{masked}: {text}"


def describe_problem(exc: Exception) -> str:
    if isinstance(exc, MailcliError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------
# The ledger writer: group commit on its own connection and thread


class LedgerWriter:
    """Applies delivery updates in batches, one fsynced transaction each.

    A thread of its own waits for work and commits everything queued since
    its last commit (group commit); the event loop only appends to a list and
    learns of each commit through ``call_soon_threadsafe``. Before the dot of
    every message a connection waits for its ``sending`` mark to be on disk,
    so this round trip bounds each connection's rate: going through an
    executor and a coroutine cost two extra turns of the loop per commit.
    """

    def __init__(self, store: Store, settings: Settings, campaign: ledger.Campaign, *,
                 statuses: tuple[str, ...] = ledger.SENDABLE, claim: tuple[str, str] | None = None) -> None:
        import threading

        from mailcli.store import Store as StoreClass
        from mailcli.store.db import connect

        self._conn = connect(store.path)
        # FULL: the 'sending' mark must survive a power cut, not just a crash.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._store = StoreClass(path=store.path, conn=self._conn)
        self._settings = settings
        self._campaign = campaign
        self._statuses = statuses  # what this run may mark 'sending'
        self._claim = claim  # (name, owner): refreshed every HEARTBEAT_EVERY seconds
        self._marked: set[int] = set()  # deliveries whose 'sending' mark is this run's (writer thread only)
        # Deliveries whose 'sending' mark found the row gone or taken by
        # another run; written before the mark's waiter is woken.
        self.outcomes: dict[int, str] = {}
        self._ops: list[tuple[Any, ...]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="mailcli-ledger", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.error: BaseException | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def submit(self, op: tuple[Any, ...], *, wait: bool = False) -> asyncio.Future[None] | None:
        assert self._loop is not None
        fut: asyncio.Future[None] | None = self._loop.create_future() if wait else None
        with self._cond:
            if self.error is not None:
                raise self.error
            self._ops.append(op)
            if fut is not None:
                self._waiters.append(fut)
            self._cond.notify()
        return fut

    def _work(self) -> None:
        from mailcli.store.claims import HEARTBEAT_EVERY

        assert self._loop is not None
        last_beat = time.monotonic()
        while True:
            with self._cond:
                while not self._ops and not self._closed:
                    left = HEARTBEAT_EVERY - (time.monotonic() - last_beat)
                    if self._claim is None or left > 0:
                        self._cond.wait(left if self._claim is not None else None)
                        continue
                    break  # time for a heartbeat
                if not self._ops and self._closed:
                    return
                ops, self._ops = self._ops, []
                waiters, self._waiters = self._waiters, []
            beat = self._claim is not None and time.monotonic() - last_beat >= HEARTBEAT_EVERY
            if beat:
                last_beat = time.monotonic()
            try:
                self._apply(ops, beat=beat)
            except BaseException as exc:  # a full disk, a locked database...
                with self._cond:  # later submits raise; fail the ones queued meanwhile too
                    self.error = exc
                    waiters += self._waiters
                    self._ops, self._waiters = [], []
                self._resolve_soon(waiters, exc)
                return
            self._resolve_soon(waiters, None)

    def _resolve_soon(self, waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
        if not waiters:
            return
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_resolve, waiters, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _apply(self, ops: list[tuple[Any, ...]], *, beat: bool = False) -> None:
        from mailcli.store.claims import refresh_claim
        from mailcli.store.deliveries import mark_sending, record_result, record_skip

        now = clock.now_iso()
        campaign_id = self._campaign.id
        bounces: list[tuple[int, str]] = []
        lost = False
        with self._store.transaction() as conn:
            for op in ops:
                kind = op[0]
                if kind == "sending":
                    outcome = mark_sending(conn, op[1], self._statuses, now)
                    if outcome == "ok":
                        self._marked.add(op[1])
                    else:
                        self.outcomes[op[1]] = outcome
                elif kind == "result":
                    _, delivery_id, status, reply = op
                    record_result(conn, campaign_id, delivery_id, status, reply, now,
                                  was_sending=delivery_id in self._marked)
                    self._marked.discard(delivery_id)
                elif kind == "skip":
                    _, delivery_id, reason = op
                    record_skip(conn, campaign_id, delivery_id, reason, now, self._statuses,
                                was_sending=delivery_id in self._marked)
                    self._marked.discard(delivery_id)
                elif kind == "bounce":
                    bounces.append((op[1], op[2]))
                elif kind == "needs_smtputf8":
                    _, contact_id, relay = op
                    mark_needs_smtputf8(conn, contact_id, self._campaign.id, relay)
            if beat and self._claim is not None:
                lost = not refresh_claim(conn, *self._claim)
        for contact_id, status in bounces:
            # 5.1.x: the address does not exist. Suppress it from all mail
            # through the one place that records bounces (its own transaction).
            from mailcli.feedback.actions import record_bounce

            record_bounce(self._store, self._settings, contact_id, hard=True, campaign_id=self._campaign.id,
                          status=status, command="send")
        if lost:
            # Its heartbeat stopped long enough (a suspended process) for
            # another run to take the campaign over: stop sending now.
            from mailcli.locks import LockedError

            raise LockedError(f"Campaign {self._campaign.name!r} was taken over by another process; this run stopped",
                              hint=f"see mailcli report {self._campaign.name}")

    async def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._store.close()
        if self.error is not None:
            raise self.error


def _resolve(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for w in waiters:
        if not w.done():
            if error is None:
                w.set_result(None)
            else:
                w.set_exception(error)


class _Hooks:
    """The transport's hooks, bound to the ledger writer, the opt-out watch
    and the summary."""

    def __init__(self, writer: LedgerWriter, summary: SendSummary, contacts: dict[int, ledger.Recipient],
                 progress: ProgressFn | None, watch: OptoutWatch, relay: str = "") -> None:
        self.writer = writer
        self.summary = summary
        self.contacts = contacts  # delivery id -> recipient (only while in flight)
        self.progress = progress
        self.relay = relay
        self.watch = watch
        self.foreign: set[int] = set()  # deliveries another run had marked: never written by this one

    def before_dot(self, msg: OutgoingMessage) -> asyncio.Future[None]:
        fut = self.writer.submit(("sending", msg.key), wait=True)
        assert fut is not None
        return fut

    def withdrawn(self, msg: OutgoingMessage) -> Result | None:
        outcome = self.writer.outcomes.pop(msg.key, None)
        if outcome == "taken":
            self.foreign.add(msg.key)
            return Result(Status.SKIPPED, "being sent by another run")
        if outcome == "gone":
            return Result(Status.SKIPPED, GONE)
        reason = self.watch.reason(msg.key)
        return Result(Status.SKIPPED, reason) if reason is not None else None

    async def on_result(self, msg: OutgoingMessage, result: Result) -> None:
        s = self.summary
        if result.status is Status.RETRY:
            # Back to pending: after a 4xx at end of data it was 'sending'.
            self.writer.submit(("result", msg.key, "pending", result.reply))
            return
        r = self.contacts.pop(msg.key, None)
        self.watch.forget(msg.key)
        if result.status is Status.SKIPPED:
            if msg.key in self.foreign:
                self.foreign.discard(msg.key)  # the other run records it
            else:
                self.writer.submit(("skip", msg.key, result.reply))
                s.skipped += 1
            if self.progress is not None:
                self.progress(s)
            return
        self.writer.submit(("result", msg.key, result.status.value, result.reply))
        contact_id = r.contact_id if r is not None else None
        s.attempted += 1
        if result.status is Status.SENT:
            s.sent += 1
        elif result.status is Status.FAILED:
            s.failed += 1
            if len(s.problems) < 5:
                s.problems.append(masked_problem(msg.rcpt_to, result.reply))
            if result.hard_bounce and contact_id is not None:
                code = result.reply.split(" ")[1] if " " in result.reply else None
                self.writer.submit(("bounce", contact_id, code))
            if result.needs_smtputf8 and contact_id is not None:
                # Later campaigns through this relay skip the address (ledger.iter_sendable).
                self.writer.submit(("needs_smtputf8", contact_id, self.relay))
        elif result.status is Status.DEFERRED:
            s.deferred += 1
        elif result.status is Status.UNCERTAIN:
            s.uncertain += 1
        if self.progress is not None:
            self.progress(s)


# ---------------------------------------------------------------------------
# The run


def _transport_options(settings: Settings, options: SendOptions, relay: RelayMemory | None = None,
                       expected: int | None = None) -> Any:
    """How to connect, how many connections and how fast: the configuration
    (or the command's --concurrency/--rate) is the ceiling; a limit or rate
    the relay held an earlier run to is where this one starts."""
    from mailcli.send.smtp import ConnectParams, default_local_hostname
    from mailcli.send.transport import TransportOptions

    smtp = settings.smtp
    password = smtp.password() if smtp.username else None
    if smtp.username and password is None:
        from mailcli.errors import ConfigError

        raise ConfigError(
            f"[smtp] username is set but the password variable {smtp.password_env} is not",
            hint=f"export {smtp.password_env}=... (the password never goes in mailcli.toml)",
        )
    params = ConnectParams(
        host=smtp.host, port=smtp.port, security=smtp.security, username=smtp.username, password=password,
        timeout=smtp.timeout, ca_file=str(smtp.ca_file) if smtp.ca_file else None,
        local_hostname=smtp.helo_name or default_local_hostname(),
    )
    rate = smtp.rate if options.rate is None else options.rate
    rate_ceiling = None
    if relay is not None and relay.rate_limit and (rate <= 0 or relay.rate_limit < rate):
        rate, rate_ceiling = relay.rate_limit, rate
    return TransportOptions(
        params=params,
        concurrency=options.concurrency or smtp.concurrency,
        start_connections=relay.connections_limit if relay is not None else None,
        expected=expected,
        rate=rate,
        rate_ceiling=rate_ceiling,
        retry_window=smtp.retry_window,
        domain_concurrency=smtp.domain_concurrency,
        connect_backoff=smtp.connect_backoff,
    )


def _remember_relay(store: Store, settings: Settings, before: RelayMemory | None, transport: Any,
                    summary: SendSummary, concurrency: int) -> None:
    """Keep what this run learnt about the relay for the next one, and say it in the summary.

    A limit found now replaces the old one; a run that worked with more
    connections than the remembered limit raises it, or forgets it once the
    configured number worked. The rate is kept while the relay holds us below
    the configured one.
    """
    smtp = settings.smtp
    limit: int | None = before.connections_limit if before is not None else None
    if transport.limit_found is not None:
        limit = transport.limit
        summary.connections_note = transport.limit_reply
    elif limit is not None and transport.max_working > limit:
        limit = None if transport.max_working >= concurrency else transport.max_working
    rate = transport.rate_in_effect
    if transport.rate_found is not None:
        summary.rate_note = transport.rate_reply
    summary.quota_note = transport.quota_reply
    summary.connections_limit = limit
    summary.rate_limit = rate
    changed = (before is None or limit != before.connections_limit or rate != before.rate_limit)
    if changed and (before is not None or limit is not None or rate is not None):
        with store.transaction() as conn:
            save_relay(conn, smtp.host, smtp.port, smtp.username, connections_limit=limit, rate_limit=rate)


def _preflight(store: Store, factory: MessageFactory, campaign: ledger.Campaign, secret: bytes,
               resend_uncertain: bool) -> list[tuple[Any, ...]]:
    """Render one recipient per distinct set of contact fields (F08).

    Every contact with the same fields renders through the same template
    paths, so a missing merge field shows here, before any connection. A
    problem that is one contact's own (a line break in a name) is left to the
    run, which fails that delivery only. Returns a few recipients (as
    tuples) for the render workers' own check of the inlining.
    """
    seen: set[str | None] = set()
    candidates = ledger.preflight_samples(store.conn, campaign, secret, resend_uncertain=resend_uncertain)
    # One recipient of each of the first five sets of fields: each sample
    # costs a per-message inlining (~30 ms for 20 KB) here and in every worker.
    firsts: dict[str | None, tuple[Any, ...]] = {}
    for signature, r in candidates:
        if not r.skip_reason and len(firsts) < 5:
            firsts.setdefault(signature, r.as_tuple())
    samples = list(firsts.values())
    factory.verify_inlining(samples)
    for signature, r in candidates:
        if r.skip_reason or signature in seen:
            continue
        try:
            factory.build(r)
        except HeaderInjectionError:
            continue
        except TemplateError as exc:
            raise TemplateError(
                f"{exc.message} (contact {mask_address(r.email)}); nothing was sent", hint=exc.hint or
                "fix the template or the contact data, then run the same command again",
            ) from None
        seen.add(signature)
    return samples


@dataclass(frozen=True, slots=True)
class RunClaim:
    """This run's claim on its campaign inside the database (``store.claims``)."""

    owner: str
    holder: Holder

    def name(self, campaign: ledger.Campaign) -> str:
        return f"send:{campaign.uid}"


def _check_existing(existing: ledger.Campaign | None, options: SendOptions) -> None:
    if existing is not None:
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
        if options.subject and options.subject != (existing.subject or ""):
            raise UsageError(f"Campaign {existing.name!r} was started with another subject",
                             hint="a resumed campaign keeps its subject")
    elif not options.template or not options.list_name:
        raise UsageError(
            f"Campaign {options.campaign!r} does not exist yet; --template and --list are needed to start it",
            hint=f"mailcli send {options.campaign} --template NAME --list LIST",
        )


def prepare(store: Store, settings: Settings, options: SendOptions, *,
            rollback: bool = False, claim: RunClaim | None = None,
            collect: Callable[[Any, ledger.Campaign], list[ledger.Recipient]] | None = None,
            ) -> tuple[ledger.Campaign, SendPlan]:
    """Create or resume the campaign, claim it and freeze its audience.

    Everything happens in one write transaction, so another process (another
    configuration naming this database) that creates or claims the same
    campaign at the same moment is seen, not collided with. With ``claim``,
    a campaign another live run holds is refused with one line naming it.
    With ``rollback`` (and for dry runs) nothing is kept: the numbers come
    back in a ``_DryRunRollback`` exception after the transaction is undone,
    with what ``collect(conn, campaign)`` gathered from the frozen audience
    before that.
    """
    from mailcli.store.claims import take_claim

    conn = store.conn
    secret = settings.secret()
    added = 0
    with store.transaction():
        existing = ledger.get_campaign(conn, options.campaign)
        _check_existing(existing, options)
        created = existing is None
        campaign = existing or ledger.create_campaign(
            conn, name=options.campaign, template=options.template or "", list_name=options.list_name or "",
            subject=options.subject,
        )
        if claim is not None:
            other = take_claim(conn, claim.name(campaign), claim.owner, claim.holder)
            if other is not None:
                raise LockedError(busy_message(f"Campaign {campaign.name!r} is being sent by another process", other),
                                  hint="wait for it to finish; a rerun afterwards sends what is left", holder=other)
        # Rolled back anyway: the confirmation needs the numbers only, a dry
        # run with --limit N its first N recipients; the rest is counted.
        keep = None
        if rollback and not options.dry_run:
            keep = 0
        elif options.dry_run and options.limit is not None:
            keep = options.limit
        if created or options.include_new:
            added = ledger.freeze_audience(conn, campaign, secret, settings.sender.domain, keep=keep)
        ledger.recover_interrupted(conn, campaign.id)
        counts = ledger.campaign_counts(conn, campaign)
        if keep is not None and added > keep:
            counts["audience"] += added - keep
            counts["pending"] += added - keep
        causes = ledger.uncertain_causes(conn, campaign.id)
        if options.expect_count is not None and counts["audience"] != options.expect_count:
            raise UsageError(
                f"Campaign {campaign.name!r} has {counts['audience']} recipients, not the expected {options.expect_count}; nothing was changed",
                hint="check the list (mailcli lists) or drop --expect-count",
            )
        if options.dry_run or rollback:
            # A dry run changes nothing: undo the freeze, keep the numbers.
            collected = collect(conn, campaign) if collect is not None else []
            raise _DryRunRollback(campaign, counts, added, created, collected)
    campaign = ledger.get_campaign(conn, campaign.name) or campaign
    return campaign, _plan(store, settings, options, campaign, counts, created, added, causes)


class _DryRunRollback(Exception):
    def __init__(self, campaign: ledger.Campaign, counts: dict[str, int], added: int, created: bool,
                 recipients: list[ledger.Recipient]) -> None:
        self.campaign, self.counts, self.added, self.created = campaign, counts, added, created
        self.recipients = recipients


def _plan(store: Store, settings: Settings, options: SendOptions, campaign: ledger.Campaign,
          counts: dict[str, int], created: bool, added: int, causes: dict[str, int] | None = None) -> SendPlan:
    sendable = counts["pending"] + counts["deferred"] + (counts["uncertain"] if options.resend_uncertain else 0)
    if options.limit is not None:
        sendable = min(sendable, options.limit)
    return SendPlan(
        campaign=campaign.name, template=campaign.template, list_name=campaign.list_name, created=created,
        audience=counts["audience"], added=added, to_send=sendable, uncertain=counts["uncertain"],
        server=settings.smtp.address, dry_run=options.dry_run, uncertain_causes=dict(causes or {}),
    )


def send_campaign(
    store: Store,
    settings: Settings,
    options: SendOptions,
    *,
    confirm: ConfirmFn | None = None,
    progress: ProgressFn | None = None,
    on_plan: Callable[[SendPlan], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> SendSummary:
    """Create-or-resume and send one campaign (see the module docstring).

    ``on_notice`` hears, as it happens, when the relay pushes back: a
    connection refused, a request to slow down, a server that is down."""
    with campaign_lock(settings, options.campaign) as me:
        if options.template and ledger.get_campaign(store.conn, options.campaign) is None:
            # A template that does not exist or compile stops a new campaign
            # before it is created: its name is not taken by a broken one.
            from mailcli.render import compile_template

            compile_template(settings.templates_dir, options.template)
        if options.dry_run:
            return _dry_run(store, settings, options, on_plan=on_plan, progress=progress)
        restoring = lock_holder(settings.project.database, "restore")
        if restoring is not None:  # it would replace the database under this run
            raise LockedError(busy_message("A restore is replacing the database", restoring), holder=restoring,
                              hint="run the send again when the restore has finished")
        claim = RunClaim(owner=new_uid(), holder=me)
        if confirm is not None:
            # Ask before anything is written: the plan comes from a freeze
            # that is rolled back, so "no" (or no terminal) changes nothing.
            try:
                prepare(store, settings, options, rollback=True, claim=claim)
            except _DryRunRollback as marker:
                preview = _plan(store, settings, options, marker.campaign, marker.counts, marker.created, marker.added)
            if preview.to_send:
                confirm(preview)
        campaign, plan = prepare(store, settings, options, claim=claim)
        try:
            return _send_prepared(store, settings, options, campaign, plan, claim, progress=progress,
                                  on_plan=on_plan, on_notice=on_notice)
        finally:
            release_claim(store.conn, claim.name(campaign), claim.owner)


def _send_prepared(store: Store, settings: Settings, options: SendOptions, campaign: ledger.Campaign,
                   plan: SendPlan, claim: RunClaim, *, progress: ProgressFn | None,
                   on_plan: Callable[[SendPlan], None] | None,
                   on_notice: Callable[[str], None] | None) -> SendSummary:
    if on_plan is not None:
        on_plan(plan)
    summary = SendSummary(campaign=campaign.name, dry_run=False, relay=settings.smtp.address)
    # Render workers use "spawn", so starting them next to the ledger
    # writer thread later is safe. Started first, they load and compile
    # the template while this process compiles it and runs the preflight.
    workers = worker_count(plan.to_send)
    pool = start_pool(workers, settings, campaign) if workers else None
    try:
        factory = MessageFactory(settings, campaign)  # a template that does not compile stops here
        samples = _preflight(store, factory, campaign, factory.secret, options.resend_uncertain)
        if plan.to_send == 0:
            with store.transaction() as conn:
                # Nothing left: the status catches up with rows that erasure
                # or purge took away since the last run.
                summary.counts = ledger.campaign_counts(conn, campaign)
                summary.uncertain_causes = ledger.uncertain_causes(conn, campaign.id)
                ledger.set_campaign_status(conn, campaign.id, summary.counts)
            return summary
        audit.append(store, "send", subject_hmac=None, command="send",
                     detail={"campaign": campaign.name, "list": campaign.list_name, "recipients": plan.to_send})
        started = time.monotonic()
        try:
            asyncio.run(_run(store, settings, options, campaign, factory, summary, progress,
                             pool=pool, samples=samples, expected=plan.to_send, notice=on_notice,
                             claim=(claim.name(campaign), claim.owner)))
        finally:
            summary.elapsed = time.monotonic() - started
            with store.transaction() as conn:
                summary.counts = ledger.campaign_counts(conn, campaign)
                summary.uncertain_causes = ledger.uncertain_causes(conn, campaign.id)
                ledger.set_campaign_status(conn, campaign.id, summary.counts)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return summary


async def _run(store: Store, settings: Settings, options: SendOptions, campaign: ledger.Campaign,
               factory: MessageFactory, summary: SendSummary, progress: ProgressFn | None, *,
               pool: Any = None, samples: list[tuple[Any, ...]] | None = None, expected: int | None = None,
               notice: Callable[[str], None] | None = None, claim: tuple[str, str] | None = None) -> None:
    from mailcli.send.transport import SmtpTransport

    smtp = settings.smtp
    relay = get_relay(store.conn, smtp.host, smtp.port, smtp.username)
    contacts: dict[int, ledger.Recipient] = {}
    statuses = ledger.sendable_statuses(options.resend_uncertain)
    writer = LedgerWriter(store, settings, campaign, statuses=statuses, claim=claim)
    # Before the first page is read: every opt-out committed after it is seen.
    watch = OptoutWatch(store.conn, list_id=campaign.list_id, list_name=campaign.list_name, secret=factory.secret,
                        database=store.path)
    hooks = _Hooks(writer, summary, contacts, progress, watch, relay=smtp.address)
    transport = SmtpTransport(_transport_options(settings, options, relay, expected), hooks, notice=notice)
    concurrency = transport.opts.concurrency
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        # SIGINT/SIGTERM: take no new message; in-flight ones finish and are
        # recorded; the command then exits 130.
        summary.interrupted = True
        transport.stop()

    installed: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous = signal.getsignal(sig)
            loop.add_signal_handler(sig, on_signal)
            installed[sig] = previous
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / Windows
            pass
    writer.start()
    try:
        await transport.open()
        if transport.stopping:
            return
        smtputf8 = "SMTPUTF8" in transport.extensions
        if relay is None or relay.smtputf8 != smtputf8:
            with store.transaction() as conn:
                save_relay(conn, smtp.host, smtp.port, smtp.username, smtputf8=smtputf8)
        source = _built(store, factory, campaign, options, writer, summary, transport, progress, pool, samples or [],
                        watch, relay=(smtp.address, smtputf8))
        await transport.run(_messages(source, factory, summary, contacts))
    finally:
        for signum, previous in installed.items():
            loop.remove_signal_handler(signum)
            if previous is not None:
                signal.signal(signum, previous)  # asyncio leaves the default behind, not the command's own
        try:
            await writer.close()
        finally:
            _remember_relay(store, settings, relay, transport, summary, concurrency)


async def _built(store: Store, factory: MessageFactory, campaign: ledger.Campaign, options: SendOptions,
                 writer: LedgerWriter, summary: SendSummary, transport: Any, progress: ProgressFn | None,
                 pool: Any, samples: list[tuple[Any, ...]], watch: OptoutWatch,
                 relay: tuple[str, bool | None] | None = None) -> AsyncIterator[tuple[ledger.Recipient, bytes]]:
    """Recipients with their wire bytes, dot-stuffed, in ledger order,
    rendered just in time.

    Skipped contacts (B12) and per-contact failures are recorded here and not
    yielded. With a worker pool, batches of 16 are rendered a little ahead
    (three per worker) so the event loop mostly does SMTP and bookkeeping; when the
    connections want a message and no batch is back yet (the workers are
    starting, or slower than the connections), this process renders the next
    recipient itself, so neither core waits for the other.
    """
    from collections import deque

    limit = options.limit
    handed = 0
    loop = asyncio.get_running_loop()
    inflight: deque[tuple[Any, list[ledger.Recipient]]] = deque()
    batch: list[ledger.Recipient] = []
    ahead = 3 * (getattr(pool, "_max_workers", 1) or 1)

    def fail(r: ledger.Recipient, problem: str | Exception) -> None:
        watch.forget(r.delivery_id)
        if isinstance(problem, Exception):
            reason = summary.note_failure(r.email, problem)
        else:
            reason = problem
            if len(summary.problems) < 5:
                summary.problems.append(masked_problem(r.email, problem))
        writer.submit(("result", r.delivery_id, "failed", reason))
        summary.failed += 1
        summary.attempted += 1
        if progress is not None:
            progress(summary)

    def build_here(r: ledger.Recipient) -> bytes | None:
        try:
            return factory.wire(r)
        except Exception as exc:  # one contact's data: fail that delivery, go on
            fail(r, exc)
            return None

    async def collect() -> list[tuple[ledger.Recipient, bytes]]:
        fut, rs = inflight.popleft()
        results = await fut
        ready = []
        for r, (data, problem) in zip(rs, results, strict=True):
            if data is None:
                fail(r, problem or "could not build the message")
            else:
                ready.append((r, data))
        return ready

    def submit() -> None:
        nonlocal batch
        inflight.append((loop.run_in_executor(pool, build_batch, [x.as_tuple() for x in batch], samples), batch))
        batch = []

    pages = ledger.iter_sendable(store.conn, campaign, factory.secret, resend_uncertain=options.resend_uncertain,
                                 relay=relay)
    while True:
        mark = watch.mark()  # before the page is read: an opt-out after it is seen
        page = next(pages, None)
        if page is None:
            break
        for r in page:
            if transport.stopping or (limit is not None and handed >= limit):
                break
            if r.skip_reason:
                writer.submit(("skip", r.delivery_id, r.skip_reason))
                summary.skipped += 1
                if r.skip_reason.startswith(ledger.SKIP_SMTPUTF8):
                    summary.skipped_smtputf8 += 1
                continue
            watch.note(r.delivery_id, mark)
            handed += 1
            if pool is not None and len(inflight) >= ahead:
                # The workers have enough to do: wait for their oldest batch,
                # unless the connections run dry first; then this recipient
                # is rendered here (the check costs a wake-up every 2 ms).
                while not inflight[0][0].done() and not transport.hungry:
                    await asyncio.wait((inflight[0][0],), timeout=0.002)
            while inflight and inflight[0][0].done():
                for item in await collect():
                    yield item
            if pool is None or len(inflight) >= ahead:
                data = build_here(r)
                if data is not None:
                    yield r, data
                await asyncio.sleep(0)  # let replies and the ledger run between renders
                continue
            batch.append(r)
            if len(batch) >= 16:
                submit()
        else:
            continue
        break
    if batch and not transport.stopping:
        submit()
    while inflight:
        if transport.stopping:
            # Rendered but never handed over: they stay pending for the rerun.
            inflight.popleft()[0].cancel()
            continue
        for item in await collect():
            yield item


async def _messages(source: AsyncIterator[tuple[ledger.Recipient, bytes]], factory: MessageFactory,
                    summary: SendSummary, contacts: dict[int, ledger.Recipient]) -> AsyncIterator[OutgoingMessage]:
    """Built (and dot-stuffed) messages as the transport's OutgoingMessage."""
    async for r, data in source:
        summary.rendered += 1
        contacts[r.delivery_id] = r
        yield OutgoingMessage(key=r.delivery_id, mail_from=factory.return_path(r), rcpt_to=_envelope_rcpt(r.email),
                              data=data, stuffed=True)


def _envelope_rcpt(email: str) -> str:
    from mailcli.render.mime import ascii_address

    try:
        return ascii_address(email, "To")
    except MailcliError:
        return email


def _dry_run(store: Store, settings: Settings, options: SendOptions, *, on_plan: Callable[[SendPlan], None] | None,
             progress: ProgressFn | None) -> SendSummary:
    """Freeze (in a transaction that is rolled back), render and build every message."""
    summary = SendSummary(campaign=options.campaign, dry_run=True)
    started = time.monotonic()

    def collect(conn: Any, frozen: ledger.Campaign) -> list[ledger.Recipient]:
        """The recipients a real run would send to, read from the freeze before it is undone."""
        known = get_relay(conn, settings.smtp.host, settings.smtp.port, settings.smtp.username)
        recipients: list[ledger.Recipient] = []
        wanted = options.limit
        for page in ledger.iter_sendable(conn, frozen, settings.secret(), resend_uncertain=options.resend_uncertain,
                                         page=1000, relay=(settings.smtp.address, known.smtputf8 if known else None)):
            recipients += page
            if wanted is not None:  # --limit N needs N recipients, not the whole audience
                wanted -= sum(1 for r in page if not r.skip_reason)
                if wanted <= 0:
                    break
        return recipients

    try:
        prepare(store, settings, options, collect=collect)
    except _DryRunRollback as marker:  # prepare's transaction was rolled back
        campaign, counts, added, created = marker.campaign, marker.counts, marker.added, marker.created
        recipients = marker.recipients
    else:  # pragma: no cover - prepare always raises in a dry run
        raise AssertionError("dry run did not stop")
    summary.counts = counts
    plan = _plan(store, settings, options, campaign, counts, created, added)
    if on_plan is not None:
        on_plan(plan)
    factory = MessageFactory(settings, campaign, sign=False)
    for r in recipients:
        if options.limit is not None and summary.rendered + summary.failed >= options.limit:
            break
        if r.skip_reason:
            summary.skipped += 1
            continue
        try:
            factory.build(r)
        except Exception as exc:
            summary.failed += 1
            summary.note_failure(r.email, exc)
        else:
            summary.rendered += 1
        if progress is not None:
            progress(summary)
    summary.elapsed = time.monotonic() - started
    return summary
