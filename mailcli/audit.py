"""The audit log: who accessed or changed whose personal data, when and why.

Every command that reads or changes personal data appends one entry
(``docs/guarantees.md#audit``): UTC time, actor (OS user, or the CI job
where the environment names one), command, action, the subject as a keyed
HMAC (never the address), a detail object without personal data and an
optional ``--reason``.

Entries are chained: each entry's MAC is an HMAC-SHA256, under a key derived
from the project's secret (``tokens.audit_key``), over the previous entry's
MAC and this entry's canonical content. Editing or removing an entry breaks
the chain, and without the secret nobody can compute the chain again over
edited entries. What the chain alone cannot show — entries removed from its
end, or all of them — the audit head shows: the number of entries and the
newest MAC, kept outside the database and moved on after every append
(:mod:`mailcli.audithead`). Retention cuts the oldest entries: the purge
that does so records the MAC the oldest kept entry follows, inside the chain.

A log an older mailcli wrote was chained by plain SHA-256; those entries are
checked that way (the fact ``audit_chain`` says up to which one), and the
first keyed entry after them, which covers their last hash, anchors them.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import sqlite3
from collections.abc import Mapping
from typing import Any

from .clock import now_iso
from .config import Settings
from .errors import MailcliError
from .store import Store, facts
from .store import audit as audit_rows
from .tokens import address_hmac, audit_key


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


def _canonical(prev: str, at: str, actor: str, command: str, action: str, subject_hmac: str | None, detail: str,
               reason: str | None) -> bytes:
    return json.dumps([prev, at, actor, command, action, subject_hmac, detail, reason],
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def entry_mac(key: bytes, prev: str, *row: Any) -> str:
    """The MAC of an entry that follows ``prev``."""
    return hmac.new(key, _canonical(prev, *row), hashlib.sha256).hexdigest()


def legacy_hash(prev: str, *row: Any) -> str:
    """The plain SHA-256 an older mailcli chained its entries with."""
    return hashlib.sha256(_canonical(prev, *row)).hexdigest()


def legacy_until(conn: sqlite3.Connection) -> int:
    """The id of the last entry chained by plain SHA-256 (0: none)."""
    value = facts.get_fact(conn, facts.AUDIT_CHAIN) or ""
    kind, _, last = value.partition(":")
    return int(last) if kind == "sha256" and last.isdigit() else 0


def bind(store: Store, settings: Settings) -> None:
    """Give ``store`` the key of the audit chain, from the project's secret, and
    start the audit head of a log that has none yet (see ``audithead.start``)."""
    if store.audit_key is not None:
        return
    store.audit_key = audit_key(settings.secret())
    if store.anchored:
        from .audithead import start

        start(store)


def _key(store: Store, settings: Settings | None) -> bytes:
    if store.audit_key is None:
        if settings is None:
            raise MailcliError("The audit log needs the project's secret, and this database was opened without it",
                               hint="pass the settings to the function you called")
        bind(store, settings)
    assert store.audit_key is not None
    return store.audit_key


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
    """Append one entry (inside the caller's transaction if there is one)."""
    if subject_email is not None and subject_hmac is None:
        subject_hmac = address_hmac(settings.secret(), subject_email)
    append(store, action, subject_hmac=subject_hmac, command=command or action, detail=detail, reason=reason,
           settings=settings)


def append(
    store: Store, action: str, *, subject_hmac: str | None, command: str,
    detail: Mapping[str, Any] | None = None, reason: str | None = None, settings: Settings | None = None,
) -> None:
    """Append one entry; the store must have its key (``bind``), or ``settings`` give it."""
    key = _key(store, settings)
    detail_text = json.dumps(dict(detail or {}), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    with store.transaction() as conn:  # the time is read once the write lock is held: entries stay in time order
        _chain(store, conn, key, (now_iso(), current_actor(), command, action, subject_hmac, detail_text, reason))


def append_row(
    store: Store, *, at: str, actor: str, command: str, action: str, subject_hmac: str | None,
    detail_text: str, reason: str | None, settings: Settings,
) -> None:
    """Append an entry with given content, chained to the last one (a restore carries entries over)."""
    key = _key(store, settings)
    with store.transaction() as conn:
        _chain(store, conn, key, (at, actor, command, action, subject_hmac, detail_text, reason))


def _chain(store: Store, conn: sqlite3.Connection, key: bytes, row: audit_rows.AuditRow) -> None:
    prev = audit_rows.last_hash(conn) or facts.get_fact(conn, facts.AUDIT_BASE) or audit_rows.GENESIS
    audit_rows.insert_entry(conn, row, prev, entry_mac(key, prev, *row))
    if store.anchored:
        from .audithead import advance

        store.after_commit(lambda: advance(store))
