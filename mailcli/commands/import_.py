"""``mailcli import FILE --list NAME``: a contact CSV file, Excel workbook or
Mailchimp export (ZIP) into the database."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import context
from ..completers import complete_list
from ..errors import PartialError
from . import given_list

if TYPE_CHECKING:
    from ..contacts import MxCheck

_STATUS = ("subscribed", "unconfirmed")


# Complexity: one branch per option checked and per part of the summary (--json, MX, re-encoded lines, members, --strict).
def import_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The CSV file (comma, semicolon, tab or pipe separated), Excel workbook (.xlsx)"
                                         " or ZIP archive of CSV files (a Mailchimp export); - reads"
                                         " standard input.",
                                         metavar="FILE", show_default=False)],
    list_name: Annotated[str, typer.Option("--list", "-l", help="The list to subscribe the contacts to (created if new).",
                                           metavar="NAME", autocompletion=complete_list, callback=given_list)],
    map_: Annotated[list[str] | None, typer.Option(
        "--map", help='Map a column: "CSV column=field" (email, first_name, last_name, name, consent_time, '
        "consent_ip, unsubscribed_at, bounced_at, ignore, or an attribute name). Repeatable.",
        metavar="COLUMN=FIELD")] = None,
    delimiter: Annotated[str | None, typer.Option("--delimiter", help="Field separator (default: detected); tab as 'tab'.",
                                                  metavar="CHAR")] = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help="File encoding (default: detected), e.g. cp1252.",
                                                 metavar="NAME")] = None,
    sheet: Annotated[str | None, typer.Option("--sheet", help="Of an Excel workbook: the sheet to read (default: the first).",
                                              metavar="NAME")] = None,
    on_conflict: Annotated[str, typer.Option("--on-conflict", help="Existing contacts: update them or skip them.",
                                             metavar="update|skip")] = "update",
    consent_source: Annotated[str | None, typer.Option(
        "--consent-source", help="Where consent was given (default: the file name); recorded with the line.",
        metavar="S")] = None,
    basis: Annotated[str | None, typer.Option(
        "--basis", help="Why you may mail them, when the file shows no consent: consent (with --consent-source)"
        " or customer (the soft opt-in for existing customers).", metavar="consent|customer")] = None,
    status: Annotated[str, typer.Option("--status", help="subscribed, or unconfirmed for pending double opt-ins.",
                                        metavar="subscribed|unconfirmed")] = "subscribed",
    rejects: Annotated[Path | None, typer.Option("--rejects", help="Write rejected rows (with line and reason) here.",
                                                 metavar="FILE")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 3 if any row was rejected.")] = False,
    overwrite_rectified: Annotated[bool, typer.Option(
        "--overwrite-rectified", help="Let the file overwrite fields a person had corrected (contacts set).")]
    = False,
    check_mx: Annotated[bool, typer.Option("--check-mx", help="Warn about addresses whose domain takes no mail (DNS).")]
    = False,
    nameserver: Annotated[str | None, typer.Option(
        "--nameserver", help="With --check-mx: ask this DNS server instead of the system's.",
        metavar="HOST[:PORT]")] = None,
) -> None:
    """Import contacts from a CSV file, an Excel workbook or a Mailchimp export into a list, in one transaction.

    Encoding, delimiter and the usual column names (Mailchimp exports, Dutch
    Excel) are detected; every other column becomes a custom attribute.
    Addresses are normalised and checked; duplicates are merged; suppressed
    or unsubscribed addresses are never re-subscribed; consent is recorded
    per membership. A file without consent evidence (an opt-in time or IP
    column) needs the basis stated: --basis consent --consent-source TEXT,
    --basis customer, or --status unconfirmed. Rows marked unsubscribed or cleaned (Mailchimp's
    UNSUB_TIME, CLEAN_TIME) put their address on the suppression list
    instead. Every row is counted: imported, updated, unchanged, suppressed
    or rejected. A field a person had corrected with `contacts set` keeps its
    correction unless --overwrite-rectified is given.

    Examples:

        mailcli import mailchimp_subscribed.csv --list news

        mailcli import fair.csv --list news --basis consent --consent-source "paper form, fair 2024"

        mailcli import customers.csv --list news --basis customer

        mailcli import export.csv --list news --map "Werk e-mail=email" --map "Aangemeld=consent_time"

        mailcli import signups.csv --list news --status unconfirmed --consent-source "website form v2"

        mailcli import "Leden 2026.xlsx" --list news --sheet Leden

        mailcli import mailchimp-export.zip --list news

        crm-export | mailcli import - --list news --basis customer
    """
    from ..contacts import import_contacts
    from ..importer import parse_map_options
    from ..importer.piped import shown_path

    app = context.get(ctx)
    out = app.out
    if on_conflict not in ("update", "skip"):
        raise typer.BadParameter("expected update or skip", param_hint="--on-conflict")
    if status not in _STATUS:
        raise typer.BadParameter("expected subscribed or unconfirmed", param_hint="--status")
    if basis is not None and basis not in ("consent", "customer"):
        raise typer.BadParameter("expected consent or customer", param_hint="--basis")
    mapping = parse_map_options(map_ or [])
    shown = shown_path(file)  # "stdin" for -
    # The bar appears once the file is open (after any wait for another
    # import), and says "Saving" once the whole file is read.
    with contextlib.ExitStack() as bars:
        bar: Any = None

        def progress(done: int, size: int, saving: bool) -> None:
            nonlocal bar
            if bar is None:
                bar = bars.enter_context(out.progress(size, f"Importing {shown.name}", unit="bytes"))
            bar.update(done, description=f"Saving {shown.name}" if saving else None)

        report = import_contacts(
            app.store, app.settings, file, list_name, mapping=mapping, encoding=encoding, delimiter=delimiter,
            sheet=sheet, on_conflict=on_conflict, status=status, consent_source=consent_source, basis=basis,
            rejects=rejects,
            check_mx=check_mx, nameserver=nameserver, progress=progress, on_lock_wait=app.say_waiting_for,
            overwrite_rectified=overwrite_rectified)
    if report.sheet is not None:
        out.detail(f"{shown}: sheet {report.sheet!r}, email column {report.email_column!r}")
    else:
        out.detail(f"{shown}: {report.encoding}, delimiter {report.delimiter!r}, email column {report.email_column!r}")
    out.detail(f"{shown}: {report.how_read}")
    if report.mx is not None:
        _mx_lines(out, report.mx)
    if out.json:
        out.data(report.as_dict())
    result = report.result
    if report.files:
        out.info(f"{shown.name}: {len(report.files)} CSV file(s), opt-outs first: {', '.join(report.files)}")
    _summary(out, result, report.list_name, rejects)
    if report.reencoded:
        _reencoded(out, report.encoding, report.reencoded, report.reencoded_lines)
    if report.members is not None:
        members = report.members
        out.info(f"List {members.name} now: {members.subscribed} subscribed (who a send reaches), "
                 f"{members.unconfirmed} unconfirmed, {members.unsubscribed} unsubscribed, "
                 f"{members.held} held back")
    if strict and result.rejected:
        raise PartialError(f"{result.rejected} row(s) rejected (--strict); the other rows were imported",
                           hint=f"see {rejects}" if rejects else "write them out with --rejects FILE")


# Complexity: one line per kind of row the summary accounts for, each shown only when there are any.
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
    if result.kept_rectified:
        out.info(f"{result.kept_rectified} row(s) disagreed with a field the person had corrected: the correction"
                 " was kept (--overwrite-rectified lets the file win)")
    if result.basis_stated:
        out.info(f"{result.basis_stated} member(s) of {list_name} without a lawful basis now have the one stated"
                 f" ({result.basis}), with this file's lines as the evidence")
    if result.no_basis:
        out.warn(f"{result.no_basis} address(es) of the file are members of {list_name} without a lawful basis"
                 " (no opt-in time or IP address in their row, none recorded before): a send leaves them out;"
                 ' state it with --basis consent --consent-source "..." or --basis customer, or ask them:'
                 f" mailcli reconfirm --list {list_name}")
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


def _mx_lines(out: Any, mx: MxCheck) -> None:
    if mx.failure is not None:
        out.warn(f"--check-mx: {mx.failure}; domains not checked")
        return
    for entry in mx.undeliverable:
        out.warn(f"{entry.addresses} address(es) at {entry.domain}: {entry.reason}")
    if mx.unknown:
        out.warn(f"{mx.unknown} domain(s) could not be checked (DNS did not answer)")
    if not mx.undeliverable:
        out.info(f"All {mx.domains} domain(s) accept mail" + (" or could not be checked" if mx.unknown else ""))

def register(app: typer.Typer) -> None:
    app.command("import")(import_cmd)
