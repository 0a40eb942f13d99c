"""Feeding parsed contact rows to the store in batches — in a second process
for big files.

Parsing and validating a row in Python costs about as much as SQLite needs to
stage it, so for a big file a child process parses (``importer``) while this
process writes; on a two-core machine the import then takes about as long
as the slower half instead of the sum. Small files are parsed in-process:
starting an interpreter costs more than they take.

Each batch carries the staged rows as plain tuples — ``(line, email, key,
first_name, last_name, attributes_json, consent_at, consent_ip)``, the order
of :class:`~mailcli.importer.ImportRow` with the attributes already encoded —
the rejects, and how far into the file the reader is (for a progress bar).
Batches are pickled over a pipe; at most one is in flight each way, so memory
stays flat. The child ignores Ctrl-C: the parent handles it, stops the child
and rolls back.
"""

from __future__ import annotations

import pickle
import signal
import struct
from collections.abc import Iterator
from json.encoder import encode_basestring as _quote
from pathlib import Path
from typing import Any, NamedTuple

from mailcli.errors import InputFileError, MailcliError
from mailcli.importer import CsvSource, ImportRow, RowReject, open_csv

BATCH = 5000
PARALLEL_MIN_BYTES = 8 * 1024 * 1024  # ~100,000 rows; below that a child costs more than it saves

StagedRow = tuple[int, str, str, "str | None", "str | None", str, "str | None", "str | None"]


class Batch(NamedTuple):
    rows: list[StagedRow]
    rejects: list[RowReject]
    position: int  # bytes of the file read so far


def encode_attributes(attributes: dict[str, str]) -> str:
    """Compact JSON of a flat str→str dict, as SQLite's json functions write it.

    About 4x faster than ``json.dumps`` per call, which matters a million times.
    """
    if not attributes:
        return "{}"
    return "{" + ",".join([f"{_quote(k)}:{_quote(v)}" for k, v in attributes.items()]) + "}"


def staged(row: ImportRow) -> StagedRow:
    line, email, key, first, last, attributes, consent_at, consent_ip = row
    return (line, email, key, first, last, encode_attributes(attributes) if attributes else "{}",
            consent_at, consent_ip)


def _batches(source: CsvSource, size: int) -> Iterator[Batch]:
    rows: list[StagedRow] = []
    rejects: list[RowReject] = []
    for row in source.rows():
        if type(row) is RowReject:
            rejects.append(row)
            if len(rejects) >= size:
                yield Batch(rows, rejects, source.bytes_read())
                rows, rejects = [], []
            continue
        line, email, key, first, last, attributes, consent_at, consent_ip = row  # type: ignore[misc]
        rows.append((line, email, key, first, last,
                     encode_attributes(attributes) if attributes else "{}", consent_at, consent_ip))
        if len(rows) >= size:
            yield Batch(rows, rejects, source.bytes_read())
            rows, rejects = [], []
    yield Batch(rows, rejects, source.size)


def iter_batches(source: CsvSource, *, size: int = BATCH, parallel: bool | None = None) -> Iterator[Batch]:
    """Batches of staged rows and rejects from an open source, in file order.

    ``parallel=None`` decides by file size. Errors found while reading (an
    undecodable line) are raised here as in-process.
    """
    if parallel is None:
        parallel = source.size >= PARALLEL_MIN_BYTES
    if not parallel:
        yield from _batches(source, size)
        return
    yield from _from_child(source, size)


def _from_child(source: CsvSource, size: int) -> Iterator[Batch]:
    # A fresh interpreter rather than multiprocessing: no fork of a process
    # that holds a database connection and a progress thread, and no
    # re-import of whatever __main__ started mailcli.
    import subprocess
    import sys

    args = pickle.dumps((str(source.path), source.format, source.mapping, size))
    process = subprocess.Popen(
        [sys.executable, "-c", "from mailcli.importfeed import child_main; child_main()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(args)
        process.stdin.close()
        stream = process.stdout
        while True:
            message = _read_frame(stream)
            if message is _EOF:
                raise InputFileError(f"{source.name}: the reader stopped unexpectedly")
            if message is None:
                return
            if isinstance(message, tuple) and message and message[0] == "error":
                _, kind, text, hint = message
                raise (InputFileError if kind == "input" else MailcliError)(text, hint=hint)
            yield message
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()


_EOF = object()
_HEADER = struct.Struct(">Q")


def _read_frame(stream: Any) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return _EOF
    (length,) = _HEADER.unpack(header)
    payload = stream.read(length)
    if len(payload) < length:
        return _EOF
    return pickle.loads(payload)


def _write_frame(stream: Any, message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)


def child_main() -> None:
    """Entry point of the reader process: arguments on stdin, frames on stdout."""
    # Ctrl-C reaches the whole process group; the parent decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import sys

    path, fmt, mapping, size = pickle.loads(sys.stdin.buffer.read())
    out = sys.stdout.buffer
    try:
        with open_csv(Path(path), encoding=fmt.encoding, delimiter=fmt.delimiter, mapping=mapping) as source:
            for batch in _batches(source, size):
                _write_frame(out, batch)
        _write_frame(out, None)
    except MailcliError as exc:
        kind = "input" if isinstance(exc, InputFileError) else "other"
        _write_frame(out, ("error", kind, exc.message, exc.hint))
    except (BrokenPipeError, OSError):
        return  # the parent went away (interrupted); nothing to report to
    out.flush()


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
