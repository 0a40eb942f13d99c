"""The audit log's rows: appended in a chain, read in order, cut by age.

The chain itself (what is MACed, and checking it) is :mod:`mailcli.audit`;
this module only reads and writes the ``audit_log`` table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .rows import dicts, json_value

GENESIS = "0" * 64  # the "previous MAC" of the first entry ever

AuditRow = tuple[str, str, str, str, str | None, str, str | None]  # at, actor, command, action, subject, detail, reason

_CHAIN_COLUMNS = "id, at, actor, command, action, subject_hmac, detail, reason, prev_hash, hash"


@dataclass(frozen=True, slots=True)
class ChainState:
    """Where the chain stands: what the audit head records."""

    entries: int
    last_id: int | None
    last: str  # the newest entry's MAC (the base when there is none)
    base: str  # what the oldest entry follows: GENESIS, or the MAC of the last entry cut


def last_hash(conn: sqlite3.Connection) -> str | None:
    """The MAC of the newest entry, or None when the log is empty."""
    row = conn.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    return str(row[0]) if row else None


def hash_of(conn: sqlite3.Connection, entry_id: int) -> str | None:
    row = conn.execute("SELECT hash FROM audit_log WHERE id = ?", (entry_id,)).fetchone()
    return str(row[0]) if row else None


def entries_up_to(conn: sqlite3.Connection, entry_id: int) -> int:
    return int(conn.execute("SELECT count(*) FROM audit_log WHERE id <= ?", (entry_id,)).fetchone()[0])


def has_entries_after(conn: sqlite3.Connection, entry_id: int) -> bool:
    return conn.execute("SELECT 1 FROM audit_log WHERE id > ? LIMIT 1", (entry_id,)).fetchone() is not None


def chain_state(conn: sqlite3.Connection, base: str) -> ChainState:
    """The state of the chain; ``base`` is what an empty log continues from."""
    count, last_id = conn.execute("SELECT count(*), max(id) FROM audit_log").fetchone()
    if not count:
        return ChainState(0, None, base, base)
    first = conn.execute("SELECT prev_hash FROM audit_log ORDER BY id LIMIT 1").fetchone()[0]
    return ChainState(int(count), int(last_id), str(hash_of(conn, int(last_id))), str(first))


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


# Retention cuts the log from its start only, so what is left is still one
# chain: every entry before the oldest one that is not past the cut-off (a
# restore appends carried entries with their own, older times, so "older
# than the cut-off" alone could take entries out of the middle).
_CUT = "id < COALESCE((SELECT min(id) FROM audit_log WHERE at >= ?), (SELECT max(id) + 1 FROM audit_log))"


def count_cut(conn: sqlite3.Connection, cutoff: str) -> int:
    """How many entries a cut at ``cutoff`` removes."""
    return int(conn.execute(f"SELECT count(*) FROM audit_log WHERE {_CUT}", (cutoff,)).fetchone()[0])  # noqa: S608 - fixed fragment


def cut_before(conn: sqlite3.Connection, cutoff: str) -> tuple[int, str | None]:
    """Cut the entries before the first one at or after ``cutoff``: (how many,
    the MAC of the newest one cut, which the oldest kept entry follows)."""
    row = conn.execute(f"SELECT max(id) FROM audit_log WHERE {_CUT}", (cutoff,)).fetchone()  # noqa: S608 - fixed fragment
    if row is None or row[0] is None:
        return 0, None
    base = hash_of(conn, int(row[0]))
    removed = conn.execute("DELETE FROM audit_log WHERE id <= ?", (int(row[0]),)).rowcount
    return removed, base


def min_id(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT min(id) FROM audit_log").fetchone()
    return None if row is None or row[0] is None else int(row[0])
