"""Lists by name and by id."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Connection


def given_name(name: str) -> str:
    """A list's name as a person or a program gives it (``--list``, the
    Python API): the spaces around it are no part of it, wherever it is given."""
    return name.strip()


def list_id(conn: Connection, name: str) -> int | None:
    """The id of the list called ``name`` (spaces around it ignored); None when there is none."""
    row = conn.execute("SELECT id FROM lists WHERE name = ?", (given_name(name),)).fetchone()
    return int(row[0]) if row else None


def same_but_case(conn: Connection, name: str) -> str | None:
    """The list whose name differs from ``name`` only in case (``news`` for
    ``News``), if there is one and none is called ``name`` itself."""
    wanted = given_name(name)
    names = list_names(conn)
    if wanted in names:
        return None
    return next((other for other in names if given_name(other).casefold() == wanted.casefold()), None)


def list_name(conn: Connection, list_id: int) -> str | None:
    """The name of list ``list_id``; None when it was deleted."""
    row = conn.execute("SELECT name FROM lists WHERE id = ?", (list_id,)).fetchone()
    return str(row[0]) if row else None


def list_names(conn: Connection) -> list[str]:
    """Every list's name, in order."""
    return [row[0] for row in conn.execute("SELECT name FROM lists ORDER BY name")]


def names_for_completion(path: Path) -> tuple[list[str], list[str]]:
    """The names of the lists and the campaigns in the database at ``path``,
    read without writing anything (no migration, no spool, no wait): what a
    shell's Tab shows. Nothing when the database is missing or busy."""
    if not path.is_file():
        return [], []
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.Error:
        return [], []
    try:
        campaigns = [row[0] for row in conn.execute("SELECT name FROM campaigns ORDER BY created_at DESC, id DESC")]
        return list_names(conn), campaigns
    except sqlite3.Error:
        return [], []
    finally:
        conn.close()
