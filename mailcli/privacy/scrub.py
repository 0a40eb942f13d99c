"""Making deleted personal data unreadable in the database files (``docs/guarantees.md#erasure``).

Every connection runs with ``secure_delete=ON``, so SQLite overwrites deleted
rows with zeros — but in WAL mode the old page images live on in the ``-wal``
file until a checkpoint, and a checkpoint that another reader blocks leaves
them there. After an erasure we therefore checkpoint with TRUNCATE, scan the
``.db``, ``-wal`` and ``-shm`` files for the erased address, and VACUUM (then
checkpoint again) only when a form of it is still found — VACUUM rewrites the
whole file, which is slow on a big database and needless when secure_delete
already did the job. Purge, which removes many people at once, always VACUUMs.

The result says whether any trace remains, so the command can tell the user
instead of claiming an erasure that did not fully happen (e.g. when another
process keeps a read transaction open and the WAL cannot be truncated).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..store import Store, backups
from ..store.db import StoreBusyError

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ScrubResult:
    wal_truncated: bool
    vacuumed: bool
    remnants: tuple[str, ...]  # database files that still contain a needle


def database_files(path: Path) -> list[Path]:
    """The database and its ``-wal``/``-shm`` companions that exist."""
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def address_needles(address: str, key: str) -> list[bytes]:
    """Byte forms of an address to look for: as stored, lower-cased, Unicode domain."""
    forms = {address, key}
    local, _, domain = key.rpartition("@")
    try:
        import idna

        unicode_domain = idna.decode(domain)
        forms.add(f"{local}@{unicode_domain}")
        forms.add(f"{address.rpartition('@')[0]}@{unicode_domain}")
    except Exception:  # noqa: BLE001 - an undecodable domain has only its ASCII form
        pass
    return sorted({form.encode("utf-8").lower() for form in forms if form})


# Complexity: the file read in chunks with an overlap, so a needle across two chunks is found; a file gone meanwhile skipped.
def files_containing(paths: Iterable[Path], needles: Iterable[bytes]) -> list[Path]:
    """Files in which any needle occurs (ASCII case-insensitively)."""
    wanted = [n.lower() for n in needles if n]
    if not wanted:
        return []
    overlap = max(len(n) for n in wanted)
    hits = []
    for path in paths:
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            continue
        with handle:
            tail = b""
            while True:
                chunk = handle.read(_CHUNK)
                if not chunk:
                    break
                window = (tail + chunk).lower()
                if any(n in window for n in wanted):
                    hits.append(path)
                    break
                tail = window[-overlap:]
    return hits


def scrub(store: Store, needles: Iterable[bytes] = (), *, vacuum: bool = False) -> ScrubResult:
    """Checkpoint, check for remnants, VACUUM when asked or when any remain."""
    needles = list(needles)
    truncated = backups.checkpoint(store.conn)
    found = files_containing(database_files(store.path), needles)
    vacuumed = False
    if vacuum or found:
        try:
            store.wait_for("compact it", lambda: backups.compact(store.conn))
            vacuumed = True
        except (sqlite3.OperationalError, StoreBusyError):
            # Another process kept writing all along; secure_delete already
            # zeroed the rows, and the next purge will compact. Report, don't fail.
            vacuumed = False
        truncated = backups.checkpoint(store.conn)
        found = files_containing(database_files(store.path), needles)
    return ScrubResult(wal_truncated=truncated, vacuumed=vacuumed, remnants=tuple(str(p) for p in found))
