"""The text/plain part: from ``message.txt``, else generated from the HTML.

Generation uses inscriptis (Apache-2.0, maintained, lxml-based), which lays
out tables and block elements the way a reader expects and keeps each link's
target next to its text (``[Read more](https://…)``), so the plain part is
usable rather than a "view in browser" stub (STANDARDS A16).

Whatever the source, the part must identify the sender and carry the
unsubscribe URL (A16, B29, Tw 11.7 lid 4): ``ensure_footer`` appends a short
footer when the template's text lacks either.
"""

from __future__ import annotations

import re
from typing import Any

_CONFIG: Any = None
_BLANK_RUNS = re.compile(r"\n{3,}")
_TRAILING = re.compile(r"[ \t\u00a0]+$", re.MULTILINE)


def html_to_text(html: str) -> str:
    """Readable plain text for an HTML document, links kept as URLs."""
    global _CONFIG
    from inscriptis import get_text
    from inscriptis.model.config import ParserConfig

    if _CONFIG is None:
        _CONFIG = ParserConfig(display_links=True)
    return normalize_text(get_text(html, _CONFIG))


def normalize_text(text: str) -> str:
    """LF line ends, no trailing blanks, at most one empty line in a row, final newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # The substring tests skip the regexes for text that needs neither, as
    # most rendered text parts do (each regex walks the whole part).
    if " \n" in text or "\t\n" in text or "\xa0\n" in text or text.endswith((" ", "\t", "\xa0")):
        text = _TRAILING.sub("", text)
    if "\n\n\n" in text:
        text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip("\n") + "\n"


def ensure_footer(text: str, *, sender_name: str, postal_address: str, unsubscribe_url: str) -> str:
    """Append sender identity and unsubscribe URL when the text lacks them."""
    missing_url = bool(unsubscribe_url) and unsubscribe_url not in text
    missing_name = bool(sender_name) and sender_name not in text
    missing_address = bool(postal_address) and postal_address not in text
    if not (missing_url or missing_name or missing_address):
        return text
    lines = ["", "-- "]
    identity = ", ".join(part for part in (sender_name, postal_address) if part)
    if identity:
        lines.append(identity)
    if unsubscribe_url:
        lines.append(f"You can object to direct marketing at any time. Unsubscribe: {unsubscribe_url}")
    return text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
