"""Feeding parsed contact rows to the store in batches — from this process,
or for a big file from two worker processes reading one half each — and
the rejects file.

Why two workers, and how they hand rows over:

* Parsing and checking a row in Python costs several times what SQLite
  needs to stage it, so a big import is bound by one core running Python.
  Two worker processes (``_worker_main``) each read half of the file and
  this process only stages what they send, so both cores parse.
* Rows cross the process boundary as a SQLite database: a worker inserts a
  frame of rows into an in-memory database (``executemany``, in C) and sends
  ``serialize()``'s bytes through a pipe; the store ``deserialize``s them into
  an attached schema and copies them with one ``INSERT ... SELECT``. Sending
  the rows marshalled instead costs the receiver about what the sender saves
  (~1.6 µs a row to insert against ~0.15 to copy), and the receiver's time
  comes out of the workers' cores. Python 3.10 has no ``serialize``: there
  the frames are marshalled tuples, which the store inserts a hundred per
  statement; still about a third faster than reading in one process.
* The second half starts at a line break near the middle. A quoted field can
  span line breaks, so that is only a record boundary if the first worker,
  reading on from the start of the file exactly as a single reader would,
  ends a record right before it (see :class:`~mailcli.importer.Boundary`).
  If it does not, the first worker reads on to the end, and the second
  worker's rows and rejects are withdrawn (``Batch.retract_from``): the
  result is always that of one reader going through the file.
* Encodings whose newline byte can be part of another character (UTF-16)
  and files under ``PARALLEL_MIN_BYTES`` are read in this process.
* The workers check suppression (they get the HMAC secret and the digests
  through their stdin, never on a command line) and, for ``--check-mx``,
  count domains. They ignore Ctrl-C and run in their own session: the import
  process handles the interrupt, rolls back and ends them.

In this process a batch carries the staged rows as plain tuples —
``(line, email, key, first_name, last_name, attributes_json, consent_at,
consent_ip)``, the order of :class:`~mailcli.importer.ImportRow` with the
attributes already encoded and ``email`` None where it equals the key, which
is the order of the staging table.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import marshal
import os
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any, NamedTuple

from mailcli.cells import neutralise
from mailcli.decoding import KEEP_OFFSETS, line_numbers
from mailcli.errors import InputFileError, MailcliError
from mailcli.importer import (
    SPLITTABLE,
    Boundary,
    ColumnPlan,
    CsvFormat,
    CsvSource,
    ImportRow,
    OptOut,
    RowReject,
    StagedRow,
    encode_attributes,
    open_csv,
    open_csv_part,
)

BATCH = 5000  # rows per executemany in this process
FRAME_ROWS = 10_000  # rows per frame from a worker (~1.5 MB)
PARALLEL_MIN_BYTES = 8 * 1024 * 1024  # smaller files are read here: starting workers costs ~0.2 s

# Frame on a worker's stdout: kind, length of the JSON meta, length of the data.
_HEADER = struct.Struct(">cII")
_ROWS, _BOUNDARY, _END, _ERROR = b"R", b"B", b"E", b"X"

# The tables of a worker frame; the store copies them into its temp tables.
FRAME_SCHEMA = (
    "CREATE TABLE rows (line INTEGER NOT NULL, email TEXT, key TEXT NOT NULL, first_name TEXT,"
    " last_name TEXT, attributes TEXT NOT NULL, consent_at TEXT, consent_ip TEXT)",
    "CREATE TABLE rejects (line INTEGER NOT NULL, reason TEXT NOT NULL, raw TEXT NOT NULL)",
    "CREATE TABLE optouts (line INTEGER NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, at TEXT)",
)


class WorkerError(MailcliError):
    """A worker process failed (a bug or the system, not the file): exit 1."""


class Batch(NamedTuple):
    rows: list[StagedRow]
    rejects: list[RowReject]
    position: int  # bytes of the file read so far
    suppressed: int = 0  # rows left out because the address is suppressed
    frame: bytes | None = None  # a worker's rows and rejects: a serialized SQLite database
    retract_from: int = 0  # withdraw the worker rows, rejects and opt-outs from this line on
    optouts: Sequence[OptOut] = ()  # rows of people who left the list at the file's source


class Suppression:
    """Whether an address key is on the suppression list (for this list or all
    marketing), by its HMAC (E17) — the same value as ``tokens.address_hmac``."""

    def __init__(self, secret: bytes, digests: set[str]) -> None:
        self.secret = secret
        self.digests = digests

    def __call__(self, key: str) -> bool:
        digest = hmac.digest(self.secret, b"address:" + key.encode("utf-8"), "sha256").hex()
        return digest in self.digests


# A function the store calls inside its transaction, once it knows the
# suppression list, with whether it can take worker frames.
BatchSource = Callable[[Suppression | None, bool], Iterable[Batch]]


def sqlite_frames() -> bool:
    """Whether worker rows can cross as serialized SQLite databases (Python
    3.11+); else they are marshalled (see the module docstring)."""
    import sqlite3

    return hasattr(sqlite3.Connection, "serialize")


def staged(row: ImportRow) -> StagedRow:
    line, email, key, first, last, attributes, consent_at, consent_ip = row
    return (line, email if email != key else None, key, first, last,
            encode_attributes(attributes) if attributes else "{}", consent_at, consent_ip)


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

    ``batches`` is the :data:`BatchSource` for :func:`~mailcli.store.contacts.import_batches`;
    with ``count_domains``, ``domains`` afterwards counts the valid rows per
    domain (for ``--check-mx``).
    """

    def __init__(self, source: CsvSource, *, count_domains: bool = False, size: int = BATCH) -> None:
        self.source = source
        self.size = size
        self.domains: dict[str, int] | None = {} if count_domains else None
        self.workers_used = False
        self.withdrawn = False  # the second worker started inside a record: the first read it all
        self.sqlite_frames = False  # the workers' rows crossed as SQLite databases (else marshalled)
        self._read_by: tuple[_Worker, _Worker] | None = None
        # Started now, told their part later: their interpreters start up
        # while this process loads its settings and opens the database.
        self._workers = (_Worker(), _Worker()) if self.parallel() else None

    def parallel(self) -> bool:
        """Whether two workers would read this file."""
        source = self.source
        return (source.size >= PARALLEL_MIN_BYTES and source.format.encoding in SPLITTABLE
                and (os.cpu_count() or 1) > 1
                and os.name == "posix" and bool(sys.executable))  # pipes in selectors, setsid

    @property
    def how_read(self) -> str:
        """How the file was read, in words (``import -v`` prints it)."""
        if not self.workers_used:
            return "read by this process"
        how = "read by two processes, their rows handed over as " + (
            "SQLite databases" if self.sqlite_frames else "marshalled tuples")
        if self.withdrawn:
            how += "; the second half began inside a quoted field, so the first process read it all"
        return how

    def batches(self, suppression: Suppression | None, frames: bool) -> Iterator[Batch]:
        if frames and self._workers is not None:
            split = find_split(self.source.path, self.source.size)
            if split is not None and split[1] > self.source._first_line + 1:
                self.workers_used = True
                self._read_by = self._workers
                return self._from_workers(self._workers, suppression, *split)
        self.close()
        return batch_rows(self.source.staged_rows(), self.size, suppression, self.domains,
                          self.source.bytes_read)

    def close(self) -> None:
        """End the workers (if they are still running)."""
        if self._workers is not None:
            for worker in self._workers:
                worker.stop()
            self._workers = None

    def reencoded(self) -> tuple[int, list[int]]:
        """After the batches: how many lines were decoded otherwise than the
        file's encoding, and the physical lines of the first of them."""
        if self._read_by is None:
            count, offsets = self.source.reencoded
        else:
            count, offsets = 0, []
            for worker in self._read_by:
                if not worker.dropped:
                    count += worker.reencoded[0]
                    offsets += worker.reencoded[1]
            offsets = sorted(offsets)[:KEEP_OFFSETS]
        return count, line_numbers(self.source.path, offsets)

    def __enter__(self) -> ImportFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _from_workers(self, workers: tuple[_Worker, _Worker], suppression: Suppression | None,
                      start: int, line: int) -> Iterator[Batch]:
        source = self.source
        common: dict[str, Any] = {
            "path": str(Path(source.path).resolve()), "encoding": source.format.encoding,
            "per_line": source.format.per_line,
            "delimiter": source.format.delimiter, "plan": asdict(source.plan),
            "now_limit": source._now_limit, "count_domains": self.domains is not None,
            "secret": suppression.secret.hex() if suppression else None,
            "digests": sorted(suppression.digests) if suppression else None,
            "sqlite_frames": sqlite_frames(),
        }
        if not common["sqlite_frames"]:
            _fix_mmap_threshold()
        first, second = workers
        try:
            first.start({**common, "part": 1, "mapping": source.mapping, "stop_line": line, "stop_offset": start},
                        0)
            second.start({**common, "part": 2, "start": start, "first_line": line}, start)
            self.sqlite_frames = common["sqlite_frames"]
            for batch in _merge_frames(first, second, line, self.domains, self.sqlite_frames):
                self.withdrawn |= bool(batch.retract_from)
                yield batch
        finally:
            self.close()


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


