"""Contacts as a library: import a file into a list; list, show and correct contacts.

Each function is what one command does, with no terminal: it takes the open
store and the settings, does the work, writes the audit entry that an access
to personal data needs (docs/guarantees.md#audit) and returns a result the
caller prints or inspects. Failures are ``MailcliError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import NoBasisError, NotFoundError, UsageError
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

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``import --json``."""
        data: dict[str, Any] = {"file": str(self.file), "list": self.list_name, **self.result.as_dict(),
                                "reencoded": self.reencoded, "reencoded_lines": self.reencoded_lines}
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

    ``mapping`` maps a column to a field (``{"Werk e-mail": "email"}``);
    encoding and delimiter are detected unless given. Rows marked
    unsubscribed or cleaned put their address on the suppression list; no
    suppressed address is subscribed (docs/guarantees.md#suppression).
    A file must show the lawful basis for mailing its people: consent
    evidence in its columns (an opt-in time or IP address), or ``basis``
    stated (``consent`` with ``consent_source`` saying where they agreed, or
    ``customer``), or ``status`` unconfirmed (they are asked to confirm);
    otherwise nothing is imported (``NoBasisError``).
    ``rejects`` names a CSV file for the rejected rows, written only if the
    import commits. ``check_mx`` looks up the MX of every domain afterwards
    (``nameserver``: ask that DNS server). Waits for another import or a
    restore to finish, telling ``on_lock_wait`` whom it waits for. Ctrl-C,
    or any error, leaves the database as it was (docs/guarantees.md#atomic-import).
    """
    from . import audit
    from .feedback.actions import record_imported_opt_outs
    from .importer import ImportFeed, RejectsFile, open_csv
    from .locks import import_lock
    from .store.audience import list_summaries
    from .store.db import busy_timeout
    from .store.imports import import_batches

    path = Path(file)
    name = list_name.strip()
    secret = settings.secret()
    # One import at a time, and none while a restore replaces the database.
    lock = import_lock(settings, f"import {path.name}", wait=busy_timeout(), on_wait=on_lock_wait)
    _check_basis_options(basis, status)
    with lock, open_csv(path, encoding=encoding, delimiter=delimiter, mapping=dict(mapping or {})) as source:
        _check_basis(path, source.plan, basis=basis, status=status, consent_source=consent_source)
        size = source.size
        report = progress or (lambda done, total, saving: None)
        report(0, size, False)
        rejects_file = RejectsFile(rejects, source.plan.headers, source.format.delimiter) if rejects else None

        def record_opt_outs(list_id: int, rows: Any) -> None:
            record_imported_opt_outs(store, settings, rows, list_id=list_id, list_name=name, source=path.name)

        def audit_entry(result: ImportResult) -> None:
            audit.record_access(store, settings, "import", command="import", detail={
                "file": path.name, "list": list_name, **{k: v for k, v in result.as_dict().items() if k != "rejects"}})

        try:
            with ImportFeed(source, count_domains=check_mx) as feed:
                result = import_batches(
                    store, feed.batches, list_name=list_name, secret=secret, source=path.name,
                    consent_source=consent_source, on_conflict=on_conflict, status=status, basis=basis,
                    on_reject=rejects_file.write if rejects_file else None,
                    on_batch=lambda position: report(position, size, position >= size),
                    on_opt_outs=record_opt_outs,
                    before_commit=audit_entry,
                    overwrite_rectified=overwrite_rectified,
                )
                report(size, size, True)  # read to the end
        except BaseException:
            if rejects_file is not None:
                rejects_file.discard()
            raise
        if rejects_file is not None:
            rejects_file.commit()
            if rejects_file.count:  # the rows of several people: erasure reads whom it holds
                from .privacy.files import register_written

                register_written(store, settings, rejects_file.path, "rejects", None)
    reencoded = feed.reencoded()
    return ImportReport(
        file=path, list_name=name, result=result, encoding=source.format.encoding,
        delimiter=source.format.delimiter, email_column=source.plan.headers[source.plan.email],
        how_read=feed.how_read, members=next(iter(list_summaries(store.conn, [name])), None),
        mx=_check_domains(feed.domains or {}, nameserver) if check_mx else None,
        reencoded=reencoded[0], reencoded_lines=reencoded[1],
    )


def _check_basis_options(basis: str | None, status: str) -> None:
    if basis is not None and basis not in ("consent", "customer"):
        raise UsageError(f"--basis: expected consent or customer, not {basis!r}")
    if basis is not None and status != "subscribed":
        raise UsageError("--basis and --status unconfirmed exclude each other: --basis states why you may mail"
                         " them now, --status unconfirmed asks them first; give one")


def _check_basis(path: Path, plan: Any, *, basis: str | None, status: str, consent_source: str | None) -> None:
    """Refuse a file that shows no consent when no basis is stated (nothing is imported)."""
    # A file with opt-out columns (Mailchimp's unsubscribed and cleaned
    # exports) is read for its opt-outs; its other rows need evidence each.
    evidence = bool(plan.consent_time or plan.consent_ip or plan.opted_out or plan.cleaned)
    if evidence or status != "subscribed" or basis == "customer":
        return
    if basis == "consent" and consent_source:
        return
    if basis == "consent":
        raise NoBasisError(
            f"{path.name} shows no consent (no opt-in time or IP address column), so --basis consent needs"
            ' --consent-source saying where and how they agreed, like --consent-source "paper form, fair 2024";'
            " nothing was imported")
    raise NoBasisError(
        f"{path.name} shows no consent (no opt-in time or IP address column); state why you may mail these"
        ' people: --basis consent --consent-source "paper form, fair 2024" (they agreed, and where),'
        " --basis customer (existing customers: the soft opt-in), or --status unconfirmed (ask them with a"
        " confirmation mail first); nothing was imported",
        hint='a column with the opt-in time can be mapped instead: --map "COLUMN=consent_time"')


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
    if segment is not None:
        check_segment_fields(store.conn, segment)
    rows = list(iter_contacts(store, list_name=list_name, status=status, limit=limit, offset=offset,
                              segment=segment))
    audit.record_access(store, settings, "contacts_list", command="contacts",
                        detail={"list": list_name, "status": status, "records": len(rows), "json": machine_readable,
                                **({"segment": segment.audit_name} if segment is not None else {})})
    total = count_contacts(store, list_name=list_name, status=status, segment=segment)
    everyone = None
    if not rows:
        everyone = total if list_name is None and status is None and segment is None else count_contacts(store)
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
