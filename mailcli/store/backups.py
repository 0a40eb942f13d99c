"""Database files as a whole: consistent copies, checkpoints and compaction.

SQLite's online backup API copies a live database in one step, so the copy
is a consistent snapshot even while another process writes. Copies are
switched to a rollback journal, so each is one self-contained file with no
``-wal`` beside it. All of this is SQLite's own machinery: another engine
backs up and compacts by other means.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from . import litestream
from .db import Store

SQLITE_HEADER = b"SQLite format 3\x00"  # the first bytes of every SQLite database file


def begins_with(path: Path, magic: bytes) -> bool:
    """Does the file start with ``magic``? False when it cannot be read."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(magic)) == magic
    except OSError:
        return False


def open_read_only(path: Path) -> sqlite3.Connection:
    """A database file opened so that nothing can change it."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def open_aside(path: Path) -> sqlite3.Connection:
    """A database being prepared beside the live one: one self-contained file
    (rollback journal, no -wal beside it), deleted rows zeroed, keys checked."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def snapshot(source: sqlite3.Connection, dest: Path) -> None:
    """Copy ``source`` into the (new, empty) file ``dest`` in one step, one
    consistent snapshot, and switch the copy to a rollback journal."""
    conn = sqlite3.connect(str(dest), isolation_level=None)
    try:
        source.backup(conn)  # pages=-1: one step
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


def copy_file(source: Path, dest: Path) -> None:
    """Copy the database file ``source`` into the new file ``dest``."""
    conn = open_read_only(source)
    try:
        snapshot(conn, dest)
    finally:
        conn.close()


def copy_into(store: Store, source: Path, what: str) -> None:
    """Replace the whole content of ``store`` by the database file ``source``
    as one write transaction: every other connection sees the old content,
    then the new, never a mix."""
    src = open_read_only(source)
    try:
        # Wait for other writers here, where the wait is announced and
        # bounded; the copy then takes the write lock at once.
        store.begin(what)
        store.conn.execute("ROLLBACK")
        src.backup(store.conn)
    finally:
        src.close()


def checkpoint(conn: sqlite3.Connection) -> bool:
    """``wal_checkpoint(TRUNCATE)``: the WAL folded into the database file and
    emptied; False when a reader kept it from finishing, and at once, without
    checkpointing, when Litestream replicates the database (it makes the
    checkpoints there, see :mod:`mailcli.store.litestream`)."""
    if litestream.is_replicated(conn):
        return False
    row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return bool(row is None or row[0] == 0)


def compact(conn: sqlite3.Connection, size: int | None = None) -> None:
    """VACUUM, into pages of ``size`` bytes when given: no free page keeps old content."""
    if size is not None:
        conn.execute(f"PRAGMA page_size={int(size)}")
    conn.execute("VACUUM")


def carry_fact(path: Path, name: str, value: str) -> None:
    """Record a project fact in the database copy at ``path`` (what a backup carries of its moment)."""
    from ..clock import now_iso
    from .facts import set_fact

    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA secure_delete=ON")
        set_fact(conn, name, value, now_iso())
    finally:
        conn.close()
