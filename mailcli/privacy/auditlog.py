"""Reading and verifying the audit log (``privacy audit``; ``docs/guarantees.md#audit``).

Entries are listed newest last, optionally only those about one person (by
the HMAC of their address — the log never holds the address). ``verify``
checks, in order:

* every entry's MAC under the secret's key (plain SHA-256 for the entries an
  older mailcli wrote, up to the one ``audit_chain`` names), so an entry
  edited — even with the chain computed again without the key — is found;
* every entry follows the one before it, so one removed from the middle is;
* the oldest entry follows nothing (the first entry ever) or an entry cut by
  a purge that recorded cutting it, so entries removed from the start are;
* the audit head (:mod:`mailcli.audithead`): the entry it names is there,
  unchanged, with as many entries up to it, so entries removed from the end,
  or all of them, are; a log with keyed entries and no head lost it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import audit
from ..audithead import Head, head_path, read_head
from ..config import Settings
from ..store import Store
from ..store import audit as audit_rows
from ..tokens import audit_key
from .subject import find_subject

if TYPE_CHECKING:
    from ..store.db import Connection


@dataclass(frozen=True, slots=True)
class ChainProblem:
    id: int | None  # the entry, or None for the log as a whole
    problem: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    entries: int
    first_id: int | None
    last_id: int | None
    problems: tuple[ChainProblem, ...]
    head: Head | None

    @property
    def ok(self) -> bool:
        return not self.problems


def list_entries(store: Store, settings: Settings, *, subject_email: str | None = None,
                 limit: int | None = None) -> list[dict[str, Any]]:
    """Audit entries (newest ``limit``, oldest first), optionally about one person."""
    subject_hmac = find_subject(store, settings, subject_email).hmac if subject_email is not None else None
    rows = audit_rows.entries(store.conn, subject_hmac=subject_hmac, limit=limit)
    for row in rows:
        row["subject"] = row.pop("subject_hmac")
    return rows


def check_chain(rows: Iterable[tuple[Any, ...]], key: bytes, legacy_until: int) -> tuple[list[ChainProblem], set[str]]:
    """The problems of a chain of rows (id, at, actor, command, action,
    subject_hmac, detail, reason, prev_hash, hash) in id order, and the bases
    the purges in it recorded cutting the log at."""
    problems: list[ChainProblem] = []
    bases: set[str] = set()
    expected_prev: str | None = None
    for row in rows:
        (row_id, at, actor, command, action, subject_hmac, detail, reason, prev_hash, digest) = tuple(row)
        content = (at, actor, command, action, subject_hmac, detail, reason)
        if expected_prev is not None and prev_hash != expected_prev:
            problems.append(ChainProblem(row_id, "does not follow the entry before it (an entry was removed or"
                                                 " changed)"))
        if row_id <= legacy_until:
            good = audit.legacy_hash(prev_hash, *content) == digest
        else:
            good = audit.entry_mac(key, prev_hash, *content) == digest
        if not good:
            problems.append(ChainProblem(row_id, "does not match its MAC (the entry was edited, or the chain was"
                                                 " computed again without the secret)"))
        elif action == "purge":
            base = _recorded_base(detail)
            if base:
                bases.add(base)
        expected_prev = digest
    return problems, bases


def _recorded_base(detail: str) -> str | None:
    try:
        value = json.loads(detail).get("audit_base")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


# Complexity: one check per way a log can be edited or cut (an entry, its start, its end, the head), each with its message.
def verify_log(conn: Connection, key: bytes, head: Head | None, *, head_missing: str | None,
               legacy: int | None = None) -> VerifyResult:
    """Check a database's log against ``head`` (see the module docstring).
    ``head_missing`` is the problem to report when there is no head and keyed
    entries exist (None: a missing head is no problem, as for a backup
    made by an older mailcli). ``legacy``: the last entry chained by plain
    SHA-256, when the database cannot say (one an older mailcli wrote)."""
    rows = list(audit_rows.chain_rows(conn))
    if legacy is None:
        legacy = audit.legacy_until(conn)
    problems, bases = check_chain(rows, key, legacy)
    if rows and rows[0][8] != audit_rows.GENESIS and rows[0][8] not in bases:
        problems.insert(0, ChainProblem(rows[0][0], "follows an entry that is gone, and no purge recorded cutting"
                                                    " it (entries were removed from the start)"))
    if head is None:
        if head_missing and any(row[0] > legacy for row in rows):
            problems.append(ChainProblem(None, head_missing))
    elif head.last_id is not None:
        found = next((row for row in rows if row[0] == head.last_id), None)
        if found is None:
            problems.append(ChainProblem(
                head.last_id, f"is gone, and the audit head says the log has {head.entries} entries up to it"
                              " (entries were removed from the end)" if rows else
                f"is gone with every other entry: the log is empty, and the audit head says it has {head.entries}"))
        elif found[9] != head.last:
            problems.append(ChainProblem(head.last_id, "is not the entry the audit head recorded"))
        elif sum(1 for row in rows if row[0] <= head.last_id) != head.entries:
            problems.append(ChainProblem(head.last_id, f"is preceded by another number of entries than the"
                                                       f" {head.entries} the audit head recorded"))
    return VerifyResult(entries=len(rows), first_id=rows[0][0] if rows else None,
                        last_id=rows[-1][0] if rows else None, problems=tuple(problems), head=head)


def verify(store: Store, settings: Settings) -> VerifyResult:
    """Check the project database's log against its head beside the database
    (a database on a server has no head file: its chain alone is checked)."""
    if not store.anchored:
        return verify_log(store.conn, audit_key(settings.secret()), None, head_missing=None)
    path = head_path(store.path)
    try:
        head = read_head(store.path)
    except ValueError:
        result = verify_log(store.conn, audit_key(settings.secret()), None, head_missing=None)
        return VerifyResult(result.entries, result.first_id, result.last_id,
                            (*result.problems, ChainProblem(None, f"the audit head {path} is damaged")), None)
    missing = (f"the audit head {path} is missing: it is written with every entry, so it was deleted or the"
               " database was moved without its ledger folder")
    return verify_log(store.conn, audit_key(settings.secret()), head, head_missing=missing)
