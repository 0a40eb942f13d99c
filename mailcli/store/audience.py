"""Who a list reaches: the one definition of a member's status.

A membership row says subscribed, unconfirmed or unsubscribed; the contact
can still be out of reach for reasons of its own (a hard bounce, a spam
complaint, a restriction of processing, an objection to direct marketing),
and a subscribed member without a lawful basis recorded (neither consent with
its evidence nor the existing-customer soft opt-in) is held back as
``no_basis`` until the sender states one or the person confirms.
``lists``, ``contacts --list L --status S`` and the audience a send freezes
all read a member's status through ``MEMBER_STATUS_SQL``, so their counts
agree: a list's ``subscribed`` count is the audience its next send freezes.

The send also checks the suppression list (keyed hashes) as a last safety
net; every path that suppresses a known contact changes its membership or
status in the same transaction, so that check leaves nobody else out.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import NotFoundError
from .db import is_postgres
from .lists import given_name, list_names, same_but_case

if TYPE_CHECKING:
    from ..segments import Segment
    from .db import Connection

# What a member of a list is, as people and commands see it. The first three
# are membership statuses; the rest are members held back by their contact.
MEMBER_STATUSES = ("subscribed", "unconfirmed", "unsubscribed", "bounced", "complained", "restricted", "objected",
                   "no_basis")
HELD_BACK = ("bounced", "complained", "restricted", "objected", "no_basis")
# A contact's own status (the contacts table), shown when no list is chosen.
CONTACT_STATUSES = ("active", "unsubscribed", "bounced", "complained")

# ``m`` is the memberships row, ``c`` its contact. Order matters: a member who
# left the list is unsubscribed whatever else happened since.
_HELD_BY_CONTACT = """
    WHEN m.status = 'unsubscribed' THEN 'unsubscribed'
    WHEN c.status IN ('bounced', 'complained') THEN c.status
    WHEN c.status != 'active' THEN 'unsubscribed'
    WHEN c.restricted_at IS NOT NULL THEN 'restricted'
    WHEN c.no_marketing_at IS NOT NULL THEN 'objected'"""
MEMBER_STATUS_SQL = f"""CASE{_HELD_BY_CONTACT}
    WHEN m.status = 'subscribed' AND m.basis = 'none' THEN 'no_basis'
    ELSE m.status END"""

# The members a send reaches (``m.status`` first, so the list's status index
# narrows the rows before the contact is read): MEMBER_STATUS_SQL's
# 'subscribed', with the basis looked up in the partial index of members
# without one (empty for most lists) instead of reading every member's row.
SENDABLE_SQL = f"""m.status = 'subscribed' AND (CASE{_HELD_BY_CONTACT} ELSE m.status END) = 'subscribed'
  AND NOT EXISTS (SELECT 1 FROM memberships nb INDEXED BY memberships_no_basis
                  WHERE nb.list_id = m.list_id AND nb.contact_id = m.contact_id
                    AND nb.basis = 'none' AND nb.status = 'subscribed')"""  # noqa: S608 - fixed SQL

# The members a service message reaches: everyone with an active
# relationship through the list — subscribed, or unsubscribed from it, an
# objection to marketing or an unsubscribe from all marketing included —
# but never an unconfirmed sign-up, an address that bounced or complained,
# or a contact whose processing is restricted. Erased people have no row.
SERVICE_REACHABLE_SQL = ("m.status IN ('subscribed', 'unsubscribed') AND c.status IN ('active', 'unsubscribed')"
                         " AND c.restricted_at IS NULL")


@dataclass(frozen=True, slots=True)
class ListSummary:
    """One list with its members counted by status; the counts add up to its members."""

    name: str
    subscribed: int
    unconfirmed: int
    unsubscribed: int
    held_back: dict[str, int]
    created_at: str

    @property
    def held(self) -> int:
        return sum(self.held_back.values())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "subscribed": self.subscribed, "unconfirmed": self.unconfirmed,
                "unsubscribed": self.unsubscribed, "held_back": self.held, "held_back_by": dict(self.held_back),
                "created_at": self.created_at}


# Members by their membership row: the memberships_list_status index alone.
_BY_ROW_SQL = "SELECT l.name, l.created_at, m.status, count(m.list_id) FROM lists l" \
              " LEFT JOIN memberships m ON m.list_id = l.id GROUP BY l.id, m.status ORDER BY l.name"
# The few members whose contact moves them to another status: only contacts
# that are not active, restricted or objecting can (MEMBER_STATUS_SQL). The
# CROSS JOIN keeps SQLite on one pass over contacts, joining memberships for
# just those, instead of reading a contact for every member (SQLite's way to
# fix the join order; about three times faster than grouping every member by
# MEMBER_STATUS_SQL, see benchmarks/README.md). PostgreSQL has no such
# hint (its planner chooses the order) and writes it as a plain JOIN.
_MOVED_SQL = """
SELECT l.name, m.status, {status}, count(*)
FROM contacts c {join} memberships m ON m.contact_id = c.id JOIN lists l ON l.id = m.list_id
WHERE (c.status != 'active' OR c.restricted_at IS NOT NULL OR c.no_marketing_at IS NOT NULL)
  AND m.status != 'unsubscribed'
