"""The erasure ledger: who was erased and when, kept outside the database.

A backup taken before an erasure still holds the person. So that restoring it
never brings them back (STANDARDS F31), every erasure is also appended to
``.mailcli/erasures.jsonl`` (mode 0600, folder 0700): one JSON object per
line with the keyed HMAC of the address, the time and why — never the
address. ``backup restore`` replays it. The file lives beside the secret and
not in the database, because the database is what a restore replaces.

The ledger is written and fsynced *before* the database transaction: if the
erasure then fails, the worst case is a ledger line for a person who asked to
be erased anyway, never an erasure that a restore could undo.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..errors import MailcliError

LEDGER_NAME = "erasures.jsonl"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    hmac: str
    erased_at: str
    reason: str  # "request", "retention:unconfirmed", ... ; why the person was erased
    suppress: bool  # whether a '*' suppression must exist (request erasures)


def ledger_path(settings: Settings) -> Path:
    return settings.data_dir / LEDGER_NAME


def _ensure_dir(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)


def append_entries(settings: Settings, entries: list[LedgerEntry]) -> None:
    """Append entries durably (fsync) to the ledger, creating it 0600."""
    if not entries:
        return
    path = ledger_path(settings)
    _ensure_dir(path.parent)
    text = "".join(
        json.dumps({"hmac": e.hmac, "erased_at": e.erased_at, "reason": e.reason, "suppress": e.suppress},
                   sort_keys=True) + "\n"
        for e in entries
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(path, 0o600)
    except OSError as exc:
        raise MailcliError(f"Cannot write the erasure ledger {path}: {exc.strerror}; nothing was erased") from None


def read_entries(settings: Settings) -> Iterator[LedgerEntry]:
    """Every entry; a damaged line is an error naming the line (it must not be skipped)."""
    path = ledger_path(settings)
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise MailcliError(f"Cannot read the erasure ledger {path}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                yield LedgerEntry(
                    hmac=str(data["hmac"]), erased_at=str(data["erased_at"]),
                    reason=str(data.get("reason", "request")), suppress=bool(data.get("suppress", True)),
                )
            except (ValueError, KeyError, TypeError):
                raise MailcliError(
                    f"{path}:{number}: not a valid erasure ledger line",
                    hint="repair the line by hand (it holds only a hash and a time); never delete the file",
                ) from None
