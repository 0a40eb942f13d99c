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
from typing import TYPE_CHECKING

from . import litestream
from .db import apply_migrations, is_postgres

if TYPE_CHECKING:
    from .db import Connection

SchemaObject = tuple[str, str]  # (type, name)


def integrity_problems(conn: Connection) -> list[str]:
    """What ``PRAGMA integrity_check`` finds (empty when the database is intact)."""
    found = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    return [] if found == ["ok"] else found


def table_names(conn: Connection) -> list[str]:
    """The database's own tables, by name (not SQLite's internal ``sqlite_*`` ones)."""
    if is_postgres(conn):
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                            " AND table_type = 'BASE TABLE' ORDER BY table_name")
        return [str(row[0]) for row in rows]
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    return [str(row[0]) for row in rows]


def column_names(conn: Connection, table: str) -> set[str]:
    if is_postgres(conn):
        return {str(row[0]) for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ?", (table,))}
    return {str(row[1]) for row in conn.execute(f'PRAGMA table_info("{table}")')}


def page_size(conn: Connection) -> int:
    return int(conn.execute("PRAGMA page_size").fetchone()[0])


def applied_migrations(conn: Connection) -> set[str]:
    """Names of the migrations a database records as applied (none without the table)."""
    if "migrations" not in table_names(conn):
        return set()
    return {str(row[0]) for row in conn.execute("SELECT name FROM migrations")}


def schema_objects(conn: Connection) -> dict[SchemaObject, tuple[str, str | None]]:
    """Every table, index, trigger and view: (type, name) -> (table, SQL).

    Litestream's two tables, exactly as Litestream defines them, belong to
    the replication, not to the schema, and are left out too. SQLite's own objects (``sqlite_autoindex_*``, ``sqlite_sequence``,
    ``sqlite_stat*``) follow from the others and are left out.
    """
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM main.sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
    return {(str(t), str(n)): (str(tbl), sql) for t, n, tbl, sql in rows
            if not litestream.is_litestream_object(str(t), str(n), sql)}


def reference_schema(applied: set[str]) -> dict[SchemaObject, tuple[str, str | None]]:
    """The schema mailcli's migrations create when exactly ``applied`` have run."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        apply_migrations(conn, only=applied)
        return schema_objects(conn)
    finally:
        conn.close()


def schema_differences(conn: Connection) -> list[str]:
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


# Complexity: one query per table over every text column, then a whole-value match in Python.
def texts_containing(conn: sqlite3.Connection, needles: list[str]) -> list[tuple[str, str]]:
    """Every text value in the database — in any column of any table, or in
    the schema itself — that contains one of ``needles`` (their ASCII letters
    in lower case; matched ASCII case-insensitively, as SQLite's ``lower``
    does), as (table, value): what the database still holds that a byte
    search of its files will find. A full scan of every table, for the rare
    check after an erasure."""
    if not needles:
        return []
    patterns = ["%" + n.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for n in needles]
    found: list[tuple[str, str]] = []
    sources = [(t, sorted(column_names(conn, t))) for t in table_names(conn)]
    sources.append(("sqlite_master", ["name", "sql"]))
    for table, columns in sources:
        if not columns:
            continue
        quoted = [f'"{c}"' for c in columns]
        where = " OR ".join(f"lower(CAST({q} AS TEXT)) LIKE ? ESCAPE '\\'" for q in quoted for _ in patterns)
        params = [p for _ in quoted for p in patterns]
        sql = f'SELECT {", ".join(quoted)} FROM "{table}" WHERE {where}'  # noqa: S608 - catalogue names
        for row in conn.execute(sql, params):
            for value in row:
                if isinstance(value, str) and any(n in ascii_lower(value) for n in needles):
                    found.append((table, value))
    return found


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """``text`` with its ASCII letters in lower case, and nothing else changed (as SQLite's ``lower``)."""
    return text.translate(_ASCII_LOWER)
