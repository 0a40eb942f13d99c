"""The audit log's rows: appended in a hash chain, read in order, cut by age.

The chain itself (what is hashed, and checking it) is :mod:`mailcli.audit`;
this module only reads and writes the ``audit_log`` table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from .rows import dicts, json_value

GENESIS = "0" * 64  # the "previous hash" of the first entry

AuditRow = tuple[str, str, str, str, str | None, str, str | None]  # at, actor, command, action, subject, detail, reason

_CHAIN_COLUMNS = "id, at, actor, command, action, subject_hmac, detail, reason, prev_hash, hash"


def last_hash(conn: sqlite3.Connection) -> str:
    """The hash of the newest entry, or ``GENESIS`` when the log is empty."""
    row = conn.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    return str(row[0]) if row else GENESIS


def insert_entry(conn: sqlite3.Connection, row: AuditRow, prev_hash: str, digest: str) -> None:
    conn.execute(
        "INSERT INTO audit_log (at, actor, command, action, subject_hmac, detail, reason, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*row, prev_hash, digest),
    )


def chain_rows(conn: sqlite3.Connection) -> Iterable[tuple[Any, ...]]:
    """Every entry in order, as (id, at, actor, command, action, subject_hmac,
    detail, reason, prev_hash, hash): what checking the chain needs."""
    return conn.execute(f"SELECT {_CHAIN_COLUMNS} FROM audit_log ORDER BY id")  # noqa: S608 - fixed columns


def entries(conn: sqlite3.Connection, *, subject_hmac: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Entries oldest first (the newest ``limit`` when given), all or those about
    one person, with the detail decoded."""
    params: list[object] = []
    where = "1 = 1"
    if subject_hmac is not None:
        where = "subject_hmac = ?"
        params.append(subject_hmac)
    sql = f"SELECT id, at, actor, command, action, subject_hmac, detail, reason FROM audit_log WHERE {where}"  # noqa: S608 - fixed fragments
    if limit is not None:
        sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?) AS newest ORDER BY id"  # noqa: S608 - fixed fragments
        params.append(limit)
    else:
        sql += " ORDER BY id"
    rows = dicts(conn, sql, params)
    for row in rows:
        row["detail"] = json_value(row["detail"])
    return rows


def rows_with_hashes(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """The log in order as (at, actor, command, action, subject_hmac, detail,
    reason, hash), for carrying entries into a restored database."""
    return conn.execute(
        "SELECT at, actor, command, action, subject_hmac, detail, reason, hash FROM audit_log ORDER BY id"
    ).fetchall()


def hashes(conn: sqlite3.Connection) -> set[str]:
    return {str(row[0]) for row in conn.execute("SELECT hash FROM audit_log")}


def count_before(conn: sqlite3.Connection, cutoff: str) -> int:
    return int(conn.execute("SELECT count(*) FROM audit_log WHERE at < ?", (cutoff,)).fetchone()[0])


def delete_before(conn: sqlite3.Connection, cutoff: str) -> int:
    """Cut the entries older than ``cutoff``: the chain then starts at the oldest one kept."""
    return conn.execute("DELETE FROM audit_log WHERE at < ?", (cutoff,)).rowcount
