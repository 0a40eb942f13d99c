"""``mailcli send CAMPAIGN``: create-or-resume a campaign and send it."""

from __future__ import annotations

import contextlib
import re
import time
from typing import Annotated, Any

import typer

from .. import clock, context
from ..completers import complete_campaign, complete_list, complete_segment, complete_template
from ..config import parse_rate
from ..errors import Interrupted, PartialError, UsageError
from ..output import NullProgress
from ..send.engine import SendOptions, SendPlan, SendSummary, send_campaign
from ..send.results import TemplateChange
from . import given_list

# From this many members on, freezing an audience shows a bar on a terminal;
# fewer are frozen in about a tenth of a second.
FREEZE_BAR_FROM = 5_000


def _rate(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise UsageError(f"--rate {value!r}: {exc}") from None


def send_cmd(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(help="Campaign name: new, or one to resume.", metavar="CAMPAIGN",
                                            autocompletion=complete_campaign)],
    template: Annotated[str | None, typer.Option("--template", "-t", help="Template folder (first run).", metavar="T",
                                                 autocompletion=complete_template)] = None,
    list_name: Annotated[str | None, typer.Option("--list", "-l", help="List to send to (first run).", metavar="L",
                                                  autocompletion=complete_list, callback=given_list)] = None,
    where: Annotated[str | None, typer.Option(
        "--where", help="Only the list's members this expression matches (first run), like"
        " \"city = 'Utrecht' and member_rating >= 3\".", metavar="EXPR")] = None,
    segment: Annotated[str | None, typer.Option(
        "--segment", help="Only the list's members in this segment of \\[segments] in mailcli.toml (first run).",
        metavar="NAME", autocompletion=complete_segment)] = None,
    not_before: Annotated[str | None, typer.Option(
        "--not-before", help='Send nothing before this time, like "2026-12-24 09:00"; an earlier run exits 0.',
        metavar="DATETIME")] = None,
    tz: Annotated[str | None, typer.Option(
        "--tz", help="Time zone of --not-before, like Europe/Amsterdam (default: this machine's).",
        metavar="ZONE")] = None,
    test_to: Annotated[str | None, typer.Option(
        "--test-to", help="Send one [TEST] message to this address instead; nothing is recorded.",
        metavar="EMAIL")] = None,
    test_as: Annotated[str | None, typer.Option(
        "--as", help="With --test-to: render for this contact (default: the sample contact).",
        metavar="CONTACT")] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="Subject (else the template's subject.txt).", metavar="S")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Render every message, send nothing, change nothing.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Send at most N messages in this run.", metavar="N")] = None,
    rate: Annotated[str | None, typer.Option("--rate", help='Ceiling like "20/s" or "600/m"; "0" = unlimited.', metavar="R")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, max=64, help="Parallel SMTP connections.", metavar="N")] = None,
    include_new: Annotated[bool, typer.Option("--include-new", help="Add list members who joined since the first run.")] = False,
    resend_uncertain: Annotated[bool, typer.Option("--resend-uncertain", help="Also resend messages whose delivery is uncertain.")] = False,
    accept_uncertain: Annotated[list[str] | None, typer.Option("--accept-uncertain", help="Count this uncertain message as sent (its Message-ID or address, or \"all\"): the relay's log shows it accepted. Repeatable.", metavar="ID")] = None,
    expect_count: Annotated[int | None, typer.Option("--expect-count", min=0, help="Refuse unless the audience is exactly N.", metavar="N")] = None,
    kind: Annotated[str | None, typer.Option(
        "--kind", help="service: a message people cannot opt out of (an outage, a change to the terms); it also"
        " reaches members who unsubscribed from marketing. Default marketing.", metavar="marketing|service")] = None,
    reason: Annotated[str | None, typer.Option(
        "--reason", help="With --kind service: why this is a service message (kept with the campaign and in the"
        " audit log).", metavar="TEXT")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (needed without a terminal).")] = False,
) -> None:
    """Send a campaign to a list: every subscriber exactly once, resumable.

    The first run freezes the audience (subscribed members with a lawful
    basis, minus suppressed and restricted contacts); running the same command again resumes and
    never sends anyone a second message.

    Examples:

        mailcli send spring-2026 --template newsletter --list news --dry-run

        mailcli send spring-2026 --template newsletter --list news --test-to me@example.org

        mailcli send spring-2026 --template newsletter --list news --segment utrecht --yes

        mailcli send xmas --template newsletter --list news --not-before "2026-12-24 09:00" --tz Europe/Amsterdam --yes

        mailcli send spring-2026            # resume after an interruption

        mailcli send outage-0312 --template outage --list customers --kind service --reason "portal outage 3 Dec"
    """
    from ..segments import choose_segment

    app = context.get(ctx)
    out = app.out
    settings = app.settings
    if test_as is not None and test_to is None:
        raise UsageError("--as goes with --test-to", hint="mailcli send CAMPAIGN --test-to YOU --as CONTACT_EMAIL")
    if test_to is not None:
        from ..send.plan import check_kind

        check_kind(SendOptions(campaign=campaign, kind=kind, reason=reason))
        _test_send(app, campaign, test_to, template=template, subject=subject, as_contact=test_as, kind=kind)
        return
    if tz is not None and not_before is None:
        raise UsageError("--tz goes with --not-before", hint='--not-before "2026-12-24 09:00" --tz Europe/Amsterdam')
    from ..send.schedule import parse_not_before

    options = SendOptions(
        campaign=campaign, template=template, list_name=list_name, subject=subject, dry_run=dry_run,
        limit=limit, rate=_rate(rate), concurrency=concurrency, include_new=include_new,
        resend_uncertain=resend_uncertain, expect_count=expect_count, accept_uncertain=tuple(accept_uncertain or ()),
        kind=kind, reason=reason,
        segment=choose_segment(settings.segments, where=where, segment=segment, config_name=settings.path.name),
        not_before=parse_not_before(not_before, tz) if not_before is not None else None,
    )
    store = app.store

    total: list[int] = []
    started = time.monotonic()
    # The bar starts only once the plan is settled: after the question on a
    # terminal has been answered, so it never draws over the question.
    bars = contextlib.ExitStack()
    bar: Any = NullProgress()
    asked: list[TemplateChange | None] = []  # what the question said of a changed template
    # A large audience takes seconds to freeze (or to count, for the question
    # and a dry run): a bar of its own says so, gone before anything else is shown.
    freezing = contextlib.ExitStack()
    frozen_bar: list[tuple[str, Any]] = []

    def on_freeze(done: int, expected: int | None, writing: bool) -> None:
        label = f"{'Freezing' if writing and not dry_run else 'Counting'} the audience of {campaign}"
        if frozen_bar and frozen_bar[0][0] != label:
            end_freeze()
        if not frozen_bar:
            if max(done, expected or 0) < FREEZE_BAR_FROM:
                return
            frozen_bar.append((label, freezing.enter_context(out.progress(expected, label))))
        frozen_bar[0][1].update(done)

    def end_freeze() -> None:
        freezing.close()
        frozen_bar.clear()

    def on_plan(plan: SendPlan) -> None:
        nonlocal bar
        end_freeze()
        total.append(plan.to_send)
        if plan.template_change is not None and plan.template_change not in asked:  # --yes, a dry run
            out.warn(template_change_line(plan.campaign, plan.template_change))
        if plan.created or plan.added:
            verb = "would be frozen (dry run)" if plan.dry_run else "frozen"
            part = f" (segment {plan.segment})" if plan.segment else ""
            out.info(f"Campaign {plan.campaign}: audience of {plan.audience} {verb} from list {plan.list_name}{part}"
                     + ("" if plan.created else f" ({plan.added} new)"))
        if plan.accepted_uncertain:
            verb = "would be counted" if plan.dry_run else "counted"
            out.info(f"Campaign {plan.campaign}: {plan.accepted_uncertain} uncertain message(s) {verb} as sent")
        if plan.no_basis:
            out.warn(f"{plan.no_basis} member(s) of list {plan.list_name} left out: no lawful basis recorded"
                     " (neither consent with its evidence nor the customer soft opt-in); state it with"
                     f" `mailcli import FILE --list {plan.list_name} --basis consent --consent-source ...` or"
                     f" --basis customer, or ask them: {app.command('reconfirm', '--list', plan.list_name)}")
        if plan.kind == "service" and (plan.created or plan.dry_run):
            out.info(f"Service message ({plan.reason}): it also reaches members who unsubscribed from marketing;"
                     " never bounced, restricted or erased ones; no List-Unsubscribe")
        if plan.uncertain and not resend_uncertain and plan.to_send:  # else the closing line says it
            out.warn(f"{uncertain_line(plan.campaign, plan.uncertain, plan.uncertain_causes)}; not resending them"
                     f" (list: {app.command('report', plan.campaign, '--failed')})")
        bar = bars.enter_context(out.progress(plan.to_send, f"{'Rendering' if plan.dry_run else 'Sending'} {campaign}"))

    def confirm(plan: SendPlan) -> None:
        end_freeze()
        asked.append(plan.template_change)
        changed = plan.template_change
        out.confirm(
            (f"{template_change_line(plan.campaign, changed)}\n" if changed is not None else "")
            + f"Send {plan.to_send} {'service ' if plan.kind == 'service' else ''}message(s) of campaign"
            f" {plan.campaign} (template {plan.template}"
            + (f", segment {plan.segment}" if plan.segment else "") + f") via {plan.server}?",
            yes=yes, what="send",
        )

    shown = [0.0]

    def progress(s: SendSummary) -> None:
        # sent / failed / rate in the label; the bar adds done/total and ETA.
        # Called for every message: redrawn ten times a second at most.
        now = time.monotonic()
        if now - shown[0] < 0.1:
            return
        shown[0] = now
        if s.dry_run:  # nothing is sent: what is counted is what was rendered
            done = f"{s.rendered} rendered, {s.failed} would fail, {s.rendered / max(now - started, 1e-3):.0f}/s"
        else:
            done = f"{s.sent} sent, {s.failed} failed, {s.sent / max(now - started, 1e-3):.0f}/s"
        # A campaign shared with other senders: the bar shows all of it, the label this run's part.
        others = f", {s.others} by other senders" if s.others else ""
        # A dry run attempts nothing: what it has done is what it rendered and what would fail.
        bar.update(s.attempted + s.skipped + s.others + (s.rendered + s.failed if s.dry_run else 0),
                   total=total[0] if total else None, description=f"{campaign}: {done}{others}")

    with bars, freezing:
        # With --yes there is nothing to ask, so no preview of the plan either.
        summary = send_campaign(store, settings, options, confirm=None if yes else confirm, progress=progress,
                                on_plan=on_plan, on_notice=out.info, on_freeze=on_freeze)
    if summary.not_before is not None:
        _scheduled(out, summary, tz)
        return

    def again(*, first_run: bool) -> str:
        """This command line as it should be run next: every option that
        changes what is sent or how fast, never --dry-run."""
        args = ["send", campaign]
        if first_run:
            args += [*(["--template", template] if template else []), *(["--list", list_name] if list_name else []),
                     *(["--where", where] if where is not None else []), *(["--segment", segment] if segment else []),
                     *(["--subject", subject] if subject else []),
                     *(["--kind", kind] if kind else []), *(["--reason", reason] if reason else [])]
        args += [*(["--limit", str(limit)] if limit is not None else []), *(["--rate", rate] if rate else []),
                 *(["--concurrency", str(concurrency)] if concurrency else []),
                 *(["--include-new"] if include_new else []), *(["--resend-uncertain"] if resend_uncertain else []),
                 *(["--expect-count", str(expect_count)] if expect_count is not None else []),
                 *(["--yes"] if yes else [])]
        return app.command(*args)

    _report(out, summary, campaign, again(first_run=True), again(first_run=False),
            app.command("report", campaign, "--failed"))


