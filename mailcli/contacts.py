"""Contacts as a library: import a file into a list; list, show and correct contacts.

Each function is what one command does, with no terminal: it takes the open
store and the settings, does the work, writes the audit entry that an access
to personal data needs (docs/guarantees.md#audit) and returns a result the
caller prints or inspects. Failures are ``MailcliError`` subclasses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import MailcliError, NoBasisError, NotFoundError, UsageError
from .importrows import RowReject
from .locks import Holder
from .segments import Segment
from .store import Store
from .store.audience import ListSummary
from .store.contacts import ContactDetail, ContactRow
from .store.imports import ImportResult

#: ``progress(bytes read, file size, saving)``: saving is True once the whole
#: file is read and the import writes what it read.
ImportProgress = Callable[[int, int, bool], None]


@dataclass(frozen=True, slots=True)
class UndeliverableDomain:
    """A domain of the file that takes no mail (``check_mx``)."""

    domain: str
    addresses: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "addresses": self.addresses, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class MxCheck:
    """What ``check_mx`` found about the file's domains."""

    domains: int  # distinct domains of the valid rows
    undeliverable: list[UndeliverableDomain] = field(default_factory=list)
    unknown: int = 0  # domains DNS gave no answer for
    failure: str | None = None  # why no domain could be checked


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What ``import_contacts`` did: the counts and how the file was read."""

    file: Path
    list_name: str
    result: ImportResult
    encoding: str
    delimiter: str
    email_column: str
    how_read: str
    members: ListSummary | None  # the list's counts afterwards, as `mailcli lists` shows them
    mx: MxCheck | None = None
    # Lines decoded otherwise than the rest of the file (pasted in from
    # another): how many, and the numbers of the first, so a person can
    # check the names on them.
    reencoded: int = 0
    reencoded_lines: list[int] = field(default_factory=list)
    sheet: str | None = None  # the sheet of a workbook that was read
    files: list[str] = field(default_factory=list)  # the CSV files of an archive, in the order read

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``import --json``."""
        data: dict[str, Any] = {"file": str(self.file), "list": self.list_name, **self.result.as_dict(),
                                "reencoded": self.reencoded, "reencoded_lines": self.reencoded_lines}
        if self.sheet is not None:
            data["sheet"] = self.sheet
        if self.files:
            data["files"] = self.files
        if self.mx is not None:
            data["undeliverable"] = [d.as_dict() for d in self.mx.undeliverable]
        return data


# Complexity: the import's steps in one transaction: lock, file, rejects file, merge, its register entry.
def import_contacts(
    store: Store,
    settings: Settings,
    file: str | Path,
    list_name: str,
    *,
    mapping: Mapping[str, str] | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    sheet: str | None = None,
    on_conflict: str = "update",
    status: str = "subscribed",
    consent_source: str | None = None,
    basis: str | None = None,
    rejects: str | Path | None = None,
    check_mx: bool = False,
    nameserver: str | None = None,
    progress: ImportProgress | None = None,
    on_lock_wait: Callable[[Holder | None], None] | None = None,
    overwrite_rectified: bool = False,
) -> ImportReport:
    """Import a contact file into list ``list_name`` (created if new), in one transaction.

    The file is a CSV file, an Excel workbook (``.xlsx``: the first sheet,
    or ``sheet``) or a ZIP archive of CSV files such as a Mailchimp export
    (all of them, opt-out files first, in one transaction), told apart by
    their content. ``mapping`` maps a column to a field (``{"Werk e-mail":
    "email"}``); encoding and delimiter are detected unless given. Rows
    marked unsubscribed or cleaned put their address on the suppression
    list; no suppressed address is subscribed (docs/guarantees.md#suppression).
    A file must show the lawful basis for mailing its people: consent
    evidence in its columns (an opt-in time or IP address, such as a
    Mailchimp export's OPTIN_TIME), or ``basis`` stated (``consent`` with
    ``consent_source`` saying where they agreed, or ``customer``), or
    ``status`` unconfirmed (they are asked to confirm); otherwise nothing is
    imported (``NoBasisError``). Every file of an archive is held to this.
    ``rejects`` names a CSV file for the rejected rows, written only if the
    import commits; the file imported, or one of mailcli's own (the database,
    the configuration, see :mod:`mailcli.ownfiles`), is refused before
    anything is read (``UsageError``). ``check_mx`` looks up the MX of every domain afterwards
    (``nameserver``: ask that DNS server). Waits for another import or a
    restore to finish, telling ``on_lock_wait`` whom it waits for. Ctrl-C,
    or any error, leaves the database as it was (docs/guarantees.md#atomic-import).
    """
    from .importer.piped import STDIN, readable_file, shown_path

    path = shown_path(Path(file))
    options = _ImportOptions(
        list_name=list_name, mapping=dict(mapping or {}), encoding=encoding, delimiter=delimiter, sheet=sheet,
        on_conflict=on_conflict, status=status, consent_source=consent_source, basis=basis, check_mx=check_mx,
        progress=progress or (lambda done, total, saving: None), overwrite_rectified=overwrite_rectified)
    _check_basis_options(basis, status)
    if rejects:
        from .ownfiles import output_target

        source = Path("/dev/stdin") if str(file) == STDIN else Path(file)  # standard input: the file behind it
        rejects = output_target(settings, Path(rejects), "--rejects", like="rejects.csv", inputs=[source])
    settings.secret()  # a missing secret stops the import before it waits for the lock
    # Standard input or a pipe is read to its end first (into a private copy).
    with readable_file(Path(file)) as readable:
        return _import_file(store, settings, path, readable, options, rejects, nameserver, on_lock_wait)


