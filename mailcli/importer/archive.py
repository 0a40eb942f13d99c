"""ZIP archives as they are downloaded: a Mailchimp audience export (the
subscribed, unsubscribed and cleaned members as three CSV files), and the
size checks every archive passes before mailcli reads it (an ``.xlsx`` file
is a ZIP archive too).

The CSV files of an export are copied out, each into a private temporary
folder (mode 0700) that is removed when the import ends, because the CSV
reader reads a file (it seeks, and a big one is read by two processes).
The copy stops at the size the archive declares, so a member that inflates
beyond it is refused; members are never written under their own names, so
a name like ``../x`` goes nowhere.

The files that hold opt-outs (``unsubscribed…``, ``cleaned…``) come first:
their people are on the suppression list before the subscribed file is
read, so nobody is subscribed for even a moment and ``imported`` counts
only those the list gained.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mailcli.errors import InputFileError

MAX_MEMBER_BYTES = 4 << 30  # a member bigger than this, unpacked, is no contact file
MAX_TOTAL_BYTES = 8 << 30  # all members together, unpacked
MAX_RATIO = 200  # unpacked / packed; contact data packs 5-30 times
RATIO_FROM_BYTES = 1 << 20  # the ratio matters only for members at least this big unpacked
_OPT_OUT_PREFIXES = ("unsubscribed", "cleaned")


def check_archive_sizes(archive: zipfile.ZipFile, source: str) -> None:
    """Refuse an archive whose declared sizes could not be a contact file (a
    ZIP bomb): a member over 4 GiB unpacked, 8 GiB in all, or one over a
    MiB that unpacks to more than 200 times its packed size. Encrypted
    members are refused too."""
    total = 0
    for info in archive.infolist():
        if info.flag_bits & 0x1:
            raise InputFileError(f"{source}: {info.filename} is encrypted (the archive has a password)",
                                 hint="unpack it yourself and import the files inside")
        total += info.file_size
        if info.file_size > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
            raise InputFileError(f"{source}: {info.filename} unpacks to {info.file_size:,} bytes, more than"
                                 f" a contact file holds ({MAX_MEMBER_BYTES >> 30} GiB a file,"
                                 f" {MAX_TOTAL_BYTES >> 30} GiB in all)")
        if info.file_size >= RATIO_FROM_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise InputFileError(f"{source}: {info.filename} would unpack to {info.file_size:,} bytes from"
                                 f" {info.compress_size:,} (more than {MAX_RATIO} times): refused as a ZIP bomb")


@dataclass(frozen=True, slots=True)
class ArchiveMember:
    """A CSV file of an archive, copied out: its name in the archive and the copy."""

    name: str
    path: Path


class CsvArchive:
    """The CSV files of a ZIP archive, copied to a private temporary folder,
    opt-out files first. Use as a context manager: the copies go at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._folder: str | None = None
        self.members: list[ArchiveMember] = []

    # Complexity: one refusal per way an archive is unusable, then the copies, removed again on any error.
    def __enter__(self) -> CsvArchive:
        try:
            archive = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputFileError(f"{self.path}: not a readable ZIP archive ({exc})") from None
        with archive:
            check_archive_sizes(archive, str(self.path))
            infos = [i for i in archive.infolist() if not i.is_dir() and i.filename.lower().endswith(".csv")
                     and not PurePosixPath(i.filename).name.startswith(("._", "."))]  # macOS resource forks
            if not infos:
                names = [i.filename for i in archive.infolist() if not i.is_dir()]
                raise InputFileError(f"{self.path}: a ZIP archive with no CSV file in it"
                                     + (f" ({', '.join(names[:5])})" if names else ""))
            # Opt-outs first, then the rest; within each, by name.
            infos.sort(key=lambda i: (not PurePosixPath(i.filename).name.lower().startswith(_OPT_OUT_PREFIXES),
                                      i.filename))
            self._folder = tempfile.mkdtemp(prefix="mailcli-import-")
            try:
                for number, info in enumerate(infos, start=1):
                    target = Path(self._folder) / f"{number}.csv"
                    _copy_member(archive, info, target, str(self.path))
                    self.members.append(ArchiveMember(info.filename, target))
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __exit__(self, *exc: object) -> None:
        self.close()


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, source: str) -> None:
    """Copy one member out, no more bytes than it declares."""
    left = info.file_size
    try:
        with archive.open(info) as packed, open(target, "xb") as out:
            while chunk := packed.read(min(1 << 20, left + 1)):
                left -= len(chunk)
                if left < 0:
                    raise InputFileError(f"{source}: {info.filename} unpacks to more than it declares")
                out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, zlib.error) as exc:
        raise InputFileError(f"{source}: {info.filename} cannot be unpacked ({exc})") from None
    except RuntimeError as exc:  # zipfile: "File ... is encrypted, password required"
        raise InputFileError(f"{source}: {info.filename} cannot be unpacked ({exc})") from None
