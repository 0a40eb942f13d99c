"""Reading contact CSV files: format detection, column mapping and row validation.

This module is pure — it reads one file and yields values; it never touches
the database — so it can be property-tested on its own. The store
(:mod:`mailcli.store.contacts`) takes its rows and writes them.

What it decides, and why:

* **Streaming.** Only a head sample (64 KiB) is read up front, for detection;
  rows are then parsed one at a time, so memory is flat in file size.
* **Encoding**, deterministic and in this order: a BOM (UTF-8, UTF-16 LE/BE);
  UTF-16 without BOM when every other byte is NUL; strict UTF-8; cp1252 (what
  Dutch Excel writes); latin-1, which decodes anything. A head sample
  cannot prove the rest of the file, so a later undecodable byte stops the
  import with the file and line and a hint to pass ``--encoding``.
* **Delimiter** among ``,`` ``;`` TAB ``|``: each candidate parses the first
  records with the real ``csv`` reader (so quotes and quoted newlines count
  correctly); the winner splits the header into more than one field and
  keeps the field count most consistent over the records. ``csv.Sniffer``
  guesses from character frequencies and gets quoted cells wrong. Excel's
  ``sep=;`` first line is honoured.
* **Columns** are matched case- and punctuation-insensitively against aliases
  (Mailchimp ``Email Address``, Dutch ``E-mailadres``/``Voornaam``/``Achternaam``);
  ``--map "CSV column=field"`` overrides. A lone ``name`` column is split at
  the first space (``Jan van der Berg`` → ``Jan`` / ``van der Berg``, which keeps
  Dutch prefixes with the surname) and also kept whole as the ``name``
  attribute. A Dutch ``Tussenvoegsel`` column joins the last name
  (``van der`` + ``Berg`` → ``van der Berg``), as it is written in a
  salutation. Every other column becomes a custom attribute named in lower
  snake_case so templates can use it (``{{ contact.member_rating }}``).
* **Consent evidence**: a ``CONFIRM_TIME``/``OPTIN_TIME``-style column gives the
  consent time (confirmation preferred over opt-in, as it is the later,
  double-opt-in moment); naive times are taken as UTC; day-first dates
  (``01-04-2023 10:12``) are read the European way. An IP column is kept
  truncated to its /24 (IPv4) or /48 (IPv6) network — enough as evidence, less
  personal data. A consent cell that cannot be read rejects the row rather
  than silently replacing the evidence with the import time.
* **Opt-outs are carried over**: a row whose ``UNSUB_TIME`` or ``CLEAN_TIME``
  (Mailchimp's unsubscribed and cleaned exports, which come in the same ZIP
  as the subscribed one) or similar column is filled in is an :class:`OptOut`
  — the person left or the address bounced at the old service — never a
  subscription, whatever its other cells hold.
* **Cells are data**: nothing is evaluated; a NUL byte or a field over 64 KiB
  rejects the row (F11). Every row is an :class:`ImportRow`, an
  :class:`OptOut` or a :class:`RowReject`, with the physical line where the
  record starts.

Rows are ``NamedTuple``s rather than frozen dataclasses: they are just as
immutable, and a frozen dataclass costs ~1.8 µs per instance to build, a
fifth of the per-row budget of a million-row import.
"""

from __future__ import annotations

import codecs
import csv
import io
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from json.encoder import encode_basestring as _quote
from pathlib import Path
from typing import BinaryIO, NamedTuple

from mailcli import clock
from mailcli.addresses import AddressError, normalise_address, normalise_pair
from mailcli.decoding import MAX_LINE_BYTES, DecodeLog, LineTooLong, line_numbers, open_text
from mailcli.errors import InputFileError, UsageError
from mailcli.importrows import OptOut, RowReject, StagedRow

HEAD_BYTES = 64 * 1024
# The delimiter is judged on the first records, which may be long (a notes
# column): up to this much of the file is read for them.
DETECT_BYTES = 1024 * 1024
MAX_FIELD_CHARS = 64 * 1024
# A rejected row's cell over MAX_FIELD_CHARS goes to the rejects file cut to
# this many characters and a marker saying how long it was.
REJECT_CELL_CHARS = 1000
# Detected encodings whose lines are decoded one by one (mailcli.decoding).
PER_LINE = frozenset({"utf-8", "utf-8-sig", "cp1252"})
DETECT_RECORDS = 50
DELIMITERS = (",", ";", "\t", "|")
# Fields a column can be mapped to; anything else given to --map is an attribute.
FIELDS = ("email", "first_name", "last_name", "name", "consent_time", "consent_ip", "unsubscribed_at", "bounced_at",
          "ignore")
RESERVED_ATTRIBUTES = frozenset({"email", "first_name", "last_name", "lists", "status", "uid"})