def _import_file(store: Store, settings: Settings, path: Path, readable: Path, options: _ImportOptions,
                 rejects: str | Path | None, nameserver: str | None,
                 on_lock_wait: Callable[[Holder | None], None] | None) -> ImportReport:
    """The file ``path``, read at ``readable`` (a copy of a pipe), into the list."""
    from .importer.xlsx import file_kind
    from .locks import import_lock
    from .store.db import busy_timeout

    kind = file_kind(readable)
    if options.sheet is not None and kind != "xlsx":
        raise UsageError(f"--sheet: {path} is not an Excel workbook (.xlsx)")
    # One import at a time, and none while a restore replaces the database.
    with import_lock(settings, f"import {path.name}", wait=busy_timeout(), on_wait=on_lock_wait):
        if kind == "zip":
            return replace(_import_archive(store, settings, readable, options, rejects, nameserver), file=path)
        with _open_source(readable, kind, options) as source:
            _check_basis(path.name, source.plan, options)
            rejects_file = _rejects_file(rejects, source.plan.headers, source.format.delimiter)
            with _kept_if_committed(store, settings, rejects_file):
                result, feed = _import_source(store, settings, source, path.name, options, rejects_file)
    reencoded = feed.reencoded()
    return ImportReport(
        file=path, list_name=options.name, result=result, encoding=source.format.encoding,
        delimiter=source.format.delimiter, email_column=source.plan.headers[source.plan.email],
        how_read=feed.how_read, members=next(iter(_summaries(store, options.name)), None),
        mx=_check_domains(feed.domains or {}, nameserver) if options.check_mx else None,
        reencoded=reencoded[0], reencoded_lines=reencoded[1],
        sheet=getattr(source, "sheet", None),
    )


def _check_basis_options(basis: str | None, status: str) -> None:
    if basis is not None and basis not in ("consent", "customer"):
        raise UsageError(f"--basis: expected consent or customer, not {basis!r}")
    if basis is not None and status != "subscribed":
        raise UsageError("--basis and --status unconfirmed exclude each other: --basis states why you may mail"
                         " them now, --status unconfirmed asks them first; give one")


def _check_basis(name: str, plan: Any, options: _ImportOptions) -> None:
    """Refuse a file (``name``: the file, or an archive's file) that shows
    no consent when no basis is stated (nothing is imported)."""
    basis, status, consent_source = options.basis, options.status, options.consent_source
    # A file with opt-out columns (Mailchimp's unsubscribed and cleaned
    # exports) is read for its opt-outs; its other rows need evidence each.
    evidence = bool(plan.consent_time or plan.consent_ip or plan.opted_out or plan.cleaned)
    if evidence or status != "subscribed" or basis == "customer":
        return
    if basis == "consent" and consent_source:
        return
    if basis == "consent":
        raise NoBasisError(
            f"{name} shows no consent (no opt-in time or IP address column), so --basis consent needs"
            ' --consent-source saying where and how they agreed, like --consent-source "paper form, fair 2024";'
            " nothing was imported")
    raise NoBasisError(
        f"{name} shows no consent (no opt-in time or IP address column); state why you may mail these"
        ' people: --basis consent --consent-source "paper form, fair 2024" (they agreed, and where),'
        " --basis customer (existing customers: the soft opt-in), or --status unconfirmed (ask them with a"
        " confirmation mail first); nothing was imported",
        hint='a column with the opt-in time can be mapped instead: --map "COLUMN=consent_time"')


