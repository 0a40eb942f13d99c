"""The wire format of a campaign message, written by hand and kept strict.

``email.message.EmailMessage`` costs many times more per message
(benchmarks/README.md), and it was the bottleneck of the whole pipeline;
this writer builds the same structure in a small fraction of that.
Everything that is the same for every recipient (From, Reply-To, List-Id,
Precedence, Feedback-ID, extra headers) is encoded once in
``MessageSkeleton``; ``build`` adds the per-recipient headers and the body
(``mimebody.py``).

What the output guarantees (docs/guarantees.md#message-format,
docs/guarantees.md#header-safety), each checked by tests that re-parse it with
``email.message_from_bytes(policy=email.policy.default)``:

* CRLF line ends only, no line over 998 octets, headers folded to 78 where
  the content allows;
* ``multipart/alternative`` with text/plain first and text/html last, both
  UTF-8; 7bit only for ASCII parts with short lines, otherwise
  quoted-printable (mostly Latin text) or base64;
* a random boundary that cannot occur in the bodies;
* Subject and display names as RFC 2047 encoded-words of ≤75 characters when
  not plain ASCII, never inside an address (``encodedwords.py``);
* domains as IDNA2008 A-labels via the ``idna`` package, UTS #46
  non-transitional, so ``x@bücher.example`` becomes
  ``x@xn--bcher-kva.example``;
* every header value passes ``check_header_value`` — CR, LF, NUL, other C0
  and C1 controls, DEL and U+2028/U+2029 are refused whatever the Python
  patch level, so no contact's data can add a header. This is the one
  validator used wherever a header value is formed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import format_datetime
from functools import lru_cache

from mailcli import addresses
from mailcli.errors import HeaderInjectionError

from .encodedwords import ENCODED_WORD_MAX, encoded_words, fold, needs_encoding
from .mimebody import MAX_LINE, encode_body, encode_html_body

FOLD_AT = 78  # preferred header line length

# C0 controls except TAB, DEL, C1 controls, LINE/PARAGRAPH SEPARATOR.
_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NAMES = {"\r": "a carriage return", "\n": "a line feed", "\x00": "a NUL character",
          "\u2028": "a line separator (U+2028)", "\u2029": "a paragraph separator (U+2029)",
          "\x85": "a next-line character (U+0085)"}
_FIELD_NAME = re.compile(r"^[!-9;-~]+$")


class AddressError(addresses.AddressError):
    """An address that cannot be written into a header (one family with import's address errors)."""


def check_header_value(field: str, value: str) -> str:
    """Return ``value`` if it is safe in a header, else raise ``HeaderInjectionError``.

    Refuses CR, LF, NUL, every other C0 control except TAB, DEL, C1 controls
    and U+2028/U+2029, naming the header field.
    """
    match = _FORBIDDEN.search(value)
    if match is not None:
        char = match.group(0)
        what = _NAMES.get(char, f"the control character U+{ord(char):04X}")
        raise HeaderInjectionError(
            f"{field} header value contains {what} at position {match.start() + 1}; refusing to build the message",
            hint="line breaks and control characters are not allowed in names, subjects and addresses",
        )
    return value


# ---------------------------------------------------------------------------
# Addresses

_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@lru_cache(maxsize=8192)
def ascii_domain(domain: str) -> str:
    """A domain as an IDNA2008 A-label (``bücher.example`` → ``xn--bcher-kva.example``)."""
    domain = domain.strip().rstrip(".")
    if domain.isascii():
        ascii_form = domain.lower()
    else:
        import idna

        try:
            ascii_form = idna.encode(domain, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise AddressError(f"Invalid domain {domain!r}: {exc}") from None
    if not _HOST.match(ascii_form):
        raise AddressError(f"Invalid domain {domain!r} in an address")
    return ascii_form


@lru_cache(maxsize=65536)
def ascii_address(address: str, field: str = "address") -> str:
    """``local@domain`` with the domain as A-label; refuses what a header can't carry."""
    check_header_value(field, address)
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        raise AddressError(f"{field}: {address!r} is not an email address")
    if not local.isascii():
        raise AddressError(f"{field}: {address!r} has a non-ASCII local part, which needs SMTPUTF8")
    if not _LOCAL.match(local):
        raise AddressError(f"{field}: {address!r} has a local part mailcli does not write (quoted or special characters)")
    return f"{local}@{ascii_domain(domain)}"


# RFC 6531 §3.3: a local part may also hold any non-ASCII character (but no
# space or control, which check_header_value refuses anyway).
_UTF8_ATOM = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f\s])+"
_UTF8_LOCAL = re.compile(rf"^{_UTF8_ATOM}(?:\.{_UTF8_ATOM})*$")


