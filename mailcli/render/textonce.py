"""The text part made from the HTML once per template, not once per message.

Converting a 20 KB HTML message to text costs several times more than
rendering it, and for a template without ``message.txt`` the text of every
message comes from the same HTML with different data. So, per template, the
inlined document in which every Jinja tag is still a placeholder (see
``inline.py``) is converted to text *with the placeholders in it*, and the
placeholders are swapped back for the Jinja tags: the result is a text
template, rendered per message like ``message.txt``. It must give exactly the
text the per-message conversion (``text.html_to_text``) gives, so:

* Blanks must meet as the converter joins them across text nodes, and a
  line left with nothing but blanks must go (``textsource.py`` writes the
  template so; ``textrender.py`` renders it). A line ended by ``<br>``
  carries a mark that keeps it, empty or not.
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
from .textrender import _MARKS, _OPEN_ENTITY, LINE_BREAK, LINK
from .textsource import generate, keyword

_OPEN = {"for", "if", "with"}
_MIDDLE = {"elif", "else"}
_CLOSE = {"endfor", "endif", "endwith"}
_STATEMENT = {"set", "import", "from"}
# Attributes the converter reads for layout: Jinja there changes the text's shape.
_LAYOUT_ATTRS = {"align", "valign", "role", "value"}
_PREFORMATTED = {"pre", "xmp", "listing", "plaintext"}
_WHITE_SPACE_PRE = re.compile(r"white-space\s*:\s*pre", re.IGNORECASE)
_BULLET_ONLY = re.compile(r" *(?:[*+o-]|\d+\.) *")


@dataclass(frozen=True, slots=True)
class TextOnce:
    """Result of ``prepare_text_once``: a text template source, or why not."""

    source: str | None
    reason: str | None


class _Refused(Exception):
    """The text part cannot be made once for this template; the message says why."""


def prepare_text_once(placeholders: str, tags: Sequence[str], nonce: str) -> TextOnce:
    """Convert the placeholder document to a text template (see the module docstring)."""
    try:
        return TextOnce(_text_template(placeholders, tags, nonce), None)
    except _Refused as exc:
        return TextOnce(None, str(exc))


# Complexity: the steps of building the text template in order, each refusal with its reason.
def _text_template(placeholders: str, tags: Sequence[str], nonce: str) -> str:
    if any(mark in placeholders for mark in _MARKS):
        raise _Refused("the HTML holds private-use characters mailcli uses as marks")
    tree = parse_html(placeholders)
    if tree is None:
        raise _Refused("the HTML is empty")
    token = re.compile(rf"J{nonce}n(\d+)j")
    places = _Places(tree, token, tags)
    structures = _structures(tags)
    control = {index for structure in structures for index in structure}
    regions = [places.region(structure, tags) for structure in structures]
    _check_layout(tree, places.found, tags, control)
    _as_words(tree, places.comments, token)
    raw = convert_tree(tree)
    seen = _check_converted(raw, token, tags, structures, regions)
    # Loops, conditions and statements shown in the text; a tag's output is
    # fenced by boundary marks unless its neighbours make that needless.
    standalone = [[index] for index in seen if tags[index].startswith("{%") and index not in control]
    groups = [structure for structure in structures if structure[0] in seen] + standalone
    source = generate(raw, token, tags, groups)
    if "endraw" in raw:
        raise _Refused("the text contains 'endraw'")
    return source


@dataclass(slots=True)
class _Place:
    kind: str  # "data" (a placeholder comment), "attr", "text" (in <title>/<textarea>), "hidden"
    node: Any  # the element holding it: parent of the comment, owner of the attribute or text
    attr: str = ""
    before: str = ""  # the text right before it in the same text node or attribute


class _Places:
    """Where each tag's placeholder is in the parsed document, after the
    whitespace around it was trimmed as the HTML template's Jinja will."""

    def __init__(self, tree: Any, token: re.Pattern[str], tags: Sequence[str]) -> None:
        from lxml import etree

        self.token = token
        self.found: dict[int, _Place] = {}
        self.comments: list[Any] = []  # the placeholder comments, in document order
        self._count = len(tags)
        self._duplicate = False
        nodes = [*tree.itersiblings(preceding=True), *tree.iter(), *tree.itersiblings()]
        _trim_like_jinja(nodes, token, tags)
        for node in nodes:
            if node.tag is etree.Comment:
                self._comment(node)
            elif isinstance(node.tag, str):
                self._element(node)
        if self._duplicate or len(self.found) != len(tags):
            raise _Refused("the HTML parser moved or dropped a Jinja tag")

    def _add(self, index: int, place: _Place) -> None:
        self._duplicate = self._duplicate or index in self.found or index >= self._count
        self.found[index] = place

    def _comment(self, node: Any) -> None:
        whole = self.token.fullmatch(node.text or "")
        parent = node.getparent()
        if whole is not None and parent is not None:
            previous = node.getprevious()
            before = (previous.tail if previous is not None else parent.text) or ""
            self._add(int(whole.group(1)), _Place("data", parent, before=before))
            self.comments.append(node)
        else:  # an HTML comment of the template's own, or outside <html>: never in the text
            for match in self.token.finditer(node.text or ""):
                self._add(int(match.group(1)), _Place("hidden", parent))

    def _element(self, node: Any) -> None:
        token = self.token
        for name, value in node.attrib.items():
            for match in token.finditer(value):
                self._add(int(match.group(1)), _Place("attr", node, name, value[: match.start()]))
        for match in token.finditer(node.text or ""):
            self._add(int(match.group(1)), _Place("text", node, before=(node.text or "")[: match.start()]))
        for match in token.finditer(node.tail or ""):
            self._add(int(match.group(1)), _Place("text", node.getparent(), before=(node.tail or "")[: match.start()]))

    def region(self, structure: list[int], tags: Sequence[str]) -> list[Any]:
        """The elements a loop or condition repeats or drops. Every tag of it
        must sit among the same siblings (or in one attribute), so that
        repeating or dropping it repeats or drops whole nodes."""
        first = self.found[structure[0]]
        for index in structure[1:]:
            other = self.found[index]
            if other.kind != first.kind or other.node is not first.node or other.attr != first.attr:
                raise _Refused(f"{tags[structure[0]]} opens in one HTML element and closes in another")
        if first.kind != "data":
            return []
        comment_of = {int(self.token.fullmatch(c.text).group(1)): c for c in self.comments}  # type: ignore[union-attr]
        children = list(first.node)
        start, end = children.index(comment_of[structure[0]]), children.index(comment_of[structure[-1]])
        return [child for child in children[start + 1 : end] if isinstance(child.tag, str)]


