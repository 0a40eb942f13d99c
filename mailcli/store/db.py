"""Opening the SQLite database: file mode, pragmas, migrations, transactions.

Every connection gets WAL, foreign keys, ``secure_delete=ON`` (erased data is
overwritten, not just unlinked; a per-connection setting, so it is set here,
in the one place that opens connections) and a busy timeout. A new database file is created with
mode 0600 before SQLite touches it, because SQLite would create it 0644 under
the usual umask (docs/guarantees.md#file-modes); SQLite gives the ``-wal`` and ``-shm`` files the mode of
the database file.

The connection runs in autocommit mode and ``Store.transaction()`` opens an
explicit ``BEGIN IMMEDIATE`` (or a SAVEPOINT when nested), so a whole import
or erasure is one transaction.

Several mailcli processes share one database (``serve`` all day, cron's
``bounces`` and ``purge``, a person's ``import`` or ``send``). In WAL mode
readers never wait; a writer waits while another process writes. A command
waits up to ``MAILCLI_BUSY_TIMEOUT`` seconds (default ten minutes, long enough
for an import of millions of rows or a restore) instead of failing at once;
when a wait lasts over a second, the ``on_wait`` given to ``open_store`` is
told, once, so the command can say on stderr what it waits for. After the
timeout the wait ends in ``StoreBusyError``, one clear line, with nothing
changed.

The places where a command may wait — opening, ``BEGIN IMMEDIATE``, a
VACUUM — wait in Python, in slices of a quarter second of SQLite's own busy
wait: SQLite sleeps in C and Python runs no signal handler until it returns,
so one long native wait would leave Ctrl-C unanswered for minutes. Any other
statement keeps the whole timeout natively, so it waits rather than fails.

The database may instead be a PostgreSQL server (``[project] database =
"postgresql://..."``, see :mod:`mailcli.store.url`). Store functions take a
``Connection``: the ``sqlite3`` connection itself on SQLite, so the engine
costs SQLite nothing per statement or row, or a
:class:`mailcli.store.postgres.PgConnection` that runs the same SQL on
PostgreSQL. A function whose SQL only SQLite runs says so in its name
(``sqlite_*``) and has a PostgreSQL counterpart (``postgres_*``) where the
engine is supported. On PostgreSQL the server does the waiting: a statement
waits for another session's row locks up to ``MAILCLI_BUSY_TIMEOUT``
(``lock_timeout``), and Ctrl-C cancels it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..clock import now_iso
from ..errors import ConfigError, ExitCode, MailcliError
from ..interrupts import held
from . import litestream
from .migrations import MIGRATIONS, POSTGRESQL, statements
from .url import DatabaseURL

SQLITE = "sqlite"
POSTGRESQL_ENGINE = "postgresql"


class Cursor(Protocol):
    """What a statement returns, on either engine."""

    @property
    def rowcount(self) -> int: ...
    @property
    def description(self) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The connection every store function takes: ``sqlite3.Connection`` or ``PgConnection``.

    SQL is written once with ``?`` (or ``:name``) placeholders; rows are tuples.
    """

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...
    def executemany(self, sql: str, seq: Any, /) -> Any: ...
    def close(self) -> None: ...


def engine_of(conn: Connection) -> str:
    """``"sqlite"`` or ``"postgresql"``: which engine runs ``conn``."""
    return getattr(conn, "engine", SQLITE)


def is_postgres(conn: Connection) -> bool:
    return engine_of(conn) == POSTGRESQL_ENGINE


class StoreError(MailcliError):
    """The database cannot be opened, read or written."""


class StoreBusyError(StoreError):
    """Another process kept the database busy for longer than the wait allowed."""


class StoreConflictError(StoreBusyError):
    """PostgreSQL rolled the transaction back to break a deadlock with
    another one: doing the same work again in a new transaction is safe."""


BUSY_TIMEOUT_ENV = "MAILCLI_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT = 600.0
WAIT_NOTICE_AFTER = 1.0  # seconds of waiting before on_wait is told
WAIT_SLICE = 0.25  # seconds of each native busy wait where a command waits in Python