def recipient_address(address: str, field: str = "To") -> str:
    """Like :func:`ascii_address`, but a non-ASCII local part stays as it is.

    Such an address can only travel with SMTPUTF8 (RFC 6531), in a message
    whose headers are UTF-8 (RFC 6532): the transport sends it only to a
    relay that offers SMTPUTF8 and fails it, with the reason, elsewhere.
    """
    local, at, domain = address.strip().rpartition("@")
    if local.isascii() or not at:
        return ascii_address(address, field)
    check_header_value(field, address)
    if not _UTF8_LOCAL.match(local) or len(local.encode("utf-8")) > 64:
        raise AddressError(f"{field}: {address!r} has a local part mailcli does not write (quoted or special characters)")
    return f"{local}@{ascii_domain(domain)}"


def unstructured_header(field: str, value: str) -> str:
    """``Field: value`` folded to 78 columns, encoded-words where needed."""
    check_header_value(field, value)
    prefix = f"{field}:"
    if needs_encoding(value):
        return fold(prefix, encoded_words(value, 76 - len(prefix) - 1), 76)
    # Fold before spaces only: unfolding (removing CRLF) restores the text exactly.
    return fold(prefix, value.split(" "), FOLD_AT)


# The longest word of a display name written as it is: with its quotes and
# the field name it still fits a line of 998 octets (RFC 5322 §2.1.1).
_LONGEST_WORD = 900
_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$")
_ATOM_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+$")


def _phrase(prefix: str, field: str, name: str) -> str:
    """``prefix`` followed by ``name`` as a phrase: atoms, a quoted-string or encoded-words.

    Non-ASCII names are encoded word by word, like the standard library does:
    plain ASCII words stay readable atoms, and runs of other words become
    encoded-words (never inside a quoted-string, RFC 2047 §5).
    """
    check_header_value(field, name)
    name = " ".join(name.split())
    if name.isascii() and "=?" not in name and max(map(len, name.split(" "))) <= _LONGEST_WORD:
        # Folded at spaces, inside a quoted-string too (RFC 5322 §3.2.4 allows
        # FWS there), so a long name keeps every line within 998 octets. A
        # word too long for one line is written as encoded-words below, which
        # split it between characters (RFC 2047 §6.2: readers drop the
        # whitespace between them).
        if _ATOM_PHRASE.match(name):
            return fold(prefix, name.split(" "), FOLD_AT)
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return fold(prefix, f'"{quoted}"'.split(" "), FOLD_AT)
    pieces: list[str] = []
    run: list[str] = []
    line_length = len(prefix)

    def flush() -> None:
        nonlocal line_length
        if run:
            room = 76 - line_length - 1
            words = encoded_words(" ".join(run), room if room >= 24 else ENCODED_WORD_MAX)
            pieces.extend(words)
            line_length = len(words[-1]) + 1
            run.clear()

    for word in name.split(" "):
        if _ATOM.match(word) and "=?" not in word and len(word) <= 70:
            flush()
            pieces.append(word)
            line_length += len(word) + 1
        else:
            run.append(word)
    flush()
    return fold(prefix, pieces, 76)


def _angle(head: str, item: str) -> str:
    """Append `` <item>``, folding first when the last line would pass 78 (76 beside an encoded-word)."""
    last = head.rsplit("\r\n", 1)[-1]
    limit = 76 if "=?" in last else FOLD_AT
    sep = "\r\n " if len(last) + len(item) + 3 > limit else " "
    return f"{head}{sep}<{item}>"


def mailbox_header(field: str, name: str | None, address: str, *, utf8: bool = False) -> str:
    """``Field: Name <local@a-label>``; the name encoded or quoted as needed.

    ``utf8`` lets a non-ASCII local part through (RFC 6532; see
    :func:`recipient_address`)."""
    addr = recipient_address(address, field) if utf8 else ascii_address(address, field)
    if not name or not name.strip():
        return f"{field}: {addr}"
    return _angle(_phrase(f"{field}:", field, name), addr)


def list_header(field: str, value: str) -> str:
    """A comma-separated header (List-Unsubscribe) folded after commas."""
    check_header_value(field, value)
    if not value.isascii():
        raise HeaderInjectionError(f"{field} header value must be ASCII (encode URLs and IDNs first)")
    items = [item.strip() for item in value.split(",") if item.strip()]
    lines: list[str] = []
    current = f"{field}:"
    for index, item in enumerate(items):
        piece = " " + item + ("," if index < len(items) - 1 else "")
        if len(current) + len(piece) > FOLD_AT and current != f"{field}:":
            lines.append(current)
            current = piece
        else:
            current += piece
    lines.append(current)
    for line in lines:
        if len(line) > MAX_LINE:
            raise HeaderInjectionError(f"{field} header has an item longer than {MAX_LINE} characters")
    return "\r\n".join(lines)


def simple_header(field: str, value: str) -> str:
    """A short ASCII header written as is (Message-ID, Feedback-ID, Precedence)."""
    check_header_value(field, value)
    if not value.isascii() or len(field) + 2 + len(value) > MAX_LINE:
        raise HeaderInjectionError(f"{field} header value must be ASCII and shorter than {MAX_LINE} characters")
    return f"{field}: {value}"


