"""Reading a contact spreadsheet (``.xlsx``) as the CSV reader reads a file.

The workbook is opened with openpyxl in read-only mode, so its rows are
streamed from the sheet's XML rather than loaded into memory; values are
read as Excel last calculated them (``data_only``), never formulas. Each
row's cells become the text a person sees in Excel and go through the same
row parser as a CSV record (:mod:`mailcli.importer.rowparser`), so every
rule of a CSV import holds; the line of a row is its row number in the
sheet.

Cells as people have them:

* a number that is whole is written without ``.0`` (a phone number or a
  postcode typed as a number), zero-padded when its cell format is all
  zeros (``0000000000`` keeps the leading 0 of ``0612345678``);
* a date or time is written as ISO 8601 (``2024-03-01 10:12:33``, or the
  day alone when its format shows no time), which is how a CSV consent
  column is read: a naive time is UTC, as Mailchimp writes it;
* ``TRUE``/``FALSE`` for a boolean; empty rows are skipped;
* rows above the header that do not name an email column (a title, merged
  across the columns, and blank rows under it) are skipped: the header is
  the first of the first ``HEADER_SEARCH_ROWS`` rows that names one.

A file that is not a workbook, an encrypted (password-protected) one, an
old ``.xls``, a sheet that is not there or an archive whose sizes could not
be a spreadsheet is refused with one line (exit 2) before anything is read.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailcli.errors import InputFileError
from mailcli.importer.archive import check_archive_sizes
from mailcli.importer.columns import ColumnPlan, headerless_plan, plan_columns
from mailcli.importer.detect import CsvFormat
from mailcli.importer.rowparser import row_parser
from mailcli.importrows import OptOut, RowReject, StagedRow

HEADER_SEARCH_ROWS = 20  # the header is looked for in this many non-blank rows
CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # OLE compound file: .xls, or an encrypted .xlsx
XLSX_FORMAT = CsvFormat("xlsx", ",")  # the rejects file of a workbook is a comma-separated CSV


def file_kind(path: Path) -> str:
    """What a contact file is, by its content: ``"xlsx"`` (an Excel
    workbook), ``"zip"`` (an archive of CSV files) or ``"csv"`` (anything
    else: the CSV reader says what is wrong with it). An encrypted workbook
    or an old ``.xls`` is refused here; a file named ``.xlsx`` that is not a
    workbook too."""
    import zipfile

    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return "csv"  # missing, a folder, unreadable: open_csv says which
    if head == CFB_MAGIC:
        refuse_compound_file(path)
    workbook_name = path.suffix.lower() in (".xlsx", ".xlsm")
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise InputFileError(f"{path}: a damaged ZIP archive ({exc})",
                                 hint="download it again" + (" or save it again from Excel" if workbook_name else "")
                                 ) from None
        if "xl/workbook.xml" in names:
            return "xlsx"
        if workbook_name:
            raise InputFileError(f"{path}: not an Excel workbook (a ZIP archive without one)")
        return "zip"
    if workbook_name:
        raise InputFileError(f"{path}: not an Excel workbook (.xlsx)",
                             hint="save it from Excel as .xlsx (Excel Workbook) or as CSV")
    return "csv"


def refuse_compound_file(path: Path) -> None:
    """An OLE compound file is either an encrypted workbook or an old ``.xls``: say which."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 20)
    if "EncryptionInfo".encode("utf-16-le") in head:
        raise InputFileError(
            f"{path}: the workbook is encrypted (protected with a password)",
            hint="open it in Excel, remove the password (File > Info > Protect Workbook) and save, or save it as CSV")
    raise InputFileError(f"{path}: an Excel 97-2003 workbook (.xls), which mailcli does not read",
                         hint="save it from Excel as .xlsx (Excel Workbook) or as CSV")


