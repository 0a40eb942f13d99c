"""Making deleted personal data unreadable in the database files (``docs/guarantees.md#erasure``).

Every connection runs with ``secure_delete=ON``, so SQLite overwrites deleted
rows with zeros — but in WAL mode the old page images live on in the ``-wal``
file until a checkpoint, and a checkpoint that another reader blocks leaves
them there. Nor does a deletion reach every copy: a row SQLite moved to
another page as its B-tree grew can leave an old copy in the unused part of
the page it left (about one address in 500 deleted among 20,000 rows, in a
test with SQLite 3.40). After an erasure we therefore checkpoint with TRUNCATE, look for
the erased address in the ``.db``, ``-wal`` and ``-shm`` files, and for the
name in the pages the erasure rewrote and the companion files (``find_traces``), and
VACUUM (then checkpoint again) only when a trace is found — VACUUM rewrites
the whole file, which is slow on a big database and needless when
secure_delete already did the job. Purge, which removes many people at once,
always VACUUMs.

What counts as a trace: the bytes of the address (as given, as compared, with
its domain in Unicode) or of a name of four letters or more, ASCII case
ignored — except where they are part of a longer value the database still
holds legitimately. ``k.muller@ziggo.nl`` inside the address of
``henk.muller@ziggo.nl``, or "Anna" inside another contact's "Hanna", is
someone else's data and no trace. The address held *as a whole address* in a
live value (another contact's custom field, say) is a trace, reported as
such, since no compaction removes it.

The result says whether any trace remains and why, so the command gives the
right advice instead of claiming an erasure that did not fully happen (when
another process keeps a read transaction open, the WAL cannot be truncated).

While Litestream replicates the database, the checkpoints are Litestream's
(:mod:`mailcli.store.litestream`): nothing here checkpoints, and a VACUUM
would not take the old pages out of a WAL that only Litestream may truncate,
so an erasure then only reports where a trace remains (``replicated``).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..store import Store, backups, litestream
from ..store.db import StoreBusyError
from ..store.schema import ascii_lower, texts_containing
from .files import address_forms

_CHUNK = 4 << 20
NAME_MIN = 4  # shorter names occur by chance in any binary file


@dataclass(frozen=True, slots=True)
class Needles:
    """What to look for, ASCII letters in lower case."""

    addresses: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.addresses or self.names)


@dataclass(frozen=True, slots=True)
class ScrubResult:
    wal_truncated: bool
    vacuumed: bool
    remnants: tuple[str, ...]  # database files that still hold a trace
    held_in: tuple[str, ...] = field(default=())  # tables whose live values hold the whole address
    replicated: bool = False  # Litestream replicates the database and makes its checkpoints
    on_server: bool = False  # a PostgreSQL server's tables were vacuumed; its files are out of reach


def database_files(path: Path) -> list[Path]:
    """The database and its ``-wal``/``-shm`` companions that exist."""
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def needles_for(address: str, key: str, names: Iterable[str] = ()) -> Needles:
    """The needles of one person: their address forms and their names long enough to tell."""
    kept = {ascii_lower(n.strip()) for n in names if len(n.strip()) >= NAME_MIN}
    return Needles(tuple(sorted(ascii_lower(f) for f in address_forms(address, key))), tuple(sorted(kept)))


# An address ends where no address character follows; it starts where none precedes.
_BEFORE = r"(?<![A-Za-z0-9.!#$%&'*+/=?^_`{|}~-])"
_AFTER = r"(?![A-Za-z0-9-]|\.[A-Za-z0-9])"


def _whole(address: str) -> re.Pattern[str]:
    return re.compile(_BEFORE + re.escape(address) + _AFTER)


@dataclass
class _Masks:
    """Live values that explain an occurrence of a needle: (offset of the needle
    in the value, length of the value) -> the values."""

    by_needle: dict[bytes, dict[tuple[int, int], set[bytes]]]
    held_in: set[str]
    longest: int

    def explained(self, window: bytes, needle: bytes, at: int) -> bool:
        for (offset, length), values in self.by_needle.get(needle, {}).items():
            start = at - offset
            if start >= 0 and window[start:start + length] in values:
                return True
        return False


def _masks(conn: sqlite3.Connection, needles: Needles) -> _Masks:
    wanted = [*needles.addresses, *needles.names]
    by_needle: dict[bytes, dict[tuple[int, int], set[bytes]]] = {}
    held_in: set[str] = set()
    longest = 0
    whole = {n: _whole(n) for n in needles.addresses}
    for table, value in texts_containing(conn, wanted):
        text = ascii_lower(value)
        for needle in wanted:
            if needle not in text:
                continue
            if needle in whole and whole[needle].search(text):
                held_in.add(table)  # the address itself is still held: no mask, a trace
                continue
            data = text.encode("utf-8")
            probe = needle.encode("utf-8")
            offset = data.find(probe)
            while offset != -1:
                by_needle.setdefault(probe, {}).setdefault((offset, len(data)), set()).add(data)
                offset = data.find(probe, offset + 1)
            longest = max(longest, len(data))
    return _Masks(by_needle, held_in, longest)


def _holds_trace(path: Path, needles: list[bytes], masks: _Masks) -> bool:
    """Does the file hold a needle that no live value explains?"""
    margin = max([masks.longest, *(len(n) for n in needles)]) + 1
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return False
    with handle:
        buffer = b""
        start = 0  # occurrences from here on are still to be judged
        while True:
            chunk = handle.read(_CHUNK)
            buffer += chunk.lower()
            limit = len(buffer) if not chunk else max(start, len(buffer) - margin)
            if _unexplained(buffer, needles, masks, start, limit):
                return True
            if not chunk:
                return False
            cut = max(0, limit - margin)
            buffer = buffer[cut:]
            start = limit - cut


# Complexity: the file read in chunks with an overlap, so a needle across two chunks is found; a file gone meanwhile skipped.
def files_containing(paths: Iterable[Path], needles: Iterable[bytes]) -> list[Path]:
    """Files in which any needle occurs at all (ASCII case-insensitively): the quick first look."""
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
                chunk = handle.read(_CHUNK).lower()
                if not chunk:
                    break
                seam = tail + chunk[:overlap]  # a needle across two chunks (no copy of the whole chunk)
                if any(n in chunk or n in seam for n in wanted):
                    hits.append(path)
                    break
                tail = chunk[-overlap:]
    return hits


def wal_pages(path: Path) -> tuple[int, set[int]] | None:
    """The page size and the numbers of the pages the ``-wal`` file holds new
    images of (every frame, whether or not a commit covers it: a superset),
    or None when there is no WAL to read.

    Read before a checkpoint, these are the pages written since the last
    one: the only pages of the database file whose bytes a deletion changed.
    """
    wal = Path(f"{path}-wal")
    try:
        handle = wal.open("rb")
    except FileNotFoundError:
        return None
    with handle:
        header = handle.read(32)
        if len(header) < 32 or header[:4] not in (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83"):
            return None
        page_size = int.from_bytes(header[8:12], "big")
        frame = 24 + page_size
        size = wal.stat().st_size
        pages = set()
        for offset in range(32, size - frame + 1, frame):
            handle.seek(offset)
            pages.add(int.from_bytes(handle.read(4), "big"))
    pages.discard(0)
    return page_size, pages


def _pages_hold_trace(path: Path, page_size: int, pages: set[int], needles: list[bytes],
                      masks: _Masks | None) -> bool:
    """Does one of ``pages`` of the file hold a needle (that no live value
    explains, when ``masks`` are given)? Each page is read with the end of the
    one before and the start of the one after, so a value across two pages is seen."""
    margin = max([masks.longest if masks else 0, *(len(n) for n in needles)]) + 1
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return False
    with handle:
        for page in sorted(pages):
            start = max(0, (page - 1) * page_size - margin)
            handle.seek(start)
            window = handle.read(page_size + 2 * margin).lower()
            if _unexplained(window, needles, masks, 0, len(window)):
                return True
    return False


def _unexplained(window: bytes, needles: list[bytes], masks: _Masks | None, start: int, limit: int) -> bool:
    """Does a needle start in ``window[start:limit]`` that no live value explains
    (any at all, without ``masks``)?"""
    for needle in needles:
        at = window.find(needle, start)
        while at != -1 and at < limit:
            if masks is None or not masks.explained(window, needle, at):
                return True
            at = window.find(needle, at + 1)
    return False


# Complexity: addresses searched in every file, names only where a deletion wrote; live values looked up only on a hit.
def find_traces(store: Store, needles: Needles, written: tuple[int, set[int]] | None = None
                ) -> tuple[list[Path], set[str]]:
    """The database files that hold a trace of ``needles``, and the tables whose
    live values hold the whole address.

    The address is searched for in every byte of every file: an old copy of
    the person's row that a deletion cannot reach (see the module docstring)
    can lie in any page. With ``written`` (the page size and the pages
    written since the last checkpoint, read from the WAL before it:
    ``wal_pages``), names are searched for in those pages of the database
    file and in its companions only: a name lives in the person's row, next
    to the address, so an old copy of the row is found by its address (and
    compacted away, names included), and a name found elsewhere would have
    to be judged against every value of every table — on a database of
    millions of rows, the difference between reading the file once and
    reading every value of every table.
    """
    addresses = [n.encode("utf-8") for n in needles.addresses]
    names = [n.encode("utf-8") for n in needles.names]
    files = database_files(store.path)
    everywhere = addresses + names if written is None else addresses
    candidates = files_containing(files, everywhere)
    in_pages = False
    if written is not None and names:
        companions = [p for p in files if p != store.path]
        candidates += [p for p in files_containing(companions, names) if p not in candidates]
        in_pages = _pages_hold_trace(store.path, *written, names, None)
    if not candidates and not in_pages:
        return [], set()
    masks = _masks(store.conn, needles)
    found = [p for p in candidates
             if _holds_trace(p, everywhere if p == store.path else addresses + names, masks)]
    if in_pages and store.path not in found and written is not None \
            and _pages_hold_trace(store.path, *written, names, masks):
        found.append(store.path)
    return found, masks.held_in


def _scrub_on_server(store: Store) -> ScrubResult:
    """PostgreSQL: vacuum the tables that hold personal data (see ``scrub``)."""
    from ..store import postgres
    from .registry import PERSONAL_DATA_TABLES

    postgres.vacuum(store.conn, sorted(PERSONAL_DATA_TABLES))
    return ScrubResult(wal_truncated=False, vacuumed=True, remnants=(), on_server=True)


# Complexity: a server is only vacuumed; a file is checkpointed, searched, compacted when traces remain, searched again.
def scrub(store: Store, needles: Needles | None = None, *, vacuum: bool = False) -> ScrubResult:
    """Checkpoint, look for traces, VACUUM when asked or when any remain.

    On PostgreSQL there are no files here to look into: the tables that hold
    personal data are vacuumed, so the space of the deleted rows is marked
    for reuse; what stays in the server's WAL, replicas and backups, and
    for how long, is the server's (the README says so). ``wal_truncated`` is
    False there: mailcli truncated nothing.
    """
    if store.url is not None:
        return _scrub_on_server(store)
    needles = needles or Needles()
    replicated = litestream.is_replicated(store.conn)
    written = wal_pages(store.path)
    truncated = backups.checkpoint(store.conn)
    found, held = find_traces(store, needles, written) if needles else ([], set())
    vacuumed = False
    if vacuum or (found and not held and not replicated):
        try:
            store.wait_for("compact it", lambda: backups.compact(store.conn))
            vacuumed = True
        except (sqlite3.OperationalError, StoreBusyError):
            # Another process kept writing all along; secure_delete already
            # zeroed the rows, and the next purge will compact. Report, don't fail.
            vacuumed = False
        truncated = backups.checkpoint(store.conn)
        found, held = find_traces(store, needles) if needles else ([], set())
    return ScrubResult(wal_truncated=truncated, vacuumed=vacuumed, remnants=tuple(str(p) for p in found),
                       held_in=tuple(sorted(held)), replicated=replicated)