def _structures(tags: Sequence[str]) -> list[list[int]]:
    """Loops, conditions and with-blocks, as the indexes of their tags."""
    structures: list[list[int]] = []
    stack: list[list[int]] = []
    for index, tag in enumerate(tags):
        word = keyword(tag)
        if word in _OPEN:
            stack.append([index])
        elif word in _MIDDLE and stack:
            stack[-1].append(index)
        elif word in _CLOSE and stack:
            stack[-1].append(index)
            structures.append(stack.pop())
        elif tag.startswith("{%") and word not in _STATEMENT:
            raise _Refused(f"{{% {word} %}} is not supported in a text made once")
    if stack:
        raise _Refused("a loop or condition is not closed")
    return structures


def _check_layout(tree: Any, places: dict[int, _Place], tags: Sequence[str], control: set[int]) -> None:
    """Refuse where the layout of the text depends on the data."""
    for node in tree.iter():
        if isinstance(node.tag, str) and (node.tag in _PREFORMATTED or _WHITE_SPACE_PRE.search(node.get("style") or "")):
            raise _Refused("the HTML has preformatted text, whose spacing the data could change")
    for index, found in places.items():
        if found.kind != "hidden":
            _check_place(tags[index], found, index in control)


# Complexity: one check per way a placeholder can land where the text part cannot keep it.
def _check_place(tag: str, found: _Place, is_control: bool) -> None:
    if found.kind == "attr" and found.attr.lower() in _LAYOUT_ATTRS:
        raise _Refused(f"Jinja in a {found.attr} attribute changes the layout of the text: {tag}")
    if _OPEN_ENTITY.search(found.before):
        raise _Refused(f"an & right before {tag} could join it into an HTML entity")
    for ancestor in _ancestors(found.node):
        name = ancestor.tag if isinstance(ancestor.tag, str) else ""
        if name == "table" and is_data_table(ancestor):
            raise _Refused(f"Jinja inside a data table, whose columns are as wide as the data: {tag}")
        if name == "q":
            raise _Refused(f"Jinja inside <q>: {tag}")
        if name == "ol" and is_control:
            raise _Refused(f"a loop or condition inside a numbered list: {tag}")


