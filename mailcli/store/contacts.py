"""Contacts: the queries behind ``contacts``, ``contacts show`` and ``contacts set``.

An import writes contacts through :mod:`mailcli.store.imports`; list
memberships are counted by :mod:`mailcli.store.audience`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..clock import now_iso
from ..errors import UsageError
from ..importrows import clean_name, field_problem
from ..tokens import address_hmac
from .audience import CONTACT_STATUSES, MEMBER_STATUS_SQL, MEMBER_STATUSES, list_not_found
from .db import Store, is_postgres
from .lists import list_id
from .suppressions import suppressions_of

if TYPE_CHECKING:
    from ..segments import Segment
    from .db import Connection


@dataclass(frozen=True, slots=True)
class ContactRow:
    """One contact as ``contacts`` lists it.

    ``status`` is the membership status when listing one list, else the
    contact's own status (active, unsubscribed, bounced, complained).
    """

    id: int
    email: str
    first_name: str
    last_name: str
    status: str
    lists: list[str]
    attributes: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"email": self.email, "first_name": self.first_name, "last_name": self.last_name,
                "status": self.status, "lists": self.lists, "attributes": self.attributes}


def _list_id(conn: Connection, name: str) -> int:
    found = list_id(conn, name)
    if found is None:
        raise list_not_found(conn, name)
    return found


def check_status(status: str, *, list_name: str | None) -> str:
    """``status`` if a listing can filter on it, else a UsageError with a suggestion."""
    import difflib

    allowed = MEMBER_STATUSES if list_name is not None else tuple(dict.fromkeys(CONTACT_STATUSES + MEMBER_STATUSES))
    if status in allowed:
        return status
    guess = difflib.get_close_matches(status.lower(), allowed, n=1, cutoff=0.5)
    raise UsageError(f"--status {status!r} is not a status" + (f" (did you mean {guess[0]}?)" if guess else ""),
                     hint=f"{'members of a list' if list_name else 'contacts'} are {', '.join(allowed)}")


def _contact_filter(conn: Connection, list_name: str | None, status: str | None,
                    segment: Segment | None = None) -> tuple[str, list[Any], str, list[Any]]:
    """WHERE clause (fixed SQL, bound values) and the status column for a listing.

    With a list, the status is the member's (``audience.MEMBER_STATUS_SQL``),
    the one ``lists`` counts and a send freezes. A segment adds its condition.
    """
    where, params, status_sql, status_params = _list_status_filter(conn, list_name, status)
    if segment is None:
        return where, params, status_sql, status_params
    from .segments import segment_filter

    condition, values = segment_filter(conn, segment)
    return f"({where}) AND {condition}", [*params, *values], status_sql, status_params


def _list_status_filter(conn: Connection, list_name: str | None, status: str | None
                        ) -> tuple[str, list[Any], str, list[Any]]:
    member = f"(SELECT {MEMBER_STATUS_SQL} FROM memberships m WHERE m.contact_id = c.id AND m.list_id = ?)"  # noqa: S608
    if list_name is not None:
        list_id = _list_id(conn, list_name)
        if status is not None:
            members = f"c.id IN (SELECT m.contact_id FROM memberships m JOIN contacts c ON c.id = m.contact_id WHERE m.list_id = ? AND ({MEMBER_STATUS_SQL}) = ?)"  # noqa: S608
            return (members, [list_id, status], member, [list_id])
        return ("c.id IN (SELECT contact_id FROM memberships WHERE list_id = ?)", [list_id], member, [list_id])
    if status is not None:
        any_member = f"EXISTS (SELECT 1 FROM memberships m WHERE m.contact_id = c.id AND ({MEMBER_STATUS_SQL}) = ?)"  # noqa: S608
        return (f"(c.status = ? OR {any_member})", [status, status], "c.status", [])
    return ("true", [], "c.status", [])


def iter_contacts(
    store: Store,
    *,
    list_name: str | None = None,
    status: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    segment: Segment | None = None,
) -> Iterator[ContactRow]:
    """Contacts in address order, optionally one list's members with one status,
    optionally only those in a segment."""
    conn = store.conn
    where, params, status_sql, status_params = _contact_filter(conn, list_name, status, segment)
    # The SQL text is fixed; only bound values vary, so no cell can change a query.
    postgres = is_postgres(conn)
    # The lists as a JSON array, in each engine's JSON functions.
    lists_json = "coalesce(json_agg(l.name)::text, '[]')" if postgres else "json_group_array(l.name)"
    sql = (
        f"SELECT c.id, c.email, c.first_name, c.last_name, {status_sql},"  # noqa: S608
        f" (SELECT {lists_json} FROM memberships m JOIN lists l ON l.id = m.list_id"
        "  WHERE m.contact_id = c.id AND m.status != 'unsubscribed'),"
        f" c.attributes FROM contacts c WHERE {where} ORDER BY c.email_key LIMIT ? OFFSET ?"
    )
    no_limit = None if postgres else -1  # LIMIT NULL on PostgreSQL, LIMIT -1 on SQLite: all rows
    args = [*status_params, *params, no_limit if limit is None else limit, offset]
    for contact_id, email, first, last, row_status, lists, attributes in conn.execute(sql, args):
        yield ContactRow(contact_id, email, first, last, row_status, sorted(json.loads(lists)),
                         json.loads(attributes))


def count_contacts(store: Store, *, list_name: str | None = None, status: str | None = None,
                   segment: Segment | None = None) -> int:
    """How many contacts ``iter_contacts`` would yield without a limit."""
    where, params, _, _ = _contact_filter(store.conn, list_name, status, segment)
    sql = f"SELECT count(*) FROM contacts c WHERE {where}"  # noqa: S608 - fixed SQL, bound values
    return int(store.conn.execute(sql, params).fetchone()[0])


@dataclass(frozen=True, slots=True)
class ContactDetail:
    """Everything ``contacts show`` prints about one person."""

    id: int
    uid: str
    email: str
    first_name: str
    last_name: str
    status: str
    attributes: dict[str, Any]
    source: str | None
    created_at: str
    updated_at: str
    restricted_at: str | None
    no_marketing_at: str | None
    memberships: list[dict[str, Any]]
    history: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "email": self.email, "first_name": self.first_name, "last_name": self.last_name,
            "status": self.status, "attributes": self.attributes, "source": self.source,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "restricted_at": self.restricted_at, "no_marketing_at": self.no_marketing_at,
            "lists": [m["list"] for m in self.memberships if m["status"] != "unsubscribed"],
            "memberships": self.memberships, "history": self.history,
        }


def contact_detail(store: Store, key: str) -> ContactDetail | None:
    """One contact by comparison key, with memberships (consent) and history."""
    conn = store.conn
    row = conn.execute(
        "SELECT id, uid, email, first_name, last_name, status, attributes, source, created_at, updated_at,"
        " restricted_at, no_marketing_at FROM contacts WHERE email_key = ?", (key,)).fetchone()
    if row is None:
        return None
    contact_id = row[0]
    memberships = [
        {"list": name, "status": status, "basis": basis, "consent_source": source, "consent_method": method,
         "consent_at": consent_at, "consent_ip": ip, "consent_text": text, "consent_wording": wording,
         "confirmed_at": confirmed, "unsubscribed_at": unsub_at, "unsubscribe_channel": channel, "created_at": created}
        for (name, status, basis, source, method, consent_at, ip, text, wording, confirmed, unsub_at, channel,
             created)
        in conn.execute(
            # The member's status as `lists` counts it (a bounced member is "bounced").
            f"SELECT l.name, {MEMBER_STATUS_SQL}, m.basis, m.consent_source, m.consent_method, m.consent_at, m.consent_ip,"  # noqa: S608
            " m.consent_text, t.text, m.confirmed_at, m.unsubscribed_at, m.unsubscribe_channel, m.created_at"
            " FROM memberships m JOIN lists l ON l.id = m.list_id JOIN contacts c ON c.id = m.contact_id"
            " LEFT JOIN consent_texts t ON t.hash = m.consent_text"
            " WHERE m.contact_id = ? ORDER BY l.name",
            (contact_id,))
    ]
    history = [
        {"at": at, "kind": kind, "channel": channel, "scope": scope, "campaign": campaign,
         "note": _event_note(kind, detail)}
        for (at, kind, channel, scope, campaign, detail) in conn.execute(
            "SELECT e.created_at, e.kind, e.channel, e.scope, c.name, e.detail FROM events e"
            " LEFT JOIN campaigns c ON c.id = e.campaign_id WHERE e.contact_id = ? ORDER BY e.id",
            (contact_id,))
    ]
    history += [
        {"at": sent_at or updated_at, "kind": f"delivery {status}", "channel": None, "scope": None,
         "campaign": campaign, "note": None}
        for (sent_at, updated_at, status, campaign) in conn.execute(
            "SELECT d.sent_at, d.updated_at, d.status, c.name FROM deliveries d"
            " JOIN campaigns c ON c.id = d.campaign_id WHERE d.contact_id = ? ORDER BY d.id", (contact_id,))
    ]
    history.sort(key=lambda event: event["at"] or "")
    return ContactDetail(
        id=contact_id, uid=row[1], email=row[2], first_name=row[3], last_name=row[4], status=row[5],
        attributes=json.loads(row[6]), source=row[7], created_at=row[8], updated_at=row[9],
        restricted_at=row[10], no_marketing_at=row[11], memberships=memberships, history=history,
    )


def _event_note(kind: str, detail_text: str | None) -> str | None:
    """A few words from an event's detail: the status of a bounce or notice,
    the relay that could not take an address."""
    try:
        detail = json.loads(detail_text or "{}")
    except ValueError:
        return None
    if not isinstance(detail, dict):
        return None
    parts = [str(detail[key]) for key in ("status", "diagnostic") if detail.get(key)]
    if detail.get("will_retry_until"):
        parts.append(f"retried until {detail['will_retry_until']}")
    if detail.get("relay"):
        parts.append(f"relay {detail['relay']} offers no SMTPUTF8")
    return "; ".join(parts) or None


NAME_FIELDS = ("first_name", "last_name")
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class Change:
    """One ``FIELD=VALUE`` of ``contacts set``; an empty value clears it."""

    field: str
    value: str


def parse_changes(assignments: Iterable[str]) -> list[Change]:
    """``["first_name=Anna", "city="]`` → changes; raises UsageError on bad input."""
    changes = []
    for text in assignments:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"{text!r}: expected FIELD=VALUE")
        if name not in ("email", *NAME_FIELDS) and not _IDENTIFIER.fullmatch(name):
            raise UsageError(
                f"{name!r}: a field is email, first_name, last_name or an attribute name"
                " (lower case letters, digits and _)")
        if name in ("lists", "status", "uid", "id"):
            raise UsageError(f"{name!r} cannot be set here",
                             hint="use mailcli unsubscribe or mailcli import for list membership")
        if problem := field_problem(value):  # what an import refuses, so is a correction
            raise UsageError(f"{name}: {problem}; nothing was changed")
        changes.append(Change(name, value))
    if not changes:
        raise UsageError("nothing to set", hint="give one or more FIELD=VALUE")
    return changes


def attribute_in_use(conn: Connection, name: str) -> bool:
    """Does any contact have the attribute ``name``? (A text search first: cheap, no JSON parsed.)"""
    if is_postgres(conn):
        row = conn.execute(
            "SELECT 1 FROM contacts WHERE strpos(attributes, ?) > 0 AND jsonb_exists(attributes::jsonb, ?) LIMIT 1",
            (json.dumps(name), name),
        ).fetchone()
        return row is not None
    row = conn.execute(
        "SELECT 1 FROM contacts WHERE instr(attributes, ?) > 0 AND json_type(attributes, ?) IS NOT NULL LIMIT 1",
        (json.dumps(name) + ":", "$." + json.dumps(name)),
    ).fetchone()
    return row is not None


def known_fields(conn: Connection, sample: int = 5000) -> set[str]:
    """The fields people usually set: the standard ones and the attributes of recent contacts."""
    names = {"email", *NAME_FIELDS}
    for (text,) in conn.execute("SELECT attributes FROM contacts ORDER BY id DESC LIMIT ?", (sample,)):
        names.update(json.loads(text))
    return names


def _new_attributes(conn: Connection, changes: list[Change], attributes: dict[str, Any], *,
                    allow_lookalikes: bool) -> list[str]:
    """The attributes set here that no contact has yet. Unless
    ``allow_lookalikes``, a UsageError when one looks like a misspelt known field."""
    import difflib

    new = [c.field for c in changes
           if c.field not in ("email", *NAME_FIELDS) and c.field not in attributes and c.value.strip()
           and not attribute_in_use(conn, c.field)]
    if new and not allow_lookalikes:
        known = sorted(known_fields(conn) | set(attributes))
        for name in new:
            guess = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            if guess:
                raise UsageError(f"Unknown field {name!r} (did you mean {guess[0]}?); nothing was changed",
                                 hint=f"to add {name} as a new field anyway, pass --new-field")
    return new


# Complexity: one check per way a correction can be refused, then the changed fields marked rectified.
def set_fields(store: Store, key: str, changes: list[Change], *, secret: bytes,
               normalise: Callable[[str], tuple[str, str]], new_fields: bool = False
               ) -> tuple[int, list[str], list[str]] | None:
    """Rectify one contact (art. 16). Returns (contact id, changed field names,
    attributes no other contact has), or None when no contact has this key.
    A field no contact has that looks like a misspelling of a known one is
    refused unless ``new_fields``. One transaction."""
    with store.transaction() as conn:
        row = conn.execute("SELECT id, email, first_name, last_name, attributes FROM contacts"
                           " WHERE email_key = ?", (key,)).fetchone()
        if row is None:
            return None
        contact_id, email, first, last, attributes_text = row
        values: dict[str, Any] = {"email": email, "first_name": first, "last_name": last}
        attributes = json.loads(attributes_text)
        added = _new_attributes(conn, changes, attributes, allow_lookalikes=new_fields)
        new_key = _apply(changes, values, attributes, key, normalise)
        if new_key != key:
            _check_new_address(conn, new_key, secret)
        new_attributes = json.dumps(attributes, ensure_ascii=False, separators=(",", ":"))
        changed = [name for name in ("email", *NAME_FIELDS) if values[name] != row[("email", *NAME_FIELDS).index(name) + 1]]
        if new_attributes != attributes_text:
            changed += sorted({c.field for c in changes if c.field not in ("email", *NAME_FIELDS)})
        if changed:
            now = now_iso()
            # Every field corrected is marked rectified, so a later import keeps it.
            marks = json.dumps({name: now for name in changed if name != "email"}, separators=(",", ":"))
            # The marks merged into those kept, in each engine's JSON functions.
            merged = ("(coalesce(rectified, '{}')::jsonb || ?::jsonb)::text" if is_postgres(conn)
                      else "json_patch(coalesce(rectified, '{}'), ?)")
            sql = ("UPDATE contacts SET email = ?, email_key = ?, first_name = ?, last_name = ?, attributes = ?,"  # noqa: S608
                   " updated_at = ?, last_activity_at = ?,"
                   f" rectified = CASE WHEN ? = '{{}}' THEN rectified ELSE {merged} END WHERE id = ?")
            conn.execute(
                sql,
                (values["email"], new_key, values["first_name"], values["last_name"], new_attributes,
                 now, now, marks, marks, contact_id))
    return contact_id, changed, added


def _apply(changes: list[Change], values: dict[str, Any], attributes: dict[str, Any], key: str,
           normalise: Callable[[str], tuple[str, str]]) -> str:
    """The changes made to ``values`` (email and names) and ``attributes``; the new address key."""
    new_key = key
    for change in changes:
        if change.field == "email":
            try:
                address, new_key = normalise(change.value)
            except UsageError as exc:  # AddressError
                raise UsageError(f"email={change.value.strip()!r} is not a valid address: {exc}") from None
            values["email"] = address
        elif change.field in NAME_FIELDS:
            values[change.field] = clean_name(change.value)  # as an import stores a name
        elif change.value.strip():
            attributes[change.field] = change.value.strip()
        else:
            attributes.pop(change.field, None)
    return new_key


def _check_new_address(conn: Connection, new_key: str, secret: bytes) -> None:
    """A contact's new address must be no one else's and not suppressed."""
    if conn.execute("SELECT 1 FROM contacts WHERE email_key = ?", (new_key,)).fetchone():
        raise UsageError("Another contact already has that address",
                         hint="two records of one person: erase one with mailcli privacy erase")
    if suppressions_of(conn, address_hmac(secret, new_key)):  # for any list, or all marketing
        raise UsageError("The new address is on the suppression list; it will not be used")


def template_fields(conn: Connection, key: str) -> tuple[str, str, str, str, str | None] | None:
    """(address, first name, last name, attributes JSON, restricted at) of the
    contact with comparison key ``key``: what a template sees of it."""
    row = conn.execute(
        "SELECT email, first_name, last_name, attributes, restricted_at FROM contacts WHERE email_key = ?", (key,)
    ).fetchone()
    return None if row is None else (row[0], row[1] or "", row[2] or "", row[3] or "{}", row[4])
