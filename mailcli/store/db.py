"""Opening the SQLite database: file mode, pragmas, migrations, transactions.

Every connection gets WAL, foreign keys, ``secure_delete=ON`` (STANDARDS F27:
it is a per-connection setting, so it is set here, in the one place that
opens connections) and a busy timeout. A new database file is created with
mode 0600 before SQLite touches it, because SQLite would create it 0644 under
the usual umask (F26); SQLite gives the ``-wal`` and ``-shm`` files the mode of
the database file.

The connection runs in autocommit mode and ``Store.transaction()`` opens an
explicit ``BEGIN IMMEDIATE`` (or a SAVEPOINT when nested), so a whole import
or erasure is one transaction. Inside a transaction use ``store.conn`` (plain
sqlite3) for writes: sqlite-utils' table methods commit on their own.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..clock import now_iso
from ..errors import MailcliError
from .migrations import MIGRATIONS, statements

if TYPE_CHECKING:
    import sqlite_utils


class StoreError(MailcliError):
    """The database cannot be opened, read or written."""


@dataclass
class Store:
    """An open project database."""

    path: Path
    conn: sqlite3.Connection
    _depth: int = field(default=0, repr=False)

    @functools.cached_property
    def db(self) -> sqlite_utils.Database:
        """The connection as a sqlite-utils ``Database`` (imported on first
        use: most commands never need it, and it takes ~50 ms to load)."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work; nested calls become savepoints.

        Any exception (KeyboardInterrupt included) rolls the unit back.
        """
        conn = self.conn
        if self._depth == 0:
            conn.execute("BEGIN IMMEDIATE")
        else:
            conn.execute(f"SAVEPOINT sp{self._depth}")
        self._depth += 1
        try:
            yield conn
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                conn.execute("ROLLBACK")
            else:
                conn.execute(f"ROLLBACK TO sp{self._depth}")
                conn.execute(f"RELEASE sp{self._depth}")
            raise
        else:
            self._depth -= 1
            if self._depth == 0:
                conn.execute("COMMIT")
            else:
                conn.execute(f"RELEASE sp{self._depth}")

    def checkpoint(self) -> None:
        """Fold the WAL into the main file and truncate it (after erasure, F28)."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _create_private(path: Path) -> None:
    """Create an empty file with mode 0600 whatever the umask (F26)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    os.chmod(path, 0o600)


PAGE_SIZE = 16384


def connect(path: Path) -> sqlite3.Connection:
    """A configured sqlite3 connection (pragmas applied) without migrating."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=30, check_same_thread=False)
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            # A new database: 16 KiB pages (set before WAL mode fixes the
            # size). A 1M-contact import writes its tables and indexes a
            # third faster than with the 4 KiB default, in fewer, fuller pages.
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"Cannot open database {path}: {exc}") from None
    for suffix in ("-wal", "-shm"):
        side = Path(str(path) + suffix)
        with contextlib.suppress(OSError):
            if side.exists() and stat.S_IMODE(side.stat().st_mode) & 0o077:
                os.chmod(side, 0o600)
    return conn


def apply_migrations(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in order; returns the names applied."""
    conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    done = {row[0] for row in conn.execute("SELECT name FROM migrations")}
    known = {name for name, _ in MIGRATIONS}
    unknown = done - known
    if unknown:
        raise StoreError(
            f"The database was migrated by a newer mailcli ({', '.join(sorted(unknown))})",
            hint="upgrade mailcli",
        )
    applied = []
    for name, step in MIGRATIONS:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(step, str):
                for statement in statements(step):
                    conn.execute(statement)
            else:
                step(conn)
            conn.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, now_iso()))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        applied.append(name)
    return applied


def open_store(path: Path, *, create: bool = True) -> Store:
    """Open (creating with mode 0600 if asked) and migrate the project database."""
    path = Path(path)
    if not path.exists():
        if not create:
            raise StoreError(f"Database not found: {path}")
        _create_private(path)
    elif stat.S_IMODE(path.stat().st_mode) & 0o077:
        # Readable by others: tighten it rather than leave personal data open.
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)
    conn = connect(path)
    try:
        apply_migrations(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"Cannot use database {path}: {exc}") from None
    return Store(path=path, conn=conn)
