"""``mailcli privacy``: export, erase, restrict, unrestrict, object, purge, audit, requests.

Thin wrappers around ``mailcli.privacy``: parse, confirm where destructive,
call the core, print. People are named in output only masked
(``z***@example.org``) or by the reference (a prefix of the address HMAC).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import clock, context
from ..addresses import mask_address
from ..errors import MailcliError, NotFoundError, UsageError
from ..privacy import auditlog
from ..privacy.erase import erase_subject
from ..privacy.export import export_subject
from ..privacy.restrict import object_subject, restrict_subject, unrestrict_subject
from ..privacy.retention import RULES, UNITS, purge
from ..privacy.subject import find_subject
from . import LARGEST

# What an erasure or purge cannot do at once while Litestream replicates the database.
SERVER_NOTE = ("The rows are deleted and the server's tables vacuumed; the old bytes stay in the server's WAL,"
               " its replicas and WAL archives, and in earlier backups, until those age out (`mailcli doctor`"
               " shows the server's settings; README, \"Sharing a project: PostgreSQL\")")
REPLICATED_NOTE = ("Litestream replicates this database: the removed data leave its files when Litestream"
                   " checkpoints and later writes overwrite the WAL, and the replica when its snapshots age out"
                   " (README, \"A standby: Litestream\")")

privacy_app = typer.Typer(help="Data-subject rights (GDPR art. 15-21), retention and the audit log.",
                          no_args_is_help=True)

Email = Annotated[str, typer.Argument(help="The person's e-mail address.", metavar="EMAIL")]
Reason = Annotated[str | None, typer.Option("--reason", help="Why (kept in the audit log), e.g. a ticket number.")]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s" if not word.endswith("y") else f"{n} {word[:-1]}ies"


@privacy_app.command("export")
def export_cmd(
    ctx: typer.Context,
    email: Email,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="ZIP file to write.", metavar="FILE")] = None,
    reason: Reason = None,
) -> None:
    """Everything held about one person, as a ZIP with JSON, CSV and a letter (art. 15/20).

    Without -o the file goes to exports/; its path is printed. The file is
    deleted by an erasure of the person and by `privacy purge` once older than
    \\[retention] exports; one written outside the project's folder is named for
    you to delete then. Closes the person's open access and portability requests.

    Example:

        mailcli privacy export anna@example.nl -o anna.zip --reason "request 2024-17"
    """
    app = context.get(ctx)
    result = export_subject(app.store, app.settings, email, output=output, reason=reason)
    for warning in result.warnings:
        app.out.warn(warning)
    summary = ", ".join(f"{name} {n}" for name, n in result.counts.items())
    app.out.result(
        {"path": str(result.path), "reference": result.ref, "counts": result.counts, "files": list(result.files),
         "requests_closed": result.requests_closed},
        text=str(result.path),
    )
    app.out.success(f"Exported ({summary}; reference {result.ref}); the file is for the person only (mode 0600)")
    if result.requests_closed:
        app.out.info(f"Closed request(s) {', '.join(f'#{i}' for i in result.requests_closed)}: send the file to"
                     " the person")
    app.out.info(f"It is deleted by `mailcli privacy purge` after {app.settings.retention.exports.describe()}"
                 " ([retention] exports), and by an erasure of the person")


@privacy_app.command("erase")
def erase_cmd(
    ctx: typer.Context,
    email: Email,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask (needed without a terminal).")] = False,
    reason: Reason = None,
) -> None:
    """Erase one person (art. 17); only a keyed hash stays on the suppression list.

    Campaign totals do not change. Exports, previews and rejects files mailcli
    wrote with the person's data are deleted (those outside the project's
    folder are named, for you to delete), and their open requests are closed.
    The erasure is also written to the erasure ledger beside the database
    (mailcli.db-ledgers/erasures.jsonl), so restoring an older backup re-applies it.

    Example:

        mailcli privacy erase anna@example.nl --yes --reason "request 2024-18"
    """
    app = context.get(ctx)
    subject = find_subject(app.store, app.settings, email)
    app.out.confirm(f"Erase everything held about {subject.masked}? This cannot be undone.", yes=yes, what="erase")
    result = erase_subject(app.store, app.settings, email, reason=reason)
    data: dict[str, Any] = {"reference": result.ref, "found": result.found, "already_erased": result.already_erased,
                            "rows": result.rows, "files_removed": result.files.removed,
                            "also_delete": result.files.elsewhere, "requests_closed": result.requests_closed}
    for path in result.files.removed:
        app.out.info(f"Removed {path}")
    for path in result.files.elsewhere:
        app.out.warn(f"also delete {path}: mailcli wrote it with this person's data, outside the project's folder")
    if result.scrub is not None:
        data.update(wal_truncated=result.scrub.wal_truncated, vacuumed=result.scrub.vacuumed,
                    remnants=bool(result.scrub.remnants))
        _warn_traces(app, result.scrub)
    if result.already_erased:
        app.out.result(data, text=f"Already erased: {subject.masked} (reference {result.ref}); nothing is held")
        return
    if not result.found:
        if app.out.json:
            app.out.data(data)
        raise NotFoundError(
            f"No contact with the address {subject.masked}: nothing held to erase",
            hint="it was put on the suppression list anyway, so it is never imported or mailed",
        )
    rows = result.rows
    parts = [_plural(rows.get("contacts", 0), "contact"), _plural(rows.get("memberships", 0), "membership"),
             _plural(rows.get("deliveries", 0), "delivery"), _plural(rows.get("events", 0), "event")]
    if result.files.removed:
        parts.append(_plural(len(result.files.removed), "file"))
    app.out.result(data, text=f"Erased {subject.masked} (reference {result.ref}): {', '.join(parts)}")
    _say_closed(app, result.requests_closed)
    if result.scrub is not None and result.scrub.on_server:
        app.out.info(SERVER_NOTE)
    app.out.info("Only a keyed hash stays on the suppression list. If the relay "
                 f"{app.settings.smtp.host} keeps logs with this address, ask it to delete them (art. 19).")


# Complexity: one message per state of the erased data (replicated, held, in the WAL, not compacted), each with its remedy.
def _warn_traces(app: Any, scrub: Any) -> None:
    """Say what is left of an erased person in the database files, and the one thing that removes it."""
    if scrub.on_server:
        return  # said after the outcome: nothing here is a warning
    if scrub.replicated and not scrub.held_in:
        app.out.warn(REPLICATED_NOTE)
    elif scrub.held_in:
        app.out.warn(f"the address is still held in the database ({', '.join(scrub.held_in)}): another record names"
                     " it, such as a custom field of another contact; find it with `mailcli contacts --json` and"
                     " correct it with `mailcli contacts set`")
    elif scrub.remnants and not scrub.wal_truncated:
        app.out.warn("a trace of the erased data is still in " + ", ".join(scrub.remnants)
                     + ": another process is reading the database, so its old pages could not be cleared;"
                     " run `mailcli privacy purge` when it has finished")
    elif scrub.remnants and not scrub.vacuumed:
        app.out.warn("a trace of the erased data is still in " + ", ".join(scrub.remnants)
                     + ": another process kept writing, so the database could not be compacted;"
                     " run `mailcli privacy purge` when it has finished")
    elif scrub.remnants:
        app.out.warn("a trace of the erased data is still in " + ", ".join(scrub.remnants)
                     + " after compaction; run `mailcli privacy purge`, and report this if it stays")
    elif not scrub.wal_truncated:
        app.out.warn("another process is using the database; run `mailcli privacy purge` when it has finished")


def _say_closed(app: Any, ids: list[int]) -> None:
    if ids:
        app.out.info(f"Closed request(s) {', '.join(f'#{i}' for i in ids)} of this person")


@privacy_app.command("restrict")
def restrict_cmd(ctx: typer.Context, email: Email, reason: Reason = None) -> None:
    """Restrict processing (art. 18): the data are kept and exported, never sent to.

    `mailcli lists` counts the person as held back until `privacy unrestrict`.

    Example:

        mailcli privacy restrict anna@example.nl --reason "disputes accuracy"
    """
    app = context.get(ctx)
    result = restrict_subject(app.store, app.settings, email, reason=reason)
    masked = mask_address(email.strip())
    app.out.result({"reference": result.ref, "restricted": True, "changed": result.changed, "since": result.since,
                    "requests_closed": result.requests_closed},
                 text=f"Restricted {masked} since {result.since}" if result.changed
                 else f"{masked} was already restricted since {result.since}")
    _say_closed(app, result.requests_closed)


@privacy_app.command("unrestrict")
def unrestrict_cmd(ctx: typer.Context, email: Email, reason: Reason = None) -> None:
    """Lift a restriction (art. 18(3)); the lifting is logged too.

    The person's memberships count as before: sends reach them again.

    Example:

        mailcli privacy unrestrict anna@example.nl --reason "accuracy confirmed"
    """
    app = context.get(ctx)
    result = unrestrict_subject(app.store, app.settings, email, reason=reason)
    masked = mask_address(email.strip())
    app.out.result({"reference": result.ref, "restricted": False, "changed": result.changed},
                 text=f"Lifted the restriction of {masked}" if result.changed else f"{masked} was not restricted")


@privacy_app.command("object")
def object_cmd(ctx: typer.Context, email: Email, reason: Reason = None) -> None:
    """Record an objection to all direct marketing (art. 21): no list ever mails the person again.

    Every membership ends and the address goes on the suppression list.

    Example:

        mailcli privacy object anna@example.nl --reason "phone call 12 May"
    """
    app = context.get(ctx)
    result = object_subject(app.store, app.settings, email, reason=reason)
    masked = mask_address(email.strip())
    data = {"reference": result.ref, "found": result.found, "changed": result.changed,
            "since": result.since, "memberships_ended": result.memberships_ended,
            "requests_closed": result.requests_closed}
    _say_closed(app, result.requests_closed)
    if not result.found:
        if app.out.json:
            app.out.data(data)
        raise NotFoundError(f"No contact with the address {masked}",
                            hint="it was put on the suppression list anyway, so it is never imported or mailed")
    app.out.result(data, text=f"Objection recorded for {masked}: {_plural(result.memberships_ended, 'membership')}"
                            " ended; suppressed for every list" if result.changed
                 else f"{masked} had already objected on {result.since}")


def _parse_date(option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return clock.parse_moment(text)
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not a date like 2027-01-01 or 2027-01-01T06:00:00Z") from None
    except OverflowError:  # an offset that takes it past the year 1 or 9999
        raise UsageError(f"{option}: {text!r} is out of range") from None


# Complexity: one branch per option and outcome (--dry-run, --json, nothing to purge, confirmation).
@privacy_app.command("purge")
def purge_cmd(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; change nothing.")] = False,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Evaluate the policy as on this day.",
                                              metavar="DATE")] = None,
) -> None:
    """Apply the retention policy of mailcli.toml: erase and delete what is past its period. Cron-safe.

    Prints each rule's count (with --json an object {rule: count}). Running it
    twice removes nothing the second time. `--as-of` with `--dry-run` answers
    "what goes next month?"; a future day without `--dry-run` is refused
    (exit 2, nothing changed). A past day applies the policy as it stood
    then, which removes no more than a purge now.

    Example (crontab):

        15 3 * * *  mailcli -C /srv/news privacy purge -q
    """
    app = context.get(ctx)
    moment = _parse_date("--as-of", as_of)
    result = purge(app.store, app.settings, as_of=moment, dry_run=dry_run)
    if app.out.json:
        app.out.data(result.counts)
    elif not app.out.quiet:
        periods = dict(app.settings.retention.items())
        rows = [(rule, periods[rule].text, result.cutoffs[rule][:10], result.counts[rule], UNITS[rule]) for rule in RULES]
        app.out.table(["rule", "period", "before", "count", "of"], rows,
                      title=f"{'Would purge' if dry_run else 'Purged'} as of {result.as_of}")
    total = sum(result.counts.values())
    if dry_run:
        app.out.info(f"Dry run: nothing was changed ({total} records and {_plural(result.contacts_erased, 'contact')}"
                     " would go)")
    else:
        app.out.success(f"Purge done: {total} records removed, {_plural(result.contacts_erased, 'contact')} erased")
        for path in result.files.elsewhere:
            app.out.warn(f"also delete {path}: mailcli wrote it with personal data, outside the project's folder,"
                         " and it is past [retention] exports or about someone erased")
        if result.scrub is not None and result.scrub.replicated:
            app.out.warn(REPLICATED_NOTE)
        elif result.scrub is not None and not result.scrub.wal_truncated and app.store.url is None:
            app.out.warn("another process is using the database; the removed data leave the -wal file"
                         " once it finishes (run purge again)")


# Complexity: one branch per option (--verify, --json) and per verdict of the chain, each printed its own way.
@privacy_app.command("audit")
def audit_cmd(
    ctx: typer.Context,
    subject: Annotated[str | None, typer.Option("--subject", help="Only entries about this person.",
                                                metavar="EMAIL")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Check the MAC chain and the head; exit 1 if broken.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, max=LARGEST, help="Only the newest N entries.")] = None,
) -> None:
    """The log of every access to personal data (who, what, when, whose, why).

    Subjects appear as a prefix of the keyed hash of their address. --verify
    checks every entry's MAC and the head kept beside the database, and prints
    the head (entries, newest MAC) for you to keep elsewhere.

    Example:

        mailcli privacy audit --subject anna@example.nl
        mailcli privacy audit --verify
    """
    app = context.get(ctx)
    if verify:
        result = auditlog.verify(app.store, app.settings)
        problems = [{"id": p.id, "problem": p.problem} for p in result.problems]
        data = {"ok": result.ok, "entries": result.entries, "first_id": result.first_id,
                "last_id": result.last_id, "problems": problems,
                "head": result.head.as_json() if result.head else None}
        if result.ok:
            head = f"\nHead: {result.head.text()}" if result.head else ""
            app.out.result(data, text=f"Audit log intact: {result.entries} entries"
                                    + (f" (#{result.first_id}-#{result.last_id})" if result.entries else "") + head)
            app.out.info("Keep the head line somewhere else too (a cron mail, a ticket): a later --verify shows"
                         " whether the log still holds it")
            return
        if app.out.json:
            app.out.data(data)
        first = result.problems[0]
        where = f"Audit log entry #{first.id} " if first.id is not None else "Audit log: "
        raise MailcliError(where + first.problem,
                           hint=f"{len(problems)} problem(s) in {result.entries} entries; the log was tampered with"
                                " or damaged")
    entries = auditlog.list_entries(app.store, app.settings, subject_email=subject, limit=limit)
    if app.out.json:
        app.out.data(entries)
        return
    rows = [(e["id"], e["at"], e["actor"], e["command"], (e["subject"] or "")[:12], e["reason"] or "")
            for e in entries]
    app.out.table(["#", "at", "actor", "command", "subject", "reason"], rows)
    if not entries:
        app.out.info("No audit entries" + (" about this person" if subject else ""))


requests_app = typer.Typer()  # its help is the listing's docstring, examples included
privacy_app.add_typer(requests_app, name="requests")


def _request_row(view: Any) -> tuple[object, ...]:
    extended = f"+{view.extended_months}mo" if view.extended_months else ""
    return (f"#{view.id}", view.reference, view.kind, view.received_at[:10], view.due_at[:10], extended,
            view.status if view.status != "closed" else f"closed {view.closed_at[:10]} ({view.closed_by})")


# Complexity: the listing as JSON, a table or a notice, then the overdue exit and the next due date.
@requests_app.callback(invoke_without_command=True)
def requests_cmd(
    ctx: typer.Context,
    everything: Annotated[bool, typer.Option("--all", help="Closed requests too.")] = False,
) -> None:
    """The open requests, the first due first; exit 3 when any is overdue (for cron).

    A request is due one month after it was received (art. 12(3)). The
    command that answers it closes it: `privacy export` (access,
    portability), `contacts set` (rectification), `privacy restrict`,
    `privacy object`, `privacy erase` (every open request of the person).

    Examples:

        mailcli privacy requests add anna@example.nl --type access --received 2026-03-02

        mailcli privacy requests

        mailcli privacy requests extend 7 --reason "a thousand records across three lists"

        15 8 * * *  cd /srv/news && mailcli -q privacy requests    # crontab: mail when overdue
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..errors import PartialError
    from ..privacy.requests import list_requests

    app = context.get(ctx)
    views = list_requests(app.store, app.settings, everything=everything)
    overdue = [v for v in views if v.status == "overdue"]
    if app.out.json:
        app.out.data([v.as_json() for v in views])
    elif views:
        app.out.table(["request", "reference", "type", "received", "due", "extended", "status"],
                      [_request_row(v) for v in views])
    else:
        app.out.info("No open requests" if not everything else "No requests")
    if overdue:
        raise PartialError(f"{_plural(len(overdue), 'request')} overdue: "
                           + ", ".join(f"#{v.id} ({v.kind}, due {v.due_at[:10]})" for v in overdue),
                           hint="answer them now; every day counts against the one-month deadline of art. 12(3)")
    if views and not everything:
        first = views[0]
        app.out.info(f"{_plural(len(views), 'open request')}; the first is due on {first.due_at[:10]}")


