"""Two reader processes for a big file, one half each.

Why, and how they hand rows over:

* Parsing and checking a row in Python costs several times what SQLite
  needs to stage it, so a big import is bound by one core running Python.
  Two worker processes (:func:`worker_main`) each read half of the file and
  the import process only stages what they send, so both cores parse.
* Rows cross the process boundary as a SQLite database: a worker stages a
  frame of rows in an in-memory database
  (:func:`mailcli.store.staging.sqlite_frame`) and sends its serialized
  bytes through a pipe; the store loads them with one ``INSERT ... SELECT``.
  Sending the rows marshalled instead costs the receiver about what the
  sender saves, and the receiver's time comes out of the workers' cores
  (benchmarks/README.md, "Import frames"). Python 3.10 has no
  ``serialize``: there the frames are marshalled tuples, which the store
  inserts a hundred per statement.
* The second half starts at a line break near the middle
  (:func:`mailcli.importer.feed.find_split`). A quoted field can span line
  breaks, so that is only a record boundary if the first worker, reading on
  from the start of the file exactly as a single reader would, ends a record
  right before it (see :class:`~mailcli.importer.reader.Boundary`). If it
  does not, the first worker reads on to the end, and the second worker's
  rows and rejects are withdrawn (``Batch.retract_from``): the result is
  always that of one reader going through the file.
* The workers check suppression (they get the HMAC secret and the digests
  through their stdin, never on a command line) and, for ``--check-mx``,
  count domains. They ignore Ctrl-C and run in their own session: the import
  process handles the interrupt, rolls back and ends them.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import sqlite3
import struct
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from mailcli.errors import InputFileError, MailcliError
from mailcli.importer.columns import ColumnPlan
from mailcli.importer.decoding import KEEP_OFFSETS
from mailcli.importer.detect import CsvFormat
from mailcli.importer.feed import batch_rows
from mailcli.importer.reader import Boundary, CsvSource, open_csv, open_csv_part
from mailcli.importrows import Batch, OptOut, RowReject, Suppression
from mailcli.store.staging import sqlite_frame

FRAME_ROWS = 10_000  # rows per frame from a worker (~1.5 MB)
# Whether worker rows cross as serialized SQLite databases (Python 3.11+);
# else they are marshalled (see the module docstring).
SQLITE_FRAMES = hasattr(sqlite3.Connection, "serialize")

# Frame on a worker's stdout: kind, length of the JSON meta, length of the data.
_HEADER = struct.Struct(">cII")
_ROWS, _BOUNDARY, _END, _ERROR = b"R", b"B", b"E", b"X"


class WorkerError(MailcliError):
    """A worker process failed (a bug or the system, not the file): exit 1."""


class ReaderProcess:
    """One worker process and the frames it has sent so far."""

    def __init__(self) -> None:
        import subprocess

        self.offset = self.position = 0
        self.suppressed = 0
        self.done = False
        self.eof = False
        self.dropped = False
        self.domains: dict[str, int] | None = None
        self.reencoded: tuple[int, list[int]] = (0, [])
        self._buffer = bytearray()
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOT.format(parent=os.getpid())], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        assert self._process.stdin is not None and self._process.stdout is not None
        self.stdout = self._process.stdout
        _grow_pipe(self.stdout.fileno())
        os.set_blocking(self.stdout.fileno(), False)

    def start(self, job: dict[str, Any], offset: int) -> None:
        """Give the worker its part of the file (it waits for this on stdin)."""
        assert self._process.stdin is not None
        self.offset = self.position = offset
        try:
            self._process.stdin.write(json.dumps(job).encode("utf-8"))
            self._process.stdin.close()
        except BrokenPipeError:
            pass  # it is gone already; reading its output says so

    def read(self) -> Iterator[tuple[bytes, dict[str, Any], bytes]]:
        """The complete frames that have arrived (call when readable)."""
        try:
            chunk = os.read(self.stdout.fileno(), 1 << 20)
        except BlockingIOError:
            return
        if not chunk:
            self.eof = True
        buffer = self._buffer
        buffer += chunk
        while len(buffer) >= _HEADER.size:
            kind, meta_length, data_length = _HEADER.unpack_from(buffer)
            end = _HEADER.size + meta_length + data_length
            if len(buffer) < end:
                break
            meta = json.loads(bytes(buffer[_HEADER.size:_HEADER.size + meta_length]))
            data = bytes(buffer[_HEADER.size + meta_length:end])
            del buffer[:end]
            yield kind, meta, data

    def finish(self, meta: dict[str, Any]) -> None:
        """The worker's last frame: what it counted."""
        self.done = True
        self.domains = meta["domains"]
        self.reencoded = (meta["reencoded"], meta["reencoded_at"])

    def wait(self) -> int:
        return self._process.wait()

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self.stdout.close()
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(OSError):  # a broken pipe: it is gone anyway
                self._process.stdin.close()


