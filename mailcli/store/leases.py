"""Leases: several senders working one campaign on a PostgreSQL server.

Each ``send`` run takes a number of its own (``begin_run``) and holds a
session advisory lock on it for as long as it runs. It claims batches of the
campaign's pending deliveries with ``SELECT ... FOR UPDATE SKIP LOCKED``,
writing its lease on each row: its number and an expiry ``seconds`` ahead
by the server's clock (``claim``). It renews the expiry of every row it
still holds while it works (``renew``) and lets go of what it did not finish
when it ends (``release``).

A lease is live while its expiry is ahead and its run's advisory lock is
held. A run killed on a machine that stays up loses its lock at once (the
server sees its connections close); a machine that vanishes, or a process
that stops answering, loses its leases when they expire. Then others claim
its pending deliveries. Its ``sending`` ones — the final dot may have gone
out — are never claimed: they become ``uncertain`` (``recover_sending``), as
after a crash of the only sender.

A delivery is transmitted only by the run whose ``sending`` mark took it
from a sendable status (``store.deliveries.mark_sending``), so even a run
whose lease expired under it while it was stopped cannot send a message
that another run took over.

On SQLite one send per campaign runs at a time (a lock file and a claim),
and none of this is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .db import seconds_from_env
from .deliveries import LEASE_NOW

if TYPE_CHECKING:
    from .db import Connection

LEASE_ENV = "MAILCLI_SEND_LEASE"
DEFAULT_LEASE = 60.0  # seconds

# The first key of the two-part advisory locks that mark runs alive (the
# second is the run's number); the other locks use one 64-bit key, a space
# of their own.
RUN_LOCK_SPACE = 0x6D6C7365

_NOW = LEASE_NOW
# The numbers of the runs alive now, in this database.
_ALIVE = ("SELECT l.objid::bigint FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"  # noqa: S608 - fixed
          f" AND l.objsubid = 2 AND l.classid::bigint = {RUN_LOCK_SPACE}"
          " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")
_LIVE = f"(d.lease_owner IS NOT NULL AND d.lease_until >= {_NOW} AND d.lease_owner IN ({_ALIVE}))"
# The row ``d`` is held by a live lease (for other modules' queries about the campaign).
LIVE_SQL = _LIVE
_DEAD = f"(d.lease_owner IS NULL OR d.lease_until < {_NOW} OR d.lease_owner NOT IN ({_ALIVE}))"
# Every status a lease can matter for; the index ``deliveries_unfinished`` holds exactly these rows.
_UNFINISHED = "('pending', 'deferred', 'sending', 'uncertain')"
_CLAIMABLE = {"pending", "deferred", "uncertain"}


def lease_seconds() -> float:
    """How long a claim lasts without renewal (``MAILCLI_SEND_LEASE``, seconds)."""
    return seconds_from_env(LEASE_ENV, DEFAULT_LEASE, lowest=1)


def begin_run(conn: Connection) -> int:
    """A number for this run, held alive by a session advisory lock on ``conn``."""
    owner = int(conn.execute("SELECT nextval('send_lease_owners')").fetchone()[0])
    conn.execute("SELECT pg_advisory_lock(?, ?)", (RUN_LOCK_SPACE, owner))
    return owner


def end_run(conn: Connection, owner: int) -> None:
    """The run is over: its leases are dead from now on."""
    conn.execute("SELECT pg_advisory_unlock(?, ?)", (RUN_LOCK_SPACE, owner))


def bound_idle_transactions(conn: Connection, seconds: float) -> None:
    """The server ends this connection's session should it ever sit inside a
    transaction for ``seconds`` waiting for its client (a process stopped or
    a machine gone mid-transaction): the locks it holds would stop every
    other sender of the campaign. A ledger's transactions take milliseconds."""
    conn.execute(f"SET idle_in_transaction_session_timeout = {max(1000, int(seconds * 1000))}")


def lock_campaign(conn: Connection, campaign_uid: str) -> None:
    """Until the transaction ends, no other sender of the campaign writes its
    ledger or settles it: ledger writes never deadlock each other, and the
    campaign is completed once."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"campaign:{campaign_uid}",))


def _statuses(statuses: Sequence[str]) -> str:
    # Written out, not bound, so the planner sees that the index of unfinished rows covers them.
    unknown = set(statuses) - _CLAIMABLE
    if unknown or not statuses:
        raise ValueError(f"not a status a run claims: {sorted(unknown)}")
    return ", ".join(f"'{s}'" for s in statuses)


def claim(conn: Connection, campaign_id: int, owner: int, statuses: Sequence[str], limit: int,
          seconds: float) -> list[int]:
    """Claim up to ``limit`` of the campaign's deliveries in ``statuses``
    that nobody alive holds (nor this run before: what it tried once waits
    for a later run), in delivery order; their ids."""
    rows = conn.execute(
        f"UPDATE deliveries SET lease_owner = ?, lease_until = {_NOW} + ? WHERE id IN ("  # noqa: S608 - fixed text
        f" SELECT d.id FROM deliveries d WHERE d.campaign_id = ? AND d.status IN ({_statuses(statuses)})"
        f" AND d.lease_owner IS DISTINCT FROM ? AND {_DEAD} ORDER BY d.id LIMIT ? FOR UPDATE SKIP LOCKED)"
        " RETURNING id",
        (owner, seconds, campaign_id, owner, limit)).fetchall()
    return sorted(int(r[0]) for r in rows)


def renew(conn: Connection, campaign_id: int, owner: int, seconds: float) -> int:
    """Move the expiry of every unfinished delivery this run holds ``seconds`` ahead; how many."""
    return int(conn.execute(
        f"UPDATE deliveries SET lease_until = {_NOW} + ? WHERE campaign_id = ? AND lease_owner = ?"  # noqa: S608
        f" AND status IN {_UNFINISHED}", (seconds, campaign_id, owner)).rowcount)


def release(conn: Connection, campaign_id: int, owner: int) -> int:
    """Let go of every unfinished delivery this run holds; how many.

    A ``sending`` row among them lost its sender's reply (its ledger stopped):
    without an owner it becomes uncertain at the next ``recover_sending``."""
    return int(conn.execute(
        "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE campaign_id = ? AND lease_owner = ?"  # noqa: S608
        f" AND status IN {_UNFINISHED}", (campaign_id, owner)).rowcount)


def held_by_others(conn: Connection, campaign_id: int, owner: int) -> int:
    """Pending deliveries of the campaign that another live run holds: they
    are being sent, or are free to claim the moment that run ends."""
    return int(conn.execute(
        f"SELECT count(*) FROM deliveries d WHERE d.campaign_id = ? AND d.status = 'pending'"  # noqa: S608
        f" AND d.lease_owner != ? AND {_LIVE}", (campaign_id, owner)).fetchone()[0])


def recover_sending(conn: Connection, campaign_id: int, reason: str, now: str) -> int:
    """``sending`` rows whose run is gone (or whose lease expired) become ``uncertain``; how many."""
    return int(conn.execute(
        "UPDATE deliveries d SET status = 'uncertain', updated_at = ?, last_reply = ?"  # noqa: S608
        f" WHERE d.campaign_id = ? AND d.status = 'sending' AND {_DEAD}",
        (now, reason, campaign_id)).rowcount)
