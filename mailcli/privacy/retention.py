"""``privacy purge``: the ``[retention]`` policy, applied (``docs/guarantees.md#retention``).

Rules, each evaluated "as of" a moment (default now; ``--as-of`` answers
"what goes next month?") with cut-off = moment − period:

* ``unconfirmed`` — memberships still ``unconfirmed`` whose opt-in request
  (``consent_at``, else ``created_at``) is older: the membership is deleted;
  a contact left with no membership at all is erased (no suppression: they
  never opted out, and may subscribe again).
* ``unsubscribed`` — contacts with no live membership (none subscribed or
  unconfirmed) who left — every membership unsubscribed, status
  ``unsubscribed``/``complained``, or an art. 21 objection — longer ago than
  the period: erased; the suppression entries are kept (and added per list
  when missing), so they are never mailed or re-imported.
* ``bounced`` — contacts with status ``bounced`` since longer: erased; a
  ``*`` suppression (reason ``bounced``) is kept.
* ``inactive`` — contacts with no subscription, import, delivery or other
  activity in that long: erased.
* ``send_log`` — delivery rows and events older than the period: folded into
  campaign totals (``store.archive``) and deleted; reports do not change.
* ``audit_log`` — audit entries older than the period: the oldest are cut; the
  chain stays verifiable from its new first entry.
* ``backups`` — backup files older than the period: deleted.
* ``clicks`` — per-contact clicks (kept only with ``[tracking] per_contact``)
  older than the period: deleted; the per-link counts stay.

Contacts under restriction (art. 18) are left alone by the person rules and
the send log: restriction means "keep, but do not use".

The plan is computed with reads only (into TEMP tables, which live outside
the database file), so ``dry_run`` changes nothing and reports exactly the
counts a real run would. A real run applies the plan in one transaction,
writes the erasures to the ledger, audits the counts only (never who), then
checkpoints and VACUUMs so the removed data leaves the files. A lock file
keeps two purges (or a purge and a restore) from overlapping; running it
twice in a row removes nothing the second time.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from .. import audit, clock
from ..config import Settings
from ..locks import maintenance_lock
from ..store import Store
from ..store import audit as audit_rows
from ..store.clicks import count_clicks_before, delete_clicks_before
from ..store.retention import (
    cut_send_log,
    delete_planned_memberships,
    drop_plan,
    plan,
    planned_contact_count,
    planned_contacts,
    read_only,
)
from ..store.subjects import optout_flags, unsubscribed_list_names
from ..store.suppressions import ALL, add_suppression
from ..tokens import address_hmac
from .backup import expired_backups
from .erase import erase_contact_rows
from .ledger import LedgerEntry, append_entries
from .restore import remove_leftovers
from .scrub import ScrubResult, scrub

RULES = ("unconfirmed", "unsubscribed", "bounced", "inactive", "send_log", "audit_log", "backups", "clicks")
UNITS = {
    "unconfirmed": "memberships", "unsubscribed": "contacts", "bounced": "contacts", "inactive": "contacts",
    "send_log": "deliveries and events", "audit_log": "audit entries", "backups": "backup files",
    "clicks": "clicks",
}


@dataclass(frozen=True, slots=True)
class PurgeResult:
    as_of: str
    dry_run: bool
    cutoffs: dict[str, str]
    counts: dict[str, int]  # rule -> records removed (or that would be)
    contacts_erased: int
    scrub: ScrubResult | None


def _plan(conn: sqlite3.Connection, cut: dict[str, str]) -> dict[str, int]:
    """What each rule removes from the database (backups are counted apart)."""
    return {**dict.fromkeys(RULES, 0), **plan(conn, cut), "audit_log": audit_rows.count_before(conn, cut["audit_log"]),
            "clicks": count_clicks_before(conn, cut["clicks"])}


def _keep_suppressions(conn: sqlite3.Connection, contact_id: int, hmac: str, rule: str, now: str) -> None:
    """Before erasing, make sure the opt-out that justified it outlives the person."""
    if rule == "bounced":
        add_suppression(conn, hmac, ALL, "bounced", "purge", now)
    elif rule == "unsubscribed":
        status, objected = optout_flags(conn, contact_id)
        if objected:
            add_suppression(conn, hmac, ALL, "objected", "purge", now)
        elif status == "complained":
            add_suppression(conn, hmac, ALL, "complained", "purge", now)
        rows = unsubscribed_list_names(conn, contact_id)
        for name in rows:
            add_suppression(conn, hmac, name, "unsubscribed", "purge", now)
        if not rows and not objected and status != "complained":
            add_suppression(conn, hmac, ALL, "unsubscribed", "purge", now)


def purge(store: Store, settings: Settings, *, as_of: datetime | None = None, dry_run: bool = False) -> PurgeResult:
    """Apply the retention policy (see module docstring)."""
    moment = as_of or clock.now()
    cut = {rule: clock.to_iso(duration.before(moment)) for rule, duration in settings.retention.items()}
    conn = store.conn
    if dry_run:
        with read_only(conn):
            counts = _plan(conn, cut)
            erasing = planned_contact_count(conn)
        counts["backups"] = len(expired_backups(settings, moment))
        return PurgeResult(clock.to_iso(moment), True, cut, counts, erasing, None)
    with maintenance_lock(settings):
        # Copies a killed restore left beside the database hold personal data.
        remove_leftovers(settings)
        with store.transaction() as tx:
            counts = _plan(tx, cut)
            now = clock.now_iso()
            secret = settings.secret()
            entries = [(cid, rule, address_hmac(secret, key)) for cid, rule, key in planned_contacts(tx)]
            # People erased after opting out stay suppressed even if a restore
            # brings back a database from before their opt-out.
            append_entries(settings, [LedgerEntry(h, now, f"retention:{rule}", rule in ("unsubscribed", "bounced"))
                                      for _, rule, h in entries])
            delete_planned_memberships(tx)
            for contact_id, rule, hmac in entries:
                _keep_suppressions(tx, contact_id, hmac, rule, now)
                erase_contact_rows(tx, contact_id, hmac)
            cut_send_log(tx, cut["send_log"])
            delete_clicks_before(tx, cut["clicks"])
            audit_rows.delete_before(tx, cut["audit_log"])
            drop_plan(tx)
            removed = expired_backups(settings, moment)
            counts["backups"] = len(removed)
            audit.record_access(store, settings, "purge", command="privacy purge",
                                detail={"as_of": clock.to_iso(moment), "counts": counts})
        for backup in removed:
            backup.path.unlink(missing_ok=True)
        personal = any(counts[r] for r in RULES if r != "backups")
        result = scrub(store, vacuum=personal)
    return PurgeResult(clock.to_iso(moment), False, cut, counts, len(entries), result)