class TwoReaders:
    """The two worker processes for one file, started early and told their
    part later: their interpreters start up while the import process loads
    its settings and opens the database."""

    def __init__(self) -> None:
        self.first, self.second = ReaderProcess(), ReaderProcess()
        self.sqlite_frames = False  # the rows crossed as SQLite databases (else marshalled)
        self.withdrawn = False  # the second worker started inside a record: the first read it all
        self._stopped = False

    def batches(self, source: CsvSource, suppression: Suppression | None, start: int, line: int,
                domains: dict[str, int] | None) -> Iterator[Batch]:
        """The file's batches: the first worker reads up to byte ``start``,
        physical line ``line``; the second from there on."""
        common: dict[str, Any] = {
            "path": str(Path(source.path).resolve()), "encoding": source.format.encoding,
            "per_line": source.format.per_line,
            "delimiter": source.format.delimiter, "plan": asdict(source.plan),
            "now_limit": source.now_limit, "count_domains": domains is not None,
            "secret": suppression.secret.hex() if suppression else None,
            "digests": sorted(suppression.digests) if suppression else None,
            "sqlite_frames": SQLITE_FRAMES,
        }
        if not SQLITE_FRAMES:
            _fix_mmap_threshold()
        try:
            self.first.start({**common, "part": 1, "mapping": source.mapping, "stop_line": line,
                              "stop_offset": start}, 0)
            self.second.start({**common, "part": 2, "start": start, "first_line": line}, start)
            self.sqlite_frames = SQLITE_FRAMES
            for batch in _Handover(self.first, self.second, line, SQLITE_FRAMES).batches(domains):
                self.withdrawn |= bool(batch.retract_from)
                yield batch
        finally:
            self.stop()

    def reencoded(self) -> tuple[int, list[int]]:
        """After the batches: how many lines were decoded otherwise than the
        file's encoding, and the byte offsets of the first of them."""
        count, offsets = 0, []
        for worker in (self.first, self.second):
            if not worker.dropped:
                count += worker.reencoded[0]
                offsets += worker.reencoded[1]
        return count, sorted(offsets)[:KEEP_OFFSETS]

    def stop(self) -> None:
        """End the workers (if they are still running)."""
        if not self._stopped:
            self._stopped = True
            self.first.stop()
            self.second.stop()


