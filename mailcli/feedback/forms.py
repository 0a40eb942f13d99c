"""The body of a POST: a small form, urlencoded or multipart.

RFC 8058 lets a mail client send ``List-Unsubscribe=One-Click`` either way,
and the sign-up form may come from any site either way. Bodies over
``MAX_BODY`` are refused (413), and anything that is not a form of one of
those two kinds gets a plain 4xx, never a traceback: an unknown charset, a
body that is not UTF-8, nested parts, more than ``MAX_FIELDS`` fields.

A multipart body is split on its boundary here, in one pass; each part's
headers are read by the stdlib MIME parser (headers only, so a part is never
parsed as a message of its own, and nesting costs no recursion).
"""

from __future__ import annotations

import re
from email import policy
from email.parser import BytesHeaderParser, BytesParser
from typing import Any
from urllib.parse import parse_qs

MAX_BODY = 64 * 1024
MAX_FIELDS = 100  # a form served here has a handful of fields; the one-click form one or two

# What the stdlib MIME parser raises on a header or charset it cannot take:
# unknown or non-text charsets (LookupError), codecs that refuse "replace"
# (UnicodeError, a ValueError), comments nested thousands deep (RecursionError).
_UNREADABLE = (LookupError, ValueError, RecursionError)


class BadRequest(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _invalid(message: str = "Invalid multipart form") -> BadRequest:
    return BadRequest("400 Bad Request", message)


# Complexity: one check per way a POST body can be malformed (type, length, encoding), each its own 400.
def read_form(environ: dict[str, Any]) -> dict[str, str]:
    """The POST body as a flat form (each field's first value): urlencoded or
    multipart/form-data, ≤ 64 KiB, at most ``MAX_FIELDS`` fields."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadRequest("400 Bad Request", "Invalid Content-Length") from None
    if length > MAX_BODY:
        raise BadRequest("413 Content Too Large", "Request body too large")
    stream = environ.get("wsgi.input")
    body = stream.read(length) if (stream is not None and length > 0) else b""
    ctype = environ.get("CONTENT_TYPE", "") or "application/x-www-form-urlencoded"
    mime = ctype.split(";", 1)[0].strip().lower()
    if mime == "application/x-www-form-urlencoded":
        # Always UTF-8 (the WHATWG URL standard): a charset parameter is not read.
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid("The form is not UTF-8") from None
        try:
            fields = parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except ValueError:
            raise _invalid("Too many form fields") from None
        return {key: values[0] for key, values in fields.items()}
    if mime == "multipart/form-data":
        return _multipart(ctype, body)
    raise BadRequest("415 Unsupported Media Type", "Send the form as urlencoded or multipart/form-data")


def _multipart(ctype: str, body: bytes) -> dict[str, str]:
    """multipart/form-data (RFC 7578): a field per part with a name and no
    file name; a part in any other charset than UTF-8 says so."""
    form: dict[str, str] = {}
    for raw in _parts(body, _boundary(ctype)):
        try:
            field = _field(raw)
        except _UNREADABLE:
            raise _invalid() from None
        if field is not None:
            form.setdefault(*field)
    return form


def _boundary(ctype: str) -> bytes:
    if "\r" in ctype or "\n" in ctype:
        raise _invalid("Invalid Content-Type")
    try:
        header = BytesHeaderParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n")
        boundary = header.get_boundary()
    except _UNREADABLE:
        raise _invalid("Invalid Content-Type") from None
    if not boundary or not boundary.isascii():
        raise _invalid("Invalid Content-Type")
    return boundary.encode("ascii")


def _parts(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts between the delimiter lines (RFC 2046 5.1.1): the line break
    before a delimiter belongs to it; the preamble and the epilogue are not
    read. A body without its closing delimiter is not a form."""
    delimiter = re.compile(rb"--" + re.escape(boundary) + rb"(--)?[ \t]*")
    parts: list[bytes] = []
    current: list[bytes] | None = None
    for line in body.splitlines(keepends=True):
        match = delimiter.fullmatch(line.rstrip(b"\r\n")) if line.startswith(b"--") else None
        if match is None:
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            parts.append(_chomp(b"".join(current)))
        if match.group(1):
            return parts
        if len(parts) >= MAX_FIELDS:
            raise _invalid("Too many form fields")
        current = []
    raise _invalid()


def _chomp(part: bytes) -> bytes:
    for ending in (b"\r\n", b"\n", b"\r"):
        if part.endswith(ending):
            return part[: -len(ending)]
    return part


def _field(raw: bytes) -> tuple[str, str] | None:
    """(name, value) of a part, or None for a part that is no field (a file, no name)."""
    part = BytesParser(policy=policy.HTTP).parsebytes(raw, headersonly=True)
    if part.get_content_maintype() in ("multipart", "message"):
        raise _invalid()  # a form field holds a value, never parts of its own
    name = part.get_param("name", header="content-disposition")
    if not isinstance(name, str) or part.get_filename():
        return None
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    return name, payload.decode(part.get_content_charset() or "utf-8", "replace")
