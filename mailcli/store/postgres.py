"""The PostgreSQL engine: a psycopg 3 connection that takes the store's SQL as written for SQLite.

Every store function writes its SQL once, with ``?`` (or ``:name``)
placeholders, and runs it on a ``Connection`` (see :mod:`mailcli.store.db`).
On SQLite that is the ``sqlite3`` connection itself, so nothing is added to a
statement's cost; on PostgreSQL it is :class:`PgConnection`, which turns the
placeholders into psycopg's ``%s`` / ``%(name)s`` once per distinct
statement text (kept in a cache) and runs the statement.

The connection runs in autocommit mode like the SQLite one, and
``Store.transaction()`` issues ``BEGIN`` / ``SAVEPOINT`` itself, so the same
code marks the same units of work on both engines.

psycopg is imported only here, and only when a PostgreSQL database is
opened: SQLite projects never need it (``pip install 'mailcli[postgres]'``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .url import DatabaseURL

if TYPE_CHECKING:
    import psycopg

ENGINE = "postgresql"
# libpq's SQLSTATE classes that mean "the configuration is wrong" rather than
# "the server is not there": bad login or password, no such database.
_CONFIG_STATES = {"28000", "28P01", "3D000", "42501"}


# Quoted text and comments (kept whole), then what changes outside them.
_TOKENS = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|::|\?|:[A-Za-z_]\w*|%""")


@lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """``sql`` with SQLite placeholders turned into psycopg's.

    ``?`` becomes ``%s``, ``:name`` becomes ``%(name)s`` and a literal ``%``
    becomes ``%%``; text inside quotes and comments is left as it is (but for
    ``%``, which psycopg reads everywhere), and PostgreSQL's ``::type`` casts
    are kept.
    """
    return _TOKENS.sub(_token, sql)


def _token(match: re.Match[str]) -> str:
    token = match.group(0)
    if token == "?":
        return "%s"
    if token == "::":
        return token
    if token[0] == ":":
        return f"%({token[1:]})s"
    return token.replace("%", "%%")  # a %, or quoted text or a comment with any % in it


