"""What Litestream keeps in the database it replicates, and what that means for checkpoints.

Litestream adds two tables of its own to a database it replicates
(``_litestream_seq``, one row it writes to force a WAL frame, and
``_litestream_lock``, which is always empty: inserting into it in a
transaction it rolls back takes the write lock). Their presence is how
mailcli knows that Litestream manages the database.

A database Litestream manages is Litestream's to checkpoint: it keeps a read
transaction open all the time, so that no other process copies WAL frames
into the database before it has replicated them, and checkpoints itself
(PASSIVE, every minute and at 1,000 pages; TRUNCATE only when the WAL passes
its emergency size). A TRUNCATE checkpoint of mailcli's would wait for that
read transaction — for the whole busy timeout — while holding the write lock,
so every other writer (``serve`` recording an opt-out, Litestream itself)
would stand still; and a checkpoint Litestream did not make costs it a new
snapshot. So on such a database every connection turns SQLite's automatic
checkpoints off (Litestream's own advice, as it does on its connection) and
:func:`mailcli.store.backups.checkpoint` makes none.
"""

from __future__ import annotations

import sqlite3

# The tables as Litestream creates them (sqlite_master keeps the statement
# without IF NOT EXISTS).
TABLES = {
    "_litestream_seq": "CREATE TABLE _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER)",
    "_litestream_lock": "CREATE TABLE _litestream_lock (id INTEGER)",
}


def is_replicated(conn: sqlite3.Connection) -> bool:
    """True when Litestream has taken this database in hand (its lock table exists)."""
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_litestream_lock'").fetchone()
    return row is not None


def configure_connection(conn: sqlite3.Connection) -> None:
    """On a database Litestream replicates, no automatic checkpoints on this connection: Litestream makes them."""
    if is_replicated(conn):
        conn.execute("PRAGMA wal_autocheckpoint=0")


def is_litestream_object(kind: str, name: str, sql: str | None) -> bool:
    """True for exactly Litestream's own tables, as Litestream defines them."""
    return kind == "table" and TABLES.get(name) == sql


def match_tables(conn: sqlite3.Connection, present: bool) -> None:
    """Give a database Litestream's tables (empty), or take them away.

    A restore copies the prepared database over the live one page for page:
    while Litestream replicates the live one, the copy must keep its tables
    (Litestream's next checkpoint writes to ``_litestream_lock``); when it
    does not, a backup taken while it did must not bring them back.
    """
    for name, create in TABLES.items():
        if present:
            conn.execute(create.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1))
        else:
            conn.execute(f"DROP TABLE IF EXISTS {name}")


__all__ = ["TABLES", "configure_connection", "is_litestream_object", "is_replicated", "match_tables"]
