"""``--rejects FILE``: the rows an import did not take, for a person to fix."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from mailcli.cells import neutralise
from mailcli.errors import InputFileError, PartialError
from mailcli.importrows import RowReject


class RejectsFile:
    """The rejected rows: their original cells (neutralised, as
    :mod:`mailcli.cells` says), line and reason.

    Written to a temporary file next to the target and renamed when the import
    commits, so an interrupted import leaves no half file. UTF-8 with a BOM
    and the input's delimiter, so Excel opens it the way it opened the input.
    """

    def __init__(self, path: str | Path, headers: tuple[str, ...], delimiter: str) -> None:
        import tempfile  # here: every import worker loads this package, and none writes this file

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

    def write(self, reject: RowReject, file: str | None = None) -> None:
        values = list(reject.raw.values())
        cells = values[: len(self._headers)] + [""] * (len(self._headers) - len(values))
        extra = values[len(self._headers):]  # cells beyond the header (a too-wide row)
        self._writer.writerow([neutralise(c) for c in cells] + [str(reject.line), reject.reason]
                              + [neutralise(c) for c in extra])
        self.count += 1

    def commit(self) -> None:
        """Put the file in place; if that fails, the temporary file goes and
        PartialError (exit 3) says so: the import has committed by now."""
        try:
            self._handle.close()
            os.replace(self._temp, self.path)
        except OSError as exc:
            self._temp.unlink(missing_ok=True)
            raise PartialError(f"--rejects {self.path}: the rejected rows could not be written ({exc.strerror});"
                               " the other rows were imported",
                               hint="run the import again with another --rejects FILE to get them") from None

    def discard(self) -> None:
        try:
            self._handle.close()
        except OSError:
            pass  # a disk that is full: the file goes anyway
        finally:
            self._temp.unlink(missing_ok=True)


class ArchiveRejectsFile(RejectsFile):
    """The rejected rows of all the CSV files of an archive in one file: a
    ``file`` column, then every column of any of the files (by name, in the
    order first seen), then line and reason."""

    def __init__(self, path: str | Path, headers: list[tuple[str, ...]]) -> None:
        columns: dict[str, None] = {}
        for each in headers:
            columns.update(dict.fromkeys(each))
        super().__init__(path, ("file", *columns), ",")
        self._columns = list(columns)

    def write(self, reject: RowReject, file: str | None = None) -> None:
        raw = reject.raw
        cells = [raw.get(name, "") for name in self._columns]
        extra = [value for name, value in raw.items() if name not in self._columns]
        self._writer.writerow([neutralise(file or "")] + [neutralise(c) for c in cells]
                              + [str(reject.line), reject.reason] + [neutralise(c) for c in extra])
        self.count += 1