class PgConnection:
    """A psycopg connection with the part of ``sqlite3.Connection``'s interface the store uses."""

    engine = ENGINE

    def __init__(self, raw: psycopg.Connection[Any], url: DatabaseURL) -> None:
        import psycopg

        self.raw = raw
        self.url = url
        self._psycopg = psycopg

    def execute(self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = (), /) -> Any:
        try:
            cur = self.raw.cursor()
            cur.execute(translate(sql), parameters)  # type: ignore[arg-type]  # translated, not user text
        except self._psycopg.OperationalError as exc:
            raise self._failure(exc) from None
        return cur

    def executemany(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]], /) -> psycopg.Cursor[Any]:
        try:
            cur = self.raw.cursor()
            cur.executemany(translate(sql), seq)  # type: ignore[arg-type]
        except self._psycopg.OperationalError as exc:
            raise self._failure(exc) from None
        return cur

    def copy_rows(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        """``rows`` into a table through ``statement``, a fixed ``COPY ... FROM STDIN``: the
        server's bulk load, rows streamed in its text format with no statement per row."""
        try:
            with self.raw.cursor() as cur, cur.copy(statement) as copy:  # type: ignore[arg-type]  # fixed text
                for row in rows:
                    copy.write_row(row)
        except self._psycopg.OperationalError as exc:
            raise self._failure(exc) from None

    def _failure(self, exc: Exception) -> Exception:
        """A lock wait that ran out, or a connection the server dropped, as one clear line;
        any other error (a bug) is left as it is. Either way the transaction is rolled back."""
        from .db import StoreConflictError, StoreError, busy_error, busy_timeout

        state = getattr(exc, "sqlstate", None)
        if state in ("40P01", "40001"):
            return StoreConflictError(
                f"PostgreSQL at {self.url.display} broke off a transaction that crossed another one:"
                f" {first_line(exc)}", hint="run the command again")
        if state == "55P03":
            return busy_error(self.url.display, busy_timeout(), "write")
        if self.raw.broken or self.raw.closed:
            return StoreError(f"Lost the connection to PostgreSQL at {self.url.display}: {first_line(exc)}",
                              hint="nothing after the last commit was saved; run the command again when the"
                                   " server is back (a send resumes where it stopped)")
        return exc

    def close(self) -> None:
        self.raw.close()


def first_line(exc: BaseException) -> str:
    """libpq's message without its connection preamble, one line (it never holds a password)."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[0]
    # 'connection failed: connection to server at "h" (1.2.3.4), port 5 failed: REASON'
    marker = line.rfind("failed: ")
    if marker >= 0:
        line = line[marker + len("failed: "):]
    return line.removeprefix("FATAL:").strip()


def connect(url: DatabaseURL, *, application_name: str | None = None) -> PgConnection:
    """An autocommit psycopg connection to ``url``, or a one-line error that names it without its password.

    A missing driver, a refused login or an unknown database is a
    configuration problem (``ConfigError``, exit 4); a server that cannot be
    reached is a ``StoreError`` (exit 1): run the command again when it is up.
    """
    from .db import StoreError

    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            f"The database is a PostgreSQL server ({url.display}), but the PostgreSQL driver is not installed",
            hint="pip install 'mailcli[postgres]' (psycopg 3)",
        ) from None
    try:
        kwargs = url.connect_kwargs()
        if application_name is not None:
            kwargs["application_name"] = application_name
        raw = psycopg.connect(psycopg.conninfo.make_conninfo("", **kwargs), autocommit=True)
    except psycopg.OperationalError as exc:
        reason = first_line(exc)
        state = getattr(exc, "sqlstate", None)
        if state in _CONFIG_STATES or "password" in reason or "authentication" in reason or (
                "database" in reason and "does not exist" in reason):
            raise ConfigError(
                f"PostgreSQL at {url.display} refused the connection: {reason}",
                hint="check the user and database in [project] database (or MAILCLI_DATABASE_URL) and the"
                     " password in PGPASSWORD, ~/.pgpass or [project] database_password_env",
            ) from None
        raise StoreError(
            f"Cannot connect to PostgreSQL at {url.display}: {reason}",
            hint="is the server running and reachable? run the command again when it is",
        ) from None
    except psycopg.Error as exc:
        raise StoreError(f"Cannot connect to PostgreSQL at {url.display}: {first_line(exc)}") from None
    # Timestamps are written by mailcli as ISO-8601 text; nothing the server
    # does depends on its time zone, but keep it fixed so server-side defaults agree.
    raw.execute("SET TIME ZONE 'UTC'")
    return PgConnection(raw, url)


def is_busy(exc: BaseException) -> bool:
    """True for a lock wait that ran out (``lock_timeout``) or a deadlock the server broke."""
    state = getattr(exc, "sqlstate", None)
    return state in ("55P03", "40P01")


def set_lock_timeout(conn: PgConnection, seconds: float) -> None:
    """How long a statement waits for a lock another session holds (0: forever, as on SQLite)."""
    conn.raw.execute(f"SET lock_timeout = {max(1, int(seconds * 1000))}")


def lock_key(name: str) -> int:
    """The 64-bit advisory lock key of a lock name (``send-…``, ``import``, ``maintenance``)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"mailcli:{name}".encode()).digest()[:8], "big", signed=True)


def try_advisory_lock(conn: PgConnection, name: str, *, shared: bool = False, hold_shared: bool = False) -> bool:
    """Take the session advisory lock ``name`` if free (``shared``: only look, and let go at once;
    ``hold_shared``: take it shared, beside other shared holders)."""
    key = lock_key(name)
    if hold_shared:
        return bool(conn.execute("SELECT pg_try_advisory_lock_shared(?)", (key,)).fetchone()[0])
    if shared:
        got = bool(conn.execute("SELECT pg_try_advisory_lock_shared(?)", (key,)).fetchone()[0])
        if got:
            conn.execute("SELECT pg_advisory_unlock_shared(?)", (key,))
        return got
    return bool(conn.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0])


