"""The text/plain part: from ``message.txt``, else generated from the HTML.

Generation uses inscriptis (Apache-2.0, maintained, lxml-based), which lays
out block elements the way a reader expects and keeps each link's target next
to its text (``[Read more](https://…)``), so the plain part is usable rather
than a "view in browser" stub. Two choices make the text read
like the message rather than like its markup:

* the CSS profile is inscriptis' "strict" one, modelled on a browser: nested
  ``<div>`` elements add no indentation and ``<span>`` adds no spaces;
* layout tables are read the way a screen reader reads them, one cell after
  the other, each cell a block: an email's 600-pixel container, its
  two-column rows and its footer columns become paragraphs, not columns padded
  with spaces. Only a data table (one with ``<th>``, ``<thead>`` or
  ``<caption>`` and no ``role="presentation"``) is laid out in columns.

``html_to_text`` runs per message; ``textonce.py`` turns a template's HTML
into a text template once, and must agree with it exactly. Both go through
``convert_tree``.

Whatever the source, the part must identify the sender and carry the
unsubscribe URL, as the Dutch Telecommunications Act (art. 11.7(4)) asks of
every commercial message: ``ensure_footer`` appends a short
footer when the template's text lacks either.
"""

from __future__ import annotations

from typing import Any

_CONFIG: Any = None
# A table is a layout table unless it says it holds data.
_LAYOUT_ROLES = ("presentation", "none")
_DATA_PARTS = "./thead | ./caption | ./tr/th | ./tbody/tr/th | ./thead/tr/th | ./tfoot/tr/th"
# The attribute that marks a layout table for the tag handlers below; its
# value never reaches the text.
LAYOUT_MARK = "data-mailcli-layout"


def is_data_table(table: Any) -> bool:
    """True for a table laid out in columns: it has header cells or a caption and is not presentational."""
    if (table.get("role") or "").strip().lower() in _LAYOUT_ROLES:
        return False
    return bool(table.xpath(_DATA_PARTS))


def mark_layout_tables(tree: Any) -> None:
    """Mark every layout table of an lxml tree for :func:`convert_tree`."""
    for table in tree.iter("table"):
        if not is_data_table(table):
            table.set(LAYOUT_MARK, "")


def _config() -> Any:
    global _CONFIG
    if _CONFIG is None:
        from inscriptis.css_profiles import CSS_PROFILES
        from inscriptis.html_properties import Display
        from inscriptis.model.config import ParserConfig
        from inscriptis.model.tag import CustomHtmlTagHandlerMapping
        from inscriptis.model.tag.table_tag import (
            table_end_handler,
            table_start_handler,
            td_end_handler,
            td_start_handler,
            tr_start_handler,
        )

        # A layout table pushes None onto the stack of open tables; its rows
        # and cells then open blocks instead of columns. A data table nested
        # in a layout table (or the other way round) keeps its own model.
        def in_layout(state: Any) -> bool:
            return bool(state.current_table) and state.current_table[-1] is None

        def as_block(state: Any) -> None:
            if state.tags[-1].display != Display.none:
                state.tags[-1].display = Display.block

        def table_start(state: Any, attrs: dict[str, str]) -> None:
            if LAYOUT_MARK in attrs:
                as_block(state)
                state.current_table.append(None)
            else:
                table_start_handler(state, attrs)

        def table_end(state: Any) -> None:
            if in_layout(state):
                state.current_table.pop()
            else:
                table_end_handler(state)

        def row_start(state: Any, attrs: dict[str, str]) -> None:
            if in_layout(state):
                as_block(state)
            else:
                tr_start_handler(state, attrs)

        def cell_start(state: Any, attrs: dict[str, str]) -> None:
            if in_layout(state):
                as_block(state)
            else:
                td_start_handler(state, attrs)

        def cell_end(state: Any) -> None:
            if not in_layout(state):
                td_end_handler(state)

        handlers = CustomHtmlTagHandlerMapping(
            start_tag_mapping={"table": table_start, "tr": row_start, "td": cell_start, "th": cell_start},
            end_tag_mapping={"table": table_end, "td": cell_end, "th": cell_end},
        )
        _CONFIG = ParserConfig(css=CSS_PROFILES["strict"].copy(), display_links=True,
                               custom_html_tag_handler_mapping=handlers)
    return _CONFIG


def parse_html(html: str) -> Any:
    """The lxml tree inscriptis would build for ``html`` (None for an empty document)."""
    from lxml.etree import ParserError
    from lxml.html import document_fromstring

    html = html.strip()
    if not html:
        return None
    try:
        return document_fromstring(html)
    except ParserError:  # pragma: no cover - lxml reads any string it is given
        return document_fromstring("<pre>" + html + "</pre>")


def convert_tree(tree: Any) -> str:
    """The raw inscriptis text of a tree whose layout tables are marked."""
    from inscriptis.html_engine import Inscriptis

    return str(Inscriptis(tree, _config()).get_text())


def html_to_text(html: str) -> str:
    """Readable plain text for an HTML document, links kept as URLs."""
    tree = parse_html(html)
    if tree is None:
        return "\n"
    mark_layout_tables(tree)
    return normalize_text(convert_tree(tree))


def normalize_text(text: str) -> str:
    """LF line ends, no trailing blanks, at most one empty line in a row, final newline.

    String methods, not regular expressions: each of those walked the whole
    part character by character, several times slower than splitting it.
    Every line is stripped without first asking whether any needs it: a
    search for " \n" stops at every space of the text, and the three such
    searches took longer than the split.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join([line.rstrip(" \t\xa0") for line in text.split("\n")])
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip("\n") + "\n"


# Complexity: one branch per part of the footer that may already be in the text.
def ensure_footer(text: str, *, sender_name: str, postal_address: str, unsubscribe_url: str,
                  language: str = "en") -> str:
    """Append sender identity and unsubscribe URL when the text lacks them, in ``language``."""
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
        from ..locales import text as words

        lines.append(words(language, "footer.unsubscribe", url=unsubscribe_url))
    return text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
