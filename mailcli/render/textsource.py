"""Writing the text template made once: the converted text, with each Jinja
tag back where its placeholder was (``textonce.py`` makes the text).

Blanks must meet as the converter joins them across text nodes (a run of
blanks becomes one space; none at the start of a line, after its
indentation) and a line left with nothing but blanks must go, as the
converter never writes an empty block. Where a tag's neighbours in the
converted text settle that when the template is made, its value's filter
drops the blank it would double and an empty value leaves a mark saying what
to drop; a line that holds only loop and condition tags is dropped with
them. Elsewhere the tag is fenced by boundary marks and the blanks around
them are joined per message (``textrender.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .textrender import (
    _FILTER,
    BOUNDARY,
    EMPTY_DROPS_LINE,
    EMPTY_JOINS_BLANKS,
    LINE_BREAK,
    STRIP_LEFT,
    STRIP_RIGHT,
)

_KEYWORD = re.compile(r"\{%[-+]?\s*(\w+)")
_TAG_TRIM = re.compile(r"^(\{[{%])[-+]|[-+](?=[}%]\}$)")


def keyword(tag: str) -> str:
    """The keyword of a ``{% %}`` tag (``for``, ``if``...), else ""."""
    if not tag.startswith("{%"):
        return ""
    match = _KEYWORD.match(tag)
    return match.group(1) if match else ""


def _plain_tag(tag: str) -> str:
    """The tag without whitespace control: marks, not template text, sit beside it."""
    return _TAG_TRIM.sub(lambda m: m.group(1) or "", tag)


def _literal(text: str) -> str:
    if "{" in text and ("{{" in text or "{%" in text or "{#" in text):
        return "{% raw %}" + text + "{% endraw %}"
    return text


# Where a tag meets the text around it in the generated template.
_GLYPH, _SPACE, _LINE_START_AT, _EDGE, _BREAK, _NEXT_LINE, _TAG = range(7)


@dataclass(slots=True)
class _Item:
    text: str = ""  # a literal, or ""
    index: int = -1  # a tag, or -1
    own_line: bool = False  # a tag whose line holds only loop/condition tags: the line goes
    starts_line: bool = False  # a literal at the start of a line
    shares_bare_line: bool = False  # a tag on a line of tags and blanks only, with other tags


# Complexity: one branch per kind of line and tag in the converted text.
def _items(raw: str, token: re.Pattern[str], is_output: list[bool], kept: set[int]) -> list[_Item]:
    """The converted text as literals and tags; lines of only loop and
    condition tags (not in ``kept``) become tags without their line."""
    items: list[_Item] = []
    lines = raw.split("\n")
    for number, line in enumerate(lines):
        newline = "\n" if number < len(lines) - 1 else ""
        matches = list(token.finditer(line))
        indexes = [int(m.group(1)) for m in matches]
        if (matches and not token.sub("", line).strip(" ") and not any(is_output[i] for i in indexes)
                and not any(i in kept for i in indexes)):
            items += [_Item(index=i, own_line=True) for i in indexes]
            continue
        position = 0
        first = True
        bare = len(matches) > 1 and not token.sub("", line).strip(" ")
        for match, index in zip(matches, indexes, strict=True):
            if match.start() > position:
                items.append(_Item(text=line[position : match.start()], starts_line=first))
            items.append(_Item(index=index, shares_bare_line=bare))
            position = match.end()
            first = False
        rest = line[position:] + newline
        if rest:
            items.append(_Item(text=rest, starts_line=first))
    return items


def _left(items: list[_Item], at: int) -> int:
    if items[at].own_line or at == 0:
        return _LINE_START_AT
    before = items[at - 1]
    if before.index >= 0:
        return _LINE_START_AT if before.own_line else _TAG
    text = before.text
    tail = text.rsplit("\n", 1)[-1]
    if not tail.strip(" ") and ("\n" in text or before.starts_line):
        return _LINE_START_AT
    return _SPACE if tail.endswith(" ") else _GLYPH


def _right(items: list[_Item], at: int) -> int:
    if items[at].own_line:
        return _NEXT_LINE
    if at + 1 >= len(items):
        return _EDGE
    after = items[at + 1]
    if after.index >= 0:
        return _TAG
    text = after.text
    if text[0] == "\n":
        return _EDGE
    if text[0] == LINE_BREAK:
        return _BREAK
    if text[0] == " ":
        rest = text.lstrip(" ")
        return _EDGE if rest[:1] == "\n" or (not rest and at + 2 >= len(items)) else _SPACE
    return _GLYPH


def _joins_cleanly(left: int, right: int) -> bool:
    """Whether text ending in ``left`` may meet text starting with ``right`` with nothing to fix."""
    if right == _NEXT_LINE:
        return left == _LINE_START_AT  # whole lines meet whole lines
    if left == _LINE_START_AT:
        return right == _GLYPH
    if _GLYPH in (left, right):
        return True
    return right in (_EDGE, _BREAK) and left in (_SPACE, _TAG)  # a blank at the end of a line goes anyway


def _junctions(group: list[int], tags: Sequence[str], at: dict[int, int], items: list[_Item]) -> list[tuple[int, int]]:
    """Every (before, after) pair of neighbours a loop or condition can bring together."""
    def left(index: int) -> int:
        return _left(items, at[index])

    def right(index: int) -> int:
        return _right(items, at[index])

    keywords = [keyword(tags[i]) for i in group]
    first, last = group[0], group[-1]
    if len(group) == 1:  # a statement: nothing shows where it stands
        return [(left(first), right(first))]
    if keywords[0] == "for":
        end = group[1] if keywords[1] == "else" else last  # the tag ending the loop body
        pairs = [(left(first), right(first)), (left(end), right(first)), (left(end), right(last))]
        if end == last:
            pairs.append((left(first), right(last)))  # no items
        else:
            pairs += [(left(first), right(end)), (left(last), right(last))]
        return pairs
    # if / elif / else, and with: each branch runs from its tag to the next
    pairs = []
    for opener, closer in zip(group, group[1:], strict=False):
        pairs += [(left(first), right(opener)), (left(closer), right(last))]
    if "else" not in keywords and keywords[0] != "with":
        pairs.append((left(first), right(last)))  # no branch taken
    return pairs


# Complexity: one branch per kind of item written back as template source.
def generate(raw: str, token: re.Pattern[str], tags: Sequence[str], groups: list[list[int]]) -> str:
    """The text template: ``raw`` (the converted text with placeholders) with
    each tag of ``tags`` back in place; ``groups`` are the loops, conditions
    and statements shown in the text."""
    is_output = [tag.startswith("{{") for tag in tags]
    group_of = {index: number for number, group in enumerate(groups) for index in group}
    items, fenced = _fence(raw, token, tags, groups, is_output)
    placed = {item.index for item in items if item.index >= 0}
    hidden = sorted(index for index in range(len(tags)) if index not in placed and not is_output[index])
    pieces: list[str] = []
    for position, item in enumerate(items):
        if item.index < 0:
            pieces.append(_literal(item.text))
            continue
        index = item.index
        while hidden and hidden[0] < index:
            pieces.append(_plain_tag(tags[hidden.pop(0)]))
        pieces.append(_output(items, position, _plain_tag(tags[index])) if is_output[index]
                      else _statement(_plain_tag(tags[index]), fenced=group_of[index] in fenced))
    pieces += [_plain_tag(tags[index]) for index in hidden]
    return "".join(pieces)


def _statement(tag: str, *, fenced: bool) -> str:
    return BOUNDARY + tag + BOUNDARY if fenced else tag


# Complexity: one branch per kind of group whose lines are kept or fenced.
def _fence(raw: str, token: re.Pattern[str], tags: Sequence[str], groups: list[list[int]],
           is_output: list[bool]) -> tuple[list[_Item], set[int]]:
    """The text as items, and the groups whose tags keep their lines and get
    boundary marks: those whose neighbours do not join cleanly."""
    fenced: set[int] = set()
    while True:
        kept = {index for number in fenced for index in groups[number]}
        items = _items(raw, token, is_output, kept)
        at = {item.index: position for position, item in enumerate(items) if item.index >= 0}
        more = {number for number, group in enumerate(groups)
                if number not in fenced and not all(_joins_cleanly(a, b) for a, b in _junctions(group, tags, at, items))}
        # (A line kept for a fenced group keeps its other tags inline, where
        # the next round judges them again.)
        if not more:
            return items, fenced
        fenced |= more


def _output(items: list[_Item], position: int, tag: str) -> str:
    """A value's tag, with the filter that joins its blanks as the converter would."""
    left, right = _left(items, position), _right(items, position)
    expression = tag[2:-2].strip()
    # Values that may all be empty on a line of their own: the line must go
    # then, which only the boundary marks can tell.
    if _TAG in (left, right) or items[position].shares_bare_line:
        return f"{BOUNDARY}{{{{ ({expression})|{_FILTER.format(0)} }}}}{BOUNDARY}"
    flags = 0
    if left in (_SPACE, _LINE_START_AT):
        flags |= STRIP_LEFT
    if right in (_SPACE, _EDGE, _BREAK):
        flags |= STRIP_RIGHT
    if right == _SPACE and left in (_SPACE, _LINE_START_AT):
        flags |= EMPTY_JOINS_BLANKS
    if left == _LINE_START_AT and right == _EDGE:
        flags |= EMPTY_DROPS_LINE
    return f"{{{{ ({expression})|{_FILTER.format(flags)} }}}}"
