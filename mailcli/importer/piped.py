"""A contact file that gives its bytes only once — standard input (``-``),
a pipe (``/dev/stdin``, ``<(...)``) or a FIFO — copied to a private
temporary file before the import reads it.

The import reads a file more than once: its kind is told from its first
bytes, the CSV reader detects the format from the head and then reads from
the start, and a big file is read by two processes at once. A pipe read
like that would seem empty the second time, and a FIFO opened a second time
waits for a writer that never comes. So what a pipe gives is copied first,
as it comes, into a folder of its own (0700, the copy 0600: the rows are
personal data) that is removed when the import ends, however it ends, as
the CSV files of an archive are (:mod:`mailcli.importer.archive`) — after
``kill -9``, by the next import from a pipe or the next purge; the
import then reads the copy as it reads any file, and its messages name the
pipe. At most 4 GiB are taken from a pipe. A device (a terminal,
``/dev/zero``) is refused: it is no file, and may never end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mailcli.errors import InputFileError, MailcliError
from mailcli.lifeline import dead_process_folders

STDIN = "-"  # the FILE that means standard input
_PREFIX = "mailcli-import-"  # then the pid of the import that made the folder
MAX_PIPED_BYTES = 4 << 30
_CHUNK = 1 << 20


def shown_path(path: Path) -> Path:
    """The name an import gives its file in messages and as its consent source."""
    return Path("stdin") if str(path) == STDIN else path


@contextlib.contextmanager
def readable_file(path: Path) -> Iterator[Path]:
    """``path`` when it can be read more than once (a regular file; one that
    is missing or a folder too, which the reader refuses); for ``-``, a pipe
    or a FIFO, a private copy of what it gives, removed at the end. A
    ``MailcliError`` that names the copy names ``path`` instead."""
    if str(path) == STDIN:
        stream = _stdin()
    else:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = 0
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            raise InputFileError(f"{path}: a device, not a contact file",
                                 hint="save the contacts to a file and import that")
        if not stat.S_ISFIFO(mode):
            yield path
            return
        stream = None
    shown = str(shown_path(path))
    remove_stale_copies()
    folder = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
    try:
        # Named as the pipe is, for what the import records of its name (the consent source).
        copy = Path(folder) / (shown_path(path).name or "piped")
        _copy(stream, path, copy, shown)
        try:
            yield copy
        except MailcliError as exc:
            exc.message = exc.message.replace(str(copy), shown)
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_copies() -> int:
    """Remove the copies an import killed with ``kill -9`` left in the
    temporary folder (its process is gone, so nothing else will); how many.
    Each folder is named after the process that made it."""
    stale = dead_process_folders(Path(tempfile.gettempdir()), _PREFIX)
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return len(stale)


def _stdin() -> BinaryIO:
    stream = sys.stdin
    if stream is None or stream.isatty():
        raise InputFileError("-: standard input is a terminal, not a contact file",
                             hint="pipe the file in: cat contacts.csv | mailcli import - --list NAME")
    return stream.buffer


def _copy(stream: BinaryIO | None, path: Path, copy: Path, shown: str) -> None:
    """What ``stream`` (else the FIFO or pipe at ``path``) gives, into ``copy``."""
    try:
        with contextlib.ExitStack() as stack:
            source = stream if stream is not None else stack.enter_context(_open(path, shown))
            out = stack.enter_context(os.fdopen(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb"))
            copied = 0
            while chunk := _read(source, shown):
                copied += len(chunk)
                if copied > MAX_PIPED_BYTES:
                    raise InputFileError(f"{shown}: more than {MAX_PIPED_BYTES >> 30} GiB from a pipe",
                                         hint="save it to a file and import that")
                out.write(chunk)
    except OSError as exc:  # writing the copy: reading raises InputFileError
        raise MailcliError(f"{shown}: cannot copy what it gives to {copy.parent} ({exc.strerror})",
                           hint="free some space there, or set TMPDIR to a folder with room") from None


def _open(path: Path, shown: str) -> BinaryIO:
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller's ExitStack
    except OSError as exc:
        raise InputFileError(f"{shown}: cannot read ({exc.strerror})") from None


def _read(source: BinaryIO, shown: str) -> bytes:
    try:
        return source.read(_CHUNK)
    except OSError as exc:
        raise InputFileError(f"{shown}: cannot read ({exc.strerror})") from None
