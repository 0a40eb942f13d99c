"""Staging an import's rows: the tables they land in, in file order.

The import process stages rows in TEMP tables of its connection
(:mod:`mailcli.store.imports`); an import worker stages a batch in an
in-memory database of its own and sends it serialized, as a frame the import
process loads whole. Both go through :func:`stage_rows`. Loading a frame is
SQLite's (``serialize``/``deserialize``): the functions named ``sqlite_*``.
On PostgreSQL the rows go into the TEMP tables with ``COPY``
(:func:`postgres_stage_rows`).
This module imports nothing else of the store's, so a worker loads little.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING

from ..importrows import OptOut, RowReject, StagedRow

if TYPE_CHECKING:
    from .db import Connection
    from .postgres import PgConnection

# Rows land here first, in file order, as fast as executemany can append
# (inserting straight into a table keyed by address costs a random B-tree
# write per row, several times more once it outgrows the page cache).
_RAW = """
CREATE TEMP TABLE import_raw (
    line INTEGER NOT NULL,
    email TEXT,  -- NULL: the key
    key TEXT NOT NULL,
    first_name TEXT,
    last_name TEXT,
    attributes TEXT NOT NULL,
    consent_at TEXT,
    consent_ip TEXT
)
"""
# Rejected rows wait here (on disk, not in memory) to be reported in file
# order: the workers' rows arrive interleaved.
_REJECTS = "CREATE TEMP TABLE import_rejects (line INTEGER NOT NULL, reason TEXT NOT NULL, raw TEXT NOT NULL)"
# Rows of people who left the list at the file's source.
_OPTOUTS = "CREATE TEMP TABLE import_optouts (line INTEGER NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, at TEXT)"
STAGING_TABLES = ("import_raw", "import_rejects", "import_optouts")

# The tables of a worker frame: the rows, rejects and opt-outs of one batch.
FRAME_SCHEMA = (
    "CREATE TABLE raw (line INTEGER NOT NULL, email TEXT, key TEXT NOT NULL, first_name TEXT,"
    " last_name TEXT, attributes TEXT NOT NULL, consent_at TEXT, consent_ip TEXT)",
    "CREATE TABLE rejects (line INTEGER NOT NULL, reason TEXT NOT NULL, raw TEXT NOT NULL)",
    "CREATE TABLE optouts (line INTEGER NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, at TEXT)",
)
_FROM_FRAME = (
    "INSERT INTO temp.import_raw SELECT * FROM import_feed.raw",
    "INSERT INTO temp.import_rejects SELECT * FROM import_feed.rejects",
    "INSERT INTO temp.import_optouts SELECT * FROM import_feed.optouts",
)

_MULTI = 100  # rows per INSERT: binding is per value anyway, and each statement step has a cost of its own
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?)"


def create_staging(conn: sqlite3.Connection) -> None:
    """The import's staging tables, empty (in the connection's TEMP schema)."""
    for statement in (_RAW, _REJECTS, _OPTOUTS):
        conn.execute(statement)


def stage_rows(conn: Connection, rows: list[StagedRow], rejects: Sequence[RowReject],
               optouts: Sequence[OptOut], *, tables: str = "temp.import_") -> None:
    """One batch's rows, rejects and opt-outs into the tables ``{tables}raw``,
    ``{tables}rejects`` and ``{tables}optouts`` (fixed names). The rows go a
    hundred per statement, which is cheaper than one each (benchmarks/README.md,
    "Import staging")."""
    raw = f"{tables}raw"
    whole = len(rows) - len(rows) % _MULTI
    if whole:
        many = f"INSERT INTO {raw} VALUES " + ",".join([_ROW] * _MULTI)  # noqa: S608 - fixed names, placeholders
        conn.executemany(many, (tuple(chain.from_iterable(rows[i:i + _MULTI])) for i in range(0, whole, _MULTI)))
    if whole < len(rows):
        conn.executemany(f"INSERT INTO {raw} VALUES {_ROW}", rows[whole:])  # noqa: S608 - as above
    if rejects:
        conn.executemany(f"INSERT INTO {tables}rejects VALUES (?, ?, ?)",  # noqa: S608 - as above
                         [(r.line, r.reason, json.dumps(r.raw)) for r in rejects])
    if optouts:
        conn.executemany(f"INSERT INTO {tables}optouts VALUES (?, ?, ?, ?)", optouts)  # noqa: S608 - as above


def postgres_stage_rows(conn: PgConnection, rows: list[StagedRow], rejects: Sequence[RowReject],
                        optouts: Sequence[OptOut], *, tables: str = "pg_temp.import_") -> None:
    """:func:`stage_rows` on PostgreSQL: each table's rows of the batch in one ``COPY``,
    the server's bulk path, instead of INSERTs of a hundred rows."""
    conn.copy_rows(f"COPY {tables}raw FROM STDIN", rows)
    if rejects:
        conn.copy_rows(f"COPY {tables}rejects FROM STDIN", [(r.line, r.reason, json.dumps(r.raw)) for r in rejects])
    if optouts:
        conn.copy_rows(f"COPY {tables}optouts FROM STDIN", optouts)


def sqlite_frame(rows: list[StagedRow], rejects: Sequence[RowReject], optouts: Sequence[OptOut]) -> bytes:
    """A batch as a serialized in-memory SQLite database: what an import
    worker sends (Python 3.11+, ``Connection.serialize``)."""
    memory = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for statement in FRAME_SCHEMA:
            memory.execute(statement)
        memory.execute("BEGIN")
        stage_rows(memory, rows, rejects, optouts, tables="")
        memory.execute("COMMIT")
        return memory.serialize()  # type: ignore[no-any-return, attr-defined]  # 3.11+
    finally:
        memory.close()


def sqlite_stage_frame(conn: sqlite3.Connection, frame: bytes) -> int:
    """A worker's frame into the stage; the number of rows it held."""
    conn.deserialize(frame, name="import_feed")  # type: ignore[attr-defined]
    staged = int(conn.execute(_FROM_FRAME[0]).rowcount)
    for statement in _FROM_FRAME[1:]:
        conn.execute(statement)
    return staged


def retract(conn: Connection, line: int, *, tables: str = "temp.import_") -> int:
    """Withdraw the rows, rejects and opt-outs staged from ``line`` on; the number of rows."""
    withdrawn = int(conn.execute(f"DELETE FROM {tables}raw WHERE line >= ?", (line,)).rowcount)  # noqa: S608
    conn.execute(f"DELETE FROM {tables}rejects WHERE line >= ?", (line,))  # noqa: S608 - fixed names
    conn.execute(f"DELETE FROM {tables}optouts WHERE line >= ?", (line,))  # noqa: S608 - fixed names
    return withdrawn
