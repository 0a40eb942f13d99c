"""Claims: which process runs a job that must never run twice at once.

The lock file beside the database (``mailcli.locks``) is the first line of
defence; this table is the second, inside the database itself, so a lost
or deleted lock file cannot let a second send of one campaign start. A claim
is taken in the transaction that starts the run and names its holder; the
holder refreshes ``heartbeat_at`` while it runs and deletes the claim when it
ends. A claim is stale — and may be taken over — when its holder's process
is gone (same host) or its heartbeat is older than ``stale_after`` seconds
(a process killed on another machine, or a pid reused since).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
from datetime import timedelta
from typing import TYPE_CHECKING

from .. import clock
from ..locks import Holder
from .db import is_postgres

if TYPE_CHECKING:
    from .db import Connection

HEARTBEAT_EVERY = 10.0  # seconds
STALE_AFTER = 60.0  # seconds without a heartbeat


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (EPERM): it exists
        return True
    return True


def take_claim(conn: Connection, name: str, owner: str, holder: Holder, *,
               stale_after: float = STALE_AFTER) -> Holder | None:
    """Claim ``name`` for ``owner``; returns the other holder if it is taken.

    Call inside a write transaction (``BEGIN IMMEDIATE``), so two processes
    cannot both find it free; on PostgreSQL, where a transaction does not
    lock the database, the row is read under an advisory lock on its name,
    held to the commit.
    """
    if is_postgres(conn):
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"claim:{name}",))
    row = conn.execute("SELECT owner, pid, host, command, since, heartbeat_at FROM claims WHERE name = ?",
                       (name,)).fetchone()
    if row is not None and row[0] != owner:
        other = Holder(pid=int(row[1]), host=str(row[2]), command=str(row[3]), since=str(row[4]))
        cutoff = clock.to_iso(clock.now() - timedelta(seconds=stale_after))
        gone = other.host == socket.gethostname() and not _alive(other.pid)
        if not gone and str(row[5]) >= cutoff:
            return other
    now = clock.now_iso()
    conn.execute(
        "INSERT INTO claims (name, owner, pid, host, command, since, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, pid = excluded.pid, host = excluded.host,"
        " command = excluded.command, since = excluded.since, heartbeat_at = excluded.heartbeat_at",
        (name, owner, holder.pid, holder.host, holder.command, holder.since, now),
    )
    return None


def refresh_claim(conn: Connection, name: str, owner: str) -> bool:
    """The holder is alive: False when the claim is no longer its own."""
    cursor = conn.execute("UPDATE claims SET heartbeat_at = ? WHERE name = ? AND owner = ?",
                          (clock.now_iso(), name, owner))
    return cursor.rowcount > 0


def release_claim(conn: Connection, name: str, owner: str) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("DELETE FROM claims WHERE name = ? AND owner = ?", (name, owner))
