"""The body of a one-click POST: a small form, urlencoded or multipart.

RFC 8058 lets a mail client send ``List-Unsubscribe=One-Click`` either way.
Bodies over ``MAX_BODY`` are refused, and anything that is not a form of
one of those two kinds gets a clear 4xx, never a traceback.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

MAX_BODY = 64 * 1024


class BadRequest(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# Complexity: one check per way a POST body can be malformed (type, length, encoding), each its own 400.
def read_form(environ: dict[str, Any]) -> dict[str, str]:
    """The POST body as a flat form: urlencoded or multipart/form-data, ≤ 64 KiB."""
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
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("400 Bad Request", "The form is not UTF-8") from None
        return {key: values[0] for key, values in parse_qs(text, keep_blank_values=True).items()}
    if mime == "multipart/form-data":
        return _multipart(ctype, body)
    raise BadRequest("415 Unsupported Media Type", "Send the form as urlencoded or multipart/form-data")


def _multipart(ctype: str, body: bytes) -> dict[str, str]:
    """Parse multipart/form-data with the stdlib MIME parser (no cgi module)."""
    from email import policy
    from email.parser import BytesParser

    if "\r" in ctype or "\n" in ctype:
        raise BadRequest("400 Bad Request", "Invalid Content-Type")
    message = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart() or message.defects:
        raise BadRequest("400 Bad Request", "Invalid multipart form")
    form: dict[str, str] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_filename():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        form.setdefault(name, payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return form
