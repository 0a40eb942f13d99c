"""The audit log: who accessed or changed whose personal data, when and why.

Every command that reads or changes personal data appends one row
(``docs/guarantees.md#audit``): UTC time, actor (OS user, or the CI job
where the environment names one), command, action, the subject as a keyed
HMAC (never the address), a detail object without personal data and an
optional ``--reason``.

Rows are hash-chained: each row's ``hash`` is SHA-256 over the previous row's
hash and this row's canonical content, so editing or deleting a row in the
middle breaks the chain and ``verify_chain`` finds it. Purge may cut the
oldest rows (retention), which moves the start of the chain but keeps it whole.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .clock import now_iso
from .config import Settings
from .store import Store
from .store import audit as audit_rows
from .tokens import address_hmac


def current_actor() -> str:
    """The OS user, or the CI job when the environment identifies one."""
    env = os.environ
    if env.get("GITHUB_ACTIONS"):
        return f"ci:github:{env.get('GITHUB_REPOSITORY', '?')}/{env.get('GITHUB_WORKFLOW', '?')}#{env.get('GITHUB_RUN_ID', '?')}"
    if env.get("GITLAB_CI"):
        return f"ci:gitlab:{env.get('CI_PROJECT_PATH', '?')}#{env.get('CI_JOB_ID', '?')}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"ci:{user}" if env.get("CI") else user


def _row_hash(prev_hash: str, at: str, actor: str, command: str, action: str,
              subject_hmac: str | None, detail: str, reason: str | None) -> str:
    canonical = json.dumps(
        [prev_hash, at, actor, command, action, subject_hmac, detail, reason],
        ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def record_access(
    store: Store,
    settings: Settings,
    action: str,
    *,
    subject_email: str | None = None,
    subject_hmac: str | None = None,
    command: str | None = None,
    detail: Mapping[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    """Append one audit row (inside the caller's transaction if there is one)."""
    if subject_email is not None and subject_hmac is None:
        subject_hmac = address_hmac(settings.secret(), subject_email)
    append(store, action, subject_hmac=subject_hmac, command=command or action, detail=detail, reason=reason)


def append(
    store: Store, action: str, *, subject_hmac: str | None, command: str,
    detail: Mapping[str, Any] | None = None, reason: str | None = None,
) -> None:
    detail_text = json.dumps(dict(detail or {}), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    with store.transaction() as conn:  # the time is read once the write lock is held: entries stay in time order
        _chain(conn, (now_iso(), current_actor(), command, action, subject_hmac, detail_text, reason))


def append_row(
    store: Store, *, at: str, actor: str, command: str, action: str, subject_hmac: str | None,
    detail_text: str, reason: str | None,
) -> None:
    """Append a row with given content, chained to the last row (a restore carries entries over)."""
    with store.transaction() as conn:
        _chain(conn, (at, actor, command, action, subject_hmac, detail_text, reason))


def _chain(conn: sqlite3.Connection, row: audit_rows.AuditRow) -> None:
    prev = audit_rows.last_hash(conn)
    audit_rows.insert_entry(conn, row, prev, _row_hash(prev, *row))


@dataclass(frozen=True, slots=True)
class ChainProblem:
    id: int
    problem: str


def verify_chain(rows: Iterable[sqlite3.Row | tuple[Any, ...]]) -> list[ChainProblem]:
    """Check rows (id, at, actor, command, action, subject_hmac, detail, reason, prev_hash, hash) in id order."""
    problems: list[ChainProblem] = []
    expected_prev: str | None = None
    for row in rows:
        (row_id, at, actor, command, action, subject_hmac, detail, reason, prev_hash, digest) = tuple(row)
        if expected_prev is not None and prev_hash != expected_prev:
            problems.append(ChainProblem(row_id, "does not follow the previous entry (an entry was removed or changed)"))
        if _row_hash(prev_hash, at, actor, command, action, subject_hmac, detail, reason) != digest:
            problems.append(ChainProblem(row_id, "content does not match its hash (the entry was edited)"))
        expected_prev = digest
    return problems


def iter_rows(store: Store) -> Iterable[tuple[Any, ...]]:
    """Every row in order, as ``verify_chain`` takes them."""
    return audit_rows.chain_rows(store.conn)
