"""Locks that keep runs which must not overlap apart, keyed to the database.

* one ``send`` per campaign: two processes sending the same campaign would
  read the same pending rows and both transmit them;
* one maintenance run (``privacy purge`` from cron, ``backup restore``): a slow
  purge still running when the next night's starts, or a restore during a
  purge, must not interleave;
* one import at a time, and none during a restore: a restore copies the
  restored database over the live one, and an import committed meanwhile
  would vanish under it (the second import waits, saying for whom);
* no send during a restore, nor a restore during a send, which would pull
  the database from under the send's ledger: whichever comes second is
  refused (``lock_holder`` looks at another process's lock).

Two configurations, folders or users that name one database file are one
project, so the lock files live beside the database, not beside the
configuration: ``mailcli.db`` is guarded by ``mailcli.db-locks/NAME.lock``
(the path is resolved first, so a symlink or a relative path names the same
file). Each lock file holds one JSON line about its holder — pid, host,
command and since when — which is what a refused run prints.

``fcntl.flock`` is released by the kernel when the process dies, so a crash or
``kill -9`` never leaves a stale lock behind. A lock file that is lost (deleted
by hand, a folder restored from elsewhere) no longer protects anything; that is
why a send also claims its campaign inside the database (``store.claims``).

Usage::

    with database_lock(db_path, "maintenance", command="privacy purge",
                       busy="Another purge or restore is running", hint="..."):
        ...                     # raises LockedError naming the holder if taken

``wait`` (seconds) polls for the lock instead of failing at once, calling
``on_wait(holder)`` once when it starts waiting.

A project whose database is a PostgreSQL server is shared by processes on
several machines, which cannot see each other's lock files: there each lock
is a session advisory lock on the server, held by a connection of its own
for the block. The server releases it when that connection ends, so a
crash or ``kill -9`` leaves none behind there either; the holder is named
from the connection's ``application_name`` (pid, host, command).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import clock
from .errors import MailcliError
from .store.url import DatabaseURL


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lock (or a claim): enough for a person to find the process."""

    pid: int
    host: str
    command: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, `mailcli {self.command}`, since {self.since}"

    def as_json(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "command": self.command, "since": self.since})

    @classmethod
    def me(cls, command: str) -> Holder:
        return cls(pid=os.getpid(), host=socket.gethostname(), command=command, since=clock.now_iso())

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(pid=int(data["pid"]), host=str(data["host"]), command=str(data["command"]),
                       since=str(data["since"]))
        except (ValueError, KeyError, TypeError):
            return None


class LockedError(MailcliError):
    """Another process holds the lock (or the claim)."""

    def __init__(self, message: str, *, hint: str | None = None, holder: Holder | None = None) -> None:
        super().__init__(message, hint=hint)
        self.holder = holder


def busy_message(busy: str, holder: Holder | None) -> str:
    """``busy`` and, when known, who is busy: one line."""
    return f"{busy}: {holder.describe()}" if holder is not None else f"{busy} (holder unknown)"


def lock_folder(db_path: Path) -> Path:
    """The folder of the lock files of one database: ``<database>-locks``."""
    real = Path(os.path.realpath(db_path))
    return real.with_name(real.name + "-locks")


def _read_holder(fd: int) -> Holder | None:
    # The holder writes its line right after taking the lock: a reader that
    # comes in between sees an empty file for a moment.
    for _ in range(20):
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        except OSError:
            return None
        if text:
            return Holder.parse(text)
        time.sleep(0.005)
    return None


def _open_lock_file(db_path: Path, name: str) -> int:
    folder = lock_folder(db_path)
    path = folder / f"{name}.lock"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise MailcliError(f"Cannot create the lock file {path}: {exc.strerror}",
                           hint="the folder of the database must be writable (SQLite needs that too)") from None


