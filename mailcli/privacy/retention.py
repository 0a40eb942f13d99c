"""``privacy purge``: the ``[retention]`` policy, applied (STANDARDS E07, E09, F28).

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
from ..store.archive import archive_deliveries, archive_events
from ..store.suppressions import add_suppression
from .backup import expired_backups
from .erase import erase_contact_rows
from .ledger import LedgerEntry, append_entries
from .restore import remove_leftovers
from .scrub import ScrubResult, scrub
from .subject import contact_hmac

RULES = ("unconfirmed", "unsubscribed", "bounced", "inactive", "send_log", "audit_log", "backups")
UNITS = {
    "unconfirmed": "memberships", "unsubscribed": "contacts", "bounced": "contacts", "inactive": "contacts",
    "send_log": "deliveries and events", "audit_log": "audit entries", "backups": "backup files",
}
PERSON_RULES = ("unconfirmed", "unsubscribed", "bounced", "inactive")


@dataclass(frozen=True, slots=True)
class PurgeResult:
    as_of: str
    dry_run: bool
    cutoffs: dict[str, str]
    counts: dict[str, int]  # rule -> records removed (or that would be)
    contacts_erased: int
    scrub: ScrubResult | None


_LEFT = "(c.status IN ('unsubscribed', 'complained') OR c.no_marketing_at IS NOT NULL" \
        " OR EXISTS (SELECT 1 FROM memberships m WHERE m.contact_id = c.id AND m.status = 'unsubscribed'))"
# Live membership: subscribed, or unconfirmed and not being deleted by this purge.
_NO_LIVE = ("NOT EXISTS (SELECT 1 FROM memberships m WHERE m.contact_id = c.id AND m.status IN"
            " ('subscribed', 'unconfirmed') AND NOT EXISTS (SELECT 1 FROM temp.purge_members p"
            " WHERE p.contact_id = m.contact_id AND p.list_id = m.list_id))")
_FREE = "c.restricted_at IS NULL AND c.id NOT IN (SELECT id FROM temp.purge_contacts)"
_LEFT_SINCE = (
    "COALESCE(NULLIF(max(COALESCE(c.no_marketing_at, ''),"
    " COALESCE((SELECT max(m.unsubscribed_at) FROM memberships m WHERE m.contact_id = c.id), ''),"
    " COALESCE((SELECT max(e.created_at) FROM events e WHERE e.contact_id = c.id"
    "   AND e.kind IN ('unsubscribed', 'complained', 'objected')), '')), ''), c.updated_at)"
)
_BOUNCED_SINCE = ("COALESCE((SELECT max(e.created_at) FROM events e WHERE e.contact_id = c.id AND e.kind = 'bounced'),"
                  " c.updated_at)")
_ACTIVE_SINCE = (
    "max(c.last_activity_at, c.created_at,"
    " COALESCE((SELECT max(max(m.created_at, m.updated_at, COALESCE(m.consent_at, ''), COALESCE(m.confirmed_at, '')))"
    "   FROM memberships m WHERE m.contact_id = c.id), ''),"
    " COALESCE((SELECT max(e.created_at) FROM events e WHERE e.contact_id = c.id), ''),"
    " COALESCE((SELECT max(d.updated_at) FROM deliveries d WHERE d.contact_id = c.id), ''))"
)
_OLD_DELIVERIES = "updated_at < ? AND contact_id IN (SELECT id FROM contacts WHERE restricted_at IS NULL)" \
                  " AND contact_id NOT IN (SELECT id FROM temp.purge_contacts)"
_OLD_EVENTS = "created_at < ? AND (contact_id IS NULL OR (contact_id IN (SELECT id FROM contacts" \
              " WHERE restricted_at IS NULL) AND contact_id NOT IN (SELECT id FROM temp.purge_contacts)))"


def _plan(conn: sqlite3.Connection, cut: dict[str, str]) -> dict[str, int]:
    """Fill temp.purge_members / temp.purge_contacts; return the counts."""
    conn.execute("DROP TABLE IF EXISTS temp.purge_members")
    conn.execute("DROP TABLE IF EXISTS temp.purge_contacts")
    conn.execute("CREATE TEMP TABLE purge_members (contact_id INTEGER, list_id INTEGER, PRIMARY KEY (contact_id, list_id))")
    conn.execute("CREATE TEMP TABLE purge_contacts (id INTEGER PRIMARY KEY, rule TEXT NOT NULL)")
    conn.execute(
        "INSERT INTO temp.purge_members SELECT m.contact_id, m.list_id FROM memberships m"
        " JOIN contacts c ON c.id = m.contact_id WHERE m.status = 'unconfirmed'"
        " AND COALESCE(m.consent_at, m.created_at) < ? AND c.restricted_at IS NULL",
        (cut["unconfirmed"],),
    )
    conn.execute(
        "INSERT INTO temp.purge_contacts SELECT c.id, 'unconfirmed' FROM contacts c"
        " WHERE c.id IN (SELECT contact_id FROM temp.purge_members) AND NOT EXISTS (SELECT 1 FROM memberships m"
        " WHERE m.contact_id = c.id AND NOT EXISTS (SELECT 1 FROM temp.purge_members p"
        " WHERE p.contact_id = m.contact_id AND p.list_id = m.list_id))"
    )
    rules = (
        ("unsubscribed", f"{_LEFT} AND {_NO_LIVE} AND {_LEFT_SINCE} < ?"),
        # "!= 'active'" lets SQLite use the partial index contacts_status.
        ("bounced", f"c.status != 'active' AND c.status = 'bounced' AND {_BOUNCED_SINCE} < ?"),
        ("inactive", f"c.last_activity_at < ? AND {_ACTIVE_SINCE} < ?"),
    )
    for rule, condition in rules:
        params = (cut[rule],) * condition.count("?")
        conn.execute(
            f"INSERT INTO temp.purge_contacts SELECT c.id, '{rule}' FROM contacts c WHERE {_FREE} AND {condition}",  # noqa: S608
            params,
        )
    counts = {rule: 0 for rule in RULES}
    counts["unconfirmed"] = conn.execute("SELECT count(*) FROM temp.purge_members").fetchone()[0]
    for rule, n in conn.execute("SELECT rule, count(*) FROM temp.purge_contacts GROUP BY rule"):
        if rule != "unconfirmed":
            counts[rule] = n
    counts["send_log"] = (
        conn.execute(f"SELECT count(*) FROM deliveries WHERE {_OLD_DELIVERIES}", (cut["send_log"],)).fetchone()[0]  # noqa: S608
        + conn.execute(f"SELECT count(*) FROM events WHERE {_OLD_EVENTS}", (cut["send_log"],)).fetchone()[0]  # noqa: S608
    )
    counts["audit_log"] = audit_rows.count_before(conn, cut["audit_log"])
    return counts


def _keep_suppressions(conn: sqlite3.Connection, contact_id: int, hmac: str, rule: str, now: str) -> None:
    """Before erasing, make sure the opt-out that justified it outlives the person."""
    if rule == "bounced":
        add_suppression(conn, hmac, "*", "bounced", "purge", now)
    elif rule == "unsubscribed":
        status, objected = conn.execute(
            "SELECT status, no_marketing_at FROM contacts WHERE id = ?", (contact_id,)).fetchone()
        if objected:
            add_suppression(conn, hmac, "*", "objected", "purge", now)
        elif status == "complained":
            add_suppression(conn, hmac, "*", "complained", "purge", now)
        rows = conn.execute("SELECT l.name FROM memberships m JOIN lists l ON l.id = m.list_id"
                            " WHERE m.contact_id = ? AND m.status = 'unsubscribed'", (contact_id,)).fetchall()
        for (name,) in rows:
            add_suppression(conn, hmac, name, "unsubscribed", "purge", now)
        if not rows and not objected and status != "complained":
            add_suppression(conn, hmac, "*", "unsubscribed", "purge", now)


def purge(store: Store, settings: Settings, *, as_of: datetime | None = None, dry_run: bool = False) -> PurgeResult:
    """Apply the retention policy (see module docstring)."""
    moment = as_of or clock.now()
    cut = {rule: clock.to_iso(duration.before(moment)) for rule, duration in settings.retention.items()}
    conn = store.conn
    if dry_run:
        conn.execute("BEGIN")  # a read snapshot; TEMP tables are not the database file
        try:
            counts = _plan(conn, cut)
            erasing = conn.execute("SELECT count(*) FROM temp.purge_contacts").fetchone()[0]
        finally:
            conn.execute("ROLLBACK")
        counts["backups"] = len(expired_backups(settings, moment))
        return PurgeResult(clock.to_iso(moment), True, cut, counts, erasing, None)
    with maintenance_lock(settings):
        # Copies a killed restore left beside the database hold personal data.
        remove_leftovers(settings)
        with store.transaction() as tx:
            counts = _plan(tx, cut)
            doomed = tx.execute("SELECT p.id, p.rule, c.email_key FROM temp.purge_contacts p"
                                " JOIN contacts c ON c.id = p.id ORDER BY p.id").fetchall()
            now = clock.now_iso()
            entries = [(cid, rule, contact_hmac(settings, key)) for cid, rule, key in doomed]
            # People erased after opting out stay suppressed even if a restore
            # brings back a database from before their opt-out.
            append_entries(settings, [LedgerEntry(h, now, f"retention:{rule}", rule in ("unsubscribed", "bounced"))
                                      for _, rule, h in entries])
            tx.execute("DELETE FROM memberships WHERE (contact_id, list_id) IN"
                       " (SELECT contact_id, list_id FROM temp.purge_members)")
            for contact_id, rule, hmac in entries:
                _keep_suppressions(tx, contact_id, hmac, rule, now)
                erase_contact_rows(tx, contact_id, hmac)
            archive_deliveries(tx, _OLD_DELIVERIES, (cut["send_log"],))
            tx.execute(f"DELETE FROM deliveries WHERE {_OLD_DELIVERIES}", (cut["send_log"],))  # noqa: S608
            archive_events(tx, _OLD_EVENTS, (cut["send_log"],))
            tx.execute(f"DELETE FROM events WHERE {_OLD_EVENTS}", (cut["send_log"],))  # noqa: S608
            audit_rows.delete_before(tx, cut["audit_log"])
            tx.execute("DROP TABLE temp.purge_members")
            tx.execute("DROP TABLE temp.purge_contacts")
            removed = expired_backups(settings, moment)
            counts["backups"] = len(removed)
            audit.record_access(store, settings, "purge", command="privacy purge",
                                detail={"as_of": clock.to_iso(moment), "counts": counts})
        for backup in removed:
            backup.path.unlink(missing_ok=True)
        personal = any(counts[r] for r in RULES if r != "backups")
        result = scrub(store, vacuum=personal)
    return PurgeResult(clock.to_iso(moment), False, cut, counts, len(entries), result)
