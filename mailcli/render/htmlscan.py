"""Where a protected Jinja tag sits in the flattened HTML (the second step of
inlining a template once, see ``inline.py``), and the attributes of a tag.

``marker_contexts`` reads the HTML the way a browser's tokenizer does, only
as far as it needs to: text, comments, declarations, start and end tags with
their attributes, and the raw text of ``<style>``, ``<script>``, ``<title>``
and the like. Each marker's context decides what may stand in for it while
the document is inlined: an HTML comment in text, a plain token in an
attribute value or a title, nothing at all inside a tag or a style sheet.
"""

from __future__ import annotations

import re
from collections.abc import Callable

MARKER = re.compile("\x01(\\d+)\x02")
_RAWTEXT = {"style", "script", "xmp", "iframe", "noembed", "noframes", "noscript", "title", "textarea"}
_TAGNAME = re.compile(r"</?([A-Za-z][^\s/>\x01]*)")
_ATTR_NAME = re.compile(r"[^\s/>=]+")
_WS = re.compile(r"\s*")
_UNQUOTED = re.compile(r"[^\s>]*")

Mark = Callable[[int, int, str], None]


def marker_contexts(html: str) -> dict[int, str]:
    """Map each marker's offset to its context: data, comment, attr:NAME, raw:TAG or tag."""
    contexts: dict[int, str] = {}

    def mark(start: int, end: int, context: str) -> None:
        for match in MARKER.finditer(html, start, end):
            contexts[match.start()] = context

    i = 0
    n = len(html)
    while i < n:
        lt = html.find("<", i)
        if lt < 0:
            mark(i, n, "data")
            break
        mark(i, lt, "data")
        i = _markup(html, lt, mark)
    return contexts


def _markup(html: str, lt: int, mark: Mark) -> int:
    """Mark the markers in the markup at ``lt``: a comment, a declaration, or
    a tag with its attributes (and a raw-text element's content). Returns
    where it ends."""
    n = len(html)
    if html.startswith("<!--", lt):
        end = html.find("-->", lt + 4)
        end = n if end < 0 else end + 3
        mark(lt, end, "comment")
        return end
    if html.startswith("<!", lt) or html.startswith("<?", lt):
        end = html.find(">", lt)
        end = n if end < 0 else end + 1
        mark(lt, end, "tag")
        return end
    match = _TAGNAME.match(html, lt)
    if match is None:
        return lt + 1
    tag = match.group(1).lower()
    j = _attributes(html, match.end(), mark)
    if html[lt + 1] != "/" and tag in _RAWTEXT:
        closer = re.compile(rf"</{tag}\b", re.IGNORECASE).search(html, j)
        end = n if closer is None else closer.start()
        mark(j, end, f"raw:{tag}")
        j = end
    return j


def _attributes(html: str, j: int, mark: Mark) -> int:
    """Mark the markers in a tag's attributes from ``j``; returns where the tag ends."""
    n = len(html)
    while j < n:
        j = _WS.match(html, j).end()  # type: ignore[union-attr]
        if j >= n or html[j] == ">":
            return j + 1
        if html.startswith("/>", j):
            return j + 2
        name_match = _ATTR_NAME.match(html, j)
        if name_match is None:
            j += 1
            continue
        attr = name_match.group(0)
        mark(j, name_match.end(), "tag")
        j = _WS.match(html, name_match.end()).end()  # type: ignore[union-attr]
        if j < n and html[j] == "=":
            j = _value(html, _WS.match(html, j + 1).end(), f"attr:{attr.lower()}", mark)  # type: ignore[union-attr]
    return j


def _value(html: str, j: int, context: str, mark: Mark) -> int:
    """Mark the markers in an attribute value starting at ``j``; returns where it ends."""
    if j < len(html) and html[j] in "\"'":
        close = html.find(html[j], j + 1)
        close = len(html) - 1 if close < 0 else close
        mark(j, close + 1, context)
        return close + 1
    value = _UNQUOTED.match(html, j)
    assert value is not None
    mark(j, value.end(), context)
    return value.end()


_ATTR = re.compile(r"""([^\s=/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?""")


def tag_attributes(tag: str) -> dict[str, str]:
    """Attributes of one start tag (lower-cased names), for simple checks."""
    body = re.sub(r"^<[^\s/>]+", "", tag).rstrip(">").rstrip("/")
    attrs: dict[str, str] = {}
    for match in _ATTR.finditer(body):
        name = match.group(1).lower()
        value = next((g for g in match.groups()[1:] if g is not None), "")
        attrs.setdefault(name, value)
    return attrs
