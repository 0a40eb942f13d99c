"""Feeding the rows of an open contact file to the store in batches — read
in this process, or for a big file by two worker processes reading one half
each (:mod:`mailcli.importer.workers`).

Suppressed addresses are left out here, before the rows reach the store,
and counted; so are the domains of the valid rows when ``--check-mx`` asks.
Encodings whose newline byte can be part of another character (UTF-16) and
files under ``PARALLEL_MIN_BYTES`` are read in this process: starting the
workers costs more than they save on a small file (benchmarks/README.md,
"Import frames").
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mailcli.importer.decoding import line_numbers
from mailcli.importer.detect import SPLITTABLE
from mailcli.importer.reader import CsvSource
from mailcli.importrows import Batch, OptOut, RowReject, StagedRow, Suppression

if TYPE_CHECKING:
    from mailcli.importer.workers import TwoReaders

BATCH = 5000  # rows per batch read in this process
PARALLEL_MIN_BYTES = 8 * 1024 * 1024  # smaller files are read in this process


def batch_rows(rows: Iterable[StagedRow | RowReject | OptOut], size: int, suppression: Suppression | None,
               domains: dict[str, int] | None, position: Callable[[], int]) -> Iterator[Batch]:
    """Group rows into batches, leaving out suppressed addresses."""
    kept: list[StagedRow] = []
    rejects: list[RowReject] = []
    optouts: list[OptOut] = []
    add = kept.append
    suppressed = 0
    for row in rows:
        if type(row) is not tuple:  # staged rows are plain tuples
            if type(row) is RowReject:
                rejects.append(row)
            else:
                optouts.append(row)  # type: ignore[arg-type]
            if len(rejects) + len(optouts) < size:
                continue
        else:
            key: str = row[2]  # type: ignore[index, assignment]
            if domains is not None:
                domain = key.rpartition("@")[2]
                domains[domain] = domains.get(domain, 0) + 1
            if suppression is not None and suppression(key):
                suppressed += 1
                continue
            add(row)  # type: ignore[arg-type]
            if len(kept) < size:
                continue
        yield Batch(kept, rejects, position(), suppressed, optouts=optouts)
        kept, rejects, optouts, suppressed = [], [], [], 0
        add = kept.append
    yield Batch(kept, rejects, position(), suppressed, optouts=optouts)


class ImportFeed:
    """The batches of one open contact file, read here or by two workers.

    ``batches`` is the :data:`~mailcli.importrows.BatchSource` for
    :func:`~mailcli.store.imports.import_batches`; with ``count_domains``,
    ``domains`` afterwards counts the valid rows per domain (for
    ``--check-mx``).
    """

    def __init__(self, source: CsvSource, *, count_domains: bool = False, size: int = BATCH) -> None:
        self.source = source
        self.size = size
        self.domains: dict[str, int] | None = {} if count_domains else None
        self._read_by: TwoReaders | None = None
        # Started now, told their part later: their interpreters start up
        # while this process loads its settings and opens the database.
        self._readers: TwoReaders | None = None
        if self.parallel():
            from mailcli.importer.workers import TwoReaders

            self._readers = TwoReaders()

    def parallel(self) -> bool:
        """Whether two workers would read this file."""
        source = self.source
        return (source.size >= PARALLEL_MIN_BYTES and source.format.encoding in SPLITTABLE
                and (os.cpu_count() or 1) > 1
                and os.name == "posix" and bool(sys.executable))  # pipes in selectors, setsid

    @property
    def workers_used(self) -> bool:
        return self._read_by is not None

    @property
    def how_read(self) -> str:
        """How the file was read, in words (``import -v`` prints it)."""
        if self._read_by is None:
            return "read by this process"
        how = "read by two processes, their rows handed over as " + (
            "SQLite databases" if self._read_by.sqlite_frames else "marshalled tuples")
        if self._read_by.withdrawn:
            how += "; the second half began inside a quoted field, so the first process read it all"
        return how

    def batches(self, suppression: Suppression | None, frames: bool) -> Iterator[Batch]:
        """The batches, suppressed addresses left out; ``frames``: the store
        can take the workers' frames (else the file is read here)."""
        if frames and self._readers is not None:
            split = find_split(self.source.path, self.source.size)
            if split is not None and split[1] > self.source.first_line + 1:
                self._read_by = self._readers
                return self._readers.batches(self.source, suppression, *split, self.domains)
        self.close()
        return batch_rows(self.source.staged_rows(), self.size, suppression, self.domains,
                          self.source.bytes_read)

    def close(self) -> None:
        """End the workers (if they are still running)."""
        if self._readers is not None:
            self._readers.stop()
            self._readers = None

    def reencoded(self) -> tuple[int, list[int]]:
        """After the batches: how many lines were decoded otherwise than the
        file's encoding, and the physical lines of the first of them."""
        count, offsets = self.source.reencoded if self._read_by is None else self._read_by.reencoded()
        return count, line_numbers(self.source.path, offsets)

    def __enter__(self) -> ImportFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Complexity: one branch per way the middle of a file can fall inside a record (quotes, line ends).
def find_split(path: Path, size: int) -> tuple[int, int] | None:
    """A byte offset near the middle of the file that starts a line and,
    most likely, a record, with that line's number: ``(offset, line)``.

    Lines are counted as the CSV reader counts them (``\\n``, ``\\r\\n`` or a
    lone ``\\r`` ends one). An odd number of quote characters before a line
    break means it is inside a quoted field, so the next one is tried; the
    first worker still checks (a stray quote in an unquoted field would fool
    this count).
    """
    chunk_size = 1 << 22
    lf = cr = crlf = quotes = 0
    previous = b""
    offset = 0
    with open(path, "rb") as handle:
        target = size // 2
        while offset < target:  # count up to the middle
            chunk = handle.read(min(chunk_size, target - offset))
            if not chunk:
                return None
            lf += chunk.count(b"\n")
            # Counting takes a pass over the bytes each; finding none (memchr)
            # is several times faster, and most files have no CR or quote.
            if b"\r" in chunk or previous == b"\r":
                cr += chunk.count(b"\r")
                crlf += chunk.count(b"\r\n") + (previous == b"\r" and chunk[:1] == b"\n")
            if b'"' in chunk:
                quotes += chunk.count(b'"')
            previous = chunk[-1:]
            offset += len(chunk)
        for _ in range(1000):  # then line by line to a line break outside quotes
            line = handle.readline()  # up to and including b"\n"
            if not line.endswith(b"\n"):
                return None  # no line break left (or lone-\r line ends only)
            lf += 1
            cr += line.count(b"\r")
            crlf += line.count(b"\r\n") + (previous == b"\r" and line[:1] == b"\n")
            quotes += line.count(b'"')
            previous = line[-1:]
            offset += len(line)
            if quotes % 2 == 0 and offset < size:
                return offset, 1 + lf + cr - crlf
    return None