# Header aliases, keyed by header_key(): lower case, letters and digits only.
_ALIASES: dict[str, str] = {
    **dict.fromkeys(
        ["email", "emailaddress", "mail", "mailaddress", "emailadres", "mailadres", "emails",
         "email1value"],  # Google Contacts: "E-mail 1 - Value"
        "email",
    ),
    **dict.fromkeys(["firstname", "first", "fname", "givenname", "voornaam", "roepnaam"], "first_name"),
    **dict.fromkeys(
        ["lastname", "last", "lname", "surname", "familyname", "achternaam"], "last_name"
    ),
    **dict.fromkeys(["name", "fullname", "naam", "volledigenaam"], "name"),
}
# Consent columns in order of preference: the confirmation (double opt-in)
# is the stronger evidence, so it wins over the opt-in when both are filled.
_CONSENT_TIME = ["confirmtime", "confirmedat", "consenttime", "consentat", "consentdate",
                 "optintime", "optinat", "optindate", "timestampopt"]
_CONSENT_IP = ["confirmip", "consentip", "optinip", "signupip", "ip", "ipaddress", "ipopt"]
# Columns saying the person left the list at the old service (the first two
# are Mailchimp's); cleaned means the address bounced there.
_OPTED_OUT = ["unsubtime", "unsubscribedat", "unsubscribetime", "optouttime", "optedoutat", "optoutat"]
_CLEANED = ["cleantime", "cleanedat"]
# The Dutch name prefix ("van der", "de"), kept in a column of its own by
# many Dutch systems; it belongs in front of the last name.
_LAST_NAME_PREFIX = ["tussenvoegsel", "tussenvoegsels", "voorvoegsel", "voorvoegsels"]

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
# Excel's "sep=;" first line: the delimiter and nothing else on the line.
_SEP_LINE = re.compile(r"sep=(.)(\r\n|\n|\r|$)")
_DMY = re.compile(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})(?:[ T]+(\d{1,2})[:.](\d{2})(?:[:.](\d{2}))?)?")
_SPACES = re.compile(r"\s+")
# IPv4 octets as written without leading zeros (ipaddress refuses those).
_OCTETS = frozenset(str(n) for n in range(256))
# "YYYY-MM-DD HH:MM:SS" with a possible time of day (ASCII digits only, as
# datetime.fromisoformat wants them); the date is checked separately.
_PLAIN_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]")
_DATES: dict[str, bool] = {}
# Bytes that occur in text files; everything else counts towards "binary".
_TEXT_BYTES = bytes({7, 8, 9, 10, 12, 13, 27} | set(range(0x20, 0x100)))


class ImportRow(NamedTuple):
    """One valid contact row, normalised."""

    line: int
    email: str
    key: str
    first_name: str | None
    last_name: str | None
    attributes: dict[str, str]
    consent_at: str | None  # ISO-8601 UTC, None = the import time
    consent_ip: str | None  # network, e.g. "192.0.2.0/24"




@dataclass(slots=True)
class Boundary:
    """Where one reader of a file hands over to another: the physical line
    at which the other starts reading records.

    It is only a boundary if a record of the first reader ends right before
    it; a quoted field can run across any line break, so the first reader
    checks: ``reached`` when a record ends on the line before, ``passed``
    when one runs across it.
    """

    line: int
    reached: bool = False
    passed: bool = False

    def at(self, next_line: int) -> bool:
        """Called with the line of the next record once it is at or past
        ``line``; True if reading should stop here."""
        if next_line == self.line:
            self.reached = True
            return True
        self.passed = True
        return False


@dataclass(frozen=True, slots=True)
class CsvFormat:
    """How a file is decoded and split; ``per_line``: the encoding was
    detected, and each line is decoded as UTF-8 or cp1252 by itself (see
    :mod:`mailcli.decoding`)."""

    encoding: str
    delimiter: str
    skip_sep_line: bool = False
    per_line: bool = False


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """Which column feeds which field; the rest become attributes."""

    headers: tuple[str, ...]
    email: int
    first_name: int | None = None
    last_name: int | None = None
    name: int | None = None
    consent_time: tuple[int, ...] = ()
    consent_ip: tuple[int, ...] = ()
    attributes: tuple[tuple[str, int], ...] = ()
    has_header: bool = True
    opted_out: tuple[int, ...] = ()  # a filled cell makes the row an OptOut (unsubscribed)
    cleaned: tuple[int, ...] = ()  # the same, bounced
    last_name_prefix: int | None = None  # "Tussenvoegsel": put in front of the last name


# --------------------------------------------------------------------- headers


def header_key(header: str) -> str:
    """``E-mailadres`` → ``emailadres``: how headers are compared."""
    text = unicodedata.normalize("NFKD", header).encode("ascii", "ignore").decode("ascii")
    return _NON_ALNUM.sub("", text.lower())


def attribute_name(header: str) -> str:
    """``Member Rating`` → ``member_rating``: an identifier usable in templates."""
    text = unicodedata.normalize("NFKD", header).encode("ascii", "ignore").decode("ascii")
    name = _NON_ALNUM.sub("_", text.lower()).strip("_")
    if not name:
        return "column"
    if name[0].isdigit():
        # Jinja names cannot start with a digit, and a leading underscore is
        # blocked by the sandbox, so give it a letter prefix.
        name = f"col_{name}"
    return name