def advisory_lock_holder(conn: PgConnection, name: str) -> tuple[str, str] | None:
    """The application_name and start time of the session holding lock ``name``, if any."""
    key = lock_key(name)
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(
        "SELECT a.application_name, to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock'"
        " AND l.classid::bigint = ? AND l.objid::bigint = ? AND l.objsubid = 1 AND l.database ="
        " (SELECT oid FROM pg_database WHERE datname = current_database())",
        (unsigned >> 32, unsigned & 0xFFFFFFFF)).fetchone()
    return (str(row[0]), str(row[1])) if row else None


def advisory_lock_holders(conn: PgConnection) -> list[tuple[str, str]]:
    """The application_name and start time of every other session holding an advisory lock on this database."""
    rows = conn.execute(
        "SELECT DISTINCT a.application_name,"
        " to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND a.pid <> pg_backend_pid() AND l.database ="
        " (SELECT oid FROM pg_database WHERE datname = current_database())").fetchall()
    return [(str(app), str(since)) for app, since in rows]


def holder_name(pid: int, host: str, command: str) -> str:
    """What a lock's connection calls itself, so that another process can say who holds the lock."""
    return f"mailcli {pid}@{host} {command}"[:63]


def parse_holder_name(text: str) -> tuple[int, str, str] | None:
    parts = text.split(" ", 2)
    if len(parts) < 3 or parts[0] != "mailcli" or "@" not in parts[1]:
        return None
    pid, _, host = parts[1].partition("@")
    return (int(pid), host, parts[2]) if pid.isdigit() else None


def vacuum(conn: PgConnection, tables: Sequence[str]) -> None:
    """VACUUM the named tables (outside any transaction, as PostgreSQL requires)."""
    from psycopg import sql

    for table in tables:
        conn.raw.execute(sql.SQL("VACUUM {}").format(sql.Identifier(table)))


@dataclass(frozen=True, slots=True)
class WalRetention:
    """What keeps a server's WAL (and so the bytes of deleted rows) after a checkpoint."""

    wal_keep_size_mb: int
    archive_mode: str
    archive_command: str  # archive_command, or archive_library when that is set
    max_slot_wal_keep_size_mb: int  # -1: unlimited
    slots: tuple[tuple[str, bool, int], ...]  # (name, active, bytes of WAL it holds back)
    wal_bytes_per_second: float | None  # the average since the server's WAL statistics were reset


def wal_retention(conn: PgConnection) -> WalRetention:
    """The server's settings that keep WAL, its replication slots and its WAL rate (all readable by any user)."""
    settings = {str(name): str(value) for name, value in conn.execute(
        "SELECT name, setting FROM pg_settings WHERE name IN"
        " ('wal_keep_size', 'archive_mode', 'archive_command', 'archive_library', 'max_slot_wal_keep_size')")}
    slots = tuple((str(name), bool(active), int(held or 0)) for name, active, held in conn.execute(
        "SELECT slot_name, active, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint"
        " FROM pg_replication_slots ORDER BY slot_name"))
    row = conn.execute("SELECT wal_bytes::float8, extract(epoch FROM now() - stats_reset)::float8"
                       " FROM pg_stat_wal").fetchone()
    rate = float(row[0]) / float(row[1]) if row and row[1] and float(row[1]) > 0 and row[0] else None
    return WalRetention(
        wal_keep_size_mb=int(settings.get("wal_keep_size", "0")),
        archive_mode=settings.get("archive_mode", "off"),
        archive_command=settings.get("archive_library") or settings.get("archive_command", ""),
        max_slot_wal_keep_size_mb=int(settings.get("max_slot_wal_keep_size", "-1")),
        slots=slots, wal_bytes_per_second=rate)
