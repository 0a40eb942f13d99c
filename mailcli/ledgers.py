"""Where the ledgers of a database live, and how a line is added to one.

The erasure ledger (``erasures.jsonl``), the opt-out ledger
(``optouts.jsonl``) and the audit head (``audit-head``) record facts about
one database that must outlive it: a restore re-applies the ledgers even when
the database itself is lost, and the head shows whether the audit log was
cut short. Two configurations, folders or users that name one database file
are one project, so — like the locks (``<database>-locks/``) and the one-click
spool (``<database>-optouts/``) — the ledgers live beside the database, in
``<database>-ledgers/`` (0700; the path is resolved first, so a symlink or a
relative path names the same folder), not beside the configuration.

An older mailcli kept the two ledgers in ``.mailcli/`` beside the
configuration. The first command that uses a ledger moves such a file into
the database's folder, or, when that already has one (another configuration
moved its own first), appends its whole lines to it; either way under a lock,
so two processes never move one file twice.

A line is appended durably: written with ``O_APPEND`` to a 0600 file and
fsynced before the caller goes on. A line without its newline is an append a
crash cut short: readers skip it and never count it as an entry.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .durable import fsync_folder
from .errors import MailcliError

T = TypeVar("T")

SUFFIX = "-ledgers"
LEGACY_FOLDER = ".mailcli"


def ledger_folder(database: Path) -> Path:
    """``<database>-ledgers``: the folder of the ledgers of one database file."""
    real = Path(os.path.realpath(database))
    return real.with_name(real.name + SUFFIX)


def ledger_file(settings: Any, name: str) -> Path:
    """The ledger ``name`` of the project's database, adopting one an older mailcli left in ``.mailcli/``."""
    database = Path(settings.project.database)
    path = ledger_folder(database) / name
    legacy = Path(settings.project.root) / LEGACY_FOLDER / name
    if legacy.is_file():
        _adopt(database, legacy, path)
    return path


def _adopt(database: Path, legacy: Path, path: Path) -> None:
    from .locks import database_lock

    with database_lock(database, "ledgers", command="ledgers", busy="Another process is moving a ledger",
                       hint="run the command again", wait=30.0):
        try:
            data = legacy.read_bytes()
        except FileNotFoundError:  # another process moved it meanwhile
            return
        except OSError as exc:
            raise MailcliError(f"Cannot read the ledger {legacy}: {exc.strerror}") from None
        whole = data[: data.rfind(b"\n") + 1]  # a line a crash cut short is no entry
        try:
            append_durably(path, whole.decode("utf-8", "replace"))
            legacy.unlink()
        except OSError as exc:
            raise MailcliError(f"Cannot move the ledger {legacy} to {path}: {exc.strerror}",
                               hint=f"the folder of the database must be writable; {legacy} is left as it was") \
                from None


def private_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) and make it 0700 whatever the umask."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (os.stat(folder).st_mode & 0o777) != 0o700:
        os.chmod(folder, 0o700)


def append_durably(path: Path, text: str) -> None:
    """Append ``text`` to a private file (0600, folder 0700) and fsync it."""
    if not text:
        return
    private_folder(path.parent)
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by a private file holding ``text``: whole or not at all, even after a crash."""
    private_folder(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        fsync_folder(path.parent)


def ledger_end(path: Path) -> int:
    """Where a ledger ends now (its size): read from there to get only later lines."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def ledger_lines(path: Path, start: int = 0) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line of a ledger from byte ``start`` on.

    ``start`` from ``ledger_end`` may fall inside a line another process was
    appending at that moment: reading then begins at the start of that line.
    Line numbers count from the start of the file. A missing file has none.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        number = 1
        if start > 0:
            prefix = handle.read(start)
            cut = prefix.rfind(b"\n") + 1  # 0 when no whole line precedes start
            number = prefix.count(b"\n", 0, cut) + 1
            handle.seek(cut)
        for raw in handle:
            if raw.endswith(b"\n"):
                yield number, raw.decode("utf-8", "replace")
            number += 1


def read_ledger(path: Path, what: str, hint: str, parse: Callable[[dict[str, Any]], T], start: int = 0) -> Iterator[T]:
    """Every entry of a JSON-lines ledger in order (from byte ``start``).

    A damaged line is an error naming the file and line: it must never be
    skipped. A last line without its newline is an append still in progress
    (or cut off by a crash before its fsync returned): not an entry yet.
    """
    try:
        lines = list(ledger_lines(path, start))
    except OSError as exc:
        raise MailcliError(f"Cannot read the {what} {path}: {exc.strerror}") from None
    for number, line in lines:
        if not line.strip():
            continue
        try:
            entry = parse(json.loads(line))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise MailcliError(f"{path}:{number}: not a valid {what} line", hint=hint) from None
        yield entry