class _Handover:
    """The batches of both workers as they arrive, withdrawing the second
    worker's if the first reads across its start (see the module docstring)."""

    def __init__(self, first: ReaderProcess, second: ReaderProcess, line: int, sqlite: bool) -> None:
        import selectors

        self.first, self.second, self.line, self.sqlite = first, second, line, sqlite
        self.boundary: bool | None = None  # reached (True) or passed (False) by the first worker
        self.held: InputFileError | None = None  # the second worker's error, pending the boundary
        self.selector = selectors.DefaultSelector()
        for each in (first, second):
            self.selector.register(each.stdout, selectors.EVENT_READ, each)

    # Complexity: the hand-over loop of two processes: each frame kind and each way a worker can end.
    def batches(self, domains: dict[str, int] | None) -> Iterator[Batch]:
        selector = self.selector
        while selector.get_map():
            for key, _ in selector.select():
                worker: ReaderProcess = key.data
                if worker.dropped:
                    continue
                for kind, meta, data in worker.read():
                    yield from self._frame(worker, kind, meta, data)
                if worker.eof and not worker.dropped:
                    selector.unregister(worker.stdout)
                    if not worker.done:
                        raise WorkerError(f"import worker stopped unexpectedly (exit status {worker.wait()})")
        if self.boundary is None:
            raise WorkerError("import worker ended before the other worker's start")
        if self.held is not None:
            raise self.held
        if domains is not None:
            for each in (self.first, self.second):
                if not each.dropped:
                    for domain, count in (each.domains or {}).items():
                        domains[domain] = domains.get(domain, 0) + count

    def _frame(self, worker: ReaderProcess, kind: bytes, meta: dict[str, Any], data: bytes) -> Iterator[Batch]:
        if kind == _ROWS:
            yield self._rows(worker, meta, data)
        elif kind == _BOUNDARY:
            self.boundary = meta["reached"]
            if not self.boundary:  # the second worker started inside a record
                yield self._drop_second()
            elif self.held is not None:
                raise self.held
        elif kind == _END:
            worker.finish(meta)
        elif meta.get("internal"):
            raise WorkerError(f"import worker failed: {meta['message']}")
        else:  # a file error, e.g. a byte that does not decode
            error = InputFileError(meta["message"], hint=meta.get("hint"))
            if worker is self.first or self.boundary:
                raise error
            self.held = error  # only if the first worker confirms the second one's start
            worker.done = True

    def _rows(self, worker: ReaderProcess, meta: dict[str, Any], data: bytes) -> Batch:
        worker.position = meta["position"]
        worker.suppressed += meta["suppressed"]
        position = self.first.position + self.second.position - self.second.offset
        if self.sqlite:
            return Batch([], [], position, meta["suppressed"], data)
        rows, rejects, optouts = marshal.loads(data)
        return Batch(rows, [RowReject(*r) for r in rejects], position, meta["suppressed"],
                     optouts=[OptOut(*o) for o in optouts])

    def _drop_second(self) -> Batch:
        """The second worker's rows are the first one's: withdraw what it sent."""
        second = self.second
        if second.stdout in self.selector.get_map():  # it may have ended already
            self.selector.unregister(second.stdout)
        second.stop()
        second.dropped = True
        self.held = None  # its errors are the first worker's now too
        return Batch([], [], self.first.position, -second.suppressed, retract_from=self.line)


def _fix_mmap_threshold() -> None:
    """Keep glibc from moving big short-lived buffers onto its heap.

    Once a buffer above its mmap threshold (128 KiB) is freed, glibc raises
    the threshold to that size, and later frames (~1 MiB each) are then
    allocated on the heap between the small objects of the rows unmarshalled
    from them, which fragments it: the import process grew with every
    million rows. Setting the threshold explicitly turns that adaptation
    off. Elsewhere (no glibc) this does nothing.
    """
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


# The current folder ("" first on sys.path with -c) is left out, so a
# "mailcli" folder there is never imported (what -P does on 3.11+).
_WORKER_BOOT = ("import sys; sys.path[:] = [p for p in sys.path if p]; "
                "from mailcli.importer.workers import worker_main; worker_main({parent})")


def _grow_pipe(fd: int) -> None:
    # Fewer, bigger reads per frame; Linux only, and only a hint.
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, ImportError, ValueError):
        pass


# ------------------------------------------------------------------ the worker


