"""One ``send`` per campaign at a time (STANDARDS F36).

Two processes sending the same campaign would each read the same pending
rows and both transmit them. A ``flock`` on ``.mailcli/send-<hash>.lock`` is
held for the whole run; the kernel releases it when the process dies, so a
``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from typing import Any

from mailcli.errors import MailcliError


class CampaignLockedError(MailcliError):
    """Another process is sending this campaign right now."""


@contextlib.contextmanager
def campaign_lock(settings: Any, campaign: str) -> Iterator[None]:
    folder = settings.data_dir
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The name is hashed: campaign names are free text, file names are not.
    digest = hashlib.sha256(campaign.encode("utf-8")).hexdigest()[:16]
    path = folder / f"send-{digest}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on Windows
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CampaignLockedError(
                f"Campaign {campaign!r} is being sent by another process",
                hint="wait for it to finish; its lock is released when that process ends",
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
