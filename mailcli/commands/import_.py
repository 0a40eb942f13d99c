"""``mailcli import FILE --list NAME``: a contact CSV into the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .. import context
from ..errors import PartialError

_STATUS = ("subscribed", "unconfirmed")


def import_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The CSV file (comma, semicolon, tab or pipe separated).",
                                         metavar="FILE", show_default=False)],
    list_name: Annotated[str, typer.Option("--list", "-l", help="The list to subscribe the contacts to (created if new).",
                                           metavar="NAME")],
    map_: Annotated[list[str] | None, typer.Option(
        "--map", help='Map a column: "CSV column=field" (email, first_name, last_name, name, consent_time, '
        "consent_ip, unsubscribed_at, bounced_at, ignore, or an attribute name). Repeatable.",
        metavar="COLUMN=FIELD")] = None,
    delimiter: Annotated[str | None, typer.Option("--delimiter", help="Field separator (default: detected); tab as 'tab'.",
                                                  metavar="CHAR")] = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help="File encoding (default: detected), e.g. cp1252.",
                                                 metavar="NAME")] = None,
    on_conflict: Annotated[str, typer.Option("--on-conflict", help="Existing contacts: update them or skip them.",
                                             metavar="update|skip")] = "update",
    consent_source: Annotated[str | None, typer.Option(
        "--consent-source", help="Where consent was given (default: the file name); recorded with the line.",
        metavar="S")] = None,
    status: Annotated[str, typer.Option("--status", help="subscribed, or unconfirmed for pending double opt-ins.",
                                        metavar="subscribed|unconfirmed")] = "subscribed",
    rejects: Annotated[Path | None, typer.Option("--rejects", help="Write rejected rows (with line and reason) here.",
                                                 metavar="FILE")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 3 if any row was rejected.")] = False,
    check_mx: Annotated[bool, typer.Option("--check-mx", help="Warn about addresses whose domain takes no mail (DNS).")]
    = False,
    nameserver: Annotated[str | None, typer.Option(
        "--nameserver", help="With --check-mx: ask this DNS server instead of the system's.",
        metavar="HOST[:PORT]")] = None,
) -> None:
    """Import contacts from a CSV file into a list, in one transaction.

    Encoding, delimiter and the usual column names (Mailchimp exports, Dutch
    Excel) are detected; every other column becomes a custom attribute.
    Addresses are normalised and checked; duplicates are merged; suppressed
    or unsubscribed addresses are never re-subscribed; consent is recorded
    per membership. Rows marked unsubscribed or cleaned (Mailchimp's
    UNSUB_TIME, CLEAN_TIME) put their address on the suppression list
    instead. Every row is counted: imported, updated, unchanged, suppressed
    or rejected.

    Examples:

        mailcli import contacts.csv --list news

        mailcli import export.csv --list news --map "Werk e-mail=email" --rejects rejected.csv

        mailcli import signups.csv --list news --status unconfirmed --consent-source "website form v2"
    """
    from .. import audit
    from ..importer import open_csv, parse_map_options
    from ..importfeed import ImportFeed, RejectsFile
    from ..locks import import_lock
    from ..store.contacts import import_batches
    from ..store.db import busy_timeout

    app = context.get(ctx)
    out = app.out
    if on_conflict not in ("update", "skip"):
        raise typer.BadParameter("expected update or skip", param_hint="--on-conflict")
    if status not in _STATUS:
        raise typer.BadParameter("expected subscribed or unconfirmed", param_hint="--status")
    mapping = parse_map_options(map_ or [])
    settings = app.settings
    secret = settings.secret()
    store = app.store
    # One import at a time, and none while a restore replaces the database.
    lock = import_lock(settings, f"import {file.name}", wait=busy_timeout(), on_wait=app.say_waiting_for)
    with lock, open_csv(file, encoding=encoding, delimiter=delimiter, mapping=mapping) as source:
        out.detail(f"{file}: {source.format.encoding}, delimiter {source.format.delimiter!r}, "
                   f"email column {source.plan.headers[source.plan.email]!r}")
        rejects_file = RejectsFile(rejects, source.plan.headers, source.format.delimiter) if rejects else None

        def record_opt_outs(list_id: int, rows: Any) -> None:
            from ..feedback.actions import record_imported_opt_outs

            record_imported_opt_outs(store, settings, rows, list_id=list_id, list_name=list_name.strip(),
                                     source=file.name)

        def audit_entry(result: Any) -> None:
            audit.record_access(store, settings, "import", command="import", detail={
                "file": file.name, "list": list_name, **{k: v for k, v in result.as_dict().items() if k != "rejects"}})

        try:
            with ImportFeed(source, count_domains=check_mx) as feed, \
                    out.progress(source.size, f"Importing {file.name}", unit="bytes") as bar:
                result = import_batches(
                    store, feed.batches, list_name=list_name, secret=secret, source=file.name,
                    consent_source=consent_source, on_conflict=on_conflict, status=status,
                    on_reject=rejects_file.write if rejects_file else None,
                    on_batch=lambda position: bar.update(
                        position, description=None if position < source.size else f"Saving {file.name}"),
                    on_opt_outs=record_opt_outs,
                    before_commit=audit_entry,
                )
                bar.update(source.size)  # read to the end: the bar's last frame is 100%
        except BaseException:
            if rejects_file is not None:
                rejects_file.discard()
            raise
        if rejects_file is not None:
            rejects_file.commit()
    out.detail(f"{file}: {feed.how_read}")
    reencoded, reencoded_lines = feed.reencoded()
    data = {"file": str(file), "list": list_name.strip(), **result.as_dict(),
            "reencoded": reencoded, "reencoded_lines": reencoded_lines}
    if check_mx:
        data["undeliverable"] = _check_domains(out, feed.domains or {}, nameserver)
    if out.json:
        out.data(data)
    _summary(out, result, list_name.strip(), rejects)
    if reencoded:
        _reencoded(out, source.format.encoding, reencoded, reencoded_lines)
    if not out.quiet:
        from ..store.audience import list_summaries

        for members in list_summaries(store.conn, [list_name.strip()]):
            out.info(f"List {members.name} now: {members.subscribed} subscribed (who a send reaches), "
                     f"{members.unconfirmed} unconfirmed, {members.unsubscribed} unsubscribed, "
                     f"{members.held} held back")
    if strict and result.rejected:
        raise PartialError(f"{result.rejected} row(s) rejected (--strict); the other rows were imported",
                           hint=f"see {rejects}" if rejects else "write them out with --rejects FILE")


def _summary(out: Any, result: Any, list_name: str, rejects: Path | None) -> None:
    # imported/updated/unchanged count addresses (imported is what the list
    # gained); with the merged repeats, suppressed and rejected rows they add
    # up to the rows of the file.
    line = (f"{result.total} row(s) for list {list_name}: imported {result.imported}, updated {result.updated}, "
            f"unchanged {result.unchanged}, suppressed {result.suppressed}, rejected {result.rejected}"
            + (f", merged {result.duplicates}" if result.duplicates else ""))
    out.success(line)
    if result.duplicates:
        out.info(f"merged: {result.duplicates} row(s) repeated an address earlier in the file (case ignored)"
                 " and were merged into it")
    if result.opted_out:
        out.info(f"{result.opted_out} row(s) marked unsubscribed or cleaned in the file: not subscribed, and"
                 " their addresses are now on the suppression list")
    if result.suppressed > result.opted_out:
        out.info(f"{result.suppressed - result.opted_out} row(s) not subscribed: suppressed, opted out or"
                 " unsubscribed earlier")
    if result.needs_smtputf8:
        out.info(f"{result.needs_smtputf8} address(es) have a non-ASCII local part (like zoë@…): a relay must offer"
                 " SMTPUTF8 to take them; `mailcli doctor --smtp` shows whether yours does")
    if result.rejected:
        for reject in result.rejects[:5]:
            out.info(f"  line {reject.line}: {reject.reason}")
        if result.rejected > 5:
            out.info(f"  ... and {result.rejected - 5} more")
        if rejects is not None:
            out.info(f"Rejected rows written to {rejects}")
        else:
            out.info("Write them with their reasons to a file with --rejects FILE")


def _reencoded(out: Any, encoding: str, count: int, lines: list[int]) -> None:
    # Each line is decoded by itself when the encoding was detected: these
    # were written otherwise than the rest of the file (pasted from another).
    if encoding.startswith("utf-8"):
        how = "not UTF-8 like the rest of the file and were read as Windows-1252 (cp1252)"
    else:
        how = "UTF-8 in a Windows-1252 (cp1252) file and were read as UTF-8"
    shown = ", ".join(str(n) for n in lines[:10]) + (", ..." if count > 10 else "")
    out.warn(f"{count} line(s) were {how}: line {shown}; check the names on them"
             " (or give --encoding to decode the whole file one way)")


def _check_domains(out: Any, domains: dict[str, int], nameserver: str | None) -> list[dict[str, Any]]:
    from ..deliverability.dnsquery import DnsFailure, make_resolver
    from ..deliverability.mx import check_domains

    try:
        resolver = make_resolver(nameserver)
    except DnsFailure as exc:
        out.warn(f"--check-mx: {exc}; domains not checked")
        return []
    results = check_domains(domains, resolver=resolver)
    bad = [{"domain": d, "addresses": domains[d], "reason": r.reason}
           for d, r in sorted(results.items()) if r.undeliverable]
    unknown = sum(1 for r in results.values() if r.status == "unknown")
    for entry in bad:
        out.warn(f"{entry['addresses']} address(es) at {entry['domain']}: {entry['reason']}")
    if unknown:
        out.warn(f"{unknown} domain(s) could not be checked (DNS did not answer)")
    if not bad:
        out.info(f"All {len(domains)} domain(s) accept mail" + (" or could not be checked" if unknown else ""))
    return bad


def register(app: typer.Typer) -> None:
    app.command("import")(import_cmd)
