"""Decoding a contact file for the CSV reader, line by line.

Why line by line: a file that is UTF-8 except for a few lines pasted from a
cp1252 file (or the other way round) is what text editors and spreadsheets
make of two sources put together. Decoding the whole file one way reads the
other lines wrongly ("José" as "JosÃ©") without a word. So when the encoding
was detected rather than given, every line is decoded as UTF-8 when it is
valid UTF-8, and as Windows-1252 otherwise. Text in cp1252 is valid UTF-8
only by a rare accident (a capital with an accent followed directly by a
symbol such as a no-break space), while UTF-8 read as cp1252 always decodes
and is always wrong. The lines read otherwise than the file's detected
encoding are recorded by byte offset, so the import can count them and name
their lines (docs/guarantees.md#files-as-they-are).

Windows-1252 here is the table browsers use: the five bytes cp1252 leaves
undefined are the control characters latin-1 has there, so every byte
decodes.

An encoding given with ``--encoding`` applies to the whole file, strictly: a
byte that does not decode stops the import with its line.

Either way a physical line may be at most ``MAX_LINE_BYTES`` long. The CSV
reader holds a whole line in memory, so this bounds the memory of an import
whatever the file holds.

The decoders plug into ``io.TextIOWrapper`` as codecs, so line splitting and
the csv module stay in C; for a file in one encoding the cost is one
``bytes.decode`` per chunk the wrapper reads.
"""

from __future__ import annotations

import codecs
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from typing_extensions import Buffer

MAX_LINE_BYTES = 16 * 1024 * 1024
# The start of a line is held back until the line is complete, so that the
# whole line is decoded one way; a line longer than this is decided by what
# has come so far (such a line holds a field over the import's limit anyway).
HOLD_BYTES = 64 * 1024
# Bytes the text wrapper decodes at a time (its default is 8 KiB): fewer,
# larger calls of a decoder written in Python.
CHUNK_BYTES = 64 * 1024
KEEP_OFFSETS = 1000  # offsets of lines read the other way kept for naming; all are counted

_PREFIX = "mailcli_lines_"
_WINDOWS_1252 = "".join(bytes([b]).decode("cp1252", "ignore") or chr(b) for b in range(256))
# A lead byte followed by a continuation byte: a line without one is either
# ASCII or not valid UTF-8. Looking for a continuation byte first is several
# times quicker, and cp1252 text seldom has one (they are its symbols).
_UTF8_PAIR = re.compile(rb"[\xc2-\xf4][\x80-\xbf]")
_NOT_CONTINUATION = bytes(b for b in range(256) if not 0x80 <= b <= 0xBF)
_BREAK = re.compile(rb"\r\n?|\n")


def decode_windows_1252(data: bytes) -> str:
    return codecs.charmap_decode(data, "strict", _WINDOWS_1252)[0]


class LineTooLong(Exception):
    """A physical line over ``MAX_LINE_BYTES``; ``offset`` is where it starts."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"line at byte {offset} is longer than {MAX_LINE_BYTES} bytes")
        self.offset = offset


@dataclass
class DecodeLog:
    """What one decoder saw: the lines it read otherwise than the file's encoding."""

    start: int = 0  # file offset of the first byte the decoder gets
    count: int = 0
    offsets: list[int] = field(default_factory=list)  # the first KEEP_OFFSETS line starts
    attached: bool = False
    # The text wrapper decodes ahead of the reader: a reader that stops at
    # ``until`` (where another reader takes over) counts only the lines
    # before it, in ``before``.
    until: int | None = None
    before: int = 0

    def add(self, offset: int) -> None:
        self.count += 1
        if self.until is not None and offset < self.until:
            self.before += 1
        if len(self.offsets) < KEEP_OFFSETS:
            self.offsets.append(offset)


# The log for the decoder that io.TextIOWrapper is about to create: a codec
# is looked up by name only, so this is how a decoder gets its log.
_handover: list[DecodeLog] = []


def _take_log() -> DecodeLog:
    log = _handover.pop() if _handover else DecodeLog()
    log.attached = True
    return log


def codec_name(encoding: str, *, per_line: bool) -> str:
    """The codec for a file: with ``per_line``, ``encoding`` is the file's
    detected encoding (UTF-8, with or without BOM, or cp1252) and each line is
    decoded as the module docstring says; otherwise ``encoding`` applies
    strictly."""
    if per_line:
        return _PREFIX + ("auto_utf8" if encoding.replace("_", "-").startswith("utf-8") else "auto_cp1252")
    return _PREFIX + "strict_" + codecs.lookup(encoding).name


