"""Reading and verifying the audit log (``privacy audit``; STANDARDS E25).

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
from .sqlutil import dicts, json_value
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
    where, params = "1", list[object]()
    if subject_email is not None:
        subject = find_subject(store, settings, subject_email)
        where, params = "subject_hmac = ?", [subject.hmac]
    sql = f"SELECT id, at, actor, command, action, subject_hmac, detail, reason FROM audit_log WHERE {where}"  # noqa: S608
    if limit is not None:
        sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?) ORDER BY id"  # noqa: S608
        params.append(limit)
    else:
        sql += " ORDER BY id"
    rows = dicts(store.conn, sql, params)
    for row in rows:
        row["detail"] = json_value(row["detail"])
        row["subject"] = row.pop("subject_hmac")
    return rows


def verify(store: Store) -> VerifyResult:
    rows = list(audit.iter_rows(store))
    problems = tuple(audit.verify_chain(rows))
    return VerifyResult(
        entries=len(rows), first_id=rows[0][0] if rows else None, last_id=rows[-1][0] if rows else None,
        problems=problems,
    )