@contextlib.contextmanager
def database_lock(
    db_path: Path | DatabaseURL,
    name: str,
    *,
    command: str,
    busy: str,
    hint: str,
    wait: float = 0.0,
    on_wait: Callable[[Holder | None], None] | None = None,
    shared: bool = False,
) -> Iterator[Holder]:
    """Hold the lock ``name`` of the database at ``db_path`` for the block.

    Raises ``LockedError`` (``busy``, the holder, ``hint``) when another
    process holds it and ``wait`` seconds passed. Yields this process's own
    ``Holder`` line. ``shared`` (PostgreSQL only): any number of processes
    may hold it so at once, and keep out one that wants it alone.
    """
    if isinstance(db_path, DatabaseURL):
        with _postgres_lock(db_path, name, command=command, busy=busy, hint=hint, wait=wait,
                            on_wait=on_wait, shared=shared) as me:
            yield me
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock on Windows: run unlocked
        yield Holder.me(command)
        return
    fd = _open_lock_file(db_path, name)
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                holder = _read_holder(fd)
                if time.monotonic() >= deadline:
                    raise LockedError(busy_message(busy, holder), hint=hint, holder=holder) from None
                if not told and on_wait is not None:
                    on_wait(holder)
                    told = True
                time.sleep(0.1)
        me = Holder.me(command)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (me.as_json() + "\n").encode("utf-8"), 0)
            yield me
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def hold_for_life(db_path: Path, name: str, *, command: str, busy: str, hint: str) -> None:
    """Take the lock ``name`` for the rest of this process and of the
    program it ``exec``s into (the descriptor stays open, inheritable), so
    the kernel releases it only when that program ends; raises ``LockedError``
    like ``database_lock`` when another process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock on Windows: run unlocked
        return
    fd = _open_lock_file(db_path, name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_holder(fd)
        os.close(fd)
        raise LockedError(busy_message(busy, holder), hint=hint, holder=holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, (Holder.me(command).as_json() + "\n").encode("utf-8"), 0)
    os.set_inheritable(fd, True)


def replicate_lock(settings: Any) -> None:
    """One Litestream per database: two would each take the other's
    checkpoints for a stranger's and write over each other's replica."""
    hold_for_life(settings.project.database, "replicate", command="replicate",
                  busy="The database is already being replicated",
                  hint="stop that process first (or `systemctl stop` the service that runs it)")


@contextlib.contextmanager
def _postgres_lock(url: DatabaseURL, name: str, *, command: str, busy: str, hint: str, wait: float,
                   on_wait: Callable[[Holder | None], None] | None, shared: bool = False) -> Iterator[Holder]:
    """``database_lock`` on a PostgreSQL server: a session advisory lock on a connection of its own."""
    from .store import postgres

    me = Holder.me(command)
    conn = postgres.connect(url, application_name=postgres.holder_name(me.pid, me.host, command))
    try:
        deadline = time.monotonic() + wait
        told = False
        while not postgres.try_advisory_lock(conn, name, hold_shared=shared):
            holder = _holder_from_server(postgres.advisory_lock_holder(conn, name))
            if time.monotonic() >= deadline:
                raise LockedError(busy_message(busy, holder), hint=hint, holder=holder)
            if not told and on_wait is not None:
                on_wait(holder)
                told = True
            time.sleep(0.2)
        yield me
    finally:
        conn.close()  # ends the session, and with it the lock


def _holder_from_server(found: tuple[str, str] | None) -> Holder | None:
    """A Holder from the holding session's application_name and start, as ``holder_name`` wrote it."""
    if found is None:
        return None
    from .store.postgres import parse_holder_name

    app, since = found
    parsed = parse_holder_name(app)
    if parsed is None:
        return Holder(pid=0, host="?", command=app or "?", since=since)
    pid, host, command = parsed
    return Holder(pid=pid, host=host, command=command, since=since)


def campaign_lock_name(campaign: str) -> str:
    """The lock of one campaign's send; hashed because campaign names are free text."""
    return "send-" + hashlib.sha256(campaign.encode("utf-8")).hexdigest()[:16]