def parse_map_options(values: Iterable[str]) -> dict[str, str]:
    """``["Mail adres=email", "Plaats=city"]`` → header key → field or attribute."""
    mapping: dict[str, str] = {}
    for value in values:
        column, sep, target = value.rpartition("=")
        if not sep or not column.strip() or not target.strip():
            raise UsageError(f'--map "{value}": expected "CSV column=field"')
        target = target.strip().lower()
        if target in ("skip", "-", "none"):
            target = "ignore"
        if target.replace("-", "_") in FIELDS:
            target = target.replace("-", "_")
        else:
            target = attribute_name(target)
        mapping[header_key(column)] = target
    return mapping


def plan_columns(
    headers: list[str], mapping: dict[str, str] | None, source: str
) -> ColumnPlan:
    """Resolve columns to fields; raises InputFileError without an email column."""
    mapping = dict(mapping or {})
    keys = [header_key(h) for h in headers]
    for wanted in mapping:
        if wanted not in keys:
            raise InputFileError(
                f"{source}: --map names a column that is not in the file: {wanted!r}",
                hint=f"columns found: {_show_headers(headers)}",
            )
    chosen: dict[str, int] = {}
    consent_time: list[tuple[int, int]] = []
    consent_ip: list[tuple[int, int]] = []
    opted_out: list[int] = []
    cleaned: list[int] = []
    prefix: int | None = None
    attributes: list[tuple[str, int]] = []
    explicit = set(mapping.values()) & set(FIELDS)
    for index, key in enumerate(keys):
        target = mapping.get(key)
        if target is None:
            alias = _ALIASES.get(key)
            if alias is not None and alias not in explicit and alias not in chosen:
                target = alias
            elif key in _CONSENT_TIME and "consent_time" not in explicit:
                consent_time.append((_CONSENT_TIME.index(key), index))
                continue
            elif key in _CONSENT_IP and "consent_ip" not in explicit:
                consent_ip.append((_CONSENT_IP.index(key), index))
                continue
            elif key in _OPTED_OUT:
                target = "unsubscribed_at"
            elif key in _CLEANED:
                target = "bounced_at"
            elif key in _LAST_NAME_PREFIX and prefix is None:
                prefix = index
                continue
        if target == "ignore":
            continue
        if target == "unsubscribed_at":
            opted_out.append(index)
        elif target == "bounced_at":
            cleaned.append(index)
        elif target == "consent_time":
            consent_time.append((-1, index))
        elif target == "consent_ip":
            consent_ip.append((-1, index))
        elif target in FIELDS and target not in chosen:
            chosen[target] = index
        else:
            attributes.append((target or attribute_name(headers[index]), index))
    if "email" not in chosen:
        found = _show_headers(headers)
        raise InputFileError(
            f"{source}: no email column (columns found: {found})",
            hint='name the column with --map "COLUMN=email"',
        )
    if prefix is not None and "last_name" not in chosen:
        attributes.append((attribute_name(headers[prefix]), prefix))  # no last name to join
        prefix = None
    name_index = chosen.get("name")
    if name_index is not None and ("first_name" in chosen or "last_name" in chosen):
        # Explicit first/last columns win; the full name stays an attribute.
        attributes.append(("name", name_index))
        name_index = None
    return ColumnPlan(
        headers=tuple(headers),
        email=chosen["email"],
        first_name=chosen.get("first_name"),
        last_name=chosen.get("last_name"),
        name=name_index,
        consent_time=tuple(i for _, i in sorted(consent_time)),
        consent_ip=tuple(i for _, i in sorted(consent_ip)),
        attributes=_unique_names(attributes, {"name"} if name_index is not None else set()),
        opted_out=tuple(opted_out),
        cleaned=tuple(cleaned),
        last_name_prefix=prefix,
    )


def _show_headers(headers: list[str]) -> str:
    """Headers for an error message: printable, short, at most 20 of them."""
    shown = []
    for header in headers[:20]:
        text = "".join(ch if ch.isprintable() else "?" for ch in header.strip())
        if text:
            shown.append(text if len(text) <= 40 else text[:39] + "…")
    more = len(headers) - 20
    return (", ".join(shown) or "(none)") + (f" and {more} more" if more > 0 else "")


def _unique_names(attributes: list[tuple[str, int]], reserved: set[str]) -> tuple[tuple[str, int], ...]:
    seen: set[str] = set(reserved)
    result = []
    for name, index in attributes:
        base, n = name, 1
        while name in seen or name in RESERVED_ATTRIBUTES:
            n += 1
            name = f"{base}_{n}"
        seen.add(name)
        result.append((name, index))
    return tuple(result)


# ------------------------------------------------------------------ detection