@dataclass(frozen=True, slots=True)
class _ImportOptions:
    """What an import was asked to do, the same for every file of an archive."""

    list_name: str
    mapping: dict[str, str]
    encoding: str | None
    delimiter: str | None
    sheet: str | None
    on_conflict: str
    status: str
    consent_source: str | None
    basis: str | None
    check_mx: bool
    progress: ImportProgress
    overwrite_rectified: bool = False  # corrections made with `contacts set` give way to the file

    @property
    def name(self) -> str:
        from .store.lists import given_name

        return given_name(self.list_name)


def _summaries(store: Store, name: str) -> list[ListSummary]:
    return list_counts(store, [name])


def list_counts(store: Store, names: list[str] | None = None, *, segment: Segment | None = None
                ) -> list[ListSummary]:
    """Every list (or the named ones) with its members counted by status, as
    ``mailcli lists`` shows them; with ``segment``, only the members it
    matches (a field no contact has is a UsageError). The counts are read
    from one snapshot, so they add up even while an import or a send writes."""
    from .store.audience import list_summaries
    from .store.segments import check_segment_fields

    with store.reading():
        if segment is not None:
            check_segment_fields(store.conn, segment)
        return list_summaries(store.conn, names, segment=segment)


def _open_source(path: Path, kind: str, options: _ImportOptions) -> Any:
    """The open CSV file or workbook sheet (a context manager)."""
    from .importer import open_csv

    if kind == "xlsx":
        from . import clock
        from .importer.xlsx import open_xlsx

        return open_xlsx(path, sheet=options.sheet, mapping=options.mapping,
                         now_limit=clock.to_iso(clock.now() + timedelta(days=1)))
    return open_csv(path, encoding=options.encoding, delimiter=options.delimiter, mapping=options.mapping)


@contextlib.contextmanager
def _kept_if_committed(store: Store, settings: Settings, rejects_file: Any) -> Iterator[None]:
    """The rejects file is written only if the import commits; any error or
    Ctrl-C discards it. One that holds rows (of several people) is
    registered, so erasure and retention reach it."""
    try:
        yield
    except BaseException:
        if rejects_file is not None:
            rejects_file.discard()
        raise
    if rejects_file is not None:
        rejects_file.commit()
        if rejects_file.count:
            from .privacy.files import register_written

            register_written(store, settings, rejects_file.path, "rejects", None)


def _rejects_file(rejects: str | Path | None, headers: tuple[str, ...], delimiter: str) -> Any:
    from .importer import RejectsFile

    return RejectsFile(rejects, headers, delimiter) if rejects else None


def _import_source(store: Store, settings: Settings, source: Any, source_name: str, options: _ImportOptions,
                   rejects_file: Any, *, member: str | None = None, offset: int = 0, total: int | None = None
                   ) -> tuple[ImportResult, Any]:
    """One open file into the list, in the store's transaction (one of its
    own, or the archive's); returns the counts and the feed that read it.
    ``offset`` and ``total``: where this file's bytes lie in the progress of
    an archive, ``member`` the file's name in it."""
    from . import audit
    from .feedback.actions import record_imported_opt_outs
    from .importer import ImportFeed
    from .store.imports import import_batches

    name = options.name
    size = source.size
    whole = total if total is not None else size
    report = options.progress
    report(offset, whole, False)

    def record_opt_outs(list_id: int, rows: Any) -> None:
        record_imported_opt_outs(store, settings, rows, list_id=list_id, list_name=name, source=source_name)

    def audit_entry(result: ImportResult) -> None:
        audit.record_access(store, settings, "import", command="import", detail={
            "file": source_name, "list": name,
            **{k: v for k, v in result.as_dict().items() if k != "rejects"}})

    def on_reject(reject: RowReject) -> None:
        if rejects_file is not None:
            rejects_file.write(reject, member)

    with ImportFeed(source, count_domains=options.check_mx) as feed:
        result = import_batches(
            store, feed.batches, list_name=options.list_name, secret=settings.secret(), source=source_name,
            consent_source=options.consent_source, on_conflict=options.on_conflict, status=options.status,
            basis=options.basis, on_reject=on_reject if rejects_file is not None else None,
            on_batch=lambda position: report(offset + position, whole, offset + position >= whole),
            on_opt_outs=record_opt_outs,
            before_commit=audit_entry,
            overwrite_rectified=options.overwrite_rectified,
        )
        report(offset + size, whole, offset + size >= whole)  # read to the end
    return result, feed


