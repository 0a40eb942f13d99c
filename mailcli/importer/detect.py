"""How a contact file is written: its encoding and its delimiter.

* **Encoding**, deterministic and in this order: a BOM (UTF-8, UTF-16 LE/BE);
  UTF-16 without BOM when every other byte is NUL; UTF-8 when the head is
  valid UTF-8; else UTF-8 or cp1252 (what Dutch Excel writes), after the way
  most lines with accents in the head are written. A detected UTF-8 or
  cp1252 file is then decoded line by line, each line as UTF-8 or cp1252 by
  itself (:mod:`mailcli.importer.decoding`). An encoding given with
  ``--encoding`` applies to the whole file, strictly.
* **Delimiter** among ``,`` ``;`` TAB ``|``: each candidate parses the first
  records with the real ``csv`` reader (so quotes and quoted newlines count
  correctly); the winner splits the header into more than one field and
  keeps the field count most consistent over the records. ``csv.Sniffer``
  guesses from character frequencies and gets quoted cells wrong. Excel's
  ``sep=;`` first line is honoured.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass

from mailcli.errors import InputFileError, UsageError

HEAD_BYTES = 64 * 1024  # what the encoding is judged on
# The delimiter is judged on the first records, which may be long (a notes
# column): up to this much of the file is read for them.
DETECT_BYTES = 1024 * 1024
DETECT_RECORDS = 50
DELIMITERS = (",", ";", "\t", "|")
# Detected encodings whose lines are decoded one by one (mailcli.importer.decoding).
PER_LINE = frozenset({"utf-8", "utf-8-sig", "cp1252"})
# Encodings in which a b"\n" byte is a line feed wherever it appears, so a
# file can be read from any line start: ASCII-compatible single-byte ones and
# UTF-8 (no multi-byte sequence contains 0x0A). Not UTF-16.
SPLITTABLE = frozenset({"utf-8", "utf-8-sig", "cp1252", "iso8859-1", "iso8859-15", "ascii"})

# Excel's "sep=;" first line: the delimiter and nothing else on the line.
_SEP_LINE = re.compile(r"sep=(.)(\r\n|\n|\r|$)")
# Bytes that occur in text files; everything else counts towards "binary".
_TEXT_BYTES = bytes({7, 8, 9, 10, 12, 13, 27} | set(range(0x20, 0x100)))


@dataclass(frozen=True, slots=True)
class CsvFormat:
    """How a file is decoded and split; ``per_line``: the encoding was
    detected, and each line is decoded as UTF-8 or cp1252 by itself (see
    :mod:`mailcli.importer.decoding`)."""

    encoding: str
    delimiter: str
    skip_sep_line: bool = False
    per_line: bool = False


def detect_encoding(head: bytes, source: str, *, complete: bool = False) -> str:
    """Pick the encoding from the first bytes of a file (see the module docstring)."""
    marked = _byte_order_mark(head, source)
    if marked:
        return marked
    if b"\x00" in head:
        utf16 = _utf16_without_bom(head)
        if utf16:
            return utf16
    # Binary, not text: more than 1% control bytes. A single stray NUL in a
    # text file is not binary; it rejects its row instead (a cell is data,
    # and a NUL byte is none).
    if len(head.translate(None, _TEXT_BYTES)) > max(len(head) // 100, 1) or head.count(0) > 64:
        raise InputFileError(f"{source}: binary file, not a CSV file")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
    except UnicodeDecodeError:
        return _mostly_utf8_or_cp1252(head, complete)
    return "utf-8"


def _byte_order_mark(head: bytes, source: str) -> str | None:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if head.startswith(b"PK\x03\x04"):
        raise InputFileError(
            f"{source}: this is a spreadsheet or zip file, not a CSV file",
            hint="save it as CSV (comma or semicolon separated) and import that",
        )
    return None


def _utf16_without_bom(head: bytes) -> str | None:
    even, odd = head[0::2], head[1::2]
    if odd and odd.count(0) > len(odd) * 0.4 and even.count(0) < len(even) * 0.05:
        return "utf-16-le"
    if even and even.count(0) > len(even) * 0.4 and odd.count(0) < len(odd) * 0.05:
        return "utf-16-be"
    return None


def _mostly_utf8_or_cp1252(head: bytes, complete: bool) -> str:
    """A head that is not all UTF-8: lines are decoded one by one (see
    mailcli.importer.decoding), and the file is called after the way most of
    its lines with accents are written."""
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


# Complexity: one score per candidate delimiter and per way a sample can be ragged.
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


# Complexity: one branch per signal of an encoding (BOM, UTF-16 zeros, valid UTF-8) and the sep= line.
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
    """The codec's name for a text encoding; Python's bytes-to-bytes codecs
    (hex, base64, zlib) and str-to-str ones (rot13) are no file encoding."""
    try:
        codec = codecs.lookup(name)
    except LookupError:
        codec = None
    if codec is None or not codec._is_text_encoding:
        what = f"unknown encoding {name!r}" if codec is None else f"{name!r} is not a text encoding"
        raise UsageError(f"--encoding: {what}", hint="try utf-8, cp1252, latin-1 or utf-16")
    return codec.name


def _check_delimiter(value: str) -> str:
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
    value = named.get(value.lower(), value)
    if len(value) != 1 or value in "\"\r\n" or value.isalnum():
        raise UsageError(f"--delimiter: expected one character such as , ; | or tab, not {value!r}")
    return value
