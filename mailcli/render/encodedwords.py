"""RFC 2047 encoded-words for header values that are not plain ASCII, and
folding a header at spaces.

Words are split at spaces, the space travelling inside the next word, so
readers that drop whitespace between encoded-words and readers that keep it
both get the words right; Q encoding for mostly-Latin text (readable), B for
the rest.
"""

from __future__ import annotations

import base64

ENCODED_WORD_MAX = 75  # RFC 2047 §2

# Characters allowed literally in a Q-encoded word that may stand in a phrase
# (RFC 2047 §5 (3)); the same set is safe in Subject.
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")


def _q_char(char: str) -> str:
    if char in _Q_SAFE:
        return char
    if char == " ":
        return "_"
    return "".join(f"={byte:02X}" for byte in char.encode("utf-8"))


class _QTable(dict[int, str]):
    """``str.translate`` table of the Q encoding, filled in as characters come."""

    def __missing__(self, code: int) -> str:
        encoded = _q_char(chr(code))
        if len(self) < 4096:
            self[code] = encoded
        return encoded


_Q_TABLE = _QTable()


def _q(text: str) -> str:
    return text.translate(_Q_TABLE)


def _word(text: str, use_b: bool) -> str:
    if use_b:
        return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="
    return "=?utf-8?q?" + _q(text) + "?="


# Complexity: one branch per way a character can fit the 75-character limit of RFC 2047.
def encoded_words(text: str, first_room: int = ENCODED_WORD_MAX) -> list[str]:
    """``text`` as encoded-words of at most 75 characters (the first: ``first_room``).

    Words are split at spaces, the space travelling inside the next word, so
    readers that follow RFC 2047 §6.2 (whitespace between encoded-words is
    dropped) and readers that keep it both get the words right; a single word
    too long for one encoded-word is split between characters, never inside
    one (§5). Q encoding for mostly-Latin text (readable), B for the rest.

    The size of a word is worked out from what it adds, never by encoding
    the words gathered so far again: a Q-encoded text is its characters'
    encodings one after the other, and B encodes the sum of their UTF-8
    octets (a subject and a display name per message).
    """
    non_ascii = len(text) - len(text.encode("ascii", "ignore"))
    use_b = non_ascii * 3 > len(text)

    def measure(piece: str) -> int:  # Q: its encoded length; B: its UTF-8 octets
        return len(piece.encode("utf-8")) if use_b else len(_q(piece))

    def size(measured: int) -> int:  # the length of an encoded-word of that measure
        return 12 + 4 * ((measured + 2) // 3) if use_b else 12 + measured

    words = text.split(" ")
    segments = [words[0]] + [" " + word for word in words[1:]]
    out: list[str] = []
    room = min(max(first_room, 24), ENCODED_WORD_MAX)
    current, measured = "", 0
    for segment in segments:
        adds = measure(segment)
        if size(measured + adds) <= room:
            current, measured = current + segment, measured + adds
            continue
        if current:
            out.append(_word(current, use_b))
            current, measured, room = "", 0, ENCODED_WORD_MAX
        if size(adds) <= room:
            current, measured = segment, adds
            continue
        for char in segment:  # one over-long word: split between characters
            adds = measure(char)
            if current and size(measured + adds) > room:
                out.append(_word(current, use_b))
                current, measured, room = "", 0, ENCODED_WORD_MAX
            current, measured = current + char, measured + adds
    if current or not out:
        out.append(_word(current, use_b))
    return out


def needs_encoding(text: str) -> bool:
    """Whether a header value must be written as encoded-words (non-ASCII, "=?", or a word too long to fold)."""
    return not text.isascii() or "=?" in text or any(len(word) > 70 for word in text.split(" "))


def fold(prefix: str, pieces: list[str], limit: int) -> str:
    """Join ``pieces`` with spaces after ``prefix``, folding before a piece that would pass ``limit``."""
    lines: list[str] = []
    current = prefix
    for piece in pieces:
        if len(current) + 1 + len(piece) > limit and current.strip() != prefix:
            lines.append(current)
            current = " " + piece
        else:
            current += " " + piece
    lines.append(current)
    return "\r\n".join(lines)