GROUP BY 1, 2, 3
"""
_MOVED_SQLITE = _MOVED_SQL.format(status=MEMBER_STATUS_SQL, join="CROSS JOIN")
_MOVED_POSTGRES = _MOVED_SQL.format(status=MEMBER_STATUS_SQL, join="JOIN")
# Subscribed members without a basis whose contact holds them back for no
# other reason (those are counted by _MOVED_SQL), through the partial index
# of members without a basis: nothing is read for the others.
_NO_BASIS_SQL = """
SELECT l.name, count(*)
FROM memberships m JOIN lists l ON l.id = m.list_id JOIN contacts c ON c.id = m.contact_id
WHERE m.basis = 'none' AND m.status = 'subscribed'
  AND c.status = 'active' AND c.restricted_at IS NULL AND c.no_marketing_at IS NULL
GROUP BY l.id
"""


# A segment's members of every list, by status: each member's contact is read
# for the segment's condition anyway, so the status is worked out directly.
_IN_SEGMENT_SQL = f"""
SELECT l.name, l.created_at, {MEMBER_STATUS_SQL}, count(c.id)
FROM lists l LEFT JOIN (memberships m JOIN contacts c ON c.id = m.contact_id AND {{segment}}) ON m.list_id = l.id
GROUP BY l.id, 3 ORDER BY l.name
"""  # noqa: S608 - fixed SQL


# Complexity: three counts merged (by row, moved by the contact, no basis), skipped for a segment; two engines.
def list_summaries(conn: Connection, names: list[str] | None = None,
                   segment: Segment | None = None) -> list[ListSummary]:
    """Every list (or the named ones) with its members counted by status;
    with ``segment``, only the members it matches."""
    found: dict[str, tuple[str, dict[str, int]]] = {}
    if segment is not None:
        from .segments import segment_filter

        condition, params = segment_filter(conn, segment)
        rows = conn.execute(_IN_SEGMENT_SQL.format(segment=condition), params).fetchall()
    else:
        rows = conn.execute(_BY_ROW_SQL).fetchall()
    for name, created_at, status, count in rows:
        counts = found.setdefault(name, (created_at, {}))[1]
        if status is not None:
            counts[status] = counts.get(status, 0) + count
    moved = _MOVED_POSTGRES if is_postgres(conn) else _MOVED_SQLITE
    for name, row_status, status, count in ([] if segment is not None else conn.execute(moved)):
        counts = found[name][1]
        counts[row_status] -= count
        counts[status] = counts.get(status, 0) + count
    for name, count in ([] if segment is not None else conn.execute(_NO_BASIS_SQL)):
        counts = found[name][1]
        counts["subscribed"] -= count
        counts["no_basis"] = counts.get("no_basis", 0) + count
    return [
        ListSummary(name=name, subscribed=counts.get("subscribed", 0), unconfirmed=counts.get("unconfirmed", 0),
                    unsubscribed=counts.get("unsubscribed", 0),
                    held_back={s: counts.get(s, 0) for s in HELD_BACK}, created_at=created_at)
        for name, (created_at, counts) in found.items()
        if names is None or name in names
    ]


# The audience of a campaign: the members of the list it reaches not yet in it,
# a page at a time in the order of the membership index (list, status,
# contact), so memory stays flat however large the list and each page
# starts where the last one ended.
_AUDIENCE_SQL = """
SELECT c.id, c.uid, c.email_key
FROM memberships m JOIN contacts c ON c.id = m.contact_id
WHERE m.list_id = ? AND {reached} AND m.contact_id > ?
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.campaign_id = ? AND d.contact_id = c.id)
  AND {{segment}}
