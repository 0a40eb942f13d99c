"""What ``doctor`` says about a PostgreSQL server's WAL, next to ``[retention]``.

Rows mailcli deletes (an erasure, a purge) leave the tables at once, but
their bytes stay in the server's write-ahead log until it is recycled: kept
longer by ``wal_keep_size``, by a replication slot that has not consumed it
(without end when ``max_slot_wal_keep_size`` is -1), and copied for good by
WAL archiving (``archive_mode``) for point-in-time recovery. mailcli cannot
see or shorten any of that, so doctor shows it beside ``[retention] backups``
— how long the project already accepts erased people in its backups — and
warns where the server may keep them longer. It only reads the settings.
"""

from __future__ import annotations

from typing import Any

from ..errors import MailcliError
from .check import Check


def _mb(size: int) -> str:
    return f"{size / 1024:.1f} GB" if size >= 1024 else f"{size} MB"


def _span(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


# Complexity: one verdict per thing that keeps WAL (archiving, an idle slot, wal_keep_size), each with its fix.
def check_server_wal(settings: Any) -> list[Check]:
    """The WAL settings of the project's server (nothing for a SQLite project)."""
    url = settings.project.database_url
    if url is None:
        return []
    from ..store import postgres

    limit = settings.retention.backups
    try:
        conn = postgres.connect(url)
        try:
            wal = postgres.wal_retention(conn)
        finally:
            conn.close()
    except MailcliError as exc:
        return [Check("server-wal", "fail", exc.message, exc.hint, {})]
    details: dict[str, object] = {
        "wal_keep_size_mb": wal.wal_keep_size_mb, "archive_mode": wal.archive_mode,
        "archive_command": wal.archive_command, "max_slot_wal_keep_size_mb": wal.max_slot_wal_keep_size_mb,
        "replication_slots": [{"name": n, "active": a, "retained_bytes": b} for n, a, b in wal.slots],
        "retention_backups": limit.text,
    }
    unlimited = wal.max_slot_wal_keep_size_mb < 0
    shown = (f"wal_keep_size {_mb(wal.wal_keep_size_mb)}, archive_mode {wal.archive_mode},"
             f" max_slot_wal_keep_size {'unlimited' if unlimited else _mb(wal.max_slot_wal_keep_size_mb)},"
             f" {len(wal.slots)} replication slot(s); [retention] backups {limit.describe()}")
    warnings: list[tuple[str, str]] = []
    if wal.archive_mode in ("on", "always"):
        warnings.append((f"the server archives its WAL ({wal.archive_command or 'no archive_command'}): rows deleted"
                         " by an erasure or purge stay in that archive for as long as it keeps WAL files",
                         f"keep archived WAL and base backups no longer than [retention] backups ({limit.describe()}),"
                         " or lengthen [retention] backups to match"))
    idle = [name for name, active, _held in wal.slots if not active]
    if idle and unlimited:
        warnings.append((f"replication slot(s) {', '.join(idle)} are not in use and max_slot_wal_keep_size is"
                         " unlimited: the server keeps every WAL file since, deleted rows included, until the slot"
                         " is used or dropped", "drop slots no standby uses (SELECT pg_drop_replication_slot(...)),"
                         " or set max_slot_wal_keep_size"))
    if wal.wal_keep_size_mb > 0 and wal.wal_bytes_per_second:
        span = wal.wal_keep_size_mb * 1024 * 1024 / wal.wal_bytes_per_second
        details["wal_keep_seconds"] = round(span)
        if span > limit.seconds():
            warnings.append((f"wal_keep_size {_mb(wal.wal_keep_size_mb)} holds about {_span(span)} of WAL at this"
                             " server's average rate, longer than [retention] backups",
                             f"lower wal_keep_size, or lengthen [retention] backups ({limit.describe()})"))
    if warnings:
        summary = "; ".join(text for text, _ in warnings)
        return [Check("server-wal", "warn", f"{summary} ({shown})", "; ".join(fix for _, fix in warnings), details)]
    return [Check("server-wal", "pass", f"deleted rows leave the server's WAL as it is recycled ({shown})",
                  None, details)]
