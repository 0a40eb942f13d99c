"""The suppression list: who must never be mailed (again), by keyed hash.

A row names a person by the HMAC of their normalised address, never by the
address, so it outlives an erasure and stops a later import or send. Its
``scope`` is a list name, or ``*`` for all marketing; ``reason`` says why
(``unsubscribed``, ``bounced``, ``complained``, ``objected``, ``erased``).
The first record of an (address, scope) pair is the one kept: a repeated
opt-out never overwrites when or how the person first opted out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any

from .rows import dicts

ALL = "*"

Suppression = tuple[str, str, str, str | None, str]  # (hmac, scope, reason, channel, created_at)


def add_suppression(conn: sqlite3.Connection, hmac: str, scope: str, reason: str, channel: str | None,
                    created_at: str) -> bool:
    """Suppress ``hmac`` for ``scope`` unless it already is; True when this added it."""
    cursor = conn.execute(
        "INSERT INTO suppressions (hmac, scope, reason, channel, created_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (hmac, scope) DO NOTHING",
        (hmac, scope, reason, channel, created_at),
    )
    return cursor.rowcount > 0


def is_suppressed(conn: sqlite3.Connection, hmac: str, list_name: str | None = None) -> bool:
    """The one suppression lookup: is the address suppressed for all marketing,
    or (with ``list_name``) for that list?"""
    row = conn.execute(
        "SELECT 1 FROM suppressions WHERE hmac = ? AND scope IN (?, ?) LIMIT 1",
        (hmac, ALL, ALL if list_name is None else list_name),
    ).fetchone()
    return row is not None


def is_erased(conn: sqlite3.Connection, hmac: str) -> bool:
    """Was the address erased on request (its ``*`` suppression says so)?"""
    row = conn.execute(
        "SELECT 1 FROM suppressions WHERE hmac = ? AND scope = ? AND reason = 'erased'", (hmac, ALL)
    ).fetchone()
    return row is not None


def all_suppressions(conn: sqlite3.Connection) -> list[Suppression]:
    """Every suppression, for carrying them into a restored database."""
    rows = conn.execute("SELECT hmac, scope, reason, channel, created_at FROM suppressions").fetchall()
    return [(str(h), str(s), str(r), c if c is None else str(c), str(at)) for h, s, r, c, at in rows]


def suppressed_hmacs(conn: sqlite3.Connection, list_name: str, among: Collection[str] | None = None) -> set[str]:
    """The addresses suppressed for ``list_name`` or all marketing, as a set of
    hashes: the whole set once (cheaper than a lookup per recipient, and
    bounded by the suppression list), or only those ``among`` a page."""
    if among is None:
        rows = conn.execute("SELECT hmac FROM suppressions WHERE scope IN (?, ?)", (ALL, list_name))
    elif not among:
        return set()
    else:
        marks = ",".join("?" for _ in among)
        rows = conn.execute(
            f"SELECT hmac FROM suppressions WHERE scope IN (?, ?) AND hmac IN ({marks})",  # noqa: S608 - placeholders only
            (ALL, list_name, *among),
        )
    return {row[0] for row in rows}


def suppressions_of(conn: sqlite3.Connection, hmac: str) -> list[dict[str, Any]]:
    """One person's suppressions (scope, reason, channel, created_at), by scope."""
    return dicts(conn, "SELECT scope, reason, channel, created_at FROM suppressions WHERE hmac = ? ORDER BY scope",
                 (hmac,))


# Suppressions a service message honours too: an address that bounced or
# complained, or a person erased. Unsubscribes and objections are about
# marketing, which a service message is not.
SERVICE_BLOCKING = ("bounced", "complained", "erased")


def service_blocked_hmacs(conn: sqlite3.Connection, among: Collection[str] | None = None) -> set[str]:
    """The addresses a service message must not reach (bounced, complained,
    erased: any scope), as a set of HMACs; with ``among``, only those of them."""
    marks = ",".join("?" for _ in SERVICE_BLOCKING)
    sql = f"SELECT DISTINCT hmac FROM suppressions WHERE reason IN ({marks})"  # noqa: S608 - placeholders
    if among is None:
        return {row[0] for row in conn.execute(sql, SERVICE_BLOCKING)}
    found: set[str] = set()
    wanted = list(among)
    for start in range(0, len(wanted), 500):
        part = wanted[start:start + 500]
        found.update(row[0] for row in conn.execute(
            sql + f" AND hmac IN ({','.join('?' for _ in part)})", (*SERVICE_BLOCKING, *part)))
    return found


def is_service_blocked(conn: sqlite3.Connection, hmac: str) -> bool:
    """Whether a service message must not reach this address (see ``SERVICE_BLOCKING``)."""
    marks = ",".join("?" for _ in SERVICE_BLOCKING)
    return conn.execute(f"SELECT 1 FROM suppressions WHERE hmac = ? AND reason IN ({marks}) LIMIT 1",  # noqa: S608
                        (hmac, *SERVICE_BLOCKING)).fetchone() is not None
