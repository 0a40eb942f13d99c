"""Making a rename or a new file in a folder survive a crash."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_folder(folder: Path) -> None:
    """fsync the folder itself, so the names in it (a file created, renamed or
    replaced there) are on disk, not only the files' contents (raises OSError)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
