"""The SQL behind ``backup restore``: what a backup may contain, and re-applying later facts.

A backup is a whole database from elsewhere; before it replaces the live one
its schema must be exactly what mailcli's own migrations create — the same
tables, indexes, triggers and views, with the same definitions. A trigger that
empties ``suppressions`` on every insert, a view or a table mailcli does not
know, or a missing index or trigger would change what every later command
does, so any difference refuses the backup. The reference is built in memory
by running the migrations the backup records as applied.

The rest re-applies, to the restored database, what happened after the
backup was taken: suppressions, opt-outs and restrictions (from the replaced
database and the opt-out ledger).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .db import apply_migrations

SchemaObject = tuple[str, str]  # (type, name)


def integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """What ``PRAGMA integrity_check`` finds (empty when the database is intact)."""
    found = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    return [] if found == ["ok"] else found


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {str(row[0]) for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def page_size(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA page_size").fetchone()[0])


def open_aside(path: Path) -> sqlite3.Connection:
    """A database being prepared beside the live one: one self-contained file
    (rollback journal, no -wal beside it), deleted rows zeroed, keys checked."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def compact(conn: sqlite3.Connection, size: int | None = None) -> None:
    """VACUUM, into pages of ``size`` bytes when given: no free page keeps old content."""
    if size is not None:
        conn.execute(f"PRAGMA page_size={int(size)}")
    conn.execute("VACUUM")


def applied_migrations(conn: sqlite3.Connection) -> set[str]:
    """Names of the migrations a database records as applied (none without the table)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'").fetchone() is None:
        return set()
    return {str(row[0]) for row in conn.execute("SELECT name FROM migrations")}


def schema_objects(conn: sqlite3.Connection) -> dict[SchemaObject, tuple[str, str | None]]:
    """Every table, index, trigger and view: (type, name) -> (table, SQL).

    SQLite's own objects (``sqlite_autoindex_*``, ``sqlite_sequence``,
    ``sqlite_stat*``) follow from the others and are left out.
    """
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM main.sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
    return {(str(t), str(n)): (str(tbl), sql) for t, n, tbl, sql in rows}


def reference_schema(applied: set[str]) -> dict[SchemaObject, tuple[str, str | None]]:
    """The schema mailcli's migrations create when exactly ``applied`` have run."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        apply_migrations(conn, only=applied)
        return schema_objects(conn)
    finally:
        conn.close()


def schema_differences(conn: sqlite3.Connection) -> list[str]:
    """How a database's schema differs from what its migrations create (empty when it does not)."""
    found = schema_objects(conn)
    expected = reference_schema(applied_migrations(conn))
    problems = []
    for key in sorted(found.keys() - expected.keys()):
        problems.append(f"a {key[0]} mailcli does not create: {key[1]!r}")
    for key in sorted(expected.keys() - found.keys()):
        problems.append(f"no {key[0]} {key[1]!r}")
    for key in sorted(found.keys() & expected.keys()):
        if found[key] != expected[key]:
            problems.append(f"a {key[0]} {key[1]!r} defined differently from mailcli's")
    return problems
