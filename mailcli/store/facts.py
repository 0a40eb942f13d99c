"""Facts the database keeps about its project, about no person (``project_facts``).

A fact is a name and a text value: the keyed fingerprint of the HMAC secret
the database is used with, the state of the audit chain. Each write is one
``INSERT ... ON CONFLICT``, the same in SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlite3

SECRET_FINGERPRINT = "secret_fingerprint"
AUDIT_CHAIN = "audit_chain"  # "sha256" while entries are chained without a key
AUDIT_BASE = "audit_base"  # the MAC the oldest kept audit entry follows, once older ones were cut


def get_fact(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute("SELECT value FROM project_facts WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def set_fact(conn: sqlite3.Connection, name: str, value: str, now: str) -> None:
    conn.execute(
        "INSERT INTO project_facts (name, value, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (name, value, now),
    )


def add_fact(conn: sqlite3.Connection, name: str, value: str, now: str) -> str:
    """Record ``value`` unless the fact is already known; the value the database holds afterwards."""
    conn.execute("INSERT INTO project_facts (name, value, updated_at) VALUES (?, ?, ?)"
                 " ON CONFLICT (name) DO NOTHING", (name, value, now))
    return get_fact(conn, name) or value


def drop_fact(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM project_facts WHERE name = ?", (name,))