@requests_app.command("add")
def requests_add_cmd(
    ctx: typer.Context,
    email: Email,
    kind: Annotated[str, typer.Option("--type", help="access, rectification, erasure, restriction, objection or"
                                                     " portability.", metavar="TYPE")],
    received: Annotated[str | None, typer.Option("--received", help="When it arrived (default: now).",
                                                 metavar="DATE")] = None,
    reason: Reason = None,
) -> None:
    """Record a request; it is due one month after it was received.

    The person is named by the keyed hash of the address only. The command
    that answers the request closes it (see `mailcli privacy requests --help`).

    Example:

        mailcli privacy requests add anna@example.nl --type erasure --received 2026-03-02 --reason "ticket 118"
    """
    from ..privacy.requests import add_request

    app = context.get(ctx)
    view = add_request(app.store, app.settings, email, kind.strip().lower(), received=_parse_date("--received", received),
                       reason=reason)
    app.out.result(view.as_json(), text=f"Request #{view.id}: {view.kind} of {mask_address(email.strip())}"
                                        f" (reference {view.reference}), due on {view.due_at[:10]}")


@requests_app.command("extend")
def requests_extend_cmd(
    ctx: typer.Context,
    request_id: Annotated[int, typer.Argument(help="The request's number.", metavar="ID", max=LARGEST)],
    reason: Annotated[str, typer.Option("--reason", help="Why it needs longer (tell the person).")],
    months: Annotated[int, typer.Option("--months", help="1 or 2.", min=1, max=2)] = 2,
) -> None:
    """Extend a request once, by up to two months, within its first month (art. 12(3)).

    The person must be told within the first month that it takes longer, and why.

    Example:

        mailcli privacy requests extend 7 --reason "a thousand records across three lists"
    """
    from ..privacy.requests import extend_request

    app = context.get(ctx)
    view = extend_request(app.store, app.settings, request_id, reason, months=months)
    app.out.result(view.as_json(), text=f"Request #{view.id} is now due on {view.due_at[:10]}")
    app.out.info("Tell the person within the first month that it takes longer, and why (art. 12(3))")


@requests_app.command("close")
def requests_close_cmd(
    ctx: typer.Context,
    request_id: Annotated[int, typer.Argument(help="The request's number.", metavar="ID", max=LARGEST)],
    reason: Reason = None,
) -> None:
    """Close a request answered some other way, or withdrawn.

    The commands that answer a request close it themselves; this is for the rest.

    Example:

        mailcli privacy requests close 7 --reason "withdrawn by phone"
    """
    from ..privacy.requests import close_request

    app = context.get(ctx)
    view = close_request(app.store, app.settings, request_id, reason=reason)
    app.out.result(view.as_json(), text=f"Request #{view.id} closed")


def register(app: typer.Typer) -> None:
    app.add_typer(privacy_app, name="privacy")
