"""The register of data-subject requests (``requests``).

One row per request: the keyed hash of the person's address (never the
address), which right (``access``, ``rectification``, ``erasure``,
``restriction``, ``objection``, ``portability``), when it was received, when
it is due, an extension (months and why), and when and by what it was
closed. See :mod:`mailcli.privacy.requests` for the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Connection

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .rows import dicts


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    subject_hmac: str
    kind: str
    received_at: str
    due_at: str
    extended_months: int
    extension_reason: str | None
    closed_at: str | None
    closed_by: str | None
    created_at: str


_COLUMNS = ("id, subject_hmac, kind, received_at, due_at, extended_months, extension_reason, closed_at, closed_by,"
            " created_at")


def _requests(conn: Connection, where: str, params: tuple[object, ...]) -> list[Request]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM requests WHERE {where} ORDER BY due_at, id", params)  # noqa: S608 - fixed fragments
    return [Request(*row) for row in rows]


def add_request(conn: Connection, subject_hmac: str, kind: str, received_at: str, due_at: str,
                now: str) -> int:
    (request_id,) = conn.execute(  # RETURNING: a PostgreSQL cursor has no lastrowid
        "INSERT INTO requests (subject_hmac, kind, received_at, due_at, created_at) VALUES (?, ?, ?, ?, ?)"
        " RETURNING id",
        (subject_hmac, kind, received_at, due_at, now),
    ).fetchone()
    return int(request_id)


def request_by_id(conn: Connection, request_id: int) -> Request | None:
    found = _requests(conn, "id = ?", (request_id,))
    return found[0] if found else None


def extend_request(conn: Connection, request_id: int, months: int, due_at: str, reason: str) -> bool:
    """Extend an open request that was never extended; False when it was closed or extended already."""
    cursor = conn.execute(
        "UPDATE requests SET extended_months = ?, due_at = ?, extension_reason = ?"
        " WHERE id = ? AND closed_at IS NULL AND extended_months = 0",
        (months, due_at, reason, request_id),
    )
    return cursor.rowcount > 0


def close_request(conn: Connection, request_id: int, closed_by: str, now: str) -> bool:
    cursor = conn.execute("UPDATE requests SET closed_at = ?, closed_by = ? WHERE id = ? AND closed_at IS NULL",
                          (now, closed_by, request_id))
    return cursor.rowcount > 0


def close_open_requests(conn: Connection, subject_hmac: str, kinds: Collection[str] | None,
                        closed_by: str, now: str) -> list[int]:
    """Close the person's open requests of ``kinds`` (all kinds: None); the ids closed."""
    where = "subject_hmac = ? AND closed_at IS NULL"
    params: list[object] = [subject_hmac]
    if kinds is not None:
        if not kinds:
            return []
        where += f" AND kind IN ({','.join('?' for _ in kinds)})"
        params += list(kinds)
    ids = [int(row[0]) for row in conn.execute(f"SELECT id FROM requests WHERE {where} ORDER BY id", params)]  # noqa: S608 - placeholders only
    conn.executemany("UPDATE requests SET closed_at = ?, closed_by = ? WHERE id = ?", [(now, closed_by, i) for i in ids])
    return ids


def open_requests(conn: Connection) -> list[Request]:
    """Every open request, the first due first."""
    return _requests(conn, "closed_at IS NULL", ())


def all_requests(conn: Connection) -> list[Request]:
    return _requests(conn, "1 = 1", ())


def requests_of(conn: Connection, subject_hmac: str) -> list[dict[str, Any]]:
    """One person's requests for their access export (without the keyed hash), oldest first."""
    return dicts(conn, "SELECT id, kind, received_at, due_at, extended_months, extension_reason, closed_at,"
                       " closed_by FROM requests WHERE subject_hmac = ? ORDER BY id", (subject_hmac,))


def keep_only_the_record(conn: Connection, subject_hmac: str) -> int:
    """On erasure: what stays of a person's requests is the keyed record that
    each was received and handled, when; the free text of an extension goes."""
    return conn.execute("UPDATE requests SET extension_reason = NULL WHERE subject_hmac = ?"
                        " AND extension_reason IS NOT NULL", (subject_hmac,)).rowcount