def _test_send(app: Any, campaign: str, to: str, *, template: str | None, subject: str | None,
               as_contact: str | None, kind: str | None) -> None:
    """``--test-to``: one [TEST] message, nothing recorded."""
    from ..send.testsend import send_test

    sent = send_test(app.store, app.settings, campaign, to, template=template, subject=subject, as_contact=as_contact,
                     kind=kind)
    if app.out.json:
        app.out.data({"campaign": sent.campaign, "test_to": sent.to, "rendered_for": sent.rendered_for,
                      "subject": sent.subject, "message_id": sent.message_id, "reply": sent.reply})
    app.out.success(f"Test message of campaign {sent.campaign} (template {sent.template}, rendered for"
                    f" {sent.rendered_for}) sent to {sent.to}: {sent.subject!r}; nothing was recorded")


def _scheduled(out: Any, s: SendSummary, tz: str | None) -> None:
    """A run before the campaign's moment: nothing sent, exit 0 (a cron line runs it again)."""
    from ..send.schedule import zone

    assert s.not_before is not None
    when = s.not_before.astimezone(zone(tz) if tz else None)
    if out.json:
        out.data({"campaign": s.campaign, "dry_run": False, "scheduled": True, "not_before": clock.to_iso(s.not_before),
                  "sent": 0, "campaign_totals": s.counts})
    out.info(f"Campaign {s.campaign} is scheduled: nothing is sent before {when:%Y-%m-%d %H:%M %Z}"
             f" ({clock.to_iso(s.not_before)}); the first run after that sends it")


