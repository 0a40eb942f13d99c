"""The text part made from the HTML once per template, not once per message.

Converting a 20 KB HTML message to text costs several times more than
rendering it, and for a template without ``message.txt`` the text of every
message comes from the same HTML with different data. So, per template, the
inlined document in which every Jinja tag is still a placeholder (see
``inline.py``) is converted to text *with the placeholders in it*, and the
placeholders are swapped back for the Jinja tags: the result is a text
template, rendered per message like ``message.txt``. It must give exactly the
text the per-message conversion (``text.html_to_text``) gives, so:

* Blanks must meet as the converter joins them across text nodes (a run of
  blanks becomes one space; none at the start of a line, after its
  indentation) and a line left with nothing but blanks must go, as the
  converter never writes an empty block. Where a tag's neighbours in the
  converted text settle that when the template is made, its value's filter
  drops the blank it would double and an empty value leaves a mark saying
  what to drop; a line that holds only loop and condition tags is dropped
  with them. Elsewhere the tag is fenced by boundary marks and the blanks
  around them are joined per message. A line ended by ``<br>`` carries a
  mark that keeps it, empty or not. (Rendering: ``textrender.py``.)
* Each value passes through ``text_value`` first: runs of whitespace become
  one space, as the converter makes them. Values the converter would change
  in ways that depend on their neighbours (``&`` starting an HTML entity,
  control characters the HTML parser drops, markup) raise ``NeedsFullText``,
  and that one message is converted from its HTML instead.
* Where the *layout* of the text depends on the data, the template is
  converted per message, and ``prepare_text_once`` says why: Jinja inside a
  data table (its columns are as wide as the widest value), a loop or
  condition inside a numbered list (the numbers), inside ``<q>``, a template
  with preformatted text, a loop or condition that opens in one element and
  closes in another, Jinja in ``align``, ``valign``, ``role`` or ``value``,
  an ``&`` right before a tag, a tag that may leave a list item's first line
  empty.

``CompiledTemplate`` compares the result with the per-message conversion on
sample recipients, like the inlined HTML, and converts per message for good on
any difference.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .text import convert_tree, is_data_table, mark_layout_tables, parse_html
from .textrender import (
    _FILTER,
    _MARKS,
    _OPEN_ENTITY,
    BOUNDARY,
    EMPTY_DROPS_LINE,
    EMPTY_JOINS_BLANKS,
    LINE_BREAK,
    LINK,
    STRIP_LEFT,
    STRIP_RIGHT,
)

_OPEN = {"for", "if", "with"}
_MIDDLE = {"elif", "else"}
_CLOSE = {"endfor", "endif", "endwith"}
_STATEMENT = {"set", "import", "from"}
# Attributes the converter reads for layout: Jinja there changes the text's shape.
_LAYOUT_ATTRS = {"align", "valign", "role", "value"}
_PREFORMATTED = {"pre", "xmp", "listing", "plaintext"}
_WHITE_SPACE_PRE = re.compile(r"white-space\s*:\s*pre", re.IGNORECASE)
_BULLET_ONLY = re.compile(r" *(?:[*+o-]|\d+\.) *")
_KEYWORD = re.compile(r"\{%[-+]?\s*(\w+)")
_TAG_TRIM = re.compile(r"^(\{[{%])[-+]|[-+](?=[}%]\}$)")


@dataclass(frozen=True, slots=True)
class TextOnce:
    """Result of ``prepare_text_once``: a text template source, or why not."""

    source: str | None
    reason: str | None



@dataclass(slots=True)
class _Place:
    kind: str  # "data" (a placeholder comment), "attr", "text" (in <title>/<textarea>), "hidden"
    node: Any  # the element holding it: parent of the comment, owner of the attribute or text
    attr: str = ""
    before: str = ""  # the text right before it in the same text node or attribute


def _keyword(tag: str) -> str:
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


def _trim_before(text: str, tag: str) -> str:
    """``text`` as Jinja leaves it before ``tag``: ``-`` strips, lstrip_blocks empties the line."""
    if tag[2:3] == "-":
        return text.rstrip()
    if tag.startswith("{%") and tag[2:3] != "+":
        head, newline, line = text.rpartition("\n")
        if newline and not line.strip(" \t"):
            return head + newline
    return text


def _trim_after(text: str, tag: str) -> str:
    """``text`` as Jinja leaves it after ``tag``: ``-`` strips, trim_blocks drops one newline."""
    if tag[-3:-2] == "-":
        return text.lstrip()
    if tag.startswith("{%") and tag[-3:-2] != "+" and text.startswith("\n"):
        return text[1:]
    return text


def _trim_like_jinja(nodes: list[Any], token: re.Pattern[str], tags: Sequence[str]) -> None:
    """Apply the HTML template's whitespace control (trim_blocks, lstrip_blocks, ``-``)
    to the text around each placeholder, as the inlined template will render it."""
    from lxml import etree

    def trim_string(value: str) -> str:
        pieces = token.split(value)  # text, index, text, index, ..., text
        for at in range(1, len(pieces), 2):
            tag = tags[int(pieces[at])]
            pieces[at - 1] = _trim_before(pieces[at - 1], tag)
            pieces[at + 1] = _trim_after(pieces[at + 1], tag)
            pieces[at] = token.pattern.replace(r"(\d+)", pieces[at])
        return "".join(pieces)

    for node in nodes:
        if node.tag is etree.Comment:
            whole = token.fullmatch(node.text or "")
            parent = node.getparent()
            if whole is None or parent is None:
                continue
            tag = tags[int(whole.group(1))]
            previous = node.getprevious()
            if previous is not None:
                previous.tail = _trim_before(previous.tail or "", tag)
            else:
                parent.text = _trim_before(parent.text or "", tag)
            node.tail = _trim_after(node.tail or "", tag)
            continue
        if not isinstance(node.tag, str):
            continue
        for name, value in node.attrib.items():
            if token.search(value):
                node.set(name, trim_string(value))
        if node.text and token.search(node.text):
            node.text = trim_string(node.text)
        if node.tail and token.search(node.tail):
            node.tail = trim_string(node.tail)


_HIDDEN_TAGS = {"head", "link", "meta", "script", "title", "style"}


def _hides(element: Any) -> bool:
    """Whether the converter writes nothing of this element (its CSS profile or ``display: none``)."""
    if element.tag in _HIDDEN_TAGS:
        return True
    for directive in (element.get("style") or "").lower().split(";"):
        key, _, value = directive.partition(":")
        if value and key.strip().replace("-webkit-", "") == "display" and value.strip() == "none":
            return True
    return False


def _outermost_hidden(node: Any) -> Any:
    """The outermost hidden element around ``node`` (itself included), or None."""
    found = None
    for ancestor in _ancestors(node):
        if isinstance(ancestor.tag, str) and _hides(ancestor):
            found = ancestor
    return found


def _ancestors(node: Any) -> list[Any]:
    out = []
    while node is not None:
        out.append(node)
        node = node.getparent()
    return out


def prepare_text_once(placeholders: str, tags: Sequence[str], nonce: str) -> TextOnce:
    """Convert the placeholder document to a text template (see the module docstring)."""
    from lxml import etree

    if any(mark in placeholders for mark in _MARKS):
        return TextOnce(None, "the HTML holds private-use characters mailcli uses as marks")
    tree = parse_html(placeholders)
    if tree is None:
        return TextOnce(None, "the HTML is empty")
    token = re.compile(rf"J{nonce}n(\d+)j")
    places: dict[int, _Place] = {}
    duplicate = False

    def place(index: int, found: _Place) -> None:
        nonlocal duplicate
        duplicate = duplicate or index in places or index >= len(tags)
        places[index] = found

    nodes = [*tree.itersiblings(preceding=True), *tree.iter(), *tree.itersiblings()]
    _trim_like_jinja(nodes, token, tags)
    comments = []
    for node in nodes:
        if node.tag is etree.Comment:
            whole = token.fullmatch(node.text or "")
            parent = node.getparent()
            if whole is not None and parent is not None:
                previous = node.getprevious()
                before = (previous.tail if previous is not None else parent.text) or ""
                place(int(whole.group(1)), _Place("data", parent, before=before))
                comments.append(node)
            else:  # an HTML comment of the template's own, or outside <html>: never in the text
                for match in token.finditer(node.text or ""):
                    place(int(match.group(1)), _Place("hidden", parent))
            continue
        if not isinstance(node.tag, str):
            continue
        for name, value in node.attrib.items():
            for match in token.finditer(value):
                place(int(match.group(1)), _Place("attr", node, name, value[: match.start()]))
        for match in token.finditer(node.text or ""):
            place(int(match.group(1)), _Place("text", node, before=(node.text or "")[: match.start()]))
        for match in token.finditer(node.tail or ""):
            place(int(match.group(1)), _Place("text", node.getparent(), before=(node.tail or "")[: match.start()]))
    if duplicate or len(places) != len(tags):
        return TextOnce(None, "the HTML parser moved or dropped a Jinja tag")

    # Loops, conditions and with-blocks: every tag of one must sit among the
    # same siblings (or in one attribute), so that repeating or dropping it
    # repeats or drops whole nodes.
    structures: list[list[int]] = []
    stack: list[list[int]] = []
    for index, tag in enumerate(tags):
        keyword = _keyword(tag)
        if keyword in _OPEN:
            stack.append([index])
        elif keyword in _MIDDLE and stack:
            stack[-1].append(index)
        elif keyword in _CLOSE and stack:
            stack[-1].append(index)
            structures.append(stack.pop())
        elif tag.startswith("{%") and keyword not in _STATEMENT:
            return TextOnce(None, f"{{% {keyword} %}} is not supported in a text made once")
    if stack:
        return TextOnce(None, "a loop or condition is not closed")
    control = {index for structure in structures for index in structure}
    comment_of = {int(token.fullmatch(c.text).group(1)): c for c in comments}  # type: ignore[union-attr]
    regions: list[list[Any]] = []  # the elements each loop or condition repeats or drops
    for structure in structures:
        first = places[structure[0]]
        for index in structure[1:]:
            other = places[index]
            if other.kind != first.kind or other.node is not first.node or other.attr != first.attr:
                return TextOnce(None, f"{tags[structure[0]]} opens in one HTML element and closes in another")
        region: list[Any] = []
        if first.kind == "data":
            children = list(first.node)
            start, end = children.index(comment_of[structure[0]]), children.index(comment_of[structure[-1]])
            region = [child for child in children[start + 1 : end] if isinstance(child.tag, str)]
        regions.append(region)

    for node in tree.iter():
        if isinstance(node.tag, str) and (node.tag in _PREFORMATTED or _WHITE_SPACE_PRE.search(node.get("style") or "")):
            return TextOnce(None, "the HTML has preformatted text, whose spacing the data could change")

    for index, found in places.items():
        tag = tags[index]
        if found.kind == "hidden":
            continue
        if found.kind == "attr" and found.attr.lower() in _LAYOUT_ATTRS:
            return TextOnce(None, f"Jinja in a {found.attr} attribute changes the layout of the text: {tag}")
        if _OPEN_ENTITY.search(found.before):
            return TextOnce(None, f"an & right before {tag} could join it into an HTML entity")
        for ancestor in _ancestors(found.node):
            name = ancestor.tag if isinstance(ancestor.tag, str) else ""
            if name == "table" and is_data_table(ancestor):
                return TextOnce(None, f"Jinja inside a data table, whose columns are as wide as the data: {tag}")
            if name == "q":
                return TextOnce(None, f"Jinja inside <q>: {tag}")
            if name == "ol" and index in control:
                return TextOnce(None, f"a loop or condition inside a numbered list: {tag}")

    # The document the converter reads: placeholders become words in the text.
    for comment in comments:
        parent = comment.getparent()
        previous = comment.getprevious()
        text = comment.text + (comment.tail or "")
        if previous is not None:
            previous.tail = (previous.tail or "") + text
        else:
            parent.text = (parent.text or "") + text
        parent.remove(comment)
    for link in tree.iter("a"):
        href = link.get("href")
        if href and token.search(href) and not token.sub("", href):
            link.set("href", LINK + href)
    for table in tree.iter("table"):
        if is_data_table(table) and _outermost_hidden(table) is not None:
            return TextOnce(None, "a data table inside hidden content still breaks lines")
    for br in list(tree.iter("br")):
        if any(a.tag == "table" and is_data_table(a) for a in _ancestors(br)):
            continue
        # Hidden content still breaks lines at each <br>: the mark goes where the text shows.
        anchor = _outermost_hidden(br)
        anchor = br if anchor is None else anchor
        previous = anchor.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + LINE_BREAK
        else:
            parent = anchor.getparent()
            parent.text = (parent.text or "") + LINE_BREAK
    mark_layout_tables(tree)
    raw = convert_tree(tree)

    seen: dict[int, int] = {}
    for match in token.finditer(raw):
        index = int(match.group(1))
        seen[index] = seen.get(index, 0) + 1
    if any(count > 1 for count in seen.values()):
        return TextOnce(None, "a Jinja tag appears twice in the text")
    for structure, region in zip(structures, regions, strict=True):
        shown = {index in seen for index in structure}
        if len(shown) > 1:
            return TextOnce(None, f"part of {tags[structure[0]]} is hidden")
        if shown == {False} and any(next(element.iter("br", "table"), None) is not None for element in region):
            return TextOnce(None, f"{tags[structure[0]]} is hidden but repeats or drops line breaks")
    for line in raw.split("\n"):
        if token.search(line) and _BULLET_ONLY.fullmatch(token.sub("", line).replace(LINE_BREAK, "")):
            return TextOnce(None, "a Jinja tag starts a list item, which may leave its bullet alone")

    # Loops, conditions and statements shown in the text; a tag's output is
    # fenced by boundary marks unless its neighbours make that needless.
    standalone = [[index] for index in seen if tags[index].startswith("{%") and index not in control]
    groups = [structure for structure in structures if structure[0] in seen] + standalone
    source = _generate(raw, token, tags, groups)
    if "endraw" in raw:
        return TextOnce(None, "the text contains 'endraw'")
    return TextOnce(source, None)


# Where a tag meets the text around it in the generated template.
_GLYPH, _SPACE, _LINE_START_AT, _EDGE, _BREAK, _NEXT_LINE, _TAG = range(7)


@dataclass(slots=True)
class _Item:
    text: str = ""  # a literal, or ""
    index: int = -1  # a tag, or -1
    own_line: bool = False  # a tag whose line holds only loop/condition tags: the line goes
    starts_line: bool = False  # a literal at the start of a line
    shares_bare_line: bool = False  # a tag on a line of tags and blanks only, with other tags


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

    keywords = [_keyword(tags[i]) for i in group]
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


def _generate(raw: str, token: re.Pattern[str], tags: Sequence[str], groups: list[list[int]]) -> str:
    is_output = [tag.startswith("{{") for tag in tags]
    group_of = {index: number for number, group in enumerate(groups) for index in group}
    fenced: set[int] = set()  # groups whose tags keep their lines and get boundary marks
    while True:
        kept = {index for number in fenced for index in groups[number]}
        items = _items(raw, token, is_output, kept)
        at = {item.index: position for position, item in enumerate(items) if item.index >= 0}
        more = set()
        for number, group in enumerate(groups):
            if number not in fenced and not all(_joins_cleanly(a, b) for a, b in _junctions(group, tags, at, items)):
                more.add(number)
        # (A line kept for a fenced group keeps its other tags inline, where
        # the next round judges them again.)
        if not more:
            break
        fenced |= more

    hidden = sorted(index for index in range(len(tags)) if index not in at and not is_output[index])
    pieces: list[str] = []
    for position, item in enumerate(items):
        if item.index < 0:
            pieces.append(_literal(item.text))
            continue
        index = item.index
        while hidden and hidden[0] < index:
            pieces.append(_plain_tag(tags[hidden.pop(0)]))
        tag = _plain_tag(tags[index])
        if not is_output[index]:
            pieces.append(BOUNDARY + tag + BOUNDARY if group_of[index] in fenced else tag)
            continue
        left, right = _left(items, position), _right(items, position)
        expression = tag[2:-2].strip()
        # Values that may all be empty on a line of their own: the line must go
        # then, which only the boundary marks can tell.
        if _TAG in (left, right) or item.shares_bare_line:
            pieces.append(f"{BOUNDARY}{{{{ ({expression})|{_FILTER.format(0)} }}}}{BOUNDARY}")
            continue
        flags = 0
        if left in (_SPACE, _LINE_START_AT):
            flags |= STRIP_LEFT
        if right in (_SPACE, _EDGE, _BREAK):
            flags |= STRIP_RIGHT
        if right == _SPACE and left in (_SPACE, _LINE_START_AT):
            flags |= EMPTY_JOINS_BLANKS
        if left == _LINE_START_AT and right == _EDGE:
            flags |= EMPTY_DROPS_LINE
        pieces.append(f"{{{{ ({expression})|{_FILTER.format(flags)} }}}}")
    pieces += [_plain_tag(tags[index]) for index in hidden]
    return "".join(pieces)
