"""A lock file in ``.mailcli/`` so two maintenance runs never overlap.

``privacy purge`` runs from cron and ``backup restore`` replaces the database;
two of them at once (a slow purge still running when the next night's starts,
or a restore during a purge) must not interleave. ``fcntl.flock`` is released
by the kernel when the process dies, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ..config import Settings
from ..errors import MailcliError


class LockedError(MailcliError):
    """Another maintenance run holds the lock."""


@contextlib.contextmanager
def maintenance_lock(settings: Settings, name: str = "maintenance") -> Iterator[None]:
    folder = settings.data_dir
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no flock; run unlocked
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise LockedError(
                f"Another purge or restore is running (lock {path})",
                hint="wait for it to finish; the lock is released when that process ends",
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