def _report(out: Any, s: SendSummary, campaign: str, again: str, resume: str, failures: str) -> None:
    """What a run did: JSON or warnings and a closing line; a MailcliError for the exit code it ends with."""
    if out.json:
        out.data({
            "campaign": s.campaign, "dry_run": s.dry_run, "sent": s.sent, "failed": s.failed, "deferred": s.deferred,
            "uncertain": s.uncertain, "skipped": s.skipped, "rendered": s.rendered, "no_basis": s.no_basis,
            "interrupted": s.interrupted, "completed": s.completed,
            "elapsed_seconds": round(s.elapsed, 3), "campaign_totals": s.counts,
            "connections_limit": s.connections_limit,
            "rate_limit": round(s.rate_limit, 3) if s.rate_limit is not None else None,
            "template_changed": _template_change_data(s.template_change),
        })
    for problem, count in s.template_errors.items():
        out.warn(f"{problem} ({count} message(s))")
    for problem in s.problems:
        out.warn(problem)
    _relay_lines(out, s)
    if s.dry_run:
        _dry_run_end(out, s, campaign, again)
        return
    if s.problems or s.template_errors:
        out.info(f"Every failure with its address and the server's reply: {failures}")
    _closing_line(out, s, campaign)
    _raise_unless_done(out, s, campaign, resume, failures)