def line_decoder(encoding: str, *, per_line: bool, start: int = 0) -> tuple[codecs.IncrementalDecoder, DecodeLog]:
    """An incremental decoder for a file (see :func:`codec_name`) that gets
    the bytes from file offset ``start`` on, and its log."""
    log = DecodeLog(start=start)
    _handover.append(log)
    try:
        return codecs.getincrementaldecoder(codec_name(encoding, per_line=per_line))(), log
    finally:
        _handover.clear()


def open_text(binary: BinaryIO, encoding: str, *, per_line: bool, start: int = 0,
              until: int | None = None) -> tuple[io.TextIOWrapper, DecodeLog]:
    """A text stream over ``binary`` (positioned at file offset ``start``) for
    the csv reader, and the log its decoder keeps (see :func:`codec_name`;
    ``until``: see :class:`DecodeLog`)."""
    name = codec_name(encoding, per_line=per_line)
    log = DecodeLog(start=start, until=until)
    _handover.append(log)
    try:
        text = io.TextIOWrapper(binary, encoding=name, errors="strict", newline="")  # type: ignore[type-var]
    finally:
        _handover.clear()
    if not log.attached:  # pragma: no cover - the C TextIOWrapper makes its decoder at once
        raise RuntimeError("the text decoder was not created")
    text._CHUNK_SIZE = CHUNK_BYTES  # type: ignore[attr-defined]
    return text, log


def line_numbers(path: Path, offsets: list[int]) -> list[int]:
    """The physical line (1-based) starting at each offset, counted as the CSV
    reader counts them (``\\n``, ``\\r\\n`` or a lone ``\\r`` ends one)."""
    if not offsets:
        return []
    wanted = sorted(set(offsets))
    found: dict[int, int] = {}
    breaks = 0
    position = 0
    previous = b""
    index = 0
    with open(path, "rb") as handle:
        while index < len(wanted):
            chunk = handle.read(1 << 20)
            if not chunk:
                break
            end = position + len(chunk)
            while index < len(wanted) and wanted[index] <= end:
                part = chunk[: wanted[index] - position]
                found[wanted[index]] = 1 + breaks + _breaks(part, previous)
                index += 1
            breaks += _breaks(chunk, previous)
            previous = chunk[-1:]
            position = end
    for offset in wanted[index:]:
        found[offset] = 1 + breaks
    return [found[o] for o in offsets]


def _breaks(data: bytes, previous: bytes) -> int:
    crlf = data.count(b"\r\n") + (previous == b"\r" and data[:1] == b"\n")
    return data.count(b"\n") + data.count(b"\r") - crlf


def _check_lines(block: bytes, base: int) -> None:
    offset = base
    for line in block.splitlines(keepends=True):
        if len(line) > MAX_LINE_BYTES:
            raise LineTooLong(offset)
        offset += len(line)


class _StrictDecoder(codecs.IncrementalDecoder):
    """A codec's own decoder, with the bound on line length."""

    codec = "utf-8"

    def __init__(self, errors: str = "strict") -> None:
        super().__init__(errors)
        self.log = _take_log()
        self.inner = codecs.getincrementaldecoder(self.codec)(errors)
        self.position = self.log.start  # file offset of the next byte
        self.run = 0  # bytes since the last line break

    def decode(self, input: Buffer, final: bool = False) -> str:  # noqa: A002 - the codecs signature
        data = bytes(input)
        if len(data) > MAX_LINE_BYTES:  # only when given more than the usual chunk at once
            _check_lines(data, self.position - self.run)
        last = max(data.rfind(b"\n"), data.rfind(b"\r"))
        self.run = self.run + len(data) if last < 0 else len(data) - last - 1
        self.position += len(data)
        if self.run > MAX_LINE_BYTES:
            raise LineTooLong(self.position - self.run)
        return self.inner.decode(data, final)  # type: ignore[no-any-return]

    def reset(self) -> None:
        self.inner.reset()
        self.run = 0

    def getstate(self) -> tuple[bytes, int]:
        return self.inner.getstate()  # type: ignore[no-any-return]

    def setstate(self, state: tuple[bytes, int]) -> None:
        self.inner.setstate(state)