# Complexity: each file of the archive opened, imported and its counts, domains and lines added up.
def _import_archive(store: Store, settings: Settings, path: Path, options: _ImportOptions,
                    rejects: str | Path | None, nameserver: str | None) -> ImportReport:
    """Every CSV file of a ZIP archive (a Mailchimp export), opt-out files
    first, in one transaction, counted as one import."""
    from .importer.archive import CsvArchive
    from .importer.rejects import ArchiveRejectsFile

    results: list[ImportResult] = []
    domains: dict[str, int] = {}
    reencoded = 0
    with CsvArchive(path) as archive, contextlib.ExitStack() as opened:
        members = archive.members
        sources = []
        for member in members:
            with _naming(path, member.name, member.path):
                sources.append(opened.enter_context(_open_source(member.path, "csv", options)))
            _check_basis(f"{path.name}: {member.name}", sources[-1].plan, options)
        rejects_file = ArchiveRejectsFile(rejects, [s.plan.headers for s in sources]) if rejects else None
        total = sum(s.size for s in sources)
        offset = 0
        with _kept_if_committed(store, settings, rejects_file), store.transaction():
            for member, source in zip(members, sources, strict=True):
                with _naming(path, member.name, member.path):
                    result, feed = _import_source(store, settings, source, f"{path.name}:{member.name}",
                                                  options, rejects_file, member=member.name, offset=offset,
                                                  total=total)
                offset += source.size
                results.append(_in_file(result, member.name))
                for domain, count in (feed.domains or {}).items():
                    domains[domain] = domains.get(domain, 0) + count
                reencoded += feed.reencoded()[0]
        last = sources[-1]  # the subscribed members come last
    return ImportReport(
        file=path, list_name=options.name, result=_add_results(results), encoding=last.format.encoding,
        delimiter=last.format.delimiter, email_column=last.plan.headers[last.plan.email],
        how_read=f"{len(members)} CSV file(s) of a ZIP archive, opt-outs first: "
                 + ", ".join(m.name for m in members),
        members=next(iter(_summaries(store, options.name)), None),
        mx=_check_domains(domains, nameserver) if options.check_mx else None, reencoded=reencoded,
        files=[m.name for m in members])


@contextlib.contextmanager
def _naming(archive: Path, member: str, copy: Path) -> Iterator[None]:
    """An error that names the temporary copy of a member names the archive and the member instead."""
    try:
        yield
    except MailcliError as exc:
        exc.message = exc.message.replace(str(copy), f"{archive}: {member}")
        raise


def _in_file(result: ImportResult, member: str) -> ImportResult:
    """The rejects of one file of an archive, their reasons naming the file."""
    if not result.rejects:
        return result
    return replace(result, rejects=[reject._replace(reason=f"{reject.reason} (in {member})")
                                    for reject in result.rejects])


# Complexity: one sum per count an import reports.
def _add_results(results: Sequence[ImportResult]) -> ImportResult:
    """The counts of an archive's files as one import's."""
    from .store.imports import MAX_REJECTS_KEPT

    return ImportResult(
        imported=sum(r.imported for r in results), updated=sum(r.updated for r in results),
        unchanged=sum(r.unchanged for r in results), suppressed=sum(r.suppressed for r in results),
        rejected=sum(r.rejected for r in results), duplicates=sum(r.duplicates for r in results),
        opted_out=sum(r.opted_out for r in results),
        rejects=[reject for r in results for reject in r.rejects][:MAX_REJECTS_KEPT],
        needs_smtputf8=sum(r.needs_smtputf8 for r in results),
        kept_rectified=sum(r.kept_rectified for r in results), basis=results[0].basis if results else None,
        basis_stated=sum(r.basis_stated for r in results), no_basis=sum(r.no_basis for r in results))


def _check_domains(domains: dict[str, int], nameserver: str | None) -> MxCheck:
    from .deliverability.dnsquery import DnsFailure, make_resolver
    from .deliverability.mx import check_domains

    try:
        resolver = make_resolver(nameserver)
    except DnsFailure as exc:
        return MxCheck(domains=len(domains), failure=str(exc))
    results = check_domains(domains, resolver=resolver)
    return MxCheck(
        domains=len(domains),
        undeliverable=[UndeliverableDomain(d, domains[d], r.reason)
                       for d, r in sorted(results.items()) if r.undeliverable],
        unknown=sum(1 for r in results.values() if r.status == "unknown"),
    )


@dataclass(frozen=True, slots=True)
class ContactPage:
    """One page of ``list_contacts``."""

    rows: list[ContactRow]
    total: int  # contacts that match, on every page
    everyone: int | None  # contacts in the database, counted only when this page is empty


