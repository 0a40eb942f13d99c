"""Restriction of processing (art. 18) and objection to direct marketing (art. 21).

* ``restrict``: the data stays (it is exported and shown) but the person is
  never sent to — ``contacts.restricted_at`` is set and the send engine
  excludes restricted contacts when it freezes an audience
  (``docs/guarantees.md#restriction-and-objection``).
  Retention purge leaves restricted contacts alone too: a restriction is
  often asked for precisely so that data is kept (art. 18(1)(b)-(c)).
* ``unrestrict`` lifts it; lifting is logged like setting it.
* ``object``: an objection to all direct marketing. It sets
  ``contacts.no_marketing_at``, ends every membership (unsubscribed, channel
  ``cli``) and adds a suppression for every list (scope ``*``, reason
  ``objected``), so no list, import or segment can mail the person again.
  Their data then follows the ``unsubscribed`` retention period.

A restriction closes the person's open restriction requests, an objection
their objection requests (``privacy.requests``).

Each change appends an event (kind ``restricted``/``unrestricted``/
``objected``) and an audit row with the optional reason, and a line to the
opt-out ledger outside the database (:mod:`mailcli.optouts`), so restoring
an older backup re-applies it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import audit, clock
from ..config import Settings
from ..optouts import OptOutEntry, append_optouts
from ..store import Store
from ..store.events import add_event
from ..store.requests import close_open_requests
from ..store.subjects import (
    end_memberships,
    no_marketing_since,
    object_to_marketing,
    restricted_since,
    set_restricted,
)
from ..store.suppressions import ALL, add_suppression
from .subject import Subject, find_subject, require_contact


@dataclass(frozen=True, slots=True)
class FlagResult:
    ref: str
    found: bool
    changed: bool  # False when the flag was already in the requested state
    since: str | None  # when the flag was (or had been) set
    memberships_ended: int = 0
    requests_closed: list[int] = field(default_factory=list)  # the person's requests this answered


def _set_restriction(store: Store, settings: Settings, email: str, on: bool, reason: str | None) -> FlagResult:
    subject = find_subject(store, settings, email)
    contact_id = require_contact(subject)
    now = clock.now_iso()
    action = "restrict" if on else "unrestrict"
    with store.transaction() as conn:
        current = restricted_since(conn, contact_id)
        changed = (current is None) if on else (current is not None)
        if changed:
            append_optouts(settings, [OptOutEntry(subject.hmac, ALL, "restricted" if on else "unrestricted", "cli", now)])
            set_restricted(conn, contact_id, now if on else None, now)
            add_event(conn, contact_id=contact_id, kind="restricted" if on else "unrestricted", channel="cli", scope=ALL, now=now)
        closed = close_open_requests(conn, subject.hmac, ("restriction",), "privacy restrict", now) if on else []
        audit.record_access(store, settings, action, subject_hmac=subject.hmac, command=f"privacy {action}",
                            detail={"changed": changed, "requests_closed": closed}, reason=reason)
    since = (now if changed else current) if on else None
    return FlagResult(ref=subject.ref, found=True, changed=changed, since=since, requests_closed=closed)


def restrict_subject(store: Store, settings: Settings, email: str, *, reason: str | None = None) -> FlagResult:
    return _set_restriction(store, settings, email, True, reason)


def unrestrict_subject(store: Store, settings: Settings, email: str, *, reason: str | None = None) -> FlagResult:
    return _set_restriction(store, settings, email, False, reason)


def object_subject(store: Store, settings: Settings, email: str, *, reason: str | None = None) -> FlagResult:
    """Record an objection to all direct marketing (see module docstring).

    For an address we hold no contact for, the suppression is still added
    (the objection's intent is "never mail me"); ``found`` is False.
    """
    subject: Subject = find_subject(store, settings, email)
    now = clock.now_iso()
    changed = False
    ended = 0
    since: str | None = None
    with store.transaction() as conn:
        if subject.contact_id is not None:
            cid = subject.contact_id
            since = no_marketing_since(conn, cid)
            if since is None:
                changed = True
                since = now
                object_to_marketing(conn, cid, now)
                add_event(conn, contact_id=cid, kind="objected", channel="cli", scope=ALL, now=now)
            ended = end_memberships(conn, cid, "cli", at=now, updated_at=now)
        added = add_suppression(conn, subject.hmac, ALL, "objected", "cli", clock.now_iso())
        changed = changed or added or ended > 0
        if changed:
            append_optouts(settings, [OptOutEntry(subject.hmac, ALL, "objected", "cli", now)])
        closed = close_open_requests(conn, subject.hmac, ("objection",), "privacy object", now)
        audit.record_access(
            store, settings, "object", subject_hmac=subject.hmac, command="privacy object",
            detail={"found": subject.contact_id is not None, "changed": changed, "memberships_ended": ended,
                    "requests_closed": closed},
            reason=reason,
        )
    return FlagResult(ref=subject.ref, found=subject.contact_id is not None, changed=changed, since=since,
                      memberships_ended=ended, requests_closed=closed)
