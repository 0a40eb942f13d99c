"""The register of files mailcli wrote that hold personal data (``written_files``).

An access-request export, an import's rejects file and a rendered preview
each hold someone's data outside the database. Each is registered when
written — its path, its kind, the keyed hash of the person it is about (none
for a file about several people, such as a rejects file) and whether it lies
in the project's own folders — so that erasure and retention find it again
(``docs/guarantees.md#erasure``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Connection

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WrittenFile:
    id: int
    path: str
    kind: str  # "export", "rejects" or "render"
    subject_hmac: str | None
    managed: bool  # in the project's folders: mailcli may delete it
    created_at: str


_COLUMNS = "id, path, kind, subject_hmac, managed, created_at"


def _files(conn: Connection, where: str, params: tuple[object, ...]) -> list[WrittenFile]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM written_files WHERE {where} ORDER BY id", params)  # noqa: S608 - fixed fragments
    return [WrittenFile(int(i), str(p), str(k), s, bool(m), str(at)) for i, p, k, s, m, at in rows]


def register_file(conn: Connection, path: str, kind: str, subject_hmac: str | None, managed: bool,
                  now: str) -> None:
    """Register a file just written; a path written again replaces its older entry."""
    conn.execute("DELETE FROM written_files WHERE path = ?", (path,))
    conn.execute("INSERT INTO written_files (path, kind, subject_hmac, managed, created_at) VALUES (?, ?, ?, ?, ?)",
                 (path, kind, subject_hmac, int(managed), now))


def files_about(conn: Connection, subject_hmac: str) -> list[WrittenFile]:
    """The files about one person."""
    return _files(conn, "subject_hmac = ?", (subject_hmac,))


def files_about_several(conn: Connection) -> list[WrittenFile]:
    """The files about several people (rejects files): whom they hold is read from the file."""
    return _files(conn, "subject_hmac IS NULL", ())


def files_written_before(conn: Connection, cutoff: str) -> list[WrittenFile]:
    return _files(conn, "created_at < ?", (cutoff,))


def forget_files(conn: Connection, ids: list[int]) -> None:
    """Drop the entries of files that were deleted (or that the user was told to delete)."""
    conn.executemany("DELETE FROM written_files WHERE id = ?", [(i,) for i in ids])


def all_files(conn: Connection) -> list[WrittenFile]:
    return _files(conn, "1 = 1", ())


def carry_files(conn: Connection, files: list[WrittenFile]) -> int:
    """Register the files of ``files`` (another database's register) that this
    one does not know by path, as they were: a restore keeps the register of
    the database it replaces, so an erasure still finds the exports written
    since the backup was taken."""
    known = {str(path) for (path,) in conn.execute("SELECT path FROM written_files")}
    missing = [f for f in files if f.path not in known]
    conn.executemany("INSERT INTO written_files (path, kind, subject_hmac, managed, created_at) VALUES (?, ?, ?, ?, ?)",
                     [(f.path, f.kind, f.subject_hmac, int(f.managed), f.created_at) for f in missing])
    return len(missing)