class _LineDecoder(codecs.IncrementalDecoder):
    """UTF-8 or Windows-1252, decided per line (see the module docstring)."""

    utf8_file = True  # the file's detected encoding; the lines read the other way are logged

    def __init__(self, errors: str = "strict") -> None:
        super().__init__(errors)
        self.log = _take_log()
        self.base = self.log.start  # file offset of the first held byte (or of the next input)
        self.held = b""  # the start of a line not yet complete
        self.bom = self.base == 0  # a byte-order mark may start the text
        # A line too long to hold: how it is being decoded, where it started
        # and whether it has been logged.
        self.long: str | None = None
        self.long_start = 0
        self.long_logged = False
        self.utf8 = codecs.getincrementaldecoder("utf-8")()

    # Complexity: called for every chunk of a file: the long-line and end-of-file cases inline, no call per line.
    def decode(self, input: Buffer, final: bool = False) -> str:  # noqa: A002 - the codecs signature
        data = self.held + bytes(input) if self.held else bytes(input)
        base = self.base
        self.held = b""
        parts: list[str] = []
        if self.long is not None:
            match = _BREAK.search(data)
            end = match.end() if match else len(data)
            parts.append(self._long_part(data[:end], base, last=match is not None or final))
            data, base = data[end:], base + end
        if data:
            cut = len(data) if final else max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
            if cut:
                if cut > MAX_LINE_BYTES:  # only when given more than the usual chunk at once
                    _check_lines(data[:cut], base)
                parts.append(self._lines(data if cut == len(data) else data[:cut], base))
                data, base = data[cut:], base + cut
            if len(data) > HOLD_BYTES:
                self.long, self.long_start, self.long_logged = "utf-8", base, False
                parts.append(self._long_part(data, base, last=final))
                data, base = b"", base + len(data)
        self.held, self.base = data, base
        text = parts[0] if len(parts) == 1 else "".join(parts)
        if self.bom and text:
            self.bom = False
            if text[0] == "\ufeff":
                text = text[1:]
        return text

    def _lines(self, block: bytes, base: int) -> str:
        """Complete lines: the fast path when the whole block is in the file's encoding."""
        if self.utf8_file:
            try:
                return block.decode("utf-8")
            except UnicodeDecodeError:
                pass
        elif not block.translate(None, _NOT_CONTINUATION) or _UTF8_PAIR.search(block) is None:
            return decode_windows_1252(block)
        parts = []
        offset = base
        for line in block.splitlines(keepends=True):
            if line.isascii():
                parts.append(line.decode("ascii"))
            else:
                try:
                    parts.append(line.decode("utf-8"))
                    utf8 = True
                except UnicodeDecodeError:
                    parts.append(decode_windows_1252(line))
                    utf8 = False
                if utf8 != self.utf8_file:
                    self.log.add(offset)
            offset += len(line)
        return "".join(parts)

    # Complexity: one branch per place a long line's part can fall (start, middle, end) and per encoding.
    def _long_part(self, data: bytes, base: int, *, last: bool) -> str:
        """Part of a line longer than HOLD_BYTES; ``last`` if it ends the line."""
        if base + len(data) - self.long_start > MAX_LINE_BYTES:
            raise LineTooLong(self.long_start)
        text = ""
        if self.long == "utf-8":
            before = self.utf8.getstate()[0]
            try:
                text = self.utf8.decode(data, last)
                if not self.utf8_file and not self.long_logged and not data.isascii():
                    self.long_logged = True
                    self.log.add(self.long_start)
            except UnicodeDecodeError:
                self.utf8.reset()
                self.long = "windows-1252"
                data = before + data
        if self.long == "windows-1252":
            text = decode_windows_1252(data)
            if self.utf8_file and not self.long_logged:
                self.long_logged = True
                self.log.add(self.long_start)
        if last:
            self.long = None
            self.utf8.reset()
        return text

    def reset(self) -> None:
        self.held = b""
        self.long = None
        self.utf8.reset()

    def getstate(self) -> tuple[bytes, int]:
        return self.held, 0

    def setstate(self, state: tuple[bytes, int]) -> None:
        self.held = state[0]


class _Cp1252LineDecoder(_LineDecoder):
    utf8_file = False


def _not_for_encoding(text: str, errors: str = "strict") -> tuple[bytes, int]:
    raise UnicodeError("this codec only decodes contact files")


class _NoEncoder(codecs.IncrementalEncoder):
    def encode(self, input: str, final: bool = False) -> bytes:  # noqa: A002 - the codecs signature
        raise UnicodeError("this codec only decodes contact files")


def _search(name: str) -> codecs.CodecInfo | None:
    if not name.startswith(_PREFIX):
        return None
    kind = name[len(_PREFIX):]
    decoder: type[codecs.IncrementalDecoder]
    if kind == "auto_utf8":
        decoder = _LineDecoder
    elif kind == "auto_cp1252":
        decoder = _Cp1252LineDecoder
    elif kind.startswith("strict_"):
        try:
            codec = codecs.lookup(kind[len("strict_"):]).name
        except LookupError:
            return None
        decoder = type("_Strict", (_StrictDecoder,), {"codec": codec})
    else:
        return None

    def decode(data: Buffer, errors: str = "strict", /) -> tuple[str, int]:
        whole = bytes(data)
        return decoder(errors).decode(whole, True), len(whole)

    return codecs.CodecInfo(_not_for_encoding, decode, incrementalencoder=_NoEncoder,
                             incrementaldecoder=decoder, name=name)


codecs.register(_search)
