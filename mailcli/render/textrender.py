"""Rendering, per message, a text part made once per template (``textonce.py``).

The generated text template fences each tag's output with marks where blanks
may meet, and writes each value through a filter that normalises it as the
HTML-to-text converter would (``text_value``). After Jinja has rendered it,
``TextOnceTemplate.render`` collapses blanks across the marks line by line,
drops the lines the converter would not write, and removes the marks. A value
the converter would change in ways only the HTML shows raises
``NeedsFullText``: that one message's text is converted from its HTML.
"""

from __future__ import annotations

import html as html_lib
import re
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, Template
from markupsafe import Markup

from .environment import ConfinedLoader, MailEnvironment
from .text import normalize_text

# Marks in the generated text template (private-use characters: a value or
# template holding one is converted per message).
BOUNDARY = "\ue000"  # around every tag's output
LINE_BREAK = "\ue001"  # before a <br>: the line stays even when empty
LINK = "\ue002"  # a link whose target is only Jinja: empty, it loses its brackets
JOIN = "\ue003"  # an empty value between two blanks: drop the blank after it
DROP_LINE = "\ue004"  # an empty value alone on its line: drop the line
_MARKS = BOUNDARY + LINE_BREAK + LINK + JOIN + DROP_LINE

_OPEN_ENTITY = re.compile(r"&[A-Za-z0-9#]*$")


class NeedsFullText(Exception):
    """This message's data must go through the per-message conversion."""


# ---------------------------------------------------------------------------
# Values


# Characters the HTML parser drops or replaces (controls, noncharacters,
# surrogates) and the marks above.
_ODD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ue000-\ue004\ufdd0-\ufdef\ufffe\uffff]")
_NOT_ONE_SPACE = re.compile(r"[^\S ]| {2}")
_SPACES = re.compile(r"\s+")


def text_value(value: Any) -> str:
    """A value as the converter would write it, or ``NeedsFullText``.

    The HTML carries the value escaped; the parser decodes it again, and the
    converter collapses its whitespace and decodes HTML entities a second
    time. Only the last step can differ from the plain value, and only for
    an ``&`` that starts an entity, possibly together with the text after
    the value: such values (rare) are left to the per-message conversion.
    """
    text = str(value)
    if isinstance(value, Markup) and ("<" in text or "&" in text):
        raise NeedsFullText
    if _ODD.search(text):
        raise NeedsFullText
    if _NOT_ONE_SPACE.search(text):
        text = _SPACES.sub(" ", text)
    if "&" in text and (_OPEN_ENTITY.search(text) or html_lib.unescape(text) != text):
        raise NeedsFullText
    return text


# How a value meets its neighbours in the generated template (bit flags):
# a blank before it, a blank after it, both (empty: drop one), alone on
# its line (empty: drop the line).
STRIP_LEFT, STRIP_RIGHT, EMPTY_JOINS_BLANKS, EMPTY_DROPS_LINE = 1, 2, 4, 8
_FILTER = "mailcli_text_{}"


def _value_filters() -> dict[str, Any]:
    """``text_value`` with the neighbour handling of each flag combination.

    One cache of normalised values (a newsletter repeats the same few
    strings in every message) is shared by all of them, as in the HTML
    environment's escape cache.
    """
    cache: dict[str, str | None] = {}

    def normalised(value: Any) -> str:
        kind = value.__class__
        if (kind is str and len(value) < 256) or kind is int:  # not bool: True == 1 as a key
            try:
                text = cache[value]
            except KeyError:
                if len(cache) >= 4096:
                    cache.clear()
                try:
                    text = cache[value] = text_value(value)
                except NeedsFullText:
                    cache[value] = None
                    raise
            if text is None:
                raise NeedsFullText
            return text
        return text_value(value)

    def make(flags: int) -> Any:
        def value_filter(value: Any) -> str:
            text = normalised(value)
            if flags & STRIP_LEFT and text[:1] == " ":
                text = text[1:]
            if flags & STRIP_RIGHT and text[-1:] == " ":
                text = text[:-1]
            if not text:
                if flags & EMPTY_JOINS_BLANKS:
                    return JOIN
                if flags & EMPTY_DROPS_LINE:
                    return DROP_LINE
            return text

        return value_filter

    return {_FILTER.format(flags): make(flags) for flags in range(16)}


# ---------------------------------------------------------------------------
# Rendering per message

_EMPTY_LINK = re.compile(rf"\]\({LINK}{BOUNDARY}*\)")
_DROPPED_LINE = re.compile(rf"^ *{DROP_LINE} *(?:\n|\Z)", re.MULTILINE)
_LINE_START = re.compile(rf"^( *){BOUNDARY}[ {BOUNDARY}]*")
_RUN_WITH_SPACE = re.compile(rf" +{BOUNDARY}[ {BOUNDARY}]*|{BOUNDARY}+ [ {BOUNDARY}]*")


def _join_boundaries(text: str) -> str:
    """Collapse blanks across boundary marks, line by line, as the converter does."""
    out = []
    for line in text.split("\n"):
        if BOUNDARY in line:
            if not line.replace(BOUNDARY, "").strip(" "):
                continue  # only marks and blanks: the converter writes no empty block
            line = _LINE_START.sub(r"\1", line)
            line = _RUN_WITH_SPACE.sub(" ", line).replace(BOUNDARY, "")
        out.append(line)
    return "\n".join(out)


class TextOnceTemplate:
    """A generated text template; ``render`` gives the normalised text part."""

    def __init__(self, template: Template) -> None:
        self._template = template

    def render(self, variables: dict[str, Any]) -> str:
        """The text part for one recipient; ``NeedsFullText`` when its data needs the full conversion."""
        text = self._template.render(variables)
        if LINK in text:
            if _EMPTY_LINK.search(text):
                raise NeedsFullText
            text = text.replace(LINK, "")
        if JOIN in text:
            text = text.replace(JOIN + " ", "")
        if DROP_LINE in text:
            text = _DROPPED_LINE.sub("", text)
        if BOUNDARY in text:
            text = _join_boundaries(text)
        if LINE_BREAK in text:
            text = text.replace(LINE_BREAK, "")
        return normalize_text(text)


def text_once_environment(root: Path) -> MailEnvironment:
    """The sandbox generated text templates run in: no escaping, no trimming, values through ``text_value``."""
    env = MailEnvironment(
        loader=ConfinedLoader(root),
        autoescape=False,
        undefined=StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters.update(_value_filters())
    return env


def compile_text_once(root: Path, source: str) -> TextOnceTemplate:
    """Compile a generated source in ``text_once_environment``."""
    return TextOnceTemplate(text_once_environment(root).from_string(source))