def _dry_run_end(out: Any, s: SendSummary, campaign: str, again: str) -> None:
    out.success(
        f"Dry run: {s.rendered} message(s) rendered, {s.failed} would fail, {s.skipped} skipped; nothing was sent"
    )
    if s.failed:
        raise PartialError(f"{s.failed} message(s) of campaign {campaign} would fail", hint=_fix_hint(s))
    out.info(f"To send: {again}")
    if "--limit" in again:
        out.info("(--limit sends only that many; leave it out to send to everyone)")


def _closing_line(out: Any, s: SendSummary, campaign: str) -> None:
    counts = s.counts
    total = f"{counts.get('sent', 0)} of {counts.get('audience', 0)} sent"
    if counts.get("uncertain_erased"):
        # Neither resent nor accepted any more (the person was erased): said, never a partial run.
        total += f", {counts['uncertain_erased']} uncertain of people since erased"
    if s.sent == 0 and s.attempted == 0 and not s.interrupted and not s.skipped:
        out.success(f"Campaign {campaign}: nothing left to send ({total})")
        return
    rate = f" ({s.rate:.0f} msg/s)" if s.sent and s.elapsed > 0 else ""
    out.success(f"Campaign {campaign}: {s.sent} sent in {s.elapsed:.1f} s{rate}, {s.failed} failed, "
                f"{s.deferred} deferred, {s.uncertain} uncertain, {s.skipped} skipped; total {total}")


# Complexity: one branch per way a run ends short of done, each with what to do next.
def _raise_unless_done(out: Any, s: SendSummary, campaign: str, resume: str, failures: str) -> None:
    """Interrupted (130), or messages left to a later run or uncertain (3): say so and how to go on."""
    counts = s.counts
    if s.interrupted:
        if counts.get("uncertain", 0):  # a second Ctrl-C cut messages off after their final dot
            out.warn(uncertain_line(campaign, counts["uncertain"], s.uncertain_causes))
        raise Interrupted(f"Campaign {campaign} interrupted; state saved", hint=f"resume with: {resume}")
    if s.quota_note:
        left = counts.get("pending", 0) + counts.get("deferred", 0)
        raise PartialError(f"Campaign {campaign}: {s.relay} says the sending quota is used up ({s.quota_note});"
                           f" {left} message(s) wait for a later run",
                           hint=f"when the relay's quota allows again: {resume}")
    uncertain = counts.get("uncertain", 0)
    deferred = counts.get("deferred", 0)
    if s.failed or deferred:
        hint = [f"retry deferred: {resume}"] if deferred else []
        hint.append(f"details: {failures}")
        if uncertain:
            out.warn(uncertain_line(campaign, uncertain, s.uncertain_causes))
        raise PartialError(
            f"Campaign {campaign}: {s.failed} failed, {deferred} deferred"
            + (f", {uncertain} uncertain" if uncertain else ""), hint="; ".join(hint)
        )
    if uncertain:
        # Not a success: the server may never have received these messages.
        raise PartialError(
            uncertain_line(campaign, uncertain, s.uncertain_causes),
            hint=f"check your relay's log for their Message-IDs ({failures} lists them); count those it accepted as"
                 f" sent: {resume} --accept-uncertain MESSAGE-ID (or all); send again what it did not accept:"
                 f" {resume if '--resend-uncertain' in resume else resume + ' --resend-uncertain'}",
        )