# Complexity: one refusal per way the HTML can defeat the placeholder words (comments, links, hidden data tables).
def _as_words(tree: Any, comments: list[Any], token: re.Pattern[str]) -> None:
    """The document the converter reads: placeholders become words in the
    text, and marks keep what the data cannot change (a ``<br>``'s line, a
    link whose target is only Jinja)."""
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
            raise _Refused("a data table inside hidden content still breaks lines")
    _mark_line_breaks(tree)
    mark_layout_tables(tree)


def _mark_line_breaks(tree: Any) -> None:
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


# Complexity: one check per way the converter can move, drop or repeat a placeholder.
def _check_converted(raw: str, token: re.Pattern[str], tags: Sequence[str], structures: list[list[int]],
                     regions: list[list[Any]]) -> dict[int, int]:
    """The tags shown in the converted text (index -> times, in order);
    refuses a text whose shape the data could still change."""
    seen: dict[int, int] = {}
    for match in token.finditer(raw):
        index = int(match.group(1))
        seen[index] = seen.get(index, 0) + 1
    if any(count > 1 for count in seen.values()):
        raise _Refused("a Jinja tag appears twice in the text")
    for structure, region in zip(structures, regions, strict=True):
        shown = {index in seen for index in structure}
        if len(shown) > 1:
            raise _Refused(f"part of {tags[structure[0]]} is hidden")
        if shown == {False} and any(next(element.iter("br", "table"), None) is not None for element in region):
            raise _Refused(f"{tags[structure[0]]} is hidden but repeats or drops line breaks")
    for line in raw.split("\n"):
        if token.search(line) and _BULLET_ONLY.fullmatch(token.sub("", line).replace(LINE_BREAK, "")):
            raise _Refused("a Jinja tag starts a list item, which may leave its bullet alone")
    return seen


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

    for node in nodes:
        if node.tag is etree.Comment:
            _trim_around_comment(node, token, tags)
        elif isinstance(node.tag, str):
            for name, value in node.attrib.items():
                if token.search(value):
                    node.set(name, _trim_string(value, token, tags))
            if node.text and token.search(node.text):
                node.text = _trim_string(node.text, token, tags)
            if node.tail and token.search(node.tail):
                node.tail = _trim_string(node.tail, token, tags)


def _placeholder_tag(node: Any, token: re.Pattern[str], tags: Sequence[str]) -> str | None:
    """The Jinja tag a comment placeholder stands for (None: not one)."""
    from lxml import etree

    if node is None or node.tag is not etree.Comment:
        return None
    whole = token.fullmatch(node.text or "")
    return None if whole is None else tags[int(whole.group(1))]


# The text between two tags is trimmed as Jinja's lexer does it: first the
# whitespace before the second tag on its line (lstrip_blocks, which looks at
# the source, where a newline precedes it), then the newline after the first
# (trim_blocks). The other order would keep the indentation of a tag that
# follows another on the next line.
def _trim_around_comment(node: Any, token: re.Pattern[str], tags: Sequence[str]) -> None:
    tag = _placeholder_tag(node, token, tags)
    parent = node.getparent()
    if tag is None or parent is None:
        return
    previous = node.getprevious()
    if previous is None:
        parent.text = _trim_before(parent.text or "", tag)
    elif _placeholder_tag(previous, token, tags) is None:  # else trimmed with the previous placeholder's tail
        previous.tail = _trim_before(previous.tail or "", tag)
    tail = node.tail or ""
    following = _placeholder_tag(node.getnext(), token, tags)
    if following is not None:
        tail = _trim_before(tail, following)
    node.tail = _trim_after(tail, tag)


def _trim_string(value: str, token: re.Pattern[str], tags: Sequence[str]) -> str:
    pieces = token.split(value)  # text, index, text, index, ..., text
    for at in range(1, len(pieces), 2):  # lstrip_blocks first, on the text as written
        pieces[at - 1] = _trim_before(pieces[at - 1], tags[int(pieces[at])])
    for at in range(1, len(pieces), 2):
        pieces[at + 1] = _trim_after(pieces[at + 1], tags[int(pieces[at])])
        pieces[at] = token.pattern.replace(r"(\d+)", pieces[at])
    return "".join(pieces)


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