def _fix_mmap_threshold() -> None:
    """Keep glibc from moving big short-lived buffers onto its heap.

    Once a buffer above its mmap threshold (128 KiB) is freed, glibc raises
    the threshold to that size, and later frames (~1 MiB each) are then
    allocated on the heap between the small objects of the rows unmarshalled
    from them, which fragments it: the import process grew by ~16 MiB per
    million rows. Setting the threshold explicitly turns that adaptation
    off. Elsewhere (no glibc) this does nothing.
    """
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _merge_frames(first: _Worker, second: _Worker, line: int, domains: dict[str, int] | None,
                  sqlite: bool) -> Iterator[Batch]:
    """The batches of both workers as they arrive, withdrawing the second
    worker's if the first reads across its start (see the module docstring)."""
    import selectors

    selector = selectors.DefaultSelector()
    for each in (first, second):
        selector.register(each.stdout, selectors.EVENT_READ, each)
    boundary: bool | None = None  # reached (True) or passed (False) by the first worker
    held: InputFileError | None = None  # the second worker's error, pending the boundary
    while selector.get_map():
        for key, _ in selector.select():
            worker: _Worker = key.data
            if worker.dropped:
                continue
            for kind, meta, data in worker.read():
                if kind == _ROWS:
                    worker.position = meta["position"]
                    worker.suppressed += meta["suppressed"]
                    position = first.position + second.position - second.offset
                    if sqlite:
                        yield Batch([], [], position, meta["suppressed"], data)
                    else:
                        rows, rejects, optouts = marshal.loads(data)
                        yield Batch(rows, [RowReject(*r) for r in rejects], position, meta["suppressed"],
                                    optouts=[OptOut(*o) for o in optouts])
                elif kind == _BOUNDARY:
                    boundary = meta["reached"]
                    if not boundary:  # the second worker started inside a record
                        if second.stdout in selector.get_map():  # it may have ended already
                            selector.unregister(second.stdout)
                        second.stop()
                        second.dropped = True
                        held = None  # its rows are the first worker's now, errors too
                        yield Batch([], [], first.position, -second.suppressed, retract_from=line)
                    elif held is not None:
                        raise held
                elif kind == _END:
                    worker.done = True
                    worker.domains = meta["domains"]
                    worker.reencoded = (meta["reencoded"], meta["reencoded_at"])
                elif meta.get("internal"):
                    raise WorkerError(f"import worker failed: {meta['message']}")
                else:  # a file error, e.g. a byte that does not decode
                    error = InputFileError(meta["message"], hint=meta.get("hint"))
                    if worker is first or boundary:
                        raise error
                    held = error  # only if the first worker confirms the second one's start
                    worker.done = True
            if worker.eof and not worker.dropped:
                selector.unregister(worker.stdout)
                if not worker.done:
                    raise WorkerError(f"import worker stopped unexpectedly (exit status {worker.wait()})")
    if boundary is None:
        raise WorkerError("import worker ended before the other worker's start")
    if held is not None:
        raise held
    if domains is not None:
        for each in (first, second):
            if not each.dropped:
                for domain, count in (each.domains or {}).items():
                    domains[domain] = domains.get(domain, 0) + count