# ---------------------------------------------------------------------------
# The message


def _list_id_header(list_id: str, list_name: str | None) -> str:
    """``List-Id: Name <label>``; the label must be a plain ASCII word."""
    label = check_header_value("List-Id", list_id.strip().strip("<>"))
    if not label.isascii() or " " in label:
        raise HeaderInjectionError(f"List-Id {list_id!r} must be an ASCII label like news.example.org")
    if list_name:
        return _angle(_phrase("List-Id:", "List-Id", list_name), label)
    return f"List-Id: <{label}>"


class MessageSkeleton:
    """Headers shared by every message of a campaign, encoded once."""

    def __init__(
        self,
        *,
        from_name: str,
        from_address: str,
        reply_to: str | None,
        list_id: str | None,
        list_name: str | None = None,
        feedback_id: str | None = None,
        precedence: str | None = "bulk",
        extra: Mapping[str, str] | None = None,
    ) -> None:
        head = [mailbox_header("From", from_name, from_address)]
        if reply_to:
            head.append(mailbox_header("Reply-To", None, reply_to))
        tail: list[str] = []
        if list_id:
            tail.append(_list_id_header(list_id, list_name))
        if precedence:
            tail.append(simple_header("Precedence", precedence))
        if feedback_id:
            tail.append(simple_header("Feedback-ID", feedback_id))
        for field, value in (extra or {}).items():
            if not _FIELD_NAME.match(field) or field.lower() in _RESERVED:
                raise HeaderInjectionError(f"Header name {field!r} is not allowed as an extra header")
            tail.append(unstructured_header(field, value))
        tail.append("MIME-Version: 1.0")
        self.from_address = ascii_address(from_address, "From")
        self._head = "\r\n".join(head) + "\r\n"
        self._tail = "\r\n".join(tail) + "\r\n"
        self._last_date: tuple[datetime, str] | None = None

    def _date(self, date: datetime) -> str:
        """The Date header's value; the last one is kept, as messages built
        within the same second share it. Only a time in UTC (what a send
        uses) is compared with it: equal times in one zone are written the same."""
        if date.tzinfo is not timezone.utc:
            return format_datetime(date)
        last = self._last_date  # one attribute, read once: threads may share the skeleton
        if last is None or last[0] != date:
            last = self._last_date = (date, format_datetime(date))
        return last[1]

    def build(
        self,
        *,
        to_address: str,
        to_name: str | None,
        subject: str,
        text: str,
        html: str,
        message_id: str,
        date: datetime,
        list_unsubscribe: str | None,
        one_click: bool = True,
        eightbit: bool = False,
    ) -> bytes:
        """The message as wire bytes (CRLF, ≤998 octets a line), ready for DATA;
        with ``eightbit``, parts with short lines as UTF-8 (``mimebody``)."""
        if date.tzinfo is None:
            date = date.replace(tzinfo=timezone.utc)
        message_id = message_id.strip()
        if not message_id.startswith("<"):
            message_id = f"<{message_id}>"
        headers = [
            self._head,
            mailbox_header("To", to_name, to_address, utf8=True), "\r\n",
            unstructured_header("Subject", subject), "\r\n",
            "Date: ", self._date(date), "\r\n",
            simple_header("Message-ID", message_id), "\r\n",
        ]
        if list_unsubscribe:
            headers += [list_header("List-Unsubscribe", list_unsubscribe), "\r\n"]
            if one_click:
                headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        headers.append(self._tail)

        text_cte, text_body = encode_body(text, eightbit=eightbit)
        html_cte, html_body = encode_html_body(html, eightbit=eightbit)
        boundary = "=_mc" + secrets.token_hex(12)
        while boundary.encode("ascii") in text_body or boundary.encode("ascii") in html_body:
            boundary = "=_mc" + secrets.token_hex(12)  # pragma: no cover - 2**-96
        delimiter = b"--" + boundary.encode("ascii")
        headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n')
        head = "".join(headers)
        return b"".join((
            # UTF-8 only for a non-ASCII local part in To (RFC 6532), else ASCII.
            head.encode("utf-8" if not head.isascii() else "ascii"),
            delimiter, b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: ",
            # The CRLF before a delimiter belongs to the delimiter (RFC 2046
            # §5.1.1), so each body keeps its own final line break.
            text_cte.encode("ascii"), b"\r\n\r\n", text_body, b"\r\n",
            delimiter, b"\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: ",
            html_cte.encode("ascii"), b"\r\n\r\n", html_body, b"\r\n",
            delimiter, b"--\r\n",
        ))


# Headers the skeleton and build() own; extra headers may not repeat them (each appears once).
_RESERVED = frozenset(
    name.lower()
    for name in (
        "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "MIME-Version",
        "Content-Type", "Content-Transfer-Encoding", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post",
        "Precedence", "Feedback-ID", "Return-Path",
    )
)