def busy_timeout() -> float:
    """How long a command waits for a busy database, in seconds (``MAILCLI_BUSY_TIMEOUT``)."""
    return seconds_from_env(BUSY_TIMEOUT_ENV, DEFAULT_BUSY_TIMEOUT, lowest=0)


def seconds_from_env(name: str, default: float, *, lowest: float) -> float:
    """Seconds from the variable ``name`` (``default`` when unset), from
    ``lowest`` to a day; anything else is one clear line."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise StoreError(f"{name} must be a number of seconds (got {text!r})") from None
    if not lowest <= value <= 86400:
        raise StoreError(f"{name} must be between {lowest:g} and 86400 seconds (got {text!r})")
    return value


def is_busy(exc: BaseException) -> bool:
    """True for SQLite's "database is locked" / "database is busy" errors
    (on PostgreSQL: a lock wait that ran out)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlstate", None) in ("55P03", "40P01")
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    text = str(exc)
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


def waited_too_long(exc: BaseException) -> bool:
    """True when ``exc`` says only that another process kept the database
    busy (for longer than the wait allowed): expected, and worth one line."""
    return isinstance(exc, StoreBusyError) or is_busy(exc)


def busy_error(path: Path | str, seconds: float, what: str) -> StoreBusyError:
    return StoreBusyError(
        f"The database {path} was still busy after {seconds:g} s of waiting to {what}; nothing was changed",
        hint=f"another mailcli process is using it (see `ps`); run the command again when it has finished,"
             f" or wait longer with {BUSY_TIMEOUT_ENV}=SECONDS",
    )


T = TypeVar("T")


def _set_busy_timeout(conn: sqlite3.Connection, seconds: float) -> None:
    conn.execute(f"PRAGMA busy_timeout={max(0, int(seconds * 1000))}")


def _wait_for(conn: sqlite3.Connection, path: Path, timeout: float, what: str, attempt: Callable[[], T],
              watch: _WaitWatch | None) -> T:
    """See ``Store.wait_for``; the connection's own timeout is put back afterwards."""
    deadline = time.monotonic() + timeout
    watching = False
    _set_busy_timeout(conn, min(WAIT_SLICE, timeout))
    try:
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise busy_error(path, timeout, what) from None
            if watch is not None and not watching:
                watch.start(what)
                watching = True
            _set_busy_timeout(conn, min(WAIT_SLICE, left))
    finally:
        if watching and watch is not None:
            watch.stop()
        with contextlib.suppress(sqlite3.Error):
            _set_busy_timeout(conn, timeout)


class _WaitWatch:
    """Tells ``notify`` once when a marked wait lasts over WAIT_NOTICE_AFTER.

    One daemon thread per store, started on the first marked wait; it sleeps
    on a condition while nothing waits, so it costs nothing between waits.
    """

    def __init__(self, notify: Callable[[str], None]) -> None:
        self.notify = notify
        self._cond = threading.Condition()
        self._what: str | None = None
        self._serial = 0
        self._thread: threading.Thread | None = None

    def start(self, what: str) -> None:
        with self._cond:
            self._what = what
            self._serial += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mailcli-wait-watch", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._what = None
            self._cond.notify_all()

    # Complexity: the busy-wait watcher's loop: each way the wait can end.
    def _run(self) -> None:
        with self._cond:
            while True:
                while self._what is None:
                    self._cond.wait()
                serial, deadline = self._serial, time.monotonic() + WAIT_NOTICE_AFTER
                while self._what is not None and self._serial == serial and time.monotonic() < deadline:
                    self._cond.wait(deadline - time.monotonic())
                if self._what is not None and self._serial == serial:
                    what = self._what
                    self._cond.release()
                    try:
                        self.notify(what)
                    except Exception:  # noqa: BLE001 - a notice must never break the wait
                        pass
                    finally:
                        self._cond.acquire()
                    while self._what is not None and self._serial == serial:
                        self._cond.wait()