class _Worker:
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
            [sys.executable, "-c", _WORKER_BOOT.format(parent=os.getpid())], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True)
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


# The current folder ("" first on sys.path with -c) is left out, so a
# "mailcli" folder there is never imported (what -P does on 3.11+).
_WORKER_BOOT = ("import sys; sys.path[:] = [p for p in sys.path if p]; "
                "from mailcli.importfeed import _worker_main; _worker_main({parent})")


def _grow_pipe(fd: int) -> None:
    # Fewer, bigger reads per frame; Linux only, and only a hint.
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, ImportError, ValueError):
        pass


# ------------------------------------------------------------------ the worker


def _send(out: IO[bytes], kind: bytes, meta: dict[str, Any], data: bytes = b"") -> None:
    encoded = json.dumps(meta).encode("utf-8")
    out.write(_HEADER.pack(kind, len(encoded), len(data)))
    out.write(encoded)
    out.write(data)
    out.flush()


def _plan_from(data: dict[str, Any]) -> ColumnPlan:
    return ColumnPlan(
        headers=tuple(data["headers"]), email=data["email"], first_name=data["first_name"],
        last_name=data["last_name"], name=data["name"], consent_time=tuple(data["consent_time"]),
        consent_ip=tuple(data["consent_ip"]), attributes=tuple((n, i) for n, i in data["attributes"]),
        has_header=data["has_header"], opted_out=tuple(data["opted_out"]), cleaned=tuple(data["cleaned"]),
        last_name_prefix=data["last_name_prefix"])