def detect_encoding(head: bytes, source: str, *, complete: bool = False) -> str:
    """Pick the encoding from the first bytes of a file (see module docstring)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if head.startswith(b"PK\x03\x04"):
        raise InputFileError(
            f"{source}: this is a spreadsheet or zip file, not a CSV file",
            hint="save it as CSV (comma or semicolon separated) and import that",
        )
    if b"\x00" in head:
        even, odd = head[0::2], head[1::2]
        if odd and odd.count(0) > len(odd) * 0.4 and even.count(0) < len(even) * 0.05:
            return "utf-16-le"
        if even and even.count(0) > len(even) * 0.4 and odd.count(0) < len(odd) * 0.05:
            return "utf-16-be"
    # Binary, not text: more than 1% control bytes. A single stray NUL in a
    # text file is not binary; it rejects its row instead (F11).
    if len(head.translate(None, _TEXT_BYTES)) > max(len(head) // 100, 1) or head.count(0) > 64:
        raise InputFileError(f"{source}: binary file, not a CSV file")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    # Lines are decoded one by one (see mailcli.decoding); the file is called
    # after the way most of its lines with accents are written.
    lines = head.splitlines()
    if not complete:
        lines = lines[:-1]  # may be cut off in the middle of a character
    utf8 = other = 0
    for line in lines:
        if not line.isascii():
            try:
                line.decode("utf-8")
                utf8 += 1
            except UnicodeDecodeError:
                other += 1
    return "utf-8" if utf8 >= other and utf8 else "cp1252"


def detect_delimiter(sample: str, *, truncated: bool = False) -> str:
    """The candidate delimiter that splits the sample most consistently."""
    best: tuple[float, int, int] | None = None
    chosen = ","
    unsplit: str | None = None  # for a one-column file: the first that splits no record
    for rank, delimiter in enumerate(DELIMITERS):
        counts = _field_counts(sample, delimiter, truncated)
        if not counts or counts[0] < 2:
            if unsplit is None and all(n == 1 for n in counts):
                unsplit = delimiter
            continue
        header = counts[0]
        # A header alone (the first record is longer than the sample) says
        # nothing against this delimiter: the header's fields decide.
        consistent = sum(1 for n in counts[1:] if n == header) / (len(counts) - 1) if len(counts) > 1 else 1.0
        score = (consistent, header, -rank)
        if best is None or score > best:
            best, chosen = score, delimiter
    return chosen if best is not None or unsplit is None else unsplit


def _field_counts(sample: str, delimiter: str, truncated: bool) -> list[int]:
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
    counts: list[int] = []
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                counts.append(len(row))
            if len(counts) > DETECT_RECORDS:
                break
    except csv.Error:
        pass
    if truncated and len(counts) > 1 and len(counts) <= DETECT_RECORDS:
        counts.pop()  # the last record may be cut off by the sample's end
    return counts


def detect_format(
    head: bytes,
    source: str,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    complete: bool = False,
) -> CsvFormat:
    """Encoding and delimiter for a file whose first bytes are ``head``
    (the encoding is judged on the first HEAD_BYTES of them)."""
    if encoding:
        encoding = _check_encoding(encoding)
        if encoding == "utf-8" and head.startswith(codecs.BOM_UTF8):
            encoding = "utf-8-sig"
        per_line = False
    else:
        encoding = detect_encoding(head[:HEAD_BYTES], source, complete=complete and len(head) <= HEAD_BYTES)
        per_line = encoding in PER_LINE
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    try:
        sample = decoder.decode(head, final=complete)
    except UnicodeError as exc:  # not a byte but the whole text: UTF-16 without a BOM
        raise InputFileError(f"{source}: line 1: cannot be decoded as {encoding} ({exc})",
                             hint="pass the file's encoding, e.g. --encoding utf-16-le") from None
    if sample.startswith("\ufeff"):
        sample = sample[1:]
    sep = _SEP_LINE.match(sample)
    if sep and sep.group(1) not in "\r\n" and (sep.group(2) or complete):
        return CsvFormat(encoding, delimiter or sep.group(1), skip_sep_line=True, per_line=per_line)
    if delimiter:
        return CsvFormat(encoding, _check_delimiter(delimiter), per_line=per_line)
    return CsvFormat(encoding, detect_delimiter(sample, truncated=not complete), per_line=per_line)


def _check_encoding(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise UsageError(f"--encoding: unknown encoding {name!r}", hint="try utf-8, cp1252, latin-1 or utf-16") from None


def _check_delimiter(value: str) -> str:
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
    value = named.get(value.lower(), value)
    if len(value) != 1 or value in "\"\r\n" or value.isalnum():
        raise UsageError(f"--delimiter: expected one character such as , ; | or tab, not {value!r}")
    return value


# ------------------------------------------------------------------ the values


def parse_consent_time(text: str) -> str:
    """A consent timestamp as ISO-8601 UTC; raises ValueError if unreadable."""
    value = text.strip()
    if len(value) == 19 and _PLAIN_TIME.fullmatch(value) is not None and _valid_date(value[:10]):
        # The Mailchimp shape "2023-04-01 10:12:33", already UTC: what
        # fromisoformat below would accept, rewritten without building a
        # datetime (the dates repeat, so each is checked once).
        return f"{value[:10]}T{value[11:]}Z"
    if not value:
        raise ValueError("empty consent time")
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "Zz" else value)
    except ValueError:
        match = _DMY.fullmatch(value)
        if match is None:
            raise
        day, month, year, hour, minute, second = match.groups()
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    else:
        if moment.tzinfo is None and len(value) == 19 and value[10] in " T":
            # The Mailchimp shape "2023-04-01 10:12:33": already UTC and whole seconds.
            return f"{value[:10]}T{value[11:]}Z"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return clock.to_iso(moment)


def _valid_date(text: str) -> bool:
    valid = _DATES.get(text)
    if valid is None:
        try:
            date.fromisoformat(text)
            valid = True
        except ValueError:
            valid = False
        if len(_DATES) >= 10_000:  # bounded: memory stays flat whatever the file
            _DATES.clear()
        _DATES[text] = valid
    return valid


def truncate_ip(text: str) -> str:
    """``192.0.2.57`` → ``192.0.2.0/24``; ``2001:db8:1:2::5`` → ``2001:db8:1::/48``."""
    value = text.strip()
    parts = value.split(".")
    if len(parts) == 4 and parts[0] in _OCTETS and parts[1] in _OCTETS and parts[2] in _OCTETS and parts[3] in _OCTETS:
        # The common case, ~10x faster than ipaddress objects.
        return f"{parts[0]}.{parts[1]}.{parts[2]}.0/24"
    address = ipaddress.ip_address(value)
    if address.version == 4:
        return f"{ipaddress.IPv4Address(int(address) & 0xFFFFFF00)}/24"
    return f"{ipaddress.IPv6Address(int(address) >> 80 << 80)}/48"


def _clean_name(value: str) -> str:
    # Names may end up in a To: display name: no line breaks or controls.
    value = value.strip()
    if value.isprintable():
        return value
    cleaned = "".join(ch if ch.isprintable() else " " for ch in value)
    return _SPACES.sub(" ", cleaned).strip()


# ------------------------------------------------------------------ the reader


@dataclass
class CsvSource:
    """An open CSV file: detected format, column plan and a row iterator.

    Use as a context manager; :meth:`rows` yields ``ImportRow``/``RowReject``.
    """

    path: Path
    format: CsvFormat
    plan: ColumnPlan
    size: int
    _binary: BinaryIO = field(repr=False)
    _text: io.TextIOWrapper = field(repr=False)
    _log: DecodeLog = field(repr=False)  # the lines decoded otherwise than the file's encoding
    _reader: Iterator[list[str]] = field(repr=False)  # a csv reader
    _line_offset: int = field(default=0, repr=False)  # physical lines before the reader's first
    _first_row: list[str] | None = field(default=None, repr=False)
    _first_line: int = field(default=1, repr=False)
    _now_limit: str = field(default="", repr=False)
    mapping: dict[str, str] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.path)

    def bytes_read(self) -> int:
        """How far into the file the reader is, for a progress bar."""
        try:
            return self._binary.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self._text.close()

    @property
    def reencoded(self) -> tuple[int, list[int]]:
        """How many lines so far were decoded otherwise than the file's
        encoding, and the byte offsets where the first of them start."""
        return self._log.count, self._log.offsets

    def reencoded_before(self) -> tuple[int, list[int]]:
        """As :attr:`reencoded`, but only the lines before ``split`` (see
        :func:`open_csv`): the decoder reads ahead of the records."""
        until = self._log.until
        assert until is not None
        return self._log.before, [o for o in self._log.offsets if o < until]

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rows(self) -> Iterator[ImportRow | RowReject | OptOut]:
        """Every record after the header, in file order."""
        return self._records(staged=False)  # type: ignore[return-value]

    def staged_rows(self, stop: Boundary | None = None) -> Iterator[StagedRow | RowReject | OptOut]:
        """As :meth:`rows`, but each valid row as the tuple the store stages:
        ``ImportRow`` order with the attributes as compact JSON. Skips building
        a dict and a row object per record on the import hot path.

        With ``stop``, the rows end where a record starts at ``stop.line``
        (another reader takes it from there) and ``stop.reached`` is set; if
        a record runs across that line instead, ``stop.passed`` is set and
        reading goes on to the end of the file.
        """
        return self._records(staged=True, stop=stop)  # type: ignore[return-value]

    def _records(self, *, staged: bool, stop: Boundary | None = None
                 ) -> Iterator[ImportRow | StagedRow | RowReject | OptOut]:
        reader = self._reader
        after = self._line_offset + 1  # the line after the reader's line_num
        parse = self._parser(staged)
        line = self._first_line
        stop_line = stop.line if stop is not None else 0
        try:
            if self._first_row is not None:  # a header-less file: row 1 is data
                first = parse(line, self._first_row)
                if first is not None:
                    yield first
                line = reader.line_num + after  # type: ignore[attr-defined]
            while True:
                try:
                    for row in reader:
                        if row:
                            result = parse(line, row)
                            if result is not None:
                                yield result
                        line = reader.line_num + after  # type: ignore[attr-defined]
                        if stop_line and line >= stop_line:
                            if stop.at(line):  # type: ignore[union-attr]
                                return
                            stop_line = 0
                    return
                except csv.Error as exc:
                    if "field limit" in str(exc):
                        # Only a quoted field running over many lines gets
                        # here (a longer line is refused by the decoder), and
                        # where its record ends is then anyone's guess.
                        raise InputFileError(
                            f"{self.name}: line {line}: a quoted field runs on for more than"
                            f" {MAX_LINE_BYTES // (1024 * 1024)} MiB",
                            hint='look for a quote (") that is never closed') from None
                    # Python 3.10's csv refuses NUL itself; 3.11+ hands the row
                    # to parse(), which rejects it with this same reason.
                    reason = "NUL byte in row" if "NUL" in str(exc) else f"malformed CSV record ({exc})"
                    yield RowReject(line, reason, {})
                    line = reader.line_num + after  # type: ignore[attr-defined]
                    if stop_line and line >= stop_line:
                        if stop.at(line):  # type: ignore[union-attr]
                            return
                        stop_line = 0
        except UnicodeError as exc:  # a byte that does not decode; UTF-16 without a BOM
            raise _undecodable(self.path, self.format.encoding, exc) from None
        except LineTooLong as exc:
            raise _line_too_long(self.path, exc) from None

    def _parser(self, staged: bool) -> Callable[[int, list[str]], ImportRow | StagedRow | RowReject | OptOut | None]:
        """The per-record function, with the plan bound to locals (the hot path)."""
        plan = self.plan
        width = len(plan.headers)
        email_at = plan.email
        first_at, last_at, name_at = plan.first_name, plan.last_name, plan.name
        attributes = plan.attributes
        consent_time, consent_ip = plan.consent_time, plan.consent_ip
        now_limit = self._now_limit
        reject = self._reject
        normalise = normalise_pair
        quote = _quote
        json_keys = [(f'"{name}":', index) for name, index in attributes]
        # One attribute column (a city, a customer number) is common: its JSON
        # object is built directly instead of through a list and a join.
        single = (json_keys[0][1], "{" + json_keys[0][0]) if len(json_keys) == 1 and name_at is None else None
        plain_time, dates, octets = _PLAIN_TIME.fullmatch, _DATES, _OCTETS

        def parse(line: int, row: list[str]) -> ImportRow | StagedRow | RowReject | None:
            if len(row) != width:
                if len(row) > width:
                    if any(cell.strip() for cell in row[width:]):
                        return reject(line, f"{len(row)} fields but the header has {width}", row)
                    row = row[:width]
                elif not any(cell.strip() for cell in row):
                    return None  # a blank record (";;;" left by Excel) is no row
                else:
                    row = row + [""] * (width - len(row))
            joined = "".join(row)
            if len(joined) > MAX_FIELD_CHARS and max(map(len, row)) > MAX_FIELD_CHARS:
                return reject(line, f"field longer than {MAX_FIELD_CHARS // 1024} KiB", row)
            if "\x00" in joined:
                return reject(line, "NUL byte in row", row)
            try:
                email, key = normalise(row[email_at])
            except AddressError as exc:
                if row[email_at].strip():
                    return reject(line, f"invalid email address: {exc.reason}", row)
                if not joined.strip():
                    return None
                return reject(line, "missing email address", row)
            # Names: strip, and clean only what is not printable (rare).
            first = last = full = None
            if first_at is not None:
                first = row[first_at].strip()
                if not first.isprintable():
                    first = _clean_name(first)
            if last_at is not None:
                last = row[last_at].strip()
                if not last.isprintable():
                    last = _clean_name(last)
            if name_at is not None:
                full = _clean_name(row[name_at])
                if full:
                    first, _, rest = full.partition(" ")
                    last = rest.strip() or None
            consent_at = None
            for index in consent_time:
                value = row[index].strip()
                if value:
                    # parse_consent_time's fast path, inline: the Mailchimp
                    # shape on a date already found valid.
                    if len(value) == 19 and plain_time(value) is not None and dates.get(value[:10]):
                        consent_at = f"{value[:10]}T{value[11:]}Z"
                    else:
                        try:
                            consent_at = parse_consent_time(value)
                        except ValueError:
                            return reject(line, f"bad consent time {value!r}", row)
                    if consent_at > now_limit:
                        return reject(line, f"consent time in the future {value!r}", row)
                    break
            ip = None
            for index in consent_ip:
                value = row[index].strip()
                if value:
                    parts = value.split(".")  # truncate_ip's fast path, inline
                    if len(parts) == 4 and parts[0] in octets and parts[1] in octets and parts[2] in octets \
                            and parts[3] in octets:
                        ip = f"{parts[0]}.{parts[1]}.{parts[2]}.0/24"
                    else:
                        try:
                            ip = truncate_ip(value)
                        except ValueError:
                            return reject(line, f"bad consent IP address {value!r}", row)
                    break
            if staged:
                spelled = email if email != key else None  # see StagedRow
                # Attribute names are identifiers (attribute_name), so only
                # the values need JSON quoting.
                if single is not None:
                    value = row[single[0]].strip()
                    return (line, spelled, key, first or None, last or None,
                            single[1] + quote(value) + "}" if value else "{}", consent_at, ip)
                parts = [prefix + quote(value) for prefix, index in json_keys if (value := row[index].strip())]
                if full:
                    parts.append('"name":' + quote(full))
                return (line, spelled, key, first or None, last or None,
                        "{" + ",".join(parts) + "}" if parts else "{}", consent_at, ip)
            attrs = {name: value for name, index in attributes if (value := row[index].strip())}
            if full:
                attrs["name"] = full
            return ImportRow(line, email, key, first or None, last or None, attrs, consent_at, ip)

        step: Callable[[int, list[str]], ImportRow | StagedRow | RowReject | None] = parse
        prefix_at = plan.last_name_prefix
        if prefix_at is not None and last_at is not None:
            last_index = last_at

            def parse_with_prefix(line: int, row: list[str]) -> ImportRow | StagedRow | RowReject | None:
                if prefix_at < len(row) and last_index < len(row) and (prefix := " ".join(row[prefix_at].split())):
                    joined = row.copy()
                    last = joined[last_index].strip()
                    joined[last_index] = f"{prefix} {last}" if last else prefix
                    result = parse(line, joined)
                    if type(result) is RowReject:  # the rejects file shows the cells as they were
                        return reject(line, result.reason, row)
                    return result
                return parse(line, row)

            step = parse_with_prefix
        if not (plan.cleaned or plan.opted_out):
            return step
        left = [(index, "bounced") for index in plan.cleaned] + [(index, "unsubscribed") for index in plan.opted_out]

        def parse_or_opt_out(line: int, row: list[str]) -> ImportRow | StagedRow | RowReject | OptOut | None:
            # Checked first: a cell that would reject a subscription (a bad
            # consent time, say) must not lose a person's opt-out.
            kind = value = ""
            for index, each in left:
                if index < len(row) and (value := row[index].strip()):
                    kind = each
                    break
            if not kind:
                return step(line, row)
            try:
                _, key = normalise(row[email_at]) if email_at < len(row) else ("", "")
            except AddressError:
                key = ""
            if not key:
                return step(line, row)  # rejected there, with the reason
            try:
                at: str | None = parse_consent_time(value)
            except ValueError:
                at = None
            return OptOut(line, key, kind, at)

        return parse_or_opt_out

    def _reject(self, line: int, reason: str, row: list[str]) -> RowReject:
        headers = self.plan.headers
        raw: dict[str, str] = {}
        for i, cell in enumerate(row):
            name = headers[i] if i < len(headers) else f"column_{i + 1}"
            if name in raw:  # a repeated header: keep every cell, in order
                name = f"{name} ({i + 1})"
            raw[name] = cut_cell(cell)
        return RowReject(line, reason, raw)


def cut_cell(cell: str) -> str:
    """A rejected row's cell as it was in the file, or, over the field limit,
    its start and a marker saying how long it was."""
    if len(cell) <= MAX_FIELD_CHARS:
        return cell
    return f"{cell[:REJECT_CELL_CHARS]}…[cut: {len(cell)} characters]"


def _set_field_limit() -> None:
    # As long as a line may be: a longer field is refused as such (see _records).
    if csv.field_size_limit() < MAX_LINE_BYTES:
        csv.field_size_limit(MAX_LINE_BYTES)


def _line_too_long(path: Path, exc: LineTooLong) -> InputFileError:
    (line,) = line_numbers(path, [exc.offset])
    return InputFileError(
        f"{path}: line {line}: longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB, which no contact record is")


def open_csv(
    path: str | Path,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    mapping: dict[str, str] | None = None,
    now_limit: str | None = None,
    per_line: bool = False,
    split: int | None = None,
) -> CsvSource:
    """Open a contact file, detect its format and plan its columns.

    Raises InputFileError (exit 2) for a missing, unreadable, binary or empty
    file, or one without an email column. ``now_limit`` is the latest consent
    time accepted (ISO-8601; default a day from now). For the first of two
    readers (see :mod:`mailcli.importfeed`): ``per_line``, the ``encoding``
    given was detected by the import, so lines are decoded one by one as
    then; ``split``, the offset where the other reader starts.
    """
    path = Path(path)
    source = str(path)
    try:
        binary: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by CsvSource
    except FileNotFoundError:
        raise InputFileError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{source}: is a directory, not a CSV file") from None
    except OSError as exc:
        raise InputFileError(f"{source}: cannot read ({exc.strerror})") from None
    try:
        return _open(binary, path, source, encoding, delimiter, mapping, now_limit, per_line, split)
    except BaseException:
        binary.close()
        raise


def _open(
    binary: BinaryIO,
    path: Path,
    source: str,
    encoding: str | None,
    delimiter: str | None,
    mapping: dict[str, str] | None,
    now_limit: str | None = None,
    per_line: bool = False,
    split: int | None = None,
) -> CsvSource:
    import os

    size = os.fstat(binary.fileno()).st_size
    try:
        head = binary.read(DETECT_BYTES)
    except OSError as exc:
        raise InputFileError(f"{source}: cannot read ({exc.strerror})") from None
    if not head.strip():
        raise InputFileError(f"{source}: the file is empty")
    if head.startswith(b"PK\x03\x04"):
        _refuse_zip_of_csv(binary, source)
    fmt = detect_format(head, source, encoding=encoding, delimiter=delimiter, complete=len(head) < DETECT_BYTES)
    if per_line and fmt.encoding in PER_LINE:  # a worker reading a file the import detected
        fmt = CsvFormat(fmt.encoding, fmt.delimiter, fmt.skip_sep_line, per_line=True)
    binary.seek(0)
    text, log = open_text(binary, fmt.encoding, per_line=fmt.per_line, until=split)
    _set_field_limit()
    reader = csv.reader(text, delimiter=fmt.delimiter)
    try:
        if fmt.skip_sep_line:
            next(text)  # reader.line_num does not count it; start lines at 2
        header: list[str] | None = None
        for row in reader:
            if any(cell.strip() for cell in row):
                header = row
                break
    except UnicodeError as exc:  # a byte that does not decode; UTF-16 without a BOM
        raise _undecodable(path, fmt.encoding, exc) from None
    except LineTooLong as exc:
        raise _line_too_long(path, exc) from None
    except csv.Error as exc:
        raise InputFileError(f"{source}: not a readable CSV file ({exc})") from None
    if header is None:
        raise InputFileError(f"{source}: the file has no rows")
    offset = 1 if fmt.skip_sep_line else 0
    header_line = reader.line_num + offset  # type: ignore[attr-defined]
    headers = [h.strip().lstrip("\ufeff") for h in header]
    first_row: list[str] | None = None
    try:
        plan = plan_columns(headers, mapping, source)
    except InputFileError:
        plan_or_none = _headerless_plan(headers) if not mapping else None
        if plan_or_none is None:
            raise
        plan, first_row = plan_or_none, header
    limit = now_limit or clock.to_iso(clock.now() + timedelta(days=1))
    src = CsvSource(
        path=path, format=fmt, plan=plan, size=size, _binary=binary, _text=text, _log=log,
        _reader=reader, _line_offset=offset,
        _first_row=first_row, _first_line=header_line if first_row is not None else header_line + 1,
        _now_limit=limit, mapping=mapping,
    )
    return src


def open_csv_part(
    path: str | Path, fmt: CsvFormat, plan: ColumnPlan, *, start: int, first_line: int, now_limit: str
) -> CsvSource:
    """The records of an already opened file from byte ``start`` on, which
    must be the start of physical line ``first_line`` and of a record.

    For a second reader of a big file (see :mod:`mailcli.importfeed`); only
    for encodings where a newline byte is always a newline (``SPLITTABLE``).
    """
    import os

    path = Path(path)
    binary: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by CsvSource
    try:
        size = os.fstat(binary.fileno()).st_size
        binary.seek(start)
        # A byte-order mark only counts at the start of the file.
        encoding = "utf-8" if fmt.encoding == "utf-8-sig" else fmt.encoding
        text, log = open_text(binary, encoding, per_line=fmt.per_line, start=start)
        _set_field_limit()
        reader = csv.reader(text, delimiter=fmt.delimiter)
        return CsvSource(
            path=path, format=fmt, plan=plan, size=size, _binary=binary, _text=text, _log=log,
            _reader=reader, _line_offset=first_line - 1, _first_line=first_line, _now_limit=now_limit,
        )
    except BaseException:
        binary.close()
        raise


# Encodings in which a b"\n" byte is a line feed wherever it appears, so a
# file can be read from any line start: ASCII-compatible single-byte ones and
# UTF-8 (no multi-byte sequence contains 0x0A). Not UTF-16.
SPLITTABLE = frozenset({"utf-8", "utf-8-sig", "cp1252", "iso8859-1", "iso8859-15", "ascii"})


def _refuse_zip_of_csv(binary: BinaryIO, source: str) -> None:
    """A ZIP archive of CSV files — what Mailchimp's audience export
    downloads as — gets an error that says what to do with it."""
    import zipfile

    try:
        with zipfile.ZipFile(binary) as archive:
            names = [Path(n).name for n in archive.namelist() if n.lower().endswith(".csv")]
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a readable archive: detect_encoding says what it is
    if names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise InputFileError(
            f"{source}: a ZIP archive of CSV files ({shown}), not a CSV file",
            hint="unzip it and import each CSV file; of a Mailchimp export all of them: the unsubscribed"
                 " and cleaned ones keep those people off the list")


def _headerless_plan(first_row: list[str]) -> ColumnPlan | None:
    """A file of bare addresses (no header): the column whose first cell is one."""
    for index, cell in enumerate(first_row):
        try:
            normalise_address(cell)
        except AddressError:
            continue
        headers = tuple(f"column_{i + 1}" for i in range(len(first_row)))
        attributes = tuple((headers[i], i) for i in range(len(first_row)) if i != index)
        return ColumnPlan(headers=headers, email=index, attributes=attributes, has_header=False)
    return None


def find_undecodable_line(path: Path, encoding: str) -> int:
    """The physical line holding the first byte that does not decode (error path only)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with open(path, "rb") as handle:
        for piece in handle:  # split at b"\n": each piece holds at most one newline
            try:
                text = decoder.decode(piece)
            except UnicodeError:
                return line
            line += text.count("\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeError:
            return line
    return line


def _undecodable(path: Path, encoding: str, exc: UnicodeError) -> InputFileError:
    bad = find_undecodable_line(path, encoding)
    # A decoding error names its byte; other codec errors say what is wrong.
    detail = "" if isinstance(exc, UnicodeDecodeError) else f" ({exc})"
    return InputFileError(f"{path}: line {bad}: cannot be decoded as {encoding}{detail}",
                          hint="pass the file's encoding, e.g. --encoding cp1252")

