"""Who may read or change a project's files (``docs/guarantees.md#file-modes``).

mailcli makes what it writes private whatever the umask: the project folder,
``.mailcli/``, ``backups/``, ``exports/`` and the ledger and lock folders
0700; the database, its ``-wal`` and ``-shm``, backups, exports, rejects
files, rendered previews, the secret and the ledgers 0600; ``mailcli.toml``
0644 (it holds no secret, but only its owner may change it).

What it finds made by someone else, it judges by kind:

* **the secret** readable or writable by others is refused (exit 4) with the
  ``chmod 600`` that fixes it: whoever could read it may have it, and only
  the user can decide whether to make a new one, so mailcli does not hide
  the question by quietly tightening the file;
* **mailcli.toml**, or the folder it is in, writable by others is refused
  (exit 4) with the ``chmod go-w``: someone else could have pointed the
  relay, the database or the unsubscribe address elsewhere, and the user
  should look before anything runs with it;
* **the database** (and its ``-wal``/``-shm``) readable by others is made
  0600, and the command says so: it is mailcli's own file, and tightening it
  cannot break anything — but only once it is known to be a mailcli
  database (``store.db.open_store`` checks that first), so a ``database =``
  that names ``/dev/null`` or another program's file is never touched.

"Others" are other users: a group counts only when someone besides the
owner is in it. Debian and Ubuntu give every user a group of their own and a
umask of 002, so files a user makes or checks out there are group-writable
without anyone else being able to touch them.

``mailcli doctor`` reports every one of them.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from .errors import ConfigError

OTHERS_RW = stat.S_IRWXG | stat.S_IRWXO
OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def _private_group(st: os.stat_result) -> bool:
    """Whether the file's group is its owner's alone: no other member, and no
    other user's primary group."""
    try:
        group = grp.getgrgid(st.st_gid)
        owner = pwd.getpwuid(st.st_uid)
    except KeyError:
        return False
    if any(member != owner.pw_name for member in group.gr_mem):
        return False
    return all(user.pw_uid == st.st_uid for user in pwd.getpwall() if user.pw_gid == st.st_gid)


def _others_bits(st: os.stat_result, bits: int) -> int:
    """The bits of ``bits`` set on the file that let other users in."""
    found = stat.S_IMODE(st.st_mode) & bits
    if found & stat.S_IRWXG and _private_group(st):
        found &= ~stat.S_IRWXG
    return found


def mode_of(path: Path) -> int | None:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def open_to_others(path: Path) -> int | None:
    """The file's mode when other users have any access, else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if _others_bits(st, OTHERS_RW) else None


def writable_by_others(path: Path) -> int | None:
    """The mode when group or others may change it (a folder with the sticky bit
    lets nobody replace another's file, so it does not count), else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if not _others_bits(st, OTHERS_WRITE) or (stat.S_ISDIR(st.st_mode) and mode & stat.S_ISVTX):
        return None
    return mode


def check_config_file(path: Path) -> None:
    """Refuse a configuration that someone else could have changed (ConfigError)."""
    for item, what in ((path, "file"), (path.parent, "folder")):
        mode = writable_by_others(item)
        if mode is not None:
            raise ConfigError(
                f"{item} is writable by other users (mode {mode:04o}): anyone could change where mail and data go",
                hint=f"check the {what} is as you left it, then: chmod go-w {item}",
            )


def check_secret_file(path: Path) -> None:
    """Refuse a secret file others could read or change (ConfigError)."""
    mode = open_to_others(path)
    if mode is not None:
        raise ConfigError(
            f"The secret {path} is readable or writable by other users (mode {mode:04o}); it was not used",
            hint=f"chmod 600 {path}",
        )


def make_private(path: Path, mode: int) -> None:
    """Set ``path`` to ``mode`` if it is anything else (a file mailcli just made)."""
    if mode_of(path) != mode:
        os.chmod(path, mode)