ORDER BY m.contact_id
LIMIT ?
"""
_AUDIENCE_BY_KIND = {"marketing": _AUDIENCE_SQL.format(reached=SENDABLE_SQL),
                     "service": _AUDIENCE_SQL.format(reached=SERVICE_REACHABLE_SQL)}
# PostgreSQL chooses the partial index by itself and has no INDEXED BY.
_AUDIENCE_BY_KIND_POSTGRES = {kind: sql.replace(" INDEXED BY memberships_no_basis", "")
                              for kind, sql in _AUDIENCE_BY_KIND.items()}


def audience_page(conn: Connection, list_id: int, campaign_id: int, after: int,
                  limit: int, kind: str = "marketing", segment: Segment | None = None) -> list[tuple[int, str, str]]:
    """Up to ``limit`` members of the list a campaign of ``kind`` reaches
    with a contact id above ``after`` and no delivery in the campaign yet, in
    ``segment`` when one is given: (contact id, uid, email key)."""
    from .segments import segment_filter

    condition, params = segment_filter(conn, segment)
    by_kind = _AUDIENCE_BY_KIND_POSTGRES if is_postgres(conn) else _AUDIENCE_BY_KIND
    return conn.execute(by_kind[kind].format(segment=condition),
                        (list_id, after, campaign_id, *params, limit)).fetchall()


def members_by_row(conn: Connection, list_id: int, statuses: tuple[str, ...]) -> int:
    """How many members of a list have one of ``statuses`` in their
    membership row (a count of the list's status index, some 30 ms
    for a million): at most the audience of a send to the whole list, which
    leaves out the members their contact holds back."""
    marks = ", ".join("?" for _ in statuses)
    (count,) = conn.execute(f"SELECT count(*) FROM memberships WHERE list_id = ? AND status IN ({marks})",  # noqa: S608
                            (list_id, *statuses)).fetchone()
    return int(count)


# Through the partial index of the members without a basis (empty for most
# lists): SQLite chose the list's status index instead and read the contact
# of every subscribed member, 0.35 s for a million, at every freeze.
_NO_BASIS_OF_LIST_SQL = f"""SELECT count(*) FROM memberships m INDEXED BY memberships_no_basis
JOIN contacts c ON c.id = m.contact_id
WHERE m.list_id = ? AND m.basis = 'none' AND m.status = 'subscribed' AND ({MEMBER_STATUS_SQL}) = 'no_basis'"""  # noqa: S608
_NO_BASIS_OF_LIST_POSTGRES = _NO_BASIS_OF_LIST_SQL.replace(" INDEXED BY memberships_no_basis", "")


def count_no_basis(conn: Connection, list_id: int) -> int:
    """How many members of a list a send leaves out for want of a lawful basis."""
    sql = _NO_BASIS_OF_LIST_POSTGRES if is_postgres(conn) else _NO_BASIS_OF_LIST_SQL
    (count,) = conn.execute(sql, (list_id,)).fetchone()
    return int(count)


def list_not_found(conn: Connection, name: str) -> NotFoundError:
    """The error for a list that does not exist, naming the lists that do."""
    name = given_name(name)
    names = list_names(conn)
    if not names:
        return NotFoundError(f"No list named {name!r}; there are no lists yet",
                             hint="import contacts into one: mailcli import FILE --list NAME")
    # A name that differs only in case is the likeliest one meant (list names keep their case).
    twin = same_but_case(conn, name)
    guess = [twin] if twin is not None else difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    return NotFoundError(f"No list named {name!r}" + (f" (did you mean {guess[0]}?)" if guess else ""),
                         hint=f"lists: {', '.join(names)}")
