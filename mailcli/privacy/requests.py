"""The register of data-subject requests, with their deadlines (``privacy requests``).

A request to exercise a right — access, rectification, erasure, restriction,
objection, portability — must be answered within one month of receipt
(GDPR art. 12(3)); that month may be extended once, by up to two more, when
the person is told why within the first month. The register keeps each
request (``docs/guarantees.md#requests``):

* ``add`` records it with the month it is due in (a calendar month: received
  on 31 January, due on 28 February);
* ``extend`` adds one or two months, once, while the first month runs;
* the command that answers it closes it: ``privacy export`` an access or
  portability request, ``contacts set`` a rectification, ``privacy
  restrict`` a restriction, ``privacy object`` an objection, ``privacy
  erase`` every open request of the person; ``close`` closes one by hand;
* the listing shows what is open and what is overdue, and the command exits
  3 while anything is overdue, so cron can warn.

Requests are personal data: every change is audited, the person's export
holds their requests, and an erasure keeps only the keyed record that each
was received and handled, and when (the free text of an extension goes).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime

from .. import audit, clock
from ..config import Settings
from ..errors import MailcliError, NotFoundError, UsageError
from ..store import Store
from ..store import requests as register
from .subject import find_subject

KINDS = ("access", "rectification", "erasure", "restriction", "objection", "portability")
MAX_EXTENSION = 2  # months (art. 12(3))


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` plus calendar months, the day kept where the month has it (31 Jan + 1 = 28/29 Feb)."""
    total = moment.year * 12 + (moment.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True, slots=True)
class RequestView:
    """One request as the register shows it."""

    id: int
    reference: str  # the prefix of the person's keyed hash, as erase and export print it
    kind: str
    received_at: str
    due_at: str
    extended_months: int
    extension_reason: str | None
    closed_at: str | None
    closed_by: str | None
    status: str  # "open", "overdue" or "closed"

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "reference": self.reference, "type": self.kind, "received_at": self.received_at,
                "due_at": self.due_at, "extended_months": self.extended_months,
                "extension_reason": self.extension_reason, "status": self.status, "closed_at": self.closed_at,
                "closed_by": self.closed_by}


def _view(row: register.Request, now: str) -> RequestView:
    status = "closed" if row.closed_at else ("overdue" if row.due_at < now else "open")
    return RequestView(row.id, row.subject_hmac[:12], row.kind, row.received_at, row.due_at, row.extended_months,
                       row.extension_reason, row.closed_at, row.closed_by, status)


def _get(store: Store, request_id: int) -> register.Request:
    row = register.request_by_id(store.conn, request_id)
    if row is None:
        raise NotFoundError(f"No request #{request_id}", hint="`mailcli privacy requests --all` lists them")
    return row


def add_request(store: Store, settings: Settings, email: str, kind: str, *, received: datetime | None = None,
                reason: str | None = None) -> RequestView:
    """Record a request received at ``received`` (default now), due a month later."""
    if kind not in KINDS:
        raise UsageError(f"--type {kind!r} is not a request type: use one of {', '.join(KINDS)}")
    now = clock.now()
    moment = received or now
    if moment > now:
        raise UsageError(f"--received {clock.to_iso(moment)} is in the future")
    subject = find_subject(store, settings, email)
    due = add_months(moment, 1)
    with store.transaction() as conn:
        request_id = register.add_request(conn, subject.hmac, kind, clock.to_iso(moment), clock.to_iso(due),
                                          clock.to_iso(now))
        audit.record_access(store, settings, "request_add", subject_hmac=subject.hmac, command="privacy requests add",
                            detail={"id": request_id, "type": kind, "due_at": clock.to_iso(due)}, reason=reason)
    return _view(_get(store, request_id), clock.to_iso(now))


def extend_request(store: Store, settings: Settings, request_id: int, reason: str, *,
                   months: int = MAX_EXTENSION) -> RequestView:
    """Extend an open request once, by ``months`` (1 or 2), within its first month."""
    if not 1 <= months <= MAX_EXTENSION:
        raise UsageError(f"--months must be 1 or {MAX_EXTENSION} (art. 12(3) allows two more months at most)")
    if not reason.strip():
        raise UsageError("--reason must say why: the person is told the reasons for the extension")
    now = clock.now()
    with store.transaction() as conn:
        row = _get(store, request_id)
        if row.closed_at:
            raise MailcliError(f"Request #{request_id} was closed on {row.closed_at[:10]}; there is nothing to extend")
        if row.extended_months:
            raise MailcliError(f"Request #{request_id} was extended already (by {row.extended_months} month(s)),"
                               " and can be extended only once")
        if row.due_at < clock.to_iso(now):
            raise MailcliError(f"Request #{request_id} was due on {row.due_at[:10]}: an extension must be given"
                               " within the first month", hint="answer it now")
        due = add_months(clock.parse_iso(row.received_at), 1 + months)
        register.extend_request(conn, request_id, months, clock.to_iso(due), reason.strip())
        audit.record_access(store, settings, "request_extend", subject_hmac=row.subject_hmac,
                            command="privacy requests extend",
                            detail={"id": request_id, "months": months, "due_at": clock.to_iso(due)})
        # The reason is told to the person and kept with the request, which an
        # erasure clears; the audit log, which outlives the erasure, does not copy it.
    return _view(_get(store, request_id), clock.to_iso(now))


def close_request(store: Store, settings: Settings, request_id: int, *, reason: str | None = None) -> RequestView:
    """Close one request by hand (answered some other way, or withdrawn)."""
    now = clock.now_iso()
    with store.transaction() as conn:
        row = _get(store, request_id)
        if row.closed_at:
            raise MailcliError(f"Request #{request_id} was closed already, on {row.closed_at[:10]}"
                               f" by {row.closed_by}")
        register.close_request(conn, request_id, "privacy requests close", now)
        audit.record_access(store, settings, "request_close", subject_hmac=row.subject_hmac,
                            command="privacy requests close", detail={"id": request_id}, reason=reason)
    return _view(_get(store, request_id), now)


def close_answered(store: Store, subject_hmac: str, kinds: tuple[str, ...], command: str) -> list[int]:
    """Close the person's open requests of ``kinds``, answered by ``command``; the ids closed."""
    with store.transaction() as conn:
        return register.close_open_requests(conn, subject_hmac, kinds, command, clock.now_iso())


def list_requests(store: Store, settings: Settings, *, everything: bool = False) -> list[RequestView]:
    """The open requests, the first due first (``everything``: closed ones too); audited with the count."""
    now = clock.now_iso()
    rows = register.all_requests(store.conn) if everything else register.open_requests(store.conn)
    views = [_view(row, now) for row in rows]
    audit.record_access(store, settings, "requests_list", command="privacy requests",
                        detail={"records": len(views), "all": everything})
    return views