def campaign_lock(settings: Any, campaign: str) -> contextlib.AbstractContextManager[Holder]:
    """One sender per campaign and database (a reconfirmation round, or a send on SQLite)."""
    return database_lock(
        settings.project.store_location, campaign_lock_name(campaign), command=f"send {campaign}",
        busy=f"Campaign {campaign!r} is being sent by another process",
        hint="wait for it to finish; its lock is released when that process ends",
    )


def send_lock(settings: Any, campaign: str) -> contextlib.AbstractContextManager[Holder]:
    """The lock of one campaign's send: ``campaign_lock`` on SQLite; on a
    PostgreSQL server, where senders on several machines may work one
    campaign together (``store.leases``), held shared by each of them."""
    location = settings.project.store_location
    if not isinstance(location, DatabaseURL):
        return campaign_lock(settings, campaign)
    return database_lock(
        location, campaign_lock_name(campaign), command=f"send {campaign}", shared=True,
        busy=f"Campaign {campaign!r} is in use by another process",
        hint="wait for it to finish; its lock is released when that process ends",
    )


def lock_holder(db_path: Path | DatabaseURL, name: str) -> Holder | None:
    """Who holds the lock ``name`` of the database now, or None.

    It takes a shared lock for an instant to find out (a line left in the
    file by a process killed with -9 names nobody), so call it only where
    the other process's own attempt may fail then: once, before a run.
    """
    if isinstance(db_path, DatabaseURL):
        from .store import postgres

        conn = postgres.connect(db_path)
        try:
            if postgres.try_advisory_lock(conn, name, shared=True):
                return None
            return _holder_from_server(postgres.advisory_lock_holder(conn, name)) or Holder(
                pid=0, host="?", command=name, since="?")
        finally:
            conn.close()
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock on Windows
        return None
    try:
        fd = os.open(lock_folder(db_path) / f"{name}.lock", os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_holder(fd) or Holder(pid=0, host="?", command=name, since="?")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def sends_running(db_path: Path | DatabaseURL) -> list[Holder]:
    """The sends of any campaign that hold their lock on this database now."""
    if isinstance(db_path, DatabaseURL):
        from .store import postgres

        conn = postgres.connect(db_path)
        try:
            found = postgres.advisory_lock_holders(conn)
        finally:
            conn.close()
        holders = [_holder_from_server(item) for item in found]
        return [h for h in holders if h is not None and h.command.startswith("send ")]
    try:
        names = sorted(p.stem for p in lock_folder(db_path).glob("send-*.lock"))
    except OSError:
        return []
    return [holder for name in names if (holder := lock_holder(db_path, name)) is not None]


def refuse_while_sending(db_path: Path | DatabaseURL, busy: str, hint: str) -> None:
    """Raise ``LockedError`` naming the send when one holds its lock on this database now."""
    running = sends_running(db_path)
    if running:
        raise LockedError(busy_message(busy, running[0]), holder=running[0], hint=hint)


def import_lock(settings: Any, command: str, *, wait: float = 0.0,
                on_wait: Callable[[Holder | None], None] | None = None) -> contextlib.AbstractContextManager[Holder]:
    """One import (or restore, which takes it too) at a time per database."""
    return database_lock(
        settings.project.store_location, "import", command=command, wait=wait, on_wait=on_wait,
        busy="Another import or a restore is running",
        hint="wait for it to finish; the lock is released when that process ends",
    )


def restore_lock(settings: Any) -> contextlib.AbstractContextManager[Holder]:
    """Held by a restore from start to end, so that a send refuses to start."""
    return database_lock(
        settings.project.store_location, "restore", command="backup restore",
        busy="Another restore is running", hint="wait for it to finish; the lock is released when that process ends",
    )


def maintenance_lock(settings: Any, command: str = "privacy purge") -> contextlib.AbstractContextManager[Holder]:
    """One purge or restore at a time per database."""
    return database_lock(
        settings.project.store_location, "maintenance", command=command,
        busy="Another purge or restore is running",
        hint="wait for it to finish; the lock is released when that process ends",
    )