def list_contacts(
    store: Store,
    settings: Settings,
    *,
    list_name: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    machine_readable: bool = True,
    segment: Segment | None = None,
) -> ContactPage:
    """Contacts in address order: all, or one list's members, or those with one status.

    ``status`` is a member's status with ``list_name``, else also the
    contact's own; a misspelt one is a UsageError with a suggestion.
    ``segment`` (``mailcli.segments.choose_segment``) keeps only the
    contacts it matches; a field no contact has is a UsageError. The
    listing is audited with its count, and whether it left as data
    (``machine_readable``, the ``--json`` of the command) or as a table.
    """
    from . import audit
    from .store.contacts import check_status, count_contacts, iter_contacts
    from .store.segments import check_segment_fields

    if status is not None:
        status = check_status(status, list_name=list_name)
    # The page and its counts from one snapshot: an import committing
    # between them would otherwise show a page of one state and the count of another.
    with store.reading():
        if segment is not None:
            check_segment_fields(store.conn, segment)
        rows = list(iter_contacts(store, list_name=list_name, status=status, limit=limit, offset=offset,
                                  segment=segment))
        total = count_contacts(store, list_name=list_name, status=status, segment=segment)
        everyone = None
        if not rows:
            everyone = total if list_name is None and status is None and segment is None else count_contacts(store)
    audit.record_access(store, settings, "contacts_list", command="contacts",
                        detail={"list": list_name, "status": status, "records": len(rows), "json": machine_readable,
                                **({"segment": segment.audit_name} if segment is not None else {})})
    return ContactPage(rows=rows, total=total, everyone=everyone)


def address_key(email: str) -> str:
    """The comparison key of an address someone typed; a UsageError if it is not one."""
    from .addresses import AddressError, normalise_address

    try:
        return normalise_address(email).key
    except AddressError as exc:
        raise UsageError(f"Not a valid address {email.strip()!r}: {exc.reason}") from None


def show_contact(store: Store, settings: Settings, email: str) -> ContactDetail:
    """One contact: fields, attributes, lists with consent evidence, and history. Audited."""
    from . import audit
    from .store.contacts import contact_detail

    key = address_key(email)
    detail = contact_detail(store, key)
    audit.record_access(store, settings, "contact_show", subject_email=key, command="contacts show",
                        detail={"found": detail is not None})
    if detail is None:
        raise NotFoundError(f"No contact {email.strip()}", hint="mailcli contacts lists who is in the database")
    return detail


@dataclass(frozen=True, slots=True)
class ContactUpdate:
    """What ``update_contact`` changed."""

    contact: ContactDetail | None
    changed: list[str]  # field names whose value changed
    added: list[str]  # attributes no other contact has
    requests_closed: list[int] = field(default_factory=list)  # rectification requests this answered


def update_contact(
    store: Store,
    settings: Settings,
    email: str,
    changes: Mapping[str, str] | Sequence[str],
    *,
    new_fields: bool = False,
) -> ContactUpdate:
    """Correct one contact's data (rectification, GDPR art. 16); audited with the
    names of the fields changed, never their old values.

    ``changes`` is ``{"last_name": "de Vries", "city": ""}`` or the command
    line's ``["last_name=de Vries", "city="]``; an empty value clears a field,
    ``email`` changes the address. A field no contact has that looks like a
    misspelling of one that exists is refused unless ``new_fields``.
    """
    from . import audit
    from .addresses import normalise_pair
    from .privacy.requests import close_answered
    from .store.contacts import contact_detail, parse_changes, set_fields
    from .tokens import address_hmac

    assignments = [f"{k}={v}" for k, v in changes.items()] if isinstance(changes, Mapping) else changes
    parsed = parse_changes(assignments)
    key = address_key(email)
    result = set_fields(store, key, parsed, secret=settings.secret(), normalise=normalise_pair,
                        new_fields=new_fields)
    if result is None:
        audit.record_access(store, settings, "contact_set", subject_email=key, command="contacts set",
                            detail={"found": False})
        raise NotFoundError(f"No contact {email.strip()}", hint="mailcli contacts lists who is in the database")
    _, changed, added = result
    new_key = next((normalise_pair(c.value)[1] for c in parsed if c.field == "email"), key)
    closed: list[int] = []
    for subject_key in dict.fromkeys((key, new_key)):
        closed += close_answered(store, address_hmac(settings.secret(), subject_key), ("rectification",),
                                 "contacts set")
    audit.record_access(store, settings, "contact_set", subject_email=new_key, command="contacts set",
                        detail={"fields": changed, "email_changed": new_key != key, "requests_closed": closed})
    return ContactUpdate(contact=contact_detail(store, new_key), changed=changed, added=added, requests_closed=closed)