def run_worker(job: dict[str, Any], out: IO[bytes]) -> None:
    """Read one part of a file and send its rows in frames (see the module docstring)."""
    plan = _plan_from(job["plan"])
    stop: Boundary | None = None
    if job["part"] == 1:
        source = open_csv(job["path"], encoding=job["encoding"], delimiter=job["delimiter"],
                          mapping=job["mapping"], now_limit=job["now_limit"], per_line=job["per_line"],
                          split=job["stop_offset"])
        if source.plan != plan:
            raise RuntimeError("the file's columns differ from what the import planned")
        stop = Boundary(job["stop_line"])
    else:
        fmt = CsvFormat(job["encoding"], job["delimiter"], per_line=job["per_line"])
        source = open_csv_part(job["path"], fmt, plan, start=job["start"], first_line=job["first_line"],
                               now_limit=job["now_limit"])
    suppression = Suppression(bytes.fromhex(job["secret"]), set(job["digests"])) if job["secret"] else None
    domains: dict[str, int] | None = {} if job["count_domains"] else None
    boundary_sent = False
    with source:
        for batch in batch_rows(source.staged_rows(stop), FRAME_ROWS, suppression, domains, source.bytes_read):
            if stop is not None and stop.passed and not boundary_sent:
                # Tell before sending rows from the other part's lines.
                _send(out, _BOUNDARY, {"reached": False})
                boundary_sent = True
            if job["sqlite_frames"]:
                frame = _sqlite_frame(batch)
            else:
                frame = marshal.dumps((batch.rows, [tuple(r) for r in batch.rejects],
                                       [tuple(o) for o in batch.optouts]))
            _send(out, _ROWS, {"position": batch.position, "suppressed": batch.suppressed}, frame)
    if stop is not None and not boundary_sent:
        _send(out, _BOUNDARY, {"reached": stop.reached})
    # Up to the other part's start, unless this part read across it.
    count, offsets = source.reencoded_before() if stop is not None and stop.reached else source.reencoded
    _send(out, _END, {"domains": domains, "reencoded": count, "reencoded_at": offsets})


def _sqlite_frame(batch: Batch) -> bytes:
    """A batch's rows, rejects and opt-outs as a serialized in-memory SQLite database."""
    import sqlite3

    memory = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for statement in FRAME_SCHEMA:
            memory.execute(statement)
        memory.execute("BEGIN")
        insert_rows(memory, "rows", batch.rows)
        memory.executemany("INSERT INTO rejects VALUES (?, ?, ?)",
                           [(r.line, r.reason, json.dumps(r.raw)) for r in batch.rejects])
        memory.executemany("INSERT INTO optouts VALUES (?, ?, ?, ?)", batch.optouts)
        memory.execute("COMMIT")
        return memory.serialize()  # type: ignore[no-any-return, attr-defined]  # 3.11+: sqlite_frames()
    finally:
        memory.close()


_MULTI = 100  # rows per INSERT: binding is per value anyway, each statement step costs ~1 µs
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?)"


def insert_rows(conn: Any, table: str, rows: list[StagedRow]) -> None:
    """Staged rows into ``table`` (a fixed name), a hundred per statement
    (~35% cheaper than one)."""
    from itertools import chain

    whole = len(rows) - len(rows) % _MULTI
    if whole:
        many = f"INSERT INTO {table} VALUES " + ",".join([_ROW] * _MULTI)  # noqa: S608 - fixed names, placeholders
        conn.executemany(many, (tuple(chain.from_iterable(rows[i:i + _MULTI])) for i in range(0, whole, _MULTI)))
    if whole < len(rows):
        conn.executemany(f"INSERT INTO {table} VALUES {_ROW}", rows[whole:])  # noqa: S608 - as above


def _worker_main(parent: int | None = None) -> None:
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


# ------------------------------------------------------------ the rejects file

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
