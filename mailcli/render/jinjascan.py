"""Finding the Jinja tags in a template source, and hiding them from an HTML
parser (the first step of inlining a template once, see ``inline.py``).

``scan_jinja`` finds every ``{{ }}``, ``{% %}`` and ``{# #}`` tag, skipping
string literals inside them; ``lint`` uses it to leave Jinja alone when it
marks each start tag with its source line.

``protect_source`` replaces every tag except the structural ones (extends,
block, include, super) by a neutral marker ``\\x01N\\x02`` (``N`` indexes the
registry of original tags), so that Jinja itself can flatten layouts and
partials into one document without running anything. It refuses, with
``NotInlinable`` saying why, what inlining once cannot keep right: tags whose
output is HTML the inliner never sees (macros, imported macros, filtered
blocks, ``|safe``), computed template names, block ``set``, ``self.``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JinjaTag:
    start: int
    end: int
    kind: str  # "{", "%" or "#"
    text: str

    @property
    def keyword(self) -> str:
        if self.kind != "%":
            return ""
        match = re.match(r"\{%[-+]?\s*(\w+)", self.text)
        return match.group(1) if match else ""


_TAG_START = re.compile(r"\{[{%#]")


def scan_jinja(source: str) -> list[JinjaTag]:
    """Every ``{{ }}``, ``{% %}`` and ``{# #}`` tag, skipping string literals."""
    tags: list[JinjaTag] = []
    pos = 0
    while True:
        match = _TAG_START.search(source, pos)
        if match is None:
            return tags
        start = match.start()
        kind = source[start + 1]
        if kind == "#":
            end = source.find("#}", start + 2)
            if end < 0:
                raise ValueError("unterminated comment")
            end += 2
        else:
            end = _tag_end(source, start + 2, "}}" if kind == "{" else "%}")
        tags.append(JinjaTag(start, end, kind, source[start:end]))
        pos = end


def _tag_end(source: str, i: int, closer: str) -> int:
    """Where the tag whose body starts at ``i`` ends (after ``closer``),
    skipping ``closer`` inside quoted strings."""
    length = len(source)
    quote = ""
    while i < length:
        char = source[i]
        if quote:
            if char == "\\":
                i += 2
                continue
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif source.startswith(closer, i):
            return i + 2
        i += 1
    raise ValueError("unterminated tag")


_STRUCTURAL = {"extends", "block", "endblock", "include"}
# Tags whose output is HTML not visible in the template source (macros,
# imported macros, filtered blocks), or whose scoping inlining once can't keep.
_UNSUPPORTED = {"macro", "call", "filter", "raw", "autoescape"}
_SUPER = re.compile(r"^\{\{-?\s*super\(\)\s*-?\}\}$")
# Filters whose result is markup: HTML the inliner never saw.
_MARKUP_FILTER = re.compile(r"\|\s*(?:safe|urlize|xmlattr)\b")
_SELF = re.compile(r"\bself\.")
_NAMED = ("extends", "include", "import", "from")  # tags that name another template
_LITERAL_NAME = re.compile(r"""^\{%[-+]?\s*(?:extends|include|import|from)\s+(?:"([^"]*)"|'([^']*)')(\s|-?%\})""")
_MACRO = re.compile(r"\{%[-+]?\s*macro\b")
# Statements Jinja runs at the top level of a child template, outside blocks.
_TOP_LEVEL = ("set", "import", "from")


class NotInlinable(Exception):
    """The template must be inlined per message; the message says why."""


def marker(index: int) -> str:
    """The neutral marker standing for registry entry ``index``."""
    return f"\x01{index}\x02"


def protect_source(name: str, source: str, registry: list[str], read: Callable[[str], str]) -> str:
    """Replace every non-structural Jinja tag by a neutral marker.

    ``read(name)`` returns another template's source: imports are fine when
    they bring in data only, not macros that would write unstyled HTML.
    """
    try:
        tags = scan_jinja(source)
    except ValueError as exc:
        raise NotInlinable(f"{name}: {exc}") from None
    protected = _Protected(is_child=any(t.keyword == "extends" for t in tags), registry=registry)
    pos = 0
    for tag in tags:
        protected.out.append(source[pos : tag.start])
        pos = tag.end
        if tag.kind == "#":
            continue
        _check_inlinable(name, tag, read)
        protected.add(tag)
    protected.out.append(source[pos:])
    return protected.text()


# Complexity: one check per Jinja construct that keeps a template from being inlined once.
def _check_inlinable(name: str, tag: JinjaTag, read: Callable[[str], str]) -> None:
    """Raise ``NotInlinable`` when ``tag`` keeps the template from being inlined once."""
    keyword = tag.keyword
    if keyword in _UNSUPPORTED:
        raise NotInlinable(f"{name} uses {{% {keyword} %}}")
    if keyword == "set" and "=" not in tag.text:
        raise NotInlinable(f"{name} uses a block {{% set %}}")
    if _MARKUP_FILTER.search(tag.text):
        raise NotInlinable(f"{name} inserts HTML with a filter that returns markup")
    if _SELF.search(tag.text):
        raise NotInlinable(f"{name} calls blocks through self")
    if keyword not in _NAMED:
        return
    literal = _LITERAL_NAME.match(tag.text)
    if literal is None:
        raise NotInlinable(f"{name}: {keyword} with a computed template name")
    if keyword in ("import", "from"):
        imported = literal.group(1) or literal.group(2) or ""
        if _MACRO.search(read(imported)):
            raise NotInlinable(f"{name} imports macros from {imported}")


class _Protected:
    """A source being protected, tag by tag.

    In a child template (one that extends), Jinja ignores output outside
    blocks after the extends tag but still runs top-level set and import;
    those are hoisted to the start so the flattened document runs them too.
    """

    def __init__(self, *, is_child: bool, registry: list[str]) -> None:
        self.is_child = is_child
        self.registry = registry
        self.extended = False
        self.depth = 0  # blocks open
        self.hoisted: list[str] = []
        self.out: list[str] = []

    def add(self, tag: JinjaTag) -> None:
        keyword = tag.keyword
        if keyword in _STRUCTURAL or _SUPER.match(tag.text):
            self.extended = self.extended or keyword == "extends"
            self.depth += {"block": 1, "endblock": -1}.get(keyword, 0)
            self.out.append(tag.text)
            return
        self.registry.append(tag.text)
        placeholder = marker(len(self.registry) - 1)
        top_level = self.is_child and self.depth == 0
        if top_level and keyword in _TOP_LEVEL:
            self.hoisted.append(placeholder)
        elif not (top_level and self.extended):  # else ignored by Jinja too
            self.out.append(placeholder)

    def text(self) -> str:
        if self.hoisted:
            self.out.insert(0, "".join(self.hoisted))
        return "".join(self.out)
