"""Reading and verifying the audit log (``privacy audit``; ``docs/guarantees.md#audit``).

Entries are listed newest last, optionally only those about one person (by
the HMAC of their address — the log never holds the address). ``verify``
walks the whole hash chain with ``audit.verify_chain``; the chain may start
at any entry, because ``purge`` cuts the oldest entries by retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import audit
from ..config import Settings
from ..store import Store
from ..store import audit as audit_rows
from .subject import find_subject


@dataclass(frozen=True, slots=True)
class VerifyResult:
    entries: int
    first_id: int | None
    last_id: int | None
    problems: tuple[audit.ChainProblem, ...]

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


def verify(store: Store) -> VerifyResult:
    rows = list(audit.iter_rows(store))
    problems = tuple(audit.verify_chain(rows))
    return VerifyResult(
        entries=len(rows), first_id=rows[0][0] if rows else None, last_id=rows[-1][0] if rows else None,
        problems=problems,
    )
