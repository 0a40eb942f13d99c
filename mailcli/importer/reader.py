"""Reading a contact CSV file: open it, detect its format, plan its columns,
and go through its records.

This never touches the database — it reads one file and yields values — so
it can be property-tested on its own; the store (:mod:`mailcli.store.imports`)
writes what it yields.

* **Streaming.** Only the head of the file is read up front, for detection
  (:mod:`mailcli.importer.detect`); records are then parsed one at a time
  (:mod:`mailcli.importer.rowparser`), so memory is flat in file size. A head
  sample cannot prove the rest of the file: a byte that does not decode later
  on stops the import with the file and line and a hint to pass
  ``--encoding``.
* **Lines.** Every row carries the physical line where its record starts,
  counted as the csv module counts them; a line, or a quoted field, over
  16 MiB refuses the file with its line number, which bounds memory.
* **Parts.** A big file can be read by two readers, one from the start up to
  a :class:`Boundary`, the other from that line on (:func:`open_csv_part`;
  see :mod:`mailcli.importer.workers`), giving what one reader gives
  (docs/guarantees.md#files-as-they-are).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, NamedTuple, cast

from mailcli import clock
from mailcli.errors import InputFileError
from mailcli.importer.columns import ColumnPlan, headerless_plan, plan_columns
from mailcli.importer.decoding import (
    MAX_LINE_BYTES,
    DecodeLog,
    LineTooLong,
    line_numbers,
    open_text,
)
from mailcli.importer.detect import DETECT_BYTES, PER_LINE, CsvFormat, detect_format
from mailcli.importer.rowparser import RowParser, row_parser
from mailcli.importrows import OptOut, RowReject, StagedRow


class ImportRow(NamedTuple):
    """One valid contact row, normalised (:meth:`CsvSource.rows`)."""

    line: int
    email: str
    key: str
    first_name: str | None
    last_name: str | None
    attributes: dict[str, str]
    consent_at: str | None  # ISO-8601 UTC, None = the import time
    consent_ip: str | None  # network, e.g. "192.0.2.0/24"


@dataclass(slots=True)
class Boundary:
    """Where one reader of a file hands over to another: the physical line
    at which the other starts reading records.

    It is only a boundary if a record of the first reader ends right before
    it; a quoted field can run across any line break, so the first reader
    checks: ``reached`` when a record ends on the line before, ``passed``
    when one runs across it.
    """

    line: int
    reached: bool = False
    passed: bool = False

    def at(self, next_line: int) -> bool:
        """Called with the line of the next record once it is at or past
        ``line``; True if reading should stop here."""
        if next_line == self.line:
            self.reached = True
            return True
        self.passed = True
        return False


@dataclass
class CsvSource:
    """An open CSV file: detected format, column plan and a row iterator.

    Use as a context manager; :meth:`rows` yields ``ImportRow``/``RowReject``/``OptOut``.
    """

    path: Path
    format: CsvFormat
    plan: ColumnPlan
    size: int
    _binary: BinaryIO = field(repr=False)
    _text: io.TextIOWrapper = field(repr=False)
    _log: DecodeLog = field(repr=False)  # the lines decoded otherwise than the file's encoding
    _reader: Iterator[list[str]] = field(repr=False)  # a csv reader
    _line_offset: int = field(default=0, repr=False)  # physical lines before the reader's first
    _first_row: list[str] | None = field(default=None, repr=False)
    _first_line: int = field(default=1, repr=False)
    now_limit: str = ""  # the latest consent time accepted, ISO-8601 UTC
    mapping: dict[str, str] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def first_line(self) -> int:
        """The physical line of the first record after the header."""
        return self._first_line

    def bytes_read(self) -> int:
        """How far into the file the reader is, for a progress bar."""
        try:
            return self._binary.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self._text.close()

    @property
    def reencoded(self) -> tuple[int, list[int]]:
        """How many lines so far were decoded otherwise than the file's
        encoding, and the byte offsets where the first of them start."""
        return self._log.count, self._log.offsets

    def reencoded_before(self) -> tuple[int, list[int]]:
        """As :attr:`reencoded`, but only the lines before ``split`` (see
        :func:`open_csv`): the decoder reads ahead of the records."""
        until = self._log.until
        assert until is not None
        return self._log.before, [o for o in self._log.offsets if o < until]

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rows(self) -> Iterator[ImportRow | RowReject | OptOut]:
        """Every record after the header, in file order."""
        for row in self._records(None):
            if type(row) is tuple:
                line, email, key, first, last, attributes, consent_at, consent_ip = cast(StagedRow, row)
                yield ImportRow(line, email or key, key, first, last, json.loads(attributes), consent_at, consent_ip)
            else:
                yield row  # type: ignore[misc]

    def staged_rows(self, stop: Boundary | None = None) -> Iterator[StagedRow | RowReject | OptOut]:
        """As :meth:`rows`, but each valid row as the tuple the store stages
        (:data:`~mailcli.importrows.StagedRow`), as the import reads them.

        With ``stop``, the rows end where a record starts at ``stop.line``
        (another reader takes it from there) and ``stop.reached`` is set; if
        a record runs across that line instead, ``stop.passed`` is set and
        reading goes on to the end of the file.
        """
        return self._records(stop)

    def _records(self, stop: Boundary | None) -> Iterator[StagedRow | RowReject | OptOut]:
        parse = row_parser(self.plan, self.now_limit)
        try:
            line = self._first_line
            if self._first_row is not None:  # a header-less file: row 1 is data
                first = parse(line, self._first_row)
                if first is not None:
                    yield first
                line = self._reader.line_num + self._line_offset + 1  # type: ignore[attr-defined]
            yield from self._parse_records(parse, line, stop)
        except UnicodeError as exc:  # a byte that does not decode; UTF-16 without a BOM
            raise _undecodable(self.path, self.format.encoding, exc) from None
        except LineTooLong as exc:
            raise _line_too_long(self.path, exc) from None

    # Complexity: the per-record hot loop of an import: every case inline, no call per record.
    def _parse_records(self, parse: RowParser, line: int, stop: Boundary | None
                       ) -> Iterator[StagedRow | RowReject | OptOut]:
        """The records from physical line ``line`` on (the hot loop)."""
        reader = self._reader
        after = self._line_offset + 1  # the line after the reader's line_num
        stop_line = stop.line if stop is not None else 0
        while True:
            try:
                for row in reader:
                    if row:
                        result = parse(line, row)
                        if result is not None:
                            yield result
                    line = reader.line_num + after  # type: ignore[attr-defined]
                    if stop_line and line >= stop_line:
                        if stop.at(line):  # type: ignore[union-attr]
                            return
                        stop_line = 0
                return
            except csv.Error as exc:
                yield self._malformed(line, exc)
                line = reader.line_num + after  # type: ignore[attr-defined]
                if stop_line and line >= stop_line:
                    if stop.at(line):  # type: ignore[union-attr]
                        return
                    stop_line = 0

    def _malformed(self, line: int, exc: csv.Error) -> RowReject:
        """The reject for a record the csv module refused."""
        if "field limit" in str(exc):
            # Only a quoted field running over many lines gets here (a longer
            # line is refused by the decoder), and where its record ends is
            # then anyone's guess.
            raise InputFileError(
                f"{self.name}: line {line}: a quoted field runs on for more than"
                f" {MAX_LINE_BYTES // (1024 * 1024)} MiB",
                hint='look for a quote (") that is never closed') from None
        # Python 3.10's csv refuses NUL itself; 3.11+ hands the row to the
        # parser, which rejects it with this same reason.
        return RowReject(line, "NUL byte in row" if "NUL" in str(exc) else f"malformed CSV record ({exc})", {})


def open_csv(
    path: str | Path,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    mapping: dict[str, str] | None = None,
    now_limit: str | None = None,
    per_line: bool = False,
    split: int | None = None,
) -> CsvSource:
    """Open a contact file, detect its format and plan its columns.

    Raises InputFileError (exit 2) for a missing, unreadable, binary or empty
    file, or one without an email column. ``now_limit`` is the latest consent
    time accepted (ISO-8601; default a day from now). For the first of two
    readers (see :mod:`mailcli.importer.workers`): ``per_line``, the
    ``encoding`` given was detected by the import, so lines are decoded one
    by one as then; ``split``, the offset where the other reader starts.
    """
    path = Path(path)
    source = str(path)
    try:
        binary: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by CsvSource
    except FileNotFoundError:
        raise InputFileError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{source}: is a directory, not a CSV file") from None
    except OSError as exc:
        raise InputFileError(f"{source}: cannot read ({exc.strerror})") from None
    try:
        fmt = _format(binary, source, encoding, delimiter, per_line)
        return _open(binary, path, fmt, mapping, now_limit or _tomorrow(), split)
    except BaseException:
        binary.close()
        raise


def _tomorrow() -> str:
    return clock.to_iso(clock.now() + timedelta(days=1))


def _format(binary: BinaryIO, source: str, encoding: str | None, delimiter: str | None, per_line: bool) -> CsvFormat:
    """The format of the file open as ``binary``, read from its head."""
    try:
        head = binary.read(DETECT_BYTES)
    except OSError as exc:
        raise InputFileError(f"{source}: cannot read ({exc.strerror})") from None
    if not head.strip():
        raise InputFileError(f"{source}: the file is empty")
    if head.startswith(b"PK\x03\x04"):
        _refuse_zip_of_csv(binary, source)
    fmt = detect_format(head, source, encoding=encoding, delimiter=delimiter, complete=len(head) < DETECT_BYTES)
    if per_line and fmt.encoding in PER_LINE:  # a worker reading a file the import detected
        fmt = CsvFormat(fmt.encoding, fmt.delimiter, fmt.skip_sep_line, per_line=True)
    return fmt


def _open(binary: BinaryIO, path: Path, fmt: CsvFormat, mapping: dict[str, str] | None, now_limit: str,
          split: int | None) -> CsvSource:
    """The source, its header read and its columns planned."""
    binary.seek(0)
    text, log = open_text(binary, fmt.encoding, per_line=fmt.per_line, until=split)
    _set_field_limit()
    reader = csv.reader(text, delimiter=fmt.delimiter)
    header = _read_header(reader, text, fmt, path)
    offset = 1 if fmt.skip_sep_line else 0
    header_line = reader.line_num + offset
    headers = [h.strip().lstrip("\ufeff") for h in header]
    first_row: list[str] | None = None
    try:
        plan = plan_columns(headers, mapping, str(path))
    except InputFileError:
        plan_or_none = headerless_plan(headers) if not mapping else None
        if plan_or_none is None:
            raise
        plan, first_row = plan_or_none, header
    return CsvSource(
        path=path, format=fmt, plan=plan, size=os.fstat(binary.fileno()).st_size, _binary=binary, _text=text,
        _log=log, _reader=reader, _line_offset=offset, _first_row=first_row,
        _first_line=header_line if first_row is not None else header_line + 1, now_limit=now_limit,
        mapping=mapping,
    )


def _read_header(reader: Iterator[list[str]], text: io.TextIOWrapper, fmt: CsvFormat, path: Path) -> list[str]:
    """The first record with a cell that is not blank."""
    try:
        if fmt.skip_sep_line:
            next(text)  # reader.line_num does not count it; start lines at 2
        for row in reader:
            if any(cell.strip() for cell in row):
                return row
    except UnicodeError as exc:  # a byte that does not decode; UTF-16 without a BOM
        raise _undecodable(path, fmt.encoding, exc) from None
    except LineTooLong as exc:
        raise _line_too_long(path, exc) from None
    except csv.Error as exc:
        raise InputFileError(f"{path}: not a readable CSV file ({exc})") from None
    raise InputFileError(f"{path}: the file has no rows")


def open_csv_part(
    path: str | Path, fmt: CsvFormat, plan: ColumnPlan, *, start: int, first_line: int, now_limit: str
) -> CsvSource:
    """The records of an already opened file from byte ``start`` on, which
    must be the start of physical line ``first_line`` and of a record.

    For a second reader of a big file (see :mod:`mailcli.importer.workers`);
    only for encodings where a newline byte is always a newline
    (:data:`~mailcli.importer.detect.SPLITTABLE`).
    """
    path = Path(path)
    binary: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by CsvSource
    try:
        size = os.fstat(binary.fileno()).st_size
        binary.seek(start)
        # A byte-order mark only counts at the start of the file.
        encoding = "utf-8" if fmt.encoding == "utf-8-sig" else fmt.encoding
        text, log = open_text(binary, encoding, per_line=fmt.per_line, start=start)
        _set_field_limit()
        reader = csv.reader(text, delimiter=fmt.delimiter)
        return CsvSource(
            path=path, format=fmt, plan=plan, size=size, _binary=binary, _text=text, _log=log,
            _reader=reader, _line_offset=first_line - 1, _first_line=first_line, now_limit=now_limit,
        )
    except BaseException:
        binary.close()
        raise


def _set_field_limit() -> None:
    # As long as a line may be: a longer field is refused as such (see _malformed).
    if csv.field_size_limit() < MAX_LINE_BYTES:
        csv.field_size_limit(MAX_LINE_BYTES)


def _refuse_zip_of_csv(binary: BinaryIO, source: str) -> None:
    """A ZIP archive of CSV files — what Mailchimp's audience export
    downloads as — gets an error that says what to do with it."""
    import zipfile

    try:
        with zipfile.ZipFile(binary) as archive:
            names = [Path(n).name for n in archive.namelist() if n.lower().endswith(".csv")]
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a readable archive: detect_encoding says what it is
    if names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise InputFileError(
            f"{source}: a ZIP archive of CSV files ({shown}), not a CSV file",
            hint="`mailcli import` reads the archive itself (a Mailchimp export: all three files, opt-outs first)")


def _line_too_long(path: Path, exc: LineTooLong) -> InputFileError:
    (line,) = line_numbers(path, [exc.offset])
    return InputFileError(
        f"{path}: line {line}: longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB, which no contact record is")


def find_undecodable_line(path: Path, encoding: str) -> int:
    """The physical line holding the first byte that does not decode (error path only)."""
    import codecs

    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with open(path, "rb") as handle:
        for piece in handle:  # split at b"\n": each piece holds at most one newline
            try:
                text = decoder.decode(piece)
            except UnicodeError:
                return line
            line += text.count("\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeError:
            return line
    return line


def _undecodable(path: Path, encoding: str, exc: UnicodeError) -> InputFileError:
    bad = find_undecodable_line(path, encoding)
    # A decoding error names its byte; other codec errors say what is wrong.
    detail = "" if isinstance(exc, UnicodeDecodeError) else f" ({exc})"
    return InputFileError(f"{path}: line {bad}: cannot be decoded as {encoding}{detail}",
                          hint="pass the file's encoding, e.g. --encoding cp1252")
