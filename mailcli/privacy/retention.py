"""``privacy purge``: the ``[retention]`` policy, applied (``docs/guarantees.md#retention``).

Rules, each evaluated "as of" a moment (default now; ``--as-of`` with a dry
run answers "what goes next month?") with cut-off = moment − period:

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
* ``inactive`` — contacts with no live membership (none subscribed, none
  unconfirmed that stays) and no activity in that long — created, imported
  with changes, rectified, a membership made or confirmed, an event of
  theirs such as a click or an unsubscribe: erased. Receiving mail is no
  activity, so the rule never takes a subscribed member.
* ``send_log`` — delivery rows and events older than the period: folded into
  campaign totals (``store.archive``) and deleted; reports do not change.
* ``audit_log`` — audit entries older than the period: the oldest are cut
  from the start of the log, and the purge's own entry records the MAC the
  oldest kept one follows, so ``privacy audit --verify`` tells this cut from
  entries removed behind mailcli's back; the audit head is set anew.
* ``backups`` — backup files older than the period: deleted.
* ``exports`` — files mailcli wrote with personal data (access exports,
  rejects files, rendered previews; :mod:`mailcli.privacy.files`) older than
  the period, and those about anyone the purge erases: deleted, or named when
  they lie outside the project's folder. Exports in ``exports/`` that an
  older mailcli wrote without registering them go by their age too.
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

import contextlib
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .. import audit, audithead, clock
from ..config import Settings
from ..errors import UsageError
from ..importer.piped import remove_stale_copies
from ..locks import maintenance_lock
from ..store import Store, facts
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
from ..store.written import WrittenFile, all_files, files_written_before
from ..tokens import address_hmac
from .backup import expired_backups
from .erase import erase_contact_rows
from .files import FilesReached, address_forms, files_about_people, reach, shown
from .ledger import LedgerEntry, append_entries
from .restore import remove_leftovers
from .scrub import ScrubResult, scrub

if TYPE_CHECKING:
    from ..store.db import Connection

RULES = ("unconfirmed", "unsubscribed", "bounced", "inactive", "send_log", "audit_log", "backups", "exports", "clicks")
UNITS = {
    "unconfirmed": "memberships", "unsubscribed": "contacts", "bounced": "contacts", "inactive": "contacts",
    "send_log": "deliveries and events", "audit_log": "audit entries", "backups": "backup files",
    "exports": "files",
    "clicks": "clicks",
}
# What an older mailcli named an access export in exports/: <reference>-<date>.zip.
_LEGACY_EXPORT = re.compile(r"^[0-9a-f]{12}-\d{8}(?:-\d+)?\.zip$")


@dataclass(frozen=True, slots=True)
class PurgeResult:
    as_of: str
    dry_run: bool
    cutoffs: dict[str, str]
    counts: dict[str, int]  # rule -> records removed (or that would be)
    contacts_erased: int
    scrub: ScrubResult | None
    files: FilesReached = field(default_factory=FilesReached)


def _plan(conn: Connection, cut: dict[str, str]) -> dict[str, int]:
    """What each rule removes from the database (backups are counted apart)."""
    return {**dict.fromkeys(RULES, 0), **plan(conn, cut), "audit_log": audit_rows.count_cut(conn, cut["audit_log"]),
            "clicks": count_clicks_before(conn, cut["clicks"])}


def _keep_suppressions(conn: Connection, contact_id: int, hmac: str, rule: str, now: str) -> None:
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


def cut_audit_log(conn: Connection, cutoff: str, now: str) -> str | None:
    """Cut the audit entries before ``cutoff`` from the start of the log; the
    MAC the oldest kept entry follows (None when nothing was cut). An empty
    log goes on from it; entries of an older mailcli that are all gone no
    longer need their plain hash."""
    removed, base = audit_rows.cut_before(conn, cutoff)
    if not removed or base is None:
        return None
    facts.set_fact(conn, facts.AUDIT_BASE, base, now)
    first = audit_rows.min_id(conn)
    if first is None or first > audit.legacy_until(conn):
        facts.drop_fact(conn, facts.AUDIT_CHAIN)
    return base


def _files_due(conn: Connection, settings: Settings, cutoff: str,
               people: dict[str, set[str]]) -> tuple[list[WrittenFile], list[Path]]:
    """The registered files the purge reaches (older than ``cutoff``, or about
    someone it erases), and the unregistered old exports in exports/."""
    files = {f.id: f for f in [*files_written_before(conn, cutoff), *files_about_people(conn, people)]}
    registered = {f.path for f in all_files(conn)}
    folder = settings.root / "exports"
    legacy: list[Path] = []
    with contextlib.suppress(OSError):
        for path in sorted(folder.iterdir()):
            if (_LEGACY_EXPORT.match(path.name) and path.is_file() and os.path.realpath(path) not in registered
                    and clock.to_iso(datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)) < cutoff):
                legacy.append(path)
    return list(files.values()), legacy


def _people(planned: list[tuple[int, str, str]], secret: bytes) -> dict[str, set[str]]:
    """The keyed hash and address forms of everyone the plan erases."""
    return {address_hmac(secret, key): address_forms(key, key) for _, _, key in planned}


# Complexity: one step per retention rule and per kind of file it reaches, in one locked run.
def purge(store: Store, settings: Settings, *, as_of: datetime | None = None, dry_run: bool = False) -> PurgeResult:
    """Apply the retention policy (see module docstring).

    ``as_of`` in the future is a forecast: only a dry run may use it, since
    applying it would remove data before the policy says they go. A past
    ``as_of`` removes less than today's policy, and is applied.
    """
    current = clock.now()
    if as_of is not None and as_of > current and not dry_run:
        day = clock.to_iso(as_of).removesuffix("T00:00:00Z")
        raise UsageError(f"--as-of {day} is in the future: a purge removes only what is due now; nothing was changed",
                         hint=f"`mailcli privacy purge --dry-run --as-of {day}` shows what goes by then")
    moment = as_of or current
    cut = {rule: clock.to_iso(duration.before(moment)) for rule, duration in settings.retention.items()}
    conn = store.conn
    if dry_run:
        with read_only(conn):
            counts = _plan(conn, cut)
            erasing = planned_contact_count(conn)
            files, legacy = _files_due(conn, settings, cut["exports"], _people(planned_contacts(conn), settings.secret()))
        counts["backups"] = len(expired_backups(settings, moment))
        counts["exports"] = len(files) + len(legacy)
        return PurgeResult(clock.to_iso(moment), True, cut, counts, erasing, None)
    with maintenance_lock(settings):
        # Copies a killed restore left beside the database, or a killed import
        # from a pipe in the temporary folder, hold personal data.
        remove_leftovers(settings)
        remove_stale_copies()
        head_intact = audithead.intact(store)
        with store.transaction() as tx:
            counts = _plan(tx, cut)
            now = clock.now_iso()
            secret = settings.secret()
            planned = planned_contacts(tx)
            entries = [(cid, rule, address_hmac(secret, key)) for cid, rule, key in planned]
            due, legacy = _files_due(tx, settings, cut["exports"], _people(planned, secret))
            reached = reach(tx, settings, due)
            for path in legacy:
                path.unlink(missing_ok=True)
                reached.removed.append(shown(settings, str(path)))
            counts["exports"] = len(due) + len(legacy)
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
            base = cut_audit_log(tx, cut["audit_log"], now)
            drop_plan(tx)
            removed = expired_backups(settings, moment)
            counts["backups"] = len(removed)
            detail: dict[str, object] = {"as_of": clock.to_iso(moment), "counts": counts}
            if base is not None:
                detail["audit_base"] = base  # what the oldest kept entry follows: the cut, recorded in the chain
            audit.record_access(store, settings, "purge", command="privacy purge", detail=detail)
        if head_intact:
            audithead.reset(store)
        for backup in removed:
            backup.path.unlink(missing_ok=True)
        personal = any(counts[r] for r in RULES if r not in ("backups", "exports"))
        result = scrub(store, vacuum=personal)
    return PurgeResult(clock.to_iso(moment), False, cut, counts, len(entries), result, reached)
