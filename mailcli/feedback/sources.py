"""Where bounce, complaint and unsubscribe mails are read from.

Three kinds of SOURCE, one small interface (``messages()``, ``done()``,
``finish()``, ``close()``):

* an **mbox** file — read with the stdlib ``mailbox`` module and left as it
  is (an MTA may be appending to it; the database remembers what was read);
  with ``--delete`` processed messages are removed at the end, under the
  mbox lock (``fcntl`` and ``.lock`` file, as MTAs take it): the file is
  read again under the lock, so mail that came in meanwhile stays, and each
  message is recognised by its bytes, so only what was processed goes;
* a **Maildir** folder — processed messages move from ``new/`` to ``cur/``
  with the ``S`` (seen) flag, as a mail client would; ``--delete`` removes
  them instead;
* an **IMAP** mailbox, ``imaps://user@host[:port]/INBOX`` — read by
  :mod:`mailcli.feedback.imap`.

An entry that cannot be read (a folder or a broken link among the Maildir
files, a file without read permission, an IMAP message the server will not
fetch) is skipped and named, never a reason to stop: the messages after it
are processed all the same, and the entry is left as it is (an IMAP message
unflagged), so the next run reads it again.

Messages nobody could match are left as they are (unread), so a person finds
them in the mailbox, and the next run reads them again to list them until
they are acknowledged (``--ack``). Reading the same source twice changes
nothing either way: ``processed_messages`` in the database remembers every
message.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..config import Settings
from ..errors import UsageError

if TYPE_CHECKING:
    import mailbox

# How long --delete waits for the mbox lock an MTA holds while it delivers (a moment each time).
LOCK_WAIT = 10.0


@dataclass(frozen=True, slots=True)
class RawMessage:
    key: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Unreadable:
    """One entry of the mailbox that could not be read; it is left where it is."""

    entry: str
    reason: str


@dataclass(frozen=True, slots=True)
class NotMarked:
    """One message processed (and recorded as such) that the mailbox could not
    be made to show as processed; the next run finds it processed and marks it."""

    entry: str
    reason: str


@dataclass(frozen=True, slots=True)
class NotDeleted:
    """Why ``--delete`` could not delete (all of) the messages processed; the next run deletes the rest."""

    reason: str
    deleted: int = 0  # how many it had deleted when it had to stop


class Source(Protocol):
    name: str

    def messages(self) -> Iterator[RawMessage | Unreadable]: ...

    def done(self, key: str, *, handled: bool) -> NotMarked | None:
        """Mark one message processed (``handled`` False: left for a person);
        why it could not be marked, or None."""

    def finish(self) -> NotDeleted | None:
        """Carry out what is left to the end (``--delete``: an mbox rewritten, an IMAP EXPUNGE); why it
        could not be, or None."""

    def close(self) -> None: ...


def open_source(text: str, settings: Settings, *, ca_file: Path | None = None, delete: bool = False) -> Source:
    """The source named on the command line; exit 2 when it cannot be read."""
    lowered = text.lower()
    if lowered.startswith(("imaps://", "imap://")):
        from .imap import ImapSource

        return ImapSource(text, settings, ca_file=ca_file, delete=delete)
    path = Path(text).expanduser()
    if path.is_dir():
        if not any((path / sub).is_dir() for sub in ("new", "cur")):
            raise UsageError(f"{text}: not a Maildir folder (no cur/ or new/ inside)")
        return MaildirSource(path, delete=delete)
    if path.is_file():
        try:
            with path.open("rb") as handle:
                head = handle.read(5)
        except OSError as exc:
            raise UsageError(f"Cannot read {text}: {exc.strerror}") from None
        if head and head != b"From ":
            raise UsageError(f"{text}: not an mbox file (it does not start with a \"From \" line)")
        return MboxSource(path, delete=delete)
    if path.exists():
        raise UsageError(f"{text}: not a file or folder")
    raise UsageError(f"{text}: no such file or folder", hint="give an mbox file, a Maildir folder or imaps://user@host/INBOX")


class MboxSource:
    def __init__(self, path: Path, *, delete: bool) -> None:
        import mailbox

        self.name = str(path)
        self._delete = delete
        self._digests: dict[str, bytes] = {}  # key -> SHA-256 of the message read (with --delete)
        self._remove: Counter[bytes] = Counter()  # the messages to delete, by their digest
        try:
            self._box = mailbox.mbox(str(path), create=False)
        except OSError as exc:
            raise UsageError(f"Cannot read {path}: {exc.strerror}") from None

    def messages(self) -> Iterator[RawMessage]:
        try:
            keys = list(self._box.iterkeys())
        except OSError as exc:
            raise UsageError(f"Cannot read {self.name}: {exc.strerror}") from None
        for key in keys:
            data = self._box.get_bytes(key)
            if self._delete:
                self._digests[str(key)] = hashlib.sha256(data).digest()
            yield RawMessage(str(key), data)

    def done(self, key: str, *, handled: bool) -> None:
        if self._delete and handled:
            self._remove[self._digests[key]] += 1

    def finish(self) -> NotDeleted | None:
        """Delete the processed messages under the lock; why nothing was deleted, or None."""
        why = self._rewrite()
        return None if why is None else NotDeleted(why)

    def _rewrite(self) -> str | None:
        import mailbox

        if not self._remove:
            return None
        try:
            box = mailbox.mbox(self.name, create=False)
        except (mailbox.Error, OSError):
            return "the mailbox could not be opened again to delete what was read"
        try:
            if not _lock(box):
                return "another program kept the mailbox locked"
            for key in list(box.iterkeys()):  # read again under the lock: new mail may have come in
                digest = hashlib.sha256(box.get_bytes(key)).digest()
                if self._remove[digest] > 0:
                    self._remove[digest] -= 1
                    box.remove(key)
            box.flush()
        except mailbox.ExternalClashError:  # written by a program that ignores the lock
            return "the mailbox changed while it was read (new mail came in)"
        except OSError as exc:
            return f"the mailbox could not be rewritten ({exc.strerror or exc})"
        finally:
            with contextlib.suppress(mailbox.Error, OSError):
                box.close()  # unlocks; after a failed flush it writes nothing
        return None

    def close(self) -> None:
        self._box.close()


def _lock(box: mailbox.mbox) -> bool:
    """The mbox lock, waiting up to ``LOCK_WAIT`` seconds while an MTA delivers."""
    import mailbox

    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            box.lock()
            return True
        except mailbox.ExternalClashError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


class MaildirSource:
    """Maildir read directly: the format is two folders and a file-name convention."""

    def __init__(self, path: Path, *, delete: bool) -> None:
        self.name = str(path)
        self.path = path
        self._delete = delete

    def messages(self) -> Iterator[RawMessage | Unreadable]:
        # List both folders first: processing moves files from new/ to cur/.
        keys: list[str] = []
        for sub in ("new", "cur"):
            folder = self.path / sub
            if not folder.is_dir():
                continue
            try:
                keys += [f"{sub}/{name}" for name in sorted(os.listdir(folder)) if not name.startswith(".")]
            except OSError as exc:
                raise UsageError(f"Cannot read {folder}: {exc.strerror}") from None
        for key in keys:
            item = self._read(key)
            if item is not None:
                yield item

    def _read(self, key: str) -> RawMessage | Unreadable | None:
        """One entry; None when another reader took it meanwhile."""
        file = self.path / key
        try:
            return RawMessage(key, file.read_bytes())
        except FileNotFoundError:
            if os.path.lexists(file):
                return Unreadable(str(file), "a symbolic link to a file that does not exist")
            return None
        except OSError as exc:
            return Unreadable(str(file), exc.strerror or str(exc))

    def done(self, key: str, *, handled: bool) -> None:
        if not handled:
            return
        file = self.path / key
        if self._delete:
            with contextlib.suppress(FileNotFoundError):
                file.unlink()
            return
        sub, name = key.split("/", 1)
        base, sep, info = name.partition(":")
        flags = info[2:] if sep and info.startswith("2,") else ""
        if sub == "cur" and "S" in flags:
            return
        new_name = f"{base}:2,{''.join(sorted(set(flags + 'S')))}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(file, self.path / "cur" / new_name)

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass
