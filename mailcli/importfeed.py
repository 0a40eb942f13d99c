"""Feeding parsed contact rows to the store in batches, and the rejects file.

Each batch carries the staged rows as plain tuples — ``(line, email, key,
first_name, last_name, attributes_json, consent_at, consent_ip)``, the order
of :class:`~mailcli.importer.ImportRow` with the attributes already encoded,
which is the order of the staging table — the rejects, and how far into the
file the reader is (for a progress bar).

Parsing in a second process was tried and dropped: pickling the rows costs
the child about what it saves the parent, so on two cores the import got no
faster, and slower whenever the other core was busy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from mailcli.errors import InputFileError
from mailcli.importer import CsvSource, ImportRow, RowReject, StagedRow, encode_attributes

BATCH = 5000

class Batch(NamedTuple):
    rows: list[StagedRow]
    rejects: list[RowReject]
    position: int  # bytes of the file read so far


def staged(row: ImportRow) -> StagedRow:
    line, email, key, first, last, attributes, consent_at, consent_ip = row
    return (line, email, key, first, last, encode_attributes(attributes) if attributes else "{}",
            consent_at, consent_ip)


def _batches(source: CsvSource, size: int) -> Iterator[Batch]:
    rows: list[StagedRow] = []
    rejects: list[RowReject] = []
    add = rows.append
    for row in source.staged_rows():
        if type(row) is RowReject:
            rejects.append(row)
            if len(rejects) < size:
                continue
        else:
            add(row)  # type: ignore[arg-type]
            if len(rows) < size:
                continue
        yield Batch(rows, rejects, source.bytes_read())
        rows, rejects = [], []
        add = rows.append
    yield Batch(rows, rejects, source.size)


def iter_batches(source: CsvSource, *, size: int = BATCH) -> Iterator[Batch]:
    """Batches of staged rows and rejects from an open source, in file order."""
    return _batches(source, size)


# ------------------------------------------------------------ the rejects file

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\x00")


def neutralise(cell: str) -> str:
    """A cell a spreadsheet shows as text and never runs as a formula (F10)."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


class RejectsFile:
    """``--rejects FILE``: the rejected rows, their original cells, line and reason.

    Written to a temporary file next to the target and renamed when the import
    commits, so an interrupted import leaves no half file. UTF-8 with a BOM
    and the input's delimiter, so Excel opens it the way it opened the input.
    """

    def __init__(self, path: str | Path, headers: tuple[str, ...], delimiter: str) -> None:
        import csv
        import os
        import tempfile

        self.path = Path(path)
        self._headers = headers
        try:
            fd, temp = tempfile.mkstemp(prefix=".rejects-", suffix=".csv", dir=self.path.parent or ".")
        except OSError as exc:
            raise InputFileError(f"--rejects {self.path}: cannot write there ({exc.strerror})") from None
        self._temp = Path(temp)
        self._handle = os.fdopen(fd, "w", encoding="utf-8-sig", newline="")
        self._writer = csv.writer(self._handle, delimiter=delimiter)
        self._writer.writerow([neutralise(h) for h in headers] + ["line", "reason"])
        self.count = 0

    def write(self, reject: RowReject) -> None:
        values = list(reject.raw.values())
        cells = values[: len(self._headers)] + [""] * (len(self._headers) - len(values))
        extra = values[len(self._headers):]  # cells beyond the header (a too-wide row)
        self._writer.writerow([neutralise(c) for c in cells] + [str(reject.line), reject.reason]
                              + [neutralise(c) for c in extra])
        self.count += 1

    def commit(self) -> None:
        import os

        self._handle.close()
        os.replace(self._temp, self.path)

    def discard(self) -> None:
        self._handle.close()
        self._temp.unlink(missing_ok=True)
