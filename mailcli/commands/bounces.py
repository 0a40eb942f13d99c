"""``mailcli bounces SOURCE``: apply DSN bounces, ARF complaints and mailto unsubscribes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import context
from ..errors import PartialError, UsageError

if TYPE_CHECKING:
    from ..feedback.ingest import IngestResult
    from ..feedback.sources import NotDeleted


def bounces_cmd(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="An mbox file, a Maildir folder, or imaps://user@host[:port]/INBOX.", metavar="SOURCE")],
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="Extra CA certificate(s) to trust for imaps:// (a private CA).", metavar="FILE")
    ] = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete processed messages from SOURCE (unmatched ones are kept).")
    ] = False,
    ack: Annotated[
        bool, typer.Option("--ack", help="The unmatched messages listed have been handled: stop listing them"
                           " (and mark them read; deleted with --delete).")
    ] = False,
) -> None:
    """Read bounces, complaints and unsubscribe requests from a mailbox.

    Hard bounces (5.1.1 and other address errors) and spam complaints
    suppress the address; soft bounces count, and suppress only after
    \\[bounces] soft_limit campaigns; 5.7.x rejections never suppress, they
    point at the sender's SPF/DKIM/DMARC set-up; mailto unsubscribes are
    matched by their token. Anything else (a person's reply, a bounce of
    unknown mail) is left unread and listed on every run until you have
    handled it and run with --ack. Reading the same mailbox again changes
    nothing else, so it is safe from cron. The IMAP password comes from the
    variable named by \\[bounces] imap_password_env.

    Examples:

        mailcli bounces /var/mail/bounces

        mailcli bounces /var/mail/bounces --ack      # the replies listed are handled

        mailcli -q bounces imaps://bounces@mail.example.org/INBOX
    """
    from ..feedback.ingest import ingest
    from ..feedback.sources import open_source

    app = context.get(ctx)
    settings = app.settings
    if ca_file is not None and not ca_file.is_file():
        raise UsageError(f"--ca-file: file not found: {ca_file}")
    store = app.store
    src = open_source(source, settings, ca_file=ca_file, delete=delete)
    try:
        with app.out.progress(None, "Reading") as bar:
            result = ingest(store, settings, src, progress=lambda n: bar.update(n), acknowledge=ack)
    finally:
        src.close()
    data = result.as_dict()
    if app.out.json:
        app.out.data(data)
    elif not app.out.quiet:
        _summary(app.out, result, data["policy_details"])
        if result.unmatched_messages:
            _unmatched(app.out, result)
            if not result.acknowledged:
                app.out.info(f"Once handled: {app.command('bounces', source, '--ack')}")
    _raise_if_partial(app.out, result)


def _summary(out: Any, result: IngestResult, policy_details: list[dict[str, Any]]) -> None:
    """One line of counts, then what the notices, suppressions and policy refusals mean."""
    out.line(
        f"{_n(result.messages, 'message')} from {result.source}: "
        f"{_n(result.hard_bounces, 'hard bounce')}, {_n(result.soft_bounces, 'soft bounce')}, "
        f"{_n(result.complaints, 'complaint')}, {_n(result.unsubscribes, 'unsubscribe')}, "
        f"{_n(result.policy_rejections, 'policy rejection')}, {_n(result.delays, 'delay notice')}, "
        f"{result.ignored} ignored, "
        f"{result.unmatched} unmatched, {result.already_processed} already processed"
    )
    if result.delays or result.relayed or result.expanded:
        out.info(f"Delay, relay and expansion notices are not bounces: recorded on the delivery"
                 f" ({result.delays} delayed, {result.relayed} relayed, {result.expanded} expanded);"
                 " see `mailcli report CAMPAIGN --failed`")
    if result.suppressed:
        out.info(f"{_n(result.suppressed, 'address', 'addresses')} now suppressed")
    for item in policy_details:
        out.warn(
            f"{item['messages']} messages of campaign {item['campaign'] or '?'} were refused for policy reasons "
            f"({item['status']}): the sender set-up is at fault, not the address; run `mailcli doctor --dns`"
        )


def _unmatched(out: Any, result: IngestResult) -> None:
    """The mail no rule matched, for a person to handle."""
    if result.acknowledged:
        out.info(f"Acknowledged as handled: {result.acknowledged} message(s); they are not listed again")
    else:
        out.info(f"Unmatched, for a person to handle ({len(result.unmatched_messages)}; left unread in the"
                 " mailbox and listed on every run until acknowledged):")
    out.table(
        ["Message-ID", "From domain", "Subject", "Why", "First listed"],
        [[u.message_id or "-", u.from_domain or "-", u.subject, u.reason, u.first_seen or "now"]
         for u in result.unmatched_messages],
    )


def _raise_if_partial(out: Any, result: IngestResult) -> None:
    """Entries skipped or processed mail not marked (named each), or the processed mail not deleted: end with exit 3."""
    for item in result.unreadable:
        out.warn(f"Cannot read {item.entry}: {item.reason}; skipped, left where it is")
    for marked in result.not_marked:
        out.warn(f"Cannot mark {marked.entry} as processed: {marked.reason}; it was processed, and the next"
                 " run marks it")
    if result.not_deleted:
        raise PartialError(f"{result.source}: {_not_deleted(result.not_deleted)}",
                           hint="run the same command again to delete what was read")
    if result.unreadable:
        count = len(result.unreadable)
        if result.source.startswith(("imaps://", "imap://")):  # the server would not give them
            what, hint = _n(count, "message"), "the server's log says why; the next run fetches them again"
        else:
            what, hint = _n(count, "entry", "entries"), "remove or repair the entries named above; the next run reads them"
        raise PartialError(
            f"{what} of {result.source} could not be read and"
            f" {'was' if count == 1 else 'were'} skipped; every other message was processed",
            hint=hint,
        )
    if result.not_marked:
        count = len(result.not_marked)
        raise PartialError(
            f"{_n(count, 'message')} of {result.source} {'was' if count == 1 else 'were'} processed but could not"
            " be marked as processed in the mailbox; every other message was processed",
            hint="the next run finds " + ("it processed and marks it" if count == 1 else "them processed and marks them"),
        )


def _not_deleted(why: NotDeleted) -> str:
    """Why --delete did not delete what was processed, and what it deleted before."""
    gone = why.deleted
    if not gone:
        return f"{why.reason}; nothing was deleted"
    return f"{why.reason}; only {_n(gone, 'message')} of those processed {'was' if gone == 1 else 'were'} deleted"


def _n(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def register(app: typer.Typer) -> None:
    app.command("bounces")(bounces_cmd)
