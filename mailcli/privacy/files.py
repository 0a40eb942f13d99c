"""Files mailcli wrote that hold personal data, registered so erasure and retention reach them.

An access-request export (``privacy export``), an import's rejects file
(``import --rejects``) and a rendered preview (``render --to ... -o``) each
copy someone's data out of the database. Each is registered when written
(:mod:`mailcli.store.written`): its path, its kind, the person it is about
(none for a rejects file, which holds several) and whether it lies in the
project's folder. Then (``docs/guarantees.md#erasure``):

* ``privacy erase`` and a purge that erases someone delete the files about
  that person, and the rejects files that hold their address as a whole
  address (read from the file: ``k.muller@…`` is not in a file that holds
  only ``henk.muller@…``);
* ``privacy purge`` deletes every registered file older than ``[retention]
  exports``;
* a file outside the project's folder — ``-o`` somewhere else — is never
  deleted by mailcli: it is named, once, as one to delete by hand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..store.db import Connection

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import clock
from ..config import Settings
from ..store import Store
from ..store.written import (
    WrittenFile,
    files_about,
    files_about_several,
    forget_files,
    register_file,
)

# A token that may be an address: no spaces, quotes, brackets or CSV delimiters.
_TOKEN = re.compile(rb"[^\s,;\"'<>|()\[\]]+@[^\s,;\"'<>|()\[\]]+")


@dataclass
class FilesReached:
    removed: list[str] = field(default_factory=list)  # deleted by mailcli
    elsewhere: list[str] = field(default_factory=list)  # outside the project's folder: to delete by hand

    def add(self, other: FilesReached) -> None:
        self.removed += other.removed
        self.elsewhere += other.elsewhere


def is_managed(settings: Settings, path: Path) -> bool:
    """Is ``path`` inside the project's folder (where mailcli may delete what it wrote)?"""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(settings.root))
    except ValueError:
        return False
    return True


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 whatever the umask (a file that
    existed is made 0600 too): what mailcli writes with personal data in it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


def register_written(store: Store, settings: Settings, path: Path, kind: str, subject_hmac: str | None) -> None:
    """Register a file mailcli just wrote with personal data in it."""
    real = os.path.realpath(path)
    with store.transaction() as conn:
        register_file(conn, real, kind, subject_hmac, is_managed(settings, path), clock.now_iso())


def shown(settings: Settings, path: str) -> str:
    """A registered path as the user wants to read it: relative inside the project."""
    try:
        return str(Path(path).relative_to(os.path.realpath(settings.root)))
    except ValueError:
        return path


def address_forms(address: str, key: str) -> set[str]:
    """The spellings of one address a file may hold, lower-cased: as given, as
    compared, and with the domain in Unicode."""
    forms = {address.lower(), key.lower()}
    local, _, domain = key.rpartition("@")
    try:
        import idna

        forms.add(f"{local}@{idna.decode(domain)}".lower())
    except Exception:  # noqa: BLE001 - an undecodable domain has only its ASCII form
        pass
    return forms


def holds_address(path: Path, forms: set[str]) -> bool:
    """Does the file hold one of the address ``forms`` as a whole address?"""
    try:
        handle = path.open("rb")
    except OSError:
        return False
    with handle:
        for line in handle:
            for match in _TOKEN.finditer(line):
                token = match.group().decode("utf-8", "replace").strip(".:").lower()
                if token in forms:
                    return True
    return False


def files_about_people(conn: Connection, people: dict[str, set[str]]) -> list[WrittenFile]:
    """The registered files about any of ``people`` (keyed hash -> address forms):
    those registered to one of them, and the rejects files that hold an address of one."""
    found = [f for hmac in people for f in files_about(conn, hmac)]
    every_form = set().union(*people.values()) if people else set()
    found += [f for f in files_about_several(conn) if every_form and holds_address(Path(f.path), every_form)]
    return found


def reach(conn: Connection, settings: Settings, files: Iterable[WrittenFile]) -> FilesReached:
    """Delete the files in the project's folder, name the others; forget them all."""
    result = FilesReached()
    ids = []
    for item in {f.id: f for f in files}.values():
        ids.append(item.id)
        path = Path(item.path)
        if item.managed:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError:
                result.elsewhere.append(shown(settings, item.path))  # could not: the user must
                continue
            result.removed.append(shown(settings, item.path))
        elif path.exists():
            result.elsewhere.append(item.path)
    forget_files(conn, ids)
    return result