@dataclass
class Store:
    """An open project database.

    ``path`` is the SQLite file; on PostgreSQL ``url`` names the server and
    ``path`` only stands for the project in messages.
    """

    path: Path
    conn: Any  # Connection; sqlite3.Connection where a function needs SQLite's own interface
    _depth: int = field(default=0, repr=False)
    timeout: float = field(default=DEFAULT_BUSY_TIMEOUT, repr=False)
    _watch: _WaitWatch | None = field(default=None, repr=False)
    # The key audit entries are chained with, derived from the project's
    # secret once the database is known to belong to it (mailcli.binding).
    audit_key: bytes | None = field(default=None, repr=False)
    # Whether appending to the audit log moves the head kept beside the
    # database (not for a database being prepared aside by a restore).
    anchored: bool = field(default=True, repr=False)
    # Files of the database that were open to other users and were made 0600 on opening.
    tightened: list[str] = field(default_factory=list, repr=False)
    _after_commit: list[Callable[[], None]] = field(default_factory=list, repr=False)
    url: DatabaseURL | None = None
    # The connection's own busy timeout is ``timeout``, and a wait for a lock
    # may block its thread (``wait_natively``).
    native_waits: bool = field(default=False, repr=False)

    @property
    def engine(self) -> str:
        return engine_of(self.conn)

    @property
    def where(self) -> str:
        """The database as a message names it: the file, or the server URL without its password."""
        return self.url.display if self.url is not None else str(self.path)

    def wait_for(self, what: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` (a statement that may find the database busy, and
        can simply be tried again then) until it succeeds or the timeout ends.

        ``what`` says what for, in a notice after a second and in the
        ``StoreBusyError`` at the end; Ctrl-C ends the wait at once.
        """
        if self.url is not None or self.native_waits:
            try:
                return attempt()
            except Exception as exc:
                if is_busy(exc):
                    raise busy_error(self.where, self.timeout, what) from None
                raise
        return _wait_for(self.conn, self.path, self.timeout, what, attempt, self._watch)

    def wait_natively(self) -> None:
        """Let SQLite itself wait for another process's lock, up to
        ``timeout``, instead of in slices with a notice and a look for
        Ctrl-C between them: for a connection used off the main thread,
        where nobody presses Ctrl-C and nothing is shown, each transaction
        then begins in one statement instead of three."""
        if self.url is None:
            _set_busy_timeout(self.conn, self.timeout)
            self.native_waits = True

    def begin(self, what: str = "write") -> None:
        """``BEGIN IMMEDIATE``: take the write lock now, waiting for other writers.

        On PostgreSQL a plain ``BEGIN``: writers lock the rows they change, not the database.
        """
        if self.url is not None:
            self.conn.execute("BEGIN")
            return
        self.wait_for(what, lambda: self.conn.execute("BEGIN IMMEDIATE"))

    @contextlib.contextmanager
    def patience(self, seconds: float) -> Iterator[None]:
        """Wait at most ``seconds`` for other processes inside the block."""
        old = self.timeout
        self._set_timeout(seconds)
        self.timeout = seconds
        try:
            yield
        finally:
            self._set_timeout(old)
            self.timeout = old

    def _set_timeout(self, seconds: float) -> None:
        if self.url is not None:
            from . import postgres

            postgres.set_lock_timeout(self.conn, seconds)
        else:
            _set_busy_timeout(self.conn, seconds)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """One atomic unit of work; nested calls become savepoints.

        Any exception (KeyboardInterrupt included) rolls the unit back.
        """
        conn = self.conn
        if self._depth == 0:
            self.begin()
        else:
            conn.execute(f"SAVEPOINT sp{self._depth}")
        self._depth += 1
        try:
            yield conn
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._after_commit.clear()
                conn.execute("ROLLBACK")
            else:
                conn.execute(f"ROLLBACK TO sp{self._depth}")
                conn.execute(f"RELEASE sp{self._depth}")
            raise
        else:
            self._depth -= 1
            if self._depth == 0:
                with held():  # a Ctrl-C waits until the commit and what follows it are done
                    conn.execute("COMMIT")
                    self._run_after_commit()
            else:
                conn.execute(f"RELEASE sp{self._depth}")

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        """One snapshot for several reads: every statement inside sees the
        database as the first one did, whatever other processes commit
        meanwhile (an import, a send), so a page and its count, or counts
        read in several statements, agree. Nothing inside writes; readers
        never wait for writers. Inside a transaction, that one is the snapshot.
        """
        conn = self.conn
        if self._depth:
            yield conn
            return
        # SQLite's deferred BEGIN takes its snapshot at the first read, and
        # takes no lock; PostgreSQL's default gives each statement its own.
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if self.url is not None else "BEGIN")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the outermost transaction has committed (never
        if it rolls back); outside a transaction, at once. For what must
        follow the database and never run ahead of it, like the audit head."""
        if self._depth == 0:
            action()
        elif action not in self._after_commit:
            self._after_commit.append(action)

    def _run_after_commit(self) -> None:
        actions, self._after_commit = self._after_commit, []
        for action in actions:
            action()

    def alive(self) -> bool:
        """Whether the connection still works (a server can drop it; a file cannot)."""
        if self.url is None:
            return True
        return not self.conn.raw.closed and not self.conn.raw.broken

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


def _create_private(path: Path) -> None:
    """Create an empty file with mode 0600 whatever the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    os.chmod(path, 0o600)


PAGE_SIZE = 16384
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


def _use_wal(conn: sqlite3.Connection) -> None:
    # Only a database that is not in WAL mode yet needs the switch (it
    # takes a lock); asking first never waits for anyone.
    if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        conn.execute("PRAGMA journal_mode=WAL")


# The oldest SQLite whose SQL mailcli writes: RETURNING came with 3.35.0 (2021).
SQLITE_NEEDED = (3, 35, 0)


def check_sqlite_version() -> None:
    """Refuse, in one line, an SQLite too old for mailcli's statements — before
    the first one that would fail half-way through a command."""
    found = sqlite3.sqlite_version_info
    if found < SQLITE_NEEDED:
        raise ConfigError(
            f"This Python's sqlite3 module uses SQLite {'.'.join(map(str, found))}; mailcli needs"
            f" {'.'.join(map(str, SQLITE_NEEDED))} or later",
            hint="run mailcli with a Python built with a newer SQLite (python.org's installers and uv's Python"
                 " builds bundle one), or give it a PostgreSQL database",
        )


def connect(path: Path, *, timeout: float | None = None, switch_to_wal: bool = True,
            tighten: bool = True) -> sqlite3.Connection:
    """A configured sqlite3 connection (pragmas applied) without migrating.

    ``timeout`` is how long a statement waits for another process's lock
    (default: ``busy_timeout()``). ``switch_to_wal=False`` leaves turning WAL
    on to the caller. ``tighten`` makes ``-wal``/``-shm`` files 0600: for a
    file known to be a mailcli database.
    """
    check_sqlite_version()
    seconds = busy_timeout() if timeout is None else timeout
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=seconds, check_same_thread=False)
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            # A new database: 16 KiB pages (set before WAL mode fixes the
            # size): a large import writes its tables and indexes faster, in
            # fewer, fuller pages (benchmarks/README.md).
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        if switch_to_wal:
            _use_wal(conn)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        # A large import or restore leaves a WAL as big as what it wrote;
        # once checkpointed, it is cut back to this size.
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        litestream.configure_connection(conn)
    except sqlite3.DatabaseError as exc:
        if is_busy(exc):
            raise busy_error(path, seconds, "open it") from None
        if getattr(exc, "sqlite_errorcode", None) == SQLITE_NOTADB:
            raise _not_sqlite(path) from None
        raise StoreError(f"Cannot open database {path}: {exc}") from None
    if tighten:
        _tighten_side_files(path)
    return conn


def _tighten_side_files(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        side = Path(str(path) + suffix)
        with contextlib.suppress(OSError):
            if side.exists() and stat.S_IMODE(side.stat().st_mode) & 0o077:
                os.chmod(side, 0o600)


def apply_migrations(conn: Connection, *, only: Collection[str] | None = None, nested: bool = False,
                     on_upgrade: Callable[[list[str]], None] | None = None) -> list[str]:
    """Apply pending migrations in order (of ``only``, when given); returns the names applied.

    ``on_upgrade(names)`` is told, before anything is applied, when a
    database made by an earlier mailcli has migrations to catch up on (a
    new database is not an upgrade): on a large one that can take a minute.

    On PostgreSQL each migration runs its PostgreSQL text where it has one
    (``migrations.POSTGRESQL``), and the whole run holds an advisory lock,
    so processes that open a new database at once migrate it once.
    ``nested``: the caller's transaction is open, and each migration becomes
    a savepoint in it (a restore migrates what it loads before committing).
    """
    postgres = is_postgres(conn)
    if postgres:
        conn.execute("SELECT pg_advisory_lock(?)", (MIGRATIONS_LOCK,))
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
            return _apply(conn, only, postgres=True, nested=nested, on_upgrade=on_upgrade)
        finally:
            conn.execute("SELECT pg_advisory_unlock(?)", (MIGRATIONS_LOCK,))
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "migrations" not in tables:
        conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    return _apply(conn, only, postgres=False, nested=nested, on_upgrade=on_upgrade)


# The advisory lock key that serialises migrating a PostgreSQL database
# (any fixed 64-bit number; this one spells "mailcli" in ASCII).
MIGRATIONS_LOCK = 0x6D61696C636C69


# Complexity: one branch per state of a migration (done, unknown, SQL or Python step, each engine's text), all in one transaction.
def _apply(conn: Connection, only: Collection[str] | None, *, postgres: bool, nested: bool = False,
           on_upgrade: Callable[[list[str]], None] | None = None) -> list[str]:
    from .migrations import postgresql_statements

    done = {row[0] for row in conn.execute("SELECT name FROM migrations")}
    known = {name for name, _ in MIGRATIONS}
    unknown = done - known
    if unknown:
        raise StoreError(
            f"The database was migrated by a newer mailcli ({', '.join(sorted(unknown))})",
            hint="upgrade mailcli",
        )
    pending = [name for name, _ in MIGRATIONS if name not in done and (only is None or name in only)]
    if pending and done and on_upgrade is not None:
        on_upgrade(pending)
    applied = []
    for name, step in MIGRATIONS:
        if name not in pending:
            continue
        if postgres:
            step = POSTGRESQL.get(name, step)
        begin, commit, rollback = ("SAVEPOINT migration", "RELEASE migration", "ROLLBACK TO migration") if nested \
            else ("BEGIN" if postgres else "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
        conn.execute(begin)
        try:
            if isinstance(step, str):
                for statement in (postgresql_statements(step) if postgres else statements(step)):
                    conn.execute(statement)
            else:
                step(conn)
            conn.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, now_iso()))
        except BaseException:
            conn.execute(rollback)
            raise
        conn.execute(commit)
        applied.append(name)
    return applied


class NotADatabaseError(StoreError):
    """The configured database names something that is not mailcli's database: nothing was touched."""

    exit_code = ExitCode.CONFIG


def _check_is_database(path: Path) -> None:
    """Refuse, before touching it, a path that is no regular file.

    Only ``stat``: opening and closing the file here would drop the POSIX
    locks SQLite holds on it for this process's other connections (serve
    opens one per thread), so whether it is a SQLite file at all is asked
    of SQLite (``_check_is_mailcli``)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise StoreError(f"Cannot read the database {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise NotADatabaseError(f"The database {path} is not a regular file; it was left as it is",
                                hint="set [project] database in mailcli.toml to the project's database file")


SQLITE_NOTADB = 26  # "file is not a database"


def _not_sqlite(path: Path) -> NotADatabaseError:
    return NotADatabaseError(f"{path} is not a SQLite database; it was left as it is",
                             hint="set [project] database in mailcli.toml to the project's database file")


def _check_is_mailcli(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a file that is no SQLite database, or another program's: tables,
    but no record of mailcli's migrations."""
    try:
        tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                                  " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")}
    except sqlite3.DatabaseError as exc:
        if is_busy(exc):
            raise
        raise _not_sqlite(path) from None
    if tables and "migrations" not in tables:
        raise NotADatabaseError(
            f"{path} is the database of another program (tables {', '.join(sorted(tables)[:3])}), not mailcli's;"
            " it was left as it is",
            hint="set [project] database in mailcli.toml to the project's own database file")


def _tighten(path: Path) -> list[str]:
    """Make a mailcli database and its side files private; what was open to others before."""
    tightened = []
    for item in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(item.stat().st_mode)
            if mode & 0o077:
                os.chmod(item, 0o600)
                tightened.append(f"{item.name} ({mode:04o})")
    return tightened


def open_store(path: Path | DatabaseURL, *, create: bool = True, timeout: float | None = None,
               on_wait: Callable[[str], None] | None = None,
               on_upgrade: Callable[[list[str]], None] | None = None) -> Store:
    """Open (creating with mode 0600 if asked) and migrate the project database.

    A path that is not a regular SQLite file, or another program's database,
    is refused before anything touches it (``NotADatabaseError``, exit 4);
    only then is a mailcli database open to other users made 0600
    (``Store.tightened`` says which; docs/guarantees.md#file-modes).

    ``path``: the SQLite file, or the PostgreSQL server's ``DatabaseURL``
    (``ProjectSettings.store_location`` gives the one the project names).
    ``timeout``: how long to wait for other processes (default
    ``busy_timeout()``); ``on_wait(what)`` is told when a wait lasts;
    ``on_upgrade`` as for ``apply_migrations``.
    """
    if isinstance(path, DatabaseURL):
        return _open_postgres(path, timeout=timeout, on_upgrade=on_upgrade)
    path = Path(path)
    if not path.exists():
        if not create:
            raise StoreError(f"Database not found: {path}")
        _create_private(path)
    else:
        _check_is_database(path)
    seconds = busy_timeout() if timeout is None else timeout
    watch = _WaitWatch(on_wait) if on_wait is not None else None
    conn = connect(path, timeout=min(WAIT_SLICE, seconds), switch_to_wal=False, tighten=False)
    try:
        _wait_for(conn, path, seconds, "open it", lambda: _check_is_mailcli(conn, path), watch)
        # Turning WAL on (a database a killed import left in rollback mode)
        # and migrating take locks: wait for them like any write.
        _wait_for(conn, path, seconds, "open it", lambda: _finish_opening(conn, on_upgrade), watch)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"Cannot use database {path}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    store = Store(path=path, conn=conn, timeout=seconds, _watch=watch)
    store.tightened = _tighten(path)
    return store


def _finish_opening(conn: sqlite3.Connection, on_upgrade: Callable[[list[str]], None] | None = None) -> None:
    _use_wal(conn)
    apply_migrations(conn, on_upgrade=on_upgrade)


def _open_postgres(url: DatabaseURL, *, timeout: float | None,
                   on_upgrade: Callable[[list[str]], None] | None = None) -> Store:
    """Connect to the server and migrate the database (which must exist: the server's owner creates it)."""
    from . import postgres

    seconds = busy_timeout() if timeout is None else timeout
    conn = postgres.connect(url)
    try:
        postgres.set_lock_timeout(conn, seconds)
        apply_migrations(conn, on_upgrade=on_upgrade)
    except MailcliError:
        conn.close()
        raise
    except Exception as exc:
        conn.close()
        if is_busy(exc):
            raise busy_error(url.display, seconds, "open it") from None
        raise StoreError(f"Cannot use PostgreSQL database {url.display}: {postgres.first_line(exc)}") from None
    except BaseException:
        conn.close()
        raise
    # No audit head beside a file: the server's database is the one place the log lives.
    return Store(path=Path(url.dbname), conn=conn, timeout=seconds, url=url, anchored=False)
