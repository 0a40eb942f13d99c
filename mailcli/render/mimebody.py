"""The bodies of a message's parts: the transfer encoding each needs, and
writing it fast (this runs for every message).

7bit for ASCII parts with short lines, else quoted-printable for mostly Latin
text and base64 for the rest; an HTML part writes its non-ASCII characters
as character references, which usually keeps it 7bit. With ``eightbit`` (the
relay takes 8-bit bodies, RFC 6152, and mailcli does not sign the message),
a part with short lines goes as it is, UTF-8: no encoding to write and none
for the receiver to undo. CRLF line ends only, no line over 998 octets
(docs/guarantees.md#message-format).
"""

from __future__ import annotations

import base64
import codecs
import re
from typing import AnyStr

MAX_LINE = 998  # octets, excluding CRLF (RFC 5322 §2.1.1)


# Any MAX_LINE + 1 characters in a row hold a whole block of this many that
# starts at a multiple of it.
_BLOCK = (MAX_LINE + 1) // 2


def _has_long_line(text: AnyStr, newline: AnyStr) -> bool:
    """True when a line of ``text`` (``newline`` line ends) is longer than
    MAX_LINE: characters of a ``str`` (octets, for ASCII text), octets of ``bytes``.

    A regex like ``[^\r\n]{999}`` restarts at every character, which made
    it the largest cost of a send (benchmarks/README.md), and splitting the
    text into its lines still cost a tenth of writing a part. A line that
    long holds one of the blocks of ``_BLOCK`` characters that start at its
    multiples, so only the lines around a block without a line break (few:
    most lines are short) are measured.
    """
    size = len(text)
    if size <= MAX_LINE:
        return False
    find, rfind = text.find, text.rfind
    for start in range(0, size - _BLOCK + 1, _BLOCK):
        if find(newline, start, start + _BLOCK) < 0:
            end = find(newline, start + _BLOCK)
            if (size if end < 0 else end) - rfind(newline, 0, start) - 1 > MAX_LINE:
                return True
    return False


# Elements whose content HTML does not decode character references in. HTML
# compares tag names in ASCII case only: "<noſcript>" is no noscript element.
# The look-ahead for their first letters changes nothing in what matches, but
# lets the regular expression pass over the other tags of a page in half the time.
_RAW_TEXT = re.compile(r"<(?=[sxinp])(style|script|xmp|iframe|noembed|noframes|noscript|plaintext)\b",
                       re.IGNORECASE | re.ASCII)
_RAW_TEXT_END = {name: re.compile(rf"</{name}", re.IGNORECASE | re.ASCII)
                 for name in ("style", "script", "xmp", "iframe", "noembed", "noframes", "noscript", "plaintext")}


# HTML reads the references of U+0080..U+009F as Windows-1252 characters.
_C1 = re.compile("[\x80-\x9f]")
# What "xmlcharrefreplace" writes for one of them (and what a page may also hold as text).
_C1_REFERENCE = re.compile(r"&#1(?:2[89]|[3-5][0-9]);")


def _raw_text_is_ascii(html: str) -> bool:
    for match in _RAW_TEXT.finditer(html):
        end = _RAW_TEXT_END[match.group(1).lower()].search(html, match.end())
        if not html[match.end() : end.start() if end else len(html)].isascii():
            return False
    return True


def encode_html_body(html: str, *, eightbit: bool = False) -> tuple[str, bytes]:
    """:func:`encode_body` for an HTML part, with its non-ASCII characters as character references.

    ``&#8594;`` is the same character as ``→`` to every HTML reader, and a
    newsletter's few non-ASCII characters (names, quotes, dashes, arrows) were
    what made the whole part quoted-printable: with them as references the
    part is usually plain 7bit, several times cheaper to write. Where a
    reference would not be decoded (inside ``<style>``, ``<script>`` and the
    like) the part stays UTF-8.
    """
    if not eightbit and not html.isascii():
        referenced = html.encode("ascii", "xmlcharrefreplace").decode("ascii")
        # Every U+0080..U+009F becomes such a reference, so without one in
        # the result there is none in the page. Looking for the characters
        # themselves scans the page several times slower (benchmarks/README.md),
        # so only a page whose result has one is looked at again.
        c1_free = _C1_REFERENCE.search(referenced) is None or _C1.search(html) is None
        if c1_free and _raw_text_is_ascii(html):
            html = referenced
    return encode_body(html, eightbit=eightbit)


