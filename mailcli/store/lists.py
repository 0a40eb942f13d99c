"""Lists by name and by id."""

from __future__ import annotations

import sqlite3


def list_id(conn: sqlite3.Connection, name: str) -> int | None:
    """The id of the list called ``name``; None when there is none."""
    row = conn.execute("SELECT id FROM lists WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else None


def list_name(conn: sqlite3.Connection, list_id: int) -> str | None:
    """The name of list ``list_id``; None when it was deleted."""
    row = conn.execute("SELECT name FROM lists WHERE id = ?", (list_id,)).fetchone()
    return str(row[0]) if row else None


def list_names(conn: sqlite3.Connection) -> list[str]:
    """Every list's name, in order."""
    return [row[0] for row in conn.execute("SELECT name FROM lists ORDER BY name")]

