"""The files and folders of a project that are mailcli's own, and the check
that keeps an output file named on the command line (``import --rejects
FILE``, ``render -o FILE``, ``privacy export -o FILE``) off them and off the
file being read.

mailcli's own are the configuration and the ``.gitignore`` beside it, the database with its ``-wal``,
``-shm`` and ``-journal`` files, and the folders beside them that mailcli
writes (``.mailcli/`` with the secret, the ledger, lock and opt-out spool
folders of the database, ``backups/``, ``exports/``, ``templates/``), and the
DKIM key and CA bundle the configuration names. A target is compared by its
resolved path (so a symlink, or a folder reached through one, is seen for
what it is) and, when it exists, as a file (so a hard link to one of them
is too). Replacing an earlier output file stays allowed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from .config import Settings
from .errors import UsageError
from .ledgers import ledger_folder
from .locks import lock_folder
from .store.spool import spool_dir

_DATABASE_FILES = ("-wal", "-shm", "-journal")


def own_files(settings: Settings) -> list[tuple[Path, str]]:
    """mailcli's own files of the project, each with what it is."""
    files: list[tuple[Path, str]] = [(settings.path, "the configuration file"),
                                     (settings.root / ".gitignore", "the project's .gitignore, which keeps the secret out of git")]
    if settings.project.database_url is None:
        database = settings.project.database
        files.append((database, "the project's database"))
        files += [(Path(f"{database}{suffix}"), "a file of the project's database") for suffix in _DATABASE_FILES]
    if settings.dkim is not None and settings.dkim.private_key_file is not None:
        files.append((settings.dkim.private_key_file, "the DKIM private key"))
    if settings.smtp.ca_file is not None:
        files.append((settings.smtp.ca_file, "the relay's CA bundle"))
    return files


def own_folders(settings: Settings) -> list[tuple[Path, str]]:
    """The folders whose every file is mailcli's, each with what it holds."""
    database = settings.project.database
    root = settings.root
    return [
        (root / ".mailcli", "mailcli's private folder"),
        (ledger_folder(database), "the ledgers of the database"),
        (lock_folder(database), "the lock files of the database"),
        (spool_dir(database), "the opt-out spool of the database"),
        (settings.backups_dir, "the backups folder"),
        (root / "exports", "the exports folder"),
        (settings.templates_dir, "the templates folder"),
    ]


# Complexity: one check per way an output path can be wrong, each with its own line and hint.
def output_target(settings: Settings | None, target: Path, option: str, *, like: str,
                  inputs: Iterable[Path | None] = (), home: Path | None = None) -> Path:
    """The path an output file named with ``option`` is written to
    (``like``: a file name the hints suggest).

    Refused (``UsageError``, exit 2, before anything is read or changed): a
    folder, a file in a folder that does not exist (a typo in a path must not
    make folders for personal data), anything but a regular file
    (``/dev/null``, a pipe), one of the ``inputs``, or a file that is
    mailcli's own (see the module docstring; ``home`` is the one folder of
    mailcli's this output may go into, like ``exports/``, which the caller
    makes when it is missing). Without
    ``settings`` (no project) only the first three are checked. A symlink is
    followed: the file it names is the one replaced (the path returned); any
    other target is returned as given.
    """
    real = Path(os.path.realpath(target))
    try:
        # The target itself, links followed by the kernel: /dev/stdout names
        # a pipe that has no path realpath could give.
        st: os.stat_result | None = os.stat(target)
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{option} {target}: is a folder, not a file",
                         hint=f"name a file in it, like {option} {target / like}")
    at_home = home is not None and real.parent == Path(os.path.realpath(home))  # made when missing
    if st is None and not at_home and not real.parent.is_dir():
        problem = "is not a folder" if real.parent.exists() else "does not exist"
        raise UsageError(f"{option} {target}: the folder {target.parent} {problem}",
                         hint=f"name a file in a folder that exists, like {option} {like}")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{option} {target}: is not a regular file", hint=f"name a file, like {option} {like}")
    sources = [Path(source) for source in inputs if source is not None]
    clash = None if settings is None else _clash(settings, real, st, sources, home)
    if clash is not None:
        raise UsageError(f"{option} {target}: that is {clash}", hint=f"name another file with {option}")
    return real if os.path.islink(target) else target


def _clash(settings: Settings, real: Path, st: os.stat_result | None, inputs: list[Path],
           home: Path | None) -> str | None:
    """What the file at ``real`` is that must not be written over, if anything."""
    if any(_same(real, st, source) for source in inputs):
        return "the file being read; it would be overwritten"
    for path, what in own_files(settings):
        if _same(real, st, path):
            return f"{what}; mailcli never writes over its own files"
    for folder, what in _folders_but(settings, home):
        if _inside(real, folder) or (st is not None and st.st_nlink > 1 and _linked_from(st, folder)):
            return f"in {what}; mailcli never writes over its own files"
    return None


def _folders_but(settings: Settings, home: Path | None) -> list[tuple[Path, str]]:
    """mailcli's own folders, but for ``home``."""
    skip = None if home is None else os.path.realpath(home)
    return [(folder, what) for folder, what in own_folders(settings) if os.path.realpath(folder) != skip]


def _same(real: Path, st: os.stat_result | None, other: Path) -> bool:
    """Is ``other`` the file at ``real`` (whose stat is ``st``), by path or as the same file?"""
    if real == Path(os.path.realpath(other)):
        return True
    if st is None:
        return False
    try:
        theirs = os.stat(other)
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (st.st_dev, st.st_ino)


def _inside(real: Path, folder: Path) -> bool:
    return real.is_relative_to(os.path.realpath(folder))


def _linked_from(st: os.stat_result, folder: Path) -> bool:
    """Is the file ``st`` a hard link of a file in ``folder``?"""
    for base, _dirs, names in os.walk(folder):
        for name in names:
            try:
                other = os.lstat(os.path.join(base, name))
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return True
    return False