def worker_main(parent: int | None = None) -> None:
    """A worker process: read the job from stdin, send frames to stdout."""
    import gc
    import signal

    if parent is not None:
        from mailcli.lifeline import die_with_parent

        die_with_parent(parent)  # a killed import must not leave its readers behind
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the import process handles Ctrl-C and ends us
    # Parsing makes no reference cycles worth collecting often; the frame's
    # rows (tens of thousands of tuples) made each collection long.
    gc.set_threshold(100_000, 50, 100)
    out = sys.stdout.buffer
    job = sys.stdin.buffer.read()
    if not job:  # the import process ended without giving us a part
        return
    try:
        run_worker(json.loads(job), out)
    except InputFileError as exc:
        _send(out, _ERROR, {"message": exc.message, "hint": exc.hint})
    except BrokenPipeError:  # the import process is gone
        os._exit(1)
    except Exception as exc:  # noqa: BLE001 - reported to the import process, which fails loudly
        import traceback

        _send(out, _ERROR, {"message": "".join(traceback.format_exception_only(exc)).strip(), "internal": True})


# Complexity: the worker's life in order: handshake, read, hand over, report, each failure said to the parent.
def run_worker(job: dict[str, Any], out: IO[bytes]) -> None:
    """Read one part of a file and send its rows in frames (see the module docstring)."""
    source, stop = _open_part(job)
    suppression = Suppression(bytes.fromhex(job["secret"]), set(job["digests"])) if job["secret"] else None
    domains: dict[str, int] | None = {} if job["count_domains"] else None
    boundary_sent = False
    with source:
        for batch in batch_rows(source.staged_rows(stop), FRAME_ROWS, suppression, domains, source.bytes_read):
            if stop is not None and stop.passed and not boundary_sent:
                # Tell before sending rows from the other part's lines.
                _send(out, _BOUNDARY, {"reached": False})
                boundary_sent = True
            _send(out, _ROWS, {"position": batch.position, "suppressed": batch.suppressed},
                  _frame(batch, job["sqlite_frames"]))
    if stop is not None and not boundary_sent:
        _send(out, _BOUNDARY, {"reached": stop.reached})
    # Up to the other part's start, unless this part read across it.
    count, offsets = source.reencoded_before() if stop is not None and stop.reached else source.reencoded
    _send(out, _END, {"domains": domains, "reencoded": count, "reencoded_at": offsets})


def _open_part(job: dict[str, Any]) -> tuple[CsvSource, Boundary | None]:
    """The worker's part of the file, and where the first part stops."""
    plan = _plan_from(job["plan"])
    if job["part"] == 2:
        fmt = CsvFormat(job["encoding"], job["delimiter"], per_line=job["per_line"])
        return open_csv_part(job["path"], fmt, plan, start=job["start"], first_line=job["first_line"],
                             now_limit=job["now_limit"]), None
    source = open_csv(job["path"], encoding=job["encoding"], delimiter=job["delimiter"],
                      mapping=job["mapping"], now_limit=job["now_limit"], per_line=job["per_line"],
                      split=job["stop_offset"])
    if source.plan != plan:
        source.close()
        raise RuntimeError("the file's columns differ from what the import planned")
    return source, Boundary(job["stop_line"])


def _plan_from(data: dict[str, Any]) -> ColumnPlan:
    """The plan the import made, from its JSON (lists back to tuples)."""
    values: dict[str, Any] = {name: tuple(value) if isinstance(value, list) else value for name, value in data.items()}
    values["attributes"] = tuple((name, index) for name, index in data["attributes"])
    return ColumnPlan(**values)


def _frame(batch: Batch, sqlite: bool) -> bytes:
    """A batch as the bytes of one frame."""
    if sqlite:
        return sqlite_frame(batch.rows, batch.rejects, batch.optouts)
    return marshal.dumps((batch.rows, [tuple(r) for r in batch.rejects], [tuple(o) for o in batch.optouts]))


def _send(out: IO[bytes], kind: bytes, meta: dict[str, Any], data: bytes = b"") -> None:
    encoded = json.dumps(meta).encode("utf-8")
    out.write(_HEADER.pack(kind, len(encoded), len(data)))
    out.write(encoded)
    out.write(data)
    out.flush()