def encode_body(text: str, *, eightbit: bool = False) -> tuple[str, bytes]:
    """``(Content-Transfer-Encoding, CRLF-terminated encoded bytes)`` for one part."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    ascii_only = text.isascii()
    if ascii_only and not _has_long_line(text, "\n"):
        return "7bit", text.replace("\n", "\r\n").encode("ascii")
    data = text.encode("utf-8")
    # The limit is on octets: a line of 500 Cyrillic letters is 1,000 of them.
    if eightbit and not ascii_only and not _has_long_line(data, b"\n"):
        return "8bit", data.replace(b"\n", b"\r\n")
    non_ascii = len(data) - len(text.encode("ascii", "ignore"))  # octets of non-ASCII characters
    if non_ascii * 10 > len(data) * 3:  # mostly non-Latin: base64 is smaller than =XX escapes
        encoded = base64.encodebytes(data.replace(b"\n", b"\r\n")).replace(b"\n", b"\r\n")
        return "base64", encoded
    return "quoted-printable", quoted_printable_text(text)


# Octets a quoted-printable line may carry as they are, besides "=" (which
# is always escaped) and the line break; everything else becomes =XX.
_QP_LITERAL = bytes(range(0x20, 0x7F)) + b"\t\n"
_QP_ESCAPE = re.compile(rb"[^\t\n\x20-\x7e]")
_QP_HEX = [f"={octet:02X}".encode("ascii") for octet in range(256)]
# Up to 72 characters, then whatever completes an escape cut at that point
# (or a whole escape, or up to three more plain characters): at most 75.
_QP_PIECE = re.compile(rb".{1,72}(?:=..|[^=]{1,3})?")


def quoted_printable(data: bytes) -> bytes:
    """RFC 2045 §6.7 quoted-printable of LF-terminated text, CRLF line ends.

    ``binascii.b2a_qp`` checks every octet on its own and was the largest
    single cost of building a 20 KB newsletter. Here the octet escapes are
    whole-buffer C operations ("=" first, then the rare others), a blank at
    the end of a line is escaped (rule 3), and lines longer than 76
    characters are cut by one regular expression into pieces of at most 75
    that never end inside an escape, joined by soft breaks (``=``).
    """
    data = data.replace(b"=", b"=3D")
    return _qp_lines(data)


def quoted_printable_text(text: str) -> bytes:
    """:func:`quoted_printable` of ``text`` encoded as UTF-8, the same bytes, faster.

    Scanning the octets for the few that need escaping cost more than all
    the rest; here the ASCII encoder finds the non-ASCII characters and the
    ``mailcli-qp`` error handler escapes each run of them (remembering runs:
    a newsletter repeats the same few dashes, quotes and arrows).
    """
    return _qp_lines(text.replace("=", "=3D").encode("ascii", "mailcli-qp"))


_QP_RUNS: dict[str, str] = {}


def _escape_run(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):  # pragma: no cover - only registered for encoding
        raise error
    run = error.object[error.start : error.end]
    escaped = _QP_RUNS.get(run)
    if escaped is None:
        escaped = "".join([f"={octet:02X}" for octet in run.encode("utf-8")])
        if len(_QP_RUNS) < 4096:
            _QP_RUNS[run] = escaped
    return escaped, error.end


codecs.register_error("mailcli-qp", _escape_run)


def _qp_lines(data: bytes) -> bytes:
    """Escape what is left (octets outside printable ASCII, blanks ending a
    line) and cut lines over 76 characters with soft breaks."""
    if data.translate(None, _QP_LITERAL):
        data = _QP_ESCAPE.sub(lambda m: _QP_HEX[m.group()[0]], data)
    lines = data.split(b"\n")
    if b" \n" in data or b"\t\n" in data or data.endswith((b" ", b"\t")):
        lines = [line[:-1] + _QP_HEX[line[-1]] if line.endswith((b" ", b"\t")) else line for line in lines]
    pieces = _QP_PIECE.findall
    return b"\r\n".join([b"=\r\n".join(pieces(line)) if len(line) > 76 else line for line in lines])
