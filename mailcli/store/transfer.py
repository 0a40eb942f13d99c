"""Copying every row of a project database into another engine's, and checking the copy.

``migrate-store`` moves a project between a SQLite file and a PostgreSQL
server. Both ends are migrated to the same schema first, so the same
tables with the same columns exist on both; the rows are copied as they are
— ids, times, the audit log's MACs — so the copy *is* the project: the
suppression list, the send ledger (a send resumes where it stopped) and an
audit chain that verifies under the same secret.

Tables are filled parents first (the foreign keys say which), in one
transaction of the target. Two tables are kept by triggers rather than
written by mailcli (``DERIVED``): copying the rows they count moves them
too, so they are replaced by the source's own rows at the end. Identity
columns on PostgreSQL then continue after the highest id copied.

The copy is checked before it commits: for every table, the number of
rows and a checksum of their content (independent of row order, which
the engines sort differently) must equal the source's.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

from .db import Connection, Store, is_postgres
from .schema import column_names, table_names

# Tables whose rows triggers keep (counters of other tables' rows).
DERIVED = ("delivery_counts", "optout_counter")
BATCH = 2000


@contextlib.contextmanager
def snapshot(store: Store) -> Iterator[None]:
    """Read ``store`` as of one moment for the block (a read transaction)."""
    conn = store.conn
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if is_postgres(conn) else "BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _parents(conn: Connection, tables: list[str]) -> dict[str, set[str]]:
    """The tables each of ``tables`` names in its foreign keys (from SQLite's catalogue or PostgreSQL's)."""
    if is_postgres(conn):
        rows = conn.execute(
            "SELECT c.relname, p.relname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
            " JOIN pg_class p ON p.oid = k.confrelid WHERE k.contype = 'f'"
            " AND c.relnamespace = current_schema()::regnamespace").fetchall()
        return {t: {str(p) for c, p in rows if c == t and p != t} for t in tables}
    return {t: {str(row[2]) for row in conn.execute(f'PRAGMA foreign_key_list("{t}")')} - {t} for t in tables}


def dependency_order(conn: Connection, tables: list[str]) -> list[str]:
    """``tables`` with every table after the tables its foreign keys name."""
    parents = {t: names & set(tables) for t, names in _parents(conn, tables).items()}
    ordered: list[str] = []
    while len(ordered) < len(tables):
        placed = set(ordered)
        ready = [t for t in tables if t not in placed and parents[t] <= placed]
        # A cycle would leave none ready: no order satisfies it, so the rest keep their order.
        ordered += ready or [t for t in tables if t not in placed]
    return ordered


def user_tables(conn: Connection) -> list[str]:
    """The tables of a mailcli database, without the migrations' own record and Litestream's."""
    return [t for t in table_names(conn) if t != "migrations" and not t.startswith("_litestream")]


def row_count(conn: Connection, table: str) -> int:
    return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # noqa: S608 - catalogue name


def holds_data(conn: Connection) -> list[str]:
    """The tables of ``conn`` that hold rows beyond what the migrations put there."""
    found = []
    for table in user_tables(conn):
        if table == "optout_counter":
            if conn.execute("SELECT 1 FROM optout_counter WHERE n <> 0").fetchone():
                found.append(table)
        elif row_count(conn, table):
            found.append(table)
    return found


def _rows(conn: Connection, table: str, columns: list[str]) -> Iterator[list[tuple[Any, ...]]]:
    quoted = ", ".join(f'"{c}"' for c in columns)
    cur = conn.execute(f'SELECT {quoted} FROM "{table}"')  # noqa: S608 - catalogue names
    while True:
        batch = cur.fetchmany(BATCH)
        if not batch:
            return
        yield [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in batch]


def empty_tables(conn: Connection, tables: list[str]) -> None:
    """Delete every row of ``tables``, children first."""
    for table in reversed(tables):
        conn.execute(f'DELETE FROM "{table}"')  # noqa: S608 - catalogue name


def copy_table(source: Connection, target: Connection, table: str) -> int:
    """Insert every row of ``table`` from ``source`` into ``target``; the number copied."""
    columns = sorted(column_names(source, table))
    quoted = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" for _ in columns)
    sql = f'INSERT INTO "{table}" ({quoted}) VALUES ({marks})'  # noqa: S608 - catalogue names
    copied = 0
    for batch in _rows(source, table, columns):
        target.executemany(sql, batch)
        copied += len(batch)
    return copied


def continue_identities(conn: Connection, tables: list[str]) -> None:
    """PostgreSQL: make each identity column's next value follow the highest id copied."""
    if not is_postgres(conn):
        return
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND is_identity = 'YES'").fetchall()
    for table, column in rows:
        if table in tables:
            sql = (f'SELECT setval(pg_get_serial_sequence(?, ?), coalesce(max("{column}"), 1),'  # noqa: S608 - catalogue names
                   f' max("{column}") IS NOT NULL) FROM "{table}"')
            conn.execute(sql, (f'"{table}"', column))


def checksum(conn: Connection, table: str) -> tuple[int, str]:
    """(rows, a digest of their content independent of their order)."""
    columns = sorted(column_names(conn, table))
    total = 0
    count = 0
    for batch in _rows(conn, table, columns):
        for row in batch:
            value = repr(tuple(float(v) if isinstance(v, float) else v for v in row)).encode("utf-8")
            total = (total + int.from_bytes(hashlib.sha256(value).digest(), "big")) % (1 << 256)
            count += 1
    return count, f"{total:064x}"
