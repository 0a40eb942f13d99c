"""Helpers for the send tests: a project, contacts in a list, a test server config.

Contacts are written with plain SQL into the real project database (the same
columns the importer fills), so these tests do not depend on CSV parsing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mailcli import clock
from mailcli.tokens import new_uid


def add_contacts(
    db: Path,
    list_name: str,
    contacts: Iterable[Mapping[str, Any]],
    *,
    status: str = "subscribed",
    basis: str = "consent",
) -> list[int]:
    """Insert contacts (dicts with email, first_name, last_name, extra attributes)
    as members of ``list_name`` with the lawful basis ``basis``; returns their ids."""
    now = clock.now_iso()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("INSERT OR IGNORE INTO lists (name, created_at) VALUES (?, ?)", (list_name, now))
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
            cur = conn.execute(
                "INSERT INTO contacts (uid, email, email_key, first_name, last_name, attributes, status,"
                " created_at, updated_at, last_activity_at) VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)",
                (new_uid(), email, email.lower(), first, last, json.dumps(data), now, now, now),
            )
            cid = cur.lastrowid
        conn.execute(
            "INSERT OR REPLACE INTO memberships (contact_id, list_id, status, consent_source, consent_at,"
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


def deliveries(db: Path, campaign: str) -> dict[str, str]:
    """email -> delivery status for one campaign."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT c.email, d.status FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
            " JOIN campaigns k ON k.id = d.campaign_id WHERE k.name = ?",
            (campaign,),
        ).fetchall()
    finally:
        conn.close()
    return dict(rows)