def template_change_line(campaign: str, change: TemplateChange) -> str:
    """A resumed campaign whose template changed since its first run sent, in one line."""
    sent = (f"the {change.sent} message(s) sent so far came" if change.sent_first == change.sent
            else f"{change.sent_first} of the {change.sent} message(s) sent so far came")
    return (f"Campaign {campaign}: template {change.template} has changed since the campaign's first run: {sent}"
            f" from the version of that run; the {change.left} left get the version saved now")


def _template_change_data(change: TemplateChange | None) -> dict[str, Any] | None:
    """``send --json``'s ``template_changed``: null, or what the warning says."""
    if change is None:
        return None
    return {"template": change.template, "sent_from_first_version": change.sent_first, "sent": change.sent,
            "left": change.left, "first_version": change.first_version, "version": change.version}


def uncertain_line(campaign: str, count: int, causes: dict[str, int]) -> str:
    """What happened to a campaign's uncertain messages, in one line."""
    texts = {
        "lost": "the connection to the server was lost after the final dot, before its reply",
        "killed": "a run ended (killed, or the machine stopped) after the final dot, before the server's reply"
                  " was recorded",
        "other": "no reply to the final dot was recorded",
    }
    found = [(causes[k], text) for k, text in texts.items() if causes.get(k)]
    if len(found) == 1:
        why = f": {found[0][1]}"
    elif found:
        why = ": " + "; ".join(f"{n} because {text}" for n, text in found)
    else:
        why = ""
    return f"Campaign {campaign}: {count} message(s) uncertain{why} — the server may or may not have accepted them"


def _fix_hint(s: SendSummary) -> str:
    """Where the fix is: the template (file and line) or the contacts' data."""
    fixes = []
    if s.template_errors:
        where = sorted({place for place in map(_template_place, s.template_errors) if place})
        fixes.append(f"fix the template at {', '.join(where)}, then run the dry run again" if where
                     else "fix the template as the warning above says, then run the dry run again")
    if s.problems:
        fixes.append("correct the data of the contacts named above (mailcli contacts set EMAIL FIELD=VALUE)")
    return "; ".join(fixes) or "see the warnings above"


def _template_place(problem: str) -> str | None:
    """The file (and line) a template problem begins with, like
    ``templates/news/message.html:12``; None when it names none."""
    place = problem.split(": ", 1)[0]
    return place if " " not in place and ("/" in place or re.search(r":\d+$", place)) else None


def _relay_lines(out: Any, s: SendSummary) -> None:
    """What the relay's limits did to this run: found now, or known from before."""
    if s.dry_run:
        return
    if s.skipped_smtputf8:
        out.info(f"{s.skipped_smtputf8} address(es) skipped: their local part is not ASCII and {s.relay} does not"
                 " offer SMTPUTF8 (an earlier campaign failed them there); `mailcli contacts show ADDRESS` says more")
    if s.connections_note:
        out.info(f"{s.relay} takes {s.connections_limit} connection(s) at once (it refused more: {s.connections_note});"
                 " the next run starts there")
    elif s.connections_limit is not None:
        out.detail(f"{s.relay}: {s.connections_limit} connection(s) at once, the limit found by an earlier run")
    if s.rate_note and s.rate_limit is not None:
        out.info(f"{s.relay} asked to slow down ({s.rate_note}); now at {s.rate_limit:.2f} message(s)/s,"
                 " where the next run starts")
    elif s.rate_limit is not None:
        out.detail(f"{s.relay}: {s.rate_limit:.2f} message(s)/s, the rate found by an earlier run")


def register(app: typer.Typer) -> None:
    app.command("send")(send_cmd)
