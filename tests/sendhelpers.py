"""Helpers for the send tests: a project, contacts in a list, a test server config.

Contacts are written with plain SQL into the real project database (the same
columns the importer fills), so these tests do not depend on CSV parsing. The
database is a SQLite file, or a PostgreSQL server's ``DatabaseURL``
(``Engine.location``): the same SQL runs on both.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mailcli import clock
from mailcli.store.url import DatabaseURL
from mailcli.tokens import new_uid


def _connect(db: Path | DatabaseURL) -> Any:
    """An autocommit connection to the database, taking ``?`` placeholders on either engine."""
    if isinstance(db, DatabaseURL):
        from mailcli.store import open_store

        return open_store(db).conn  # migrated first, as a new project's database is by its first command
    return sqlite3.connect(db, isolation_level=None)


def add_contacts(
    db: Path | DatabaseURL,
    list_name: str,
    contacts: Iterable[Mapping[str, Any]],
    *,
    status: str = "subscribed",
    basis: str = "consent",
) -> list[int]:
    """Insert contacts (dicts with email, first_name, last_name, extra attributes)
    as members of ``list_name`` with the lawful basis ``basis``; returns their ids."""
    now = clock.now_iso()
    conn = _connect(db)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO lists (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (list_name, now))
    list_id = conn.execute("SELECT id FROM lists WHERE name = ?", (list_name,)).fetchone()[0]
    ids = []
    for c in contacts:
        data = dict(c)
        email = data.pop("email")
        first = data.pop("first_name", "")
        last = data.pop("last_name", "")
        row = conn.execute("SELECT id FROM contacts WHERE email_key = ?", (email.lower(),)).fetchone()
        if row:
            cid = row[0]
        else:
            cid = conn.execute(
                "INSERT INTO contacts (uid, email, email_key, first_name, last_name, attributes, status,"
                " created_at, updated_at, last_activity_at) VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)"
                " RETURNING id",
                (new_uid(), email, email.lower(), first, last, json.dumps(data), now, now, now),
            ).fetchone()[0]
        # A membership written again starts afresh (SQLite's INSERT OR REPLACE, in words both engines know).
        conn.execute("DELETE FROM memberships WHERE contact_id = ? AND list_id = ?", (cid, list_id))
        conn.execute(
            "INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_at,"
            " created_at, updated_at, basis) VALUES (?, ?, ?, 'test', ?, ?, ?, ?)",
            (cid, list_id, status, now, now, now, basis),
        )
        ids.append(cid)
    conn.execute("COMMIT")
    conn.close()
    return ids


def people(n: int, domain: str = "example.net", start: int = 0) -> list[dict[str, str]]:
    return [
        {"email": f"person{i}@{domain}", "first_name": f"First{i}", "last_name": f"Last{i}", "city": f"City{i}"}
        for i in range(start, start + n)
    ]


def deliveries(db: Path | DatabaseURL, campaign: str) -> dict[str, str]:
    """email -> delivery status for one campaign."""
    conn = _connect(db)
    try:
        rows = conn.execute(
            "SELECT c.email, d.status FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
            " JOIN campaigns k ON k.id = d.campaign_id WHERE k.name = ?",
            (campaign,),
        ).fetchall()
    finally:
        conn.close()
    return dict(rows)