@dataclass
class XlsxSource:
    """One sheet of an open workbook: its column plan and its rows.

    Offers what the import uses of a :class:`~mailcli.importer.reader.CsvSource`.
    """

    path: Path
    sheet: str
    plan: ColumnPlan
    size: int
    now_limit: str
    _workbook: Any = field(repr=False)
    _rows: Iterator[tuple[int, list[str]]] = field(repr=False)
    _first_row: tuple[int, list[str]] | None = field(default=None, repr=False)
    _header_line: int = 1
    _rows_hint: int = 0  # the rows the sheet says it has, for progress
    _row: int = field(default=0, repr=False)
    format: CsvFormat = XLSX_FORMAT
    reencoded: tuple[int, list[int]] = (0, [])

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def first_line(self) -> int:
        return self._first_row[0] if self._first_row is not None else self._header_line + 1

    def bytes_read(self) -> int:
        """How far into the sheet the reader is, scaled to the file size (for a progress bar)."""
        if self._rows_hint <= 0:
            return 0
        return min(self.size, self.size * self._row // self._rows_hint)

    def staged_rows(self, stop: object = None) -> Iterator[StagedRow | RowReject | OptOut]:
        """Every row after the header, in sheet order, parsed as a CSV record is."""
        parse = row_parser(self.plan, self.now_limit)
        if self._first_row is not None:  # a sheet of bare addresses: row 1 is data
            first = parse(*self._first_row)
            if first is not None:
                yield first
        try:
            for line, cells in self._rows:
                self._row = line
                if cells:
                    result = parse(line, cells)
                    if result is not None:
                        yield result
        except InputFileError:
            raise
        except Exception as exc:  # a broken sheet found half way: the import rolls back
            raise _unreadable(self.path, exc) from None

    def close(self) -> None:
        self._workbook.close()

    def __enter__(self) -> XlsxSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_xlsx(path: Path, *, sheet: str | None = None, mapping: dict[str, str] | None = None,
              now_limit: str) -> XlsxSource:
    """Open sheet ``sheet`` (default: the first) of a workbook and plan its columns.

    Raises InputFileError (exit 2) for a file that is not a readable
    workbook, a missing sheet, or a sheet without an email column.
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            check_archive_sizes(archive, str(path))
    except zipfile.BadZipFile as exc:
        raise InputFileError(f"{path}: not an Excel workbook (.xlsx): {exc}") from None
    try:
        workbook = _load(path)
    except InputFileError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from None
    try:
        return _open_sheet(path, workbook, sheet, mapping, now_limit)
    except BaseException:
        workbook.close()
        raise


def _load(path: Path) -> Any:
    import openpyxl

    with warnings.catch_warnings():
        # "Workbook contains no default style" and the like say nothing about the data.
        warnings.simplefilter("ignore")
        return openpyxl.load_workbook(path, read_only=True, data_only=True, keep_links=False)


# Complexity: one refusal per way a sheet is unusable (missing, a chart, unreadable, no header).
def _open_sheet(path: Path, workbook: Any, sheet: str | None, mapping: dict[str, str] | None,
                now_limit: str) -> XlsxSource:
    names: list[str] = list(workbook.sheetnames)
    if sheet is None:
        if not names:
            raise InputFileError(f"{path}: the workbook has no sheets")
        sheet = names[0]
    elif sheet not in names:
        raise InputFileError(f"{path}: no sheet named {sheet!r}",
                             hint="sheets in the workbook: " + ", ".join(repr(n) for n in names))
    worksheet = workbook[sheet]
    if not hasattr(worksheet, "iter_rows") or not hasattr(worksheet, "reset_dimensions"):
        raise InputFileError(f"{path}: sheet {sheet!r} is a chart, not a sheet of cells")
    rows_hint = worksheet.max_row or 0
    # The dimension a sheet declares can be far bigger than its data (a
    # whole column formatted): read the cells that are there, no more.
    worksheet.reset_dimensions()
    rows = _cell_rows(worksheet)
    try:
        header_line, header, first_rows = _find_header(path, rows, mapping)
    except InputFileError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from None
    first_row: tuple[int, list[str]] | None = None
    try:
        plan = plan_columns(header, mapping, str(path))
    except InputFileError:
        plan_or_none = headerless_plan(header) if not mapping else None
        if plan_or_none is None:
            raise
        plan, first_row = plan_or_none, (header_line, header)
    return XlsxSource(
        path=path, sheet=sheet, plan=plan, size=path.stat().st_size, now_limit=now_limit, _workbook=workbook,
        _rows=_chain(first_rows, rows), _first_row=first_row, _header_line=header_line, _rows_hint=rows_hint)


def _chain(first: list[tuple[int, list[str]]], rest: Iterator[tuple[int, list[str]]]
           ) -> Iterator[tuple[int, list[str]]]:
    yield from first
    yield from rest


def _find_header(path: Path, rows: Iterator[tuple[int, list[str]]], mapping: dict[str, str] | None
                 ) -> tuple[int, list[str], list[tuple[int, list[str]]]]:
    """The header row, its cells, and the rows read past it that are data.

    The first non-blank row that names an email column (or has a column
    ``--map`` names) is the header; blank rows and titles above it are
    skipped. When none of the first rows does, the first non-blank row is the
    header, so the error (or a sheet of bare addresses) is the CSV reader's.
    """
    seen: list[tuple[int, list[str]]] = []
    for line, cells in rows:
        if not any(cell.strip() for cell in cells):
            continue
        try:
            plan_columns(cells, mapping, str(path))
        except InputFileError:
            seen.append((line, cells))
            if len(seen) >= HEADER_SEARCH_ROWS:
                break
            continue
        return line, cells, []
    if not seen:
        raise InputFileError(f"{path}: the sheet has no rows")
    line, cells = seen[0]
    return line, cells, seen[1:]


def _cell_rows(worksheet: Any) -> Iterator[tuple[int, list[str]]]:
    """Each row of the sheet as ``(row number, cell texts)``, trailing empty cells dropped."""
    for number, cells in enumerate(worksheet.iter_rows(), start=1):
        texts = [cell_text(cell.value, getattr(cell, "number_format", None)) for cell in cells]
        while texts and not texts[-1]:
            texts.pop()
        yield number, texts


# Complexity: one branch per type a cell holds, each shown as a spreadsheet shows it.
def cell_text(value: object, number_format: str | None) -> str:
    """A cell's value as the text a person sees (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return _number_text(value, number_format)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time() and not _shows_time(number_format):
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds" if not value.microsecond else "microseconds")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def _number_text(value: float, number_format: str | None) -> str:
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if not value.is_integer():
            return repr(value)
        value = int(value)
    text = str(value)
    if number_format and value >= 0 and len(number_format) > 1 and set(number_format) == {"0"}:
        text = text.rjust(len(number_format), "0")
    return text


def _shows_time(number_format: str | None) -> bool:
    fmt = (number_format or "").lower()
    return "h" in fmt or "s" in fmt or ":" in fmt


def _unreadable(path: Path, exc: Exception) -> InputFileError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputFileError(f"{path}: not a readable Excel workbook ({detail[:200]})",
                          hint="open it in Excel and save it again as .xlsx, or save it as CSV")
