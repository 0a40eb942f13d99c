"""Lock files in ``.mailcli/`` so runs that must not overlap never do.

* one ``send`` per campaign (STANDARDS F36): two processes sending the same
  campaign would read the same pending rows and both transmit them;
* one maintenance run (``privacy purge`` from cron, ``backup restore``): a slow
  purge still running when the next night's starts, or a restore during a
  purge, must not interleave.

``fcntl.flock`` is released by the kernel when the process dies, so a crash or
``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import MailcliError


class LockedError(MailcliError):
    """Another process holds the lock."""


@contextlib.contextmanager
def exclusive_lock(folder: Path, name: str, *, busy: str, hint: str) -> Iterator[None]:
    """Hold ``folder/name.lock`` for the block, or raise LockedError(busy)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on Windows: run unlocked
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise LockedError(f"{busy} (lock {path})", hint=hint) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def campaign_lock(settings: Any, campaign: str) -> contextlib.AbstractContextManager[None]:
    """One sender per campaign; the name is hashed because campaign names are free text."""
    digest = hashlib.sha256(campaign.encode("utf-8")).hexdigest()[:16]
    return exclusive_lock(
        settings.data_dir, f"send-{digest}",
        busy=f"Campaign {campaign!r} is being sent by another process",
        hint="wait for it to finish; its lock is released when that process ends",
    )


def maintenance_lock(settings: Any) -> contextlib.AbstractContextManager[None]:
    """One purge or restore at a time."""
    return exclusive_lock(
        settings.data_dir, "maintenance",
        busy="Another purge or restore is running",
        hint="wait for it to finish; the lock is released when that process ends",
    )
