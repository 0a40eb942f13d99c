"""Erasure without trace (GDPR art. 17; ``docs/guarantees.md#erasure``).

``erase_subject`` removes every row the registry lists as holding the
person's data, in one transaction: first the person's deliveries and
campaign events are folded into the campaign totals (``store.archive``) so
reports do not change, then the rows are deleted and a suppression entry
keyed by the HMAC of the address is kept, so the person is never mailed or
imported again. The files mailcli wrote about the person (exports, previews,
rejects files that hold the address; :mod:`mailcli.privacy.files`) are
deleted, or named when they lie outside the project's folder. Their open
requests are closed, and only the keyed record that each was handled stays.
The erasure is written to the ledger (outside the database) before the
transaction and audited inside it; afterwards ``scrub`` makes sure no byte
of the address or name is left in the database files.

``erase_contact_rows`` is the shared step that ``purge`` (retention) and
``backup restore`` (re-applying later erasures, ``reapply.py``) use too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import audit, clock
from ..config import Settings
from ..store import Store
from ..store.campaigns import redact_segments
from ..store.personal_data import archive_contact, delete_rows_about, names_of
from ..store.requests import close_open_requests, keep_only_the_record
from ..store.suppressions import ALL, add_suppression, is_erased
from .files import FilesReached, address_forms, files_about_people, reach
from .ledger import LedgerEntry, append_entries
from .registry import PERSONAL_DATA_TABLES
from .scrub import ScrubResult, needles_for, scrub
from .subject import find_subject

if TYPE_CHECKING:
    from ..store.db import Connection


@dataclass(frozen=True, slots=True)
class EraseResult:
    ref: str  # HMAC prefix: names the person in output without the address
    found: bool
    already_erased: bool
    rows: dict[str, int] = field(default_factory=dict)
    scrub: ScrubResult | None = None
    files: FilesReached = field(default_factory=FilesReached)
    requests_closed: list[int] = field(default_factory=list)


def erase_contact_rows(conn: Connection, contact_id: int, hmac: str) -> dict[str, int]:
    """Delete every registered row about one contact, keeping campaign totals.

    Call inside a transaction. Returns deleted rows per table.
    """
    archive_contact(conn, contact_id)
    counts: dict[str, int] = {}
    for entry in PERSONAL_DATA_TABLES.values():
        if entry.on_erase == "delete":
            value: object = hmac if entry.by_hmac else contact_id
            counts[entry.table] = delete_rows_about(conn, entry.table, entry.key, value)
    return counts


def erase_subject(store: Store, settings: Settings, email: str, *, reason: str | None = None) -> EraseResult:
    """Erase one person named by address (see module docstring).

    A person we hold no contact for is still put on the suppression list and
    the ledger (the request's intent is "never mail me"), and the files
    mailcli wrote that hold the address are still reached; the result says
    ``found=False`` so the command can say so and exit 1.
    """
    subject = find_subject(store, settings, email)
    forms = address_forms(subject.address, subject.key)
    already = subject.contact_id is None and is_erased(store.conn, subject.hmac)
    if already:
        with store.transaction() as conn:
            files = reach(conn, settings, files_about_people(conn, {subject.hmac: forms}))
            audit.record_access(store, settings, "erase", subject_hmac=subject.hmac, command="privacy erase",
                                detail={"found": False, "already_erased": True,
                                        "files_removed": len(files.removed), "files_elsewhere": len(files.elsewhere)},
                                reason=reason)
        # Asked again, look for traces again: the first erasure may have been
        # stopped after its commit, before the database files were searched.
        result = scrub(store, needles_for(subject.address, subject.key))
        return EraseResult(ref=subject.ref, found=False, already_erased=True, files=files, scrub=result)
    names = names_of(store.conn, subject.contact_id) if subject.contact_id is not None else ()
    append_entries(settings, [LedgerEntry(subject.hmac, clock.now_iso(), "request", True)])
    rows: dict[str, int] = {}
    now = clock.now_iso()
    with store.transaction() as conn:
        files = reach(conn, settings, files_about_people(conn, {subject.hmac: forms}))
        if subject.contact_id is not None:
            rows = erase_contact_rows(conn, subject.contact_id, subject.hmac)
        add_suppression(conn, subject.hmac, ALL, "erased", "cli", now)
        closed = close_open_requests(conn, subject.hmac, None, "privacy erase", now)
        keep_only_the_record(conn, subject.hmac)
        redact_segments(conn, [subject.address, subject.key])
        audit.record_access(
            store, settings, "erase", subject_hmac=subject.hmac, command="privacy erase",
            detail={"found": subject.contact_id is not None, "rows": rows, "files_removed": len(files.removed),
                    "files_elsewhere": len(files.elsewhere), "requests_closed": closed},
            reason=reason,
        )
    result = scrub(store, needles_for(subject.address, subject.key, names))
    return EraseResult(ref=subject.ref, found=subject.contact_id is not None, already_erased=False, rows=rows,
                       scrub=result, files=files, requests_closed=closed)
