"""What a database holds, from SQLite's own catalogue: tables, columns, schema, integrity.

Before a backup replaces the live database its schema must be exactly what
mailcli's own migrations create — the same tables, indexes, triggers and
views, with the same definitions. A trigger that empties ``suppressions`` on
every insert, a view or a table mailcli does not know, or a missing index or
trigger would change what every later command does, so any difference
refuses the backup. The reference is built in memory by running the
migrations the backup records as applied.

The privacy registry reads the tables and columns here to find any table
that holds personal data without being registered.
"""

from __future__ import annotations

import sqlite3

from .db import apply_migrations

SchemaObject = tuple[str, str]  # (type, name)


def integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """What ``PRAGMA integrity_check`` finds (empty when the database is intact)."""
    found = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    return [] if found == ["ok"] else found


def table_names(conn: sqlite3.Connection) -> list[str]:
    """The database's own tables, by name (not SQLite's internal ``sqlite_*`` ones)."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    return [str(row[0]) for row in rows]


def column_names(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in conn.execute(f'PRAGMA table_info("{table}")')}


def page_size(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA page_size").fetchone()[0])


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
