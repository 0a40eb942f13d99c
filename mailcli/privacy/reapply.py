"""Re-applying, to a restored database, what happened after its backup was taken.

A backup may predate erasures, opt-outs, restrictions and audit entries.
``backup restore`` gathers them — from the database being replaced (its
suppression list and audit log), the erasure ledger and the opt-out ledger,
which live outside the database for this reason — and this module applies
them in one transaction:

* every later erasure again: a contact whose address was erased after it
  was created is erased again (the latest erasure of an address counts);
* every later suppression merged, keeping the first record of each;
* every later opt-out on the memberships and the contact as it was recorded
  (its list, or all marketing; its channel and time);
* restrictions set or lifted, the last word counting;
* the audit entries the backup lacks, appended and chained again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import audit, clock
from ..config import Settings
from ..optouts import OptOutEntry
from ..store import Store
from ..store import audit as audit_table
from ..store.subjects import (
    end_memberships,
    iter_contact_keys,
    mark_status,
    set_no_marketing,
    set_restricted,
)
from ..store.suppressions import ALL, Suppression, add_suppression
from ..tokens import address_hmac
from .erase import erase_contact_rows
from .ledger import LedgerEntry

OptOut = tuple[str, str, str, str]  # (scope, reason, channel, at)


@dataclass
class Counts:
    reerased: int = 0
    optouts: int = 0
    merged: int = 0
    audit: int = 0
    files: int = 0  # entries of the register of written files carried over


@dataclass
class Later:
    """What happened after the backup, to re-apply to the restored database."""

    suppressions: list[Suppression] = field(default_factory=list)
    erasures: list[LedgerEntry] = field(default_factory=list)
    optouts: list[OptOutEntry] = field(default_factory=list)


@dataclass
class _PerPerson:
    """The facts to re-apply, by the address's keyed hash."""

    erasures: dict[str, LedgerEntry]
    optouts: dict[str, list[OptOut]] = field(default_factory=dict)
    restricted: dict[str, str | None] = field(default_factory=dict)  # restricted since (None: lifted)

    def __bool__(self) -> bool:
        return bool(self.erasures or self.optouts or self.restricted)


def _latest_erasures(later: Later) -> dict[str, LedgerEntry]:
    """The latest erasure of each address: the ledger's, and the replaced database's ``erased`` suppressions."""
    erasures: dict[str, LedgerEntry] = {}
    candidates = [*later.erasures, *(LedgerEntry(hmac, created_at, "request", True)
                                     for hmac, scope, reason, _channel, created_at in later.suppressions
                                     if reason == "erased" and scope == ALL)]
    for entry in candidates:
        known = erasures.get(entry.hmac)
        if known is None or entry.erased_at > known.erased_at:
            erasures[entry.hmac] = entry
    return erasures


# Complexity: one branch per kind of later record (suppression, opt-out, restriction, erasure); the first record of each kept.
def _merge_suppressions(store: Store, later: Later, facts: _PerPerson, counts: Counts) -> None:
    """Add the later suppressions (the first record of each is kept) and note the opt-outs and restrictions."""
    conn = store.conn
    for hmac, scope, reason, channel, created_at in later.suppressions:
        if add_suppression(conn, hmac, scope, reason, channel, created_at):
            counts.merged += 1
        if reason != "erased":
            facts.optouts.setdefault(hmac, []).append((scope, reason, channel or "restore", created_at))
    for item in later.optouts:
        if item.reason in ("restricted", "unrestricted"):
            facts.restricted[item.hmac] = item.at if item.reason == "restricted" else None
            continue
        if add_suppression(conn, item.hmac, item.scope, item.reason, item.channel, item.at):
            counts.merged += 1
        facts.optouts.setdefault(item.hmac, []).append((item.scope, item.reason, item.channel or "restore", item.at))
    for entry in facts.erasures.values():
        if entry.suppress:
            add_suppression(conn, entry.hmac, ALL, "erased", "restore", clock.now_iso())


def reapply(store: Store, settings: Settings, later: Later, counts: Counts) -> None:
    """Re-erase, merge suppressions, re-apply opt-outs and restrictions, in one transaction."""
    facts = _PerPerson(_latest_erasures(later))
    with store.transaction() as conn:
        _merge_suppressions(store, later, facts, counts)
        if not facts:
            return
        secret = settings.secret()
        for contact_id, email_key, created_at in iter_contact_keys(conn):
            _reapply_to_contact(store, contact_id, created_at, address_hmac(secret, email_key), facts, counts)


def _reapply_to_contact(store: Store, contact_id: int, created_at: str, hmac: str, facts: _PerPerson,
                        counts: Counts) -> None:
    conn = store.conn
    erased = facts.erasures.get(hmac)
    if erased is not None and clock.parse_iso(created_at) <= clock.parse_iso(erased.erased_at):
        erase_contact_rows(conn, contact_id, hmac)
        counts.reerased += 1
        return
    for scope, reason, channel, at in facts.optouts.get(hmac, ()):
        counts.optouts += end_memberships(conn, contact_id, channel, at=at, updated_at=at,
                                          list_name=None if scope == ALL else scope)
        if scope == ALL:
            _flag_opted_out(store, contact_id, reason, at)
    if hmac in facts.restricted:
        since = facts.restricted[hmac]
        set_restricted(conn, contact_id, since, since)


def _flag_opted_out(store: Store, contact_id: int, reason: str, at: str) -> None:
    """The person-level flag of an opt-out from all marketing: objection or
    complaint set ``no_marketing_at``; a bounce or complaint sets the status."""
    if reason in ("objected", "complained", "unsubscribed"):
        set_no_marketing(store.conn, contact_id, at)
    if reason in ("bounced", "complained"):
        mark_status(store.conn, contact_id, reason, at)


def carry_audit(store: Store, settings: Settings, rows: list[tuple[object, ...]]) -> int:
    """Append (re-chained) the replaced database's audit rows the restored one lacks."""
    present = audit_table.hashes(store.conn)
    missing = [row for row in rows if row[7] not in present]
    for at, actor, command, action, subject_hmac, detail, reason, _hash in missing:
        audit.append_row(store, at=str(at), actor=str(actor), command=str(command), action=str(action),
                         subject_hmac=subject_hmac if subject_hmac is None else str(subject_hmac),
                         detail_text=str(detail), reason=reason if reason is None else str(reason),
                         settings=settings)
    return len(missing)
