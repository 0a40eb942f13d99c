"""CSS inlining, and inlining a Jinja template once instead of every message.

Mail clients ignore most ``<style>`` blocks, so rules are copied into
``style`` attributes; ``@media`` and other at-rules stay in a ``<style>``
block (css-inline ``keep_at_rules=True``) for the clients that honour them.
Nothing is ever fetched (STANDARDS A22): a ``<link>`` to an ``http(s)://``
stylesheet is refused, and a local one is read from the templates folder and
inlined like a ``<style>`` block.

**Inline once.** Inlining costs more than the Jinja render, and the CSS is the
same for every recipient, so ``prepare_inline_once`` inlines the template
itself. Run naively that breaks the template: an HTML5 parser moves a
``{% for %}`` between table rows out of the table, and an inliner may rewrite
``{{ x }}`` inside ``href``. So, per template:

1. every Jinja tag except the structural ones (extends, block, include,
   super) is replaced by a neutral marker and Jinja itself flattens layouts
   and partials into one document;
2. each marker becomes a placeholder that the parser keeps in place: an HTML
   comment in element content (comments are never foster-parented out of a
   table), a plain token inside attribute values and ``<title>``;
3. the document is inlined, the placeholders are swapped back for the
   original Jinja tags, and the result is compiled as the fast template.

Where the styles themselves could depend on the data, inlining once would be
wrong, and the template is rendered and inlined per message instead: Jinja in
``class``/``id``/``style`` attributes or in attribute names, Jinja inside
``<style>``, selectors that depend on rendered siblings (``:nth-child``,
``+``, ``~``, ...), macros, imports, ``|safe`` HTML. ``CompiledTemplate``
also compares both paths on sample recipients and falls back when they
differ (``verify_inlining``).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailcli.errors import TemplateError

from .environment import check_template_path, display_path, make_environment

# ---------------------------------------------------------------------------
# The inliner


_INLINER: Any = None
_CANON: Any = None


def _inliner() -> Any:
    global _INLINER
    if _INLINER is None:
        import css_inline

        _INLINER = css_inline.CSSInliner(
            keep_at_rules=True,  # @media (mobile, dark mode) must survive
            load_remote_stylesheets=False,  # A22: never any network
            keep_link_tags=False,
        )
    return _INLINER


def inline_css(html: str) -> str:
    """Inline ``<style>`` rules into ``style`` attributes, keeping at-rules."""
    try:
        return str(_inliner().inline(html))
    except ValueError as exc:  # css_inline.InlineError derives from ValueError
        raise TemplateError(f"Cannot inline the CSS: {exc}") from None


def canonical_html(html: str) -> str:
    """Parse and re-serialise, so equal documents compare equal as text.

    ``&#39;`` and ``'`` are the same character to every HTML parser, as are
    runs of whitespace outside ``<pre>``; comparing canonical forms keeps the
    check in ``verify_inlining`` about meaning, not spelling.
    """
    global _CANON
    if _CANON is None:
        import css_inline

        _CANON = css_inline.CSSInliner(
            inline_style_tags=False, keep_style_tags=True, keep_link_tags=True, load_remote_stylesheets=False
        )
    return re.sub(r"\s+", " ", str(_CANON.inline(html)))


# ---------------------------------------------------------------------------
# Linked stylesheets

_LINK = re.compile(r"<link\b[^>]*>", re.IGNORECASE)
_ATTR = re.compile(r"""([^\s=/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?""")
_SCHEME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]*:|//)")
_IMPORT = re.compile(r"@import\b", re.IGNORECASE)


def tag_attributes(tag: str) -> dict[str, str]:
    """Attributes of one start tag (lower-cased names), for simple checks."""
    body = re.sub(r"^<[^\s/>]+", "", tag).rstrip(">").rstrip("/")
    attrs: dict[str, str] = {}
    for match in _ATTR.finditer(body):
        name = match.group(1).lower()
        value = next((g for g in match.groups()[1:] if g is not None), "")
        attrs.setdefault(name, value)
    return attrs


@dataclass
class StylesheetResolver:
    """Reads local stylesheets for ``<link rel=stylesheet>``; refuses remote ones."""

    root: Path  # the templates folder
    folder: Path  # the template's own folder, searched first
    origin: str  # shown in errors: the template being rendered
    _cache: dict[str, str] = field(default_factory=dict)

    def read(self, href: str) -> str:
        if href in self._cache:
            return self._cache[href]
        if _SCHEME.match(href.strip()):
            raise TemplateError(
                f"{self.origin}: remote stylesheet {href!r} refused: mailcli never fetches from the network",
                hint="save the stylesheet next to the template and link it by a relative path, or use <style>",
            )
        path = href.split("?", 1)[0].split("#", 1)[0].strip()
        try:
            check_template_path(path[2:] if path.startswith("./") else path)
        except TemplateError:
            raise TemplateError(f"{self.origin}: stylesheet path {href!r} is not allowed (stay inside templates/)") from None
        real_root = os.path.realpath(self.root) + os.sep
        for base in (self.folder, self.root):
            candidate = os.path.realpath(base / path)
            if candidate.startswith(real_root) and os.path.isfile(candidate):
                with open(candidate, encoding="utf-8") as handle:
                    css = handle.read()
                if "</style" in css.lower():
                    raise TemplateError(f"{display_path(candidate)}: a stylesheet may not contain '</style'")
                check_css_imports(css, display_path(candidate))
                self._cache[href] = css
                return css
        raise TemplateError(f"{self.origin}: stylesheet {href!r} not found next to the template or in templates/")

    def expand(self, html: str) -> str:
        """Replace every ``<link rel=stylesheet>`` by a ``<style>`` with its content."""
        if "<link" not in html and "<LINK" not in html:
            return html

        def replace(match: re.Match[str]) -> str:
            attrs = tag_attributes(match.group(0))
            if "stylesheet" not in attrs.get("rel", "").lower().split():
                return match.group(0)
            href = attrs.get("href", "")
            if not href:
                raise TemplateError(f"{self.origin}: <link rel=stylesheet> without href")
            return "<style>\n" + self.read(href) + "\n</style>"

        return _LINK.sub(replace, html)


def check_css_imports(css: str, origin: str) -> None:
    """``@import`` would be a fetch (or silently ignored): refuse it."""
    if _IMPORT.search(css):
        raise TemplateError(
            f"{origin}: @import in CSS is not supported: mailcli never fetches stylesheets",
            hint="link local stylesheets with <link rel=stylesheet href=...> or paste the rules into <style>",
        )


_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.IGNORECASE | re.DOTALL)


def style_blocks(html: str) -> list[str]:
    return [m.group(1) for m in _STYLE_BLOCK.finditer(html)]


# ---------------------------------------------------------------------------
# Finding Jinja tags in a source


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
    length = len(source)
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
            closer = "}}" if kind == "{" else "%}"
            i = start + 2
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
                    break
                i += 1
            else:
                raise ValueError("unterminated tag")
            end = i + 2
        tags.append(JinjaTag(start, end, kind, source[start:end]))
        pos = end


_STRUCTURAL = {"extends", "block", "endblock", "include"}
# Tags whose output is HTML not visible in the template source (macros,
# imported macros, filtered blocks), or whose scoping inlining once can't keep.
_UNSUPPORTED = {"macro", "call", "filter", "raw", "autoescape"}
_SUPER = re.compile(r"^\{\{-?\s*super\(\)\s*-?\}\}$")
# Filters whose result is markup: HTML the inliner never saw.
_MARKUP_FILTER = re.compile(r"\|\s*(?:safe|urlize|xmlattr)\b")
_SELF = re.compile(r"\bself\.")
_LITERAL_NAME = re.compile(r"""^\{%[-+]?\s*(?:extends|include|import|from)\s+(?:"([^"]*)"|'([^']*)')(\s|-?%\})""")
_MACRO = re.compile(r"\{%[-+]?\s*macro\b")


class NotInlinable(Exception):
    """The template must be inlined per message; the message says why."""


def _protect_source(name: str, source: str, registry: list[str], read: Callable[[str], str]) -> str:
    """Replace every non-structural Jinja tag by a neutral marker (step 1).

    ``read(name)`` returns another template's source: imports are fine when
    they bring in data only, not macros that would write unstyled HTML.
    """
    try:
        tags = scan_jinja(source)
    except ValueError as exc:
        raise NotInlinable(f"{name}: {exc}") from None
    # In a child template (one that extends), Jinja ignores output outside
    # blocks after the extends tag but still runs top-level set and import;
    # those are hoisted to the start so the flattened document runs them too.
    is_child = any(t.keyword == "extends" for t in tags)
    extended = False
    depth = 0
    hoisted: list[str] = []
    out: list[str] = []
    pos = 0
    for tag in tags:
        out.append(source[pos : tag.start])
        pos = tag.end
        keyword = tag.keyword
        if tag.kind == "#":
            continue
        if keyword in _UNSUPPORTED:
            raise NotInlinable(f"{name} uses {{% {keyword} %}}")
        if keyword == "set" and "=" not in tag.text:
            raise NotInlinable(f"{name} uses a block {{% set %}}")
        if _MARKUP_FILTER.search(tag.text):
            raise NotInlinable(f"{name} inserts HTML with a filter that returns markup")
        if _SELF.search(tag.text):
            raise NotInlinable(f"{name} calls blocks through self")
        literal = _LITERAL_NAME.match(tag.text) if keyword in ("extends", "include", "import", "from") else None
        if keyword in ("extends", "include", "import", "from") and literal is None:
            raise NotInlinable(f"{name}: {keyword} with a computed template name")
        if keyword in ("import", "from") and literal is not None:
            imported = literal.group(1) or literal.group(2) or ""
            if _MACRO.search(read(imported)):
                raise NotInlinable(f"{name} imports macros from {imported}")
        if keyword == "extends":
            extended = True
            out.append(tag.text)
        elif keyword == "block":
            depth += 1
            out.append(tag.text)
        elif keyword == "endblock":
            depth -= 1
            out.append(tag.text)
        elif keyword == "include" or _SUPER.match(tag.text):
            out.append(tag.text)
        else:
            registry.append(tag.text)
            marker = f"\x01{len(registry) - 1}\x02"
            if is_child and depth == 0 and keyword in ("set", "import", "from"):
                hoisted.append(marker)
            elif is_child and depth == 0 and extended:
                continue  # ignored by Jinja too
            else:
                out.append(marker)
    if hoisted:
        out.insert(0, "".join(hoisted))
    out.append(source[pos:])
    return "".join(out)


# ---------------------------------------------------------------------------
# Where a marker sits in the flattened HTML (step 2)

_MARKER = re.compile("\x01(\\d+)\x02")
_RAWTEXT = {"style", "script", "xmp", "iframe", "noembed", "noframes", "noscript", "title", "textarea"}
_TAGNAME = re.compile(r"</?([A-Za-z][^\s/>\x01]*)")
_ATTR_NAME = re.compile(r"[^\s/>=]+")
_WS = re.compile(r"\s*")
_UNQUOTED = re.compile(r"[^\s>]*")


def marker_contexts(html: str) -> dict[int, str]:
    """Map each marker's offset to its context: data, comment, attr:NAME, raw:TAG or tag."""
    contexts: dict[int, str] = {}

    def mark(start: int, end: int, context: str) -> None:
        for match in _MARKER.finditer(html, start, end):
            contexts[match.start()] = context

    i = 0
    n = len(html)
    while i < n:
        lt = html.find("<", i)
        if lt < 0:
            mark(i, n, "data")
            break
        mark(i, lt, "data")
        if html.startswith("<!--", lt):
            end = html.find("-->", lt + 4)
            end = n if end < 0 else end + 3
            mark(lt, end, "comment")
            i = end
            continue
        if html.startswith("<!", lt) or html.startswith("<?", lt):
            end = html.find(">", lt)
            end = n if end < 0 else end + 1
            mark(lt, end, "tag")
            i = end
            continue
        match = _TAGNAME.match(html, lt)
        if match is None:
            i = lt + 1
            continue
        closing = html[lt + 1] == "/"
        tag = match.group(1).lower()
        j = match.end()
        while j < n:
            j = _WS.match(html, j).end()  # type: ignore[union-attr]
            if j >= n or html[j] == ">":
                j += 1
                break
            if html.startswith("/>", j):
                j += 2
                break
            name_match = _ATTR_NAME.match(html, j)
            if name_match is None:
                j += 1
                continue
            attr = name_match.group(0)
            mark(j, name_match.end(), "tag")
            j = _WS.match(html, name_match.end()).end()  # type: ignore[union-attr]
            if j < n and html[j] == "=":
                j = _WS.match(html, j + 1).end()  # type: ignore[union-attr]
                if j < n and html[j] in "\"'":
                    close = html.find(html[j], j + 1)
                    close = n - 1 if close < 0 else close
                    mark(j, close + 1, f"attr:{attr.lower()}")
                    j = close + 1
                else:
                    value = _UNQUOTED.match(html, j)
                    assert value is not None
                    mark(j, value.end(), f"attr:{attr.lower()}")
                    j = value.end()
        if not closing and tag in _RAWTEXT:
            closer = re.compile(rf"</{tag}\b", re.IGNORECASE).search(html, j)
            end = n if closer is None else closer.start()
            mark(j, end, f"raw:{tag}")
            j = end
        i = j
    return contexts


# ---------------------------------------------------------------------------
# Selectors whose match depends on the rendered document

_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_STRUCTURAL_SELECTOR = re.compile(r":(?:nth-|first-|last-|only-|empty|has\(|not\(|is\(|where\()|[+~]", re.IGNORECASE)
_ATTR_SELECTOR = re.compile(r"\[\s*([^\s~|^$*=\]]+)")


def selector_risks(css_blocks: list[str]) -> tuple[str | None, set[str]]:
    """A reason the CSS can't be inlined once (or None), and attributes selected on."""
    attributes: set[str] = set()
    for css in css_blocks:
        css = _CSS_COMMENT.sub("", css)
        for match in re.finditer(r"([^{};]+)\{", css):
            selector = match.group(1).strip()
            if not selector or selector.startswith("@"):
                continue
            if _STRUCTURAL_SELECTOR.search(selector):
                return f"selector {selector!r} depends on the rendered document", attributes
            attributes.update(a.lower() for a in _ATTR_SELECTOR.findall(selector))
    return None, attributes


# ---------------------------------------------------------------------------
# The whole preparation


@dataclass(frozen=True, slots=True)
class InlineOnce:
    """Result of ``prepare_inline_once``: a source to compile, or why not.

    ``placeholders`` is the inlined document before the Jinja tags are put
    back: each tag ``tags[i]`` is ``<!--J{nonce}n{i}j-->`` in element
    content and ``J{nonce}n{i}j`` elsewhere. The text part is made from it
    (``textonce.py``).
    """

    source: str | None
    reason: str | None
    placeholders: str | None = None
    tags: tuple[str, ...] = ()
    nonce: str = ""


_STYLE_ATTRS = {"class", "id", "style"}
_IMPLICIT_TBODY = re.compile(r"(<table\b[^>]*>)((?:\s*<!--[^>]*-->)+\s*)<tbody>")
_COMMENT = re.compile(r"<!--[^>]*-->")


def _fix_implicit_tbody(inlined: str, protected: str) -> str:
    """Move placeholders the parser left in front of an implicit ``<tbody>`` inside it.

    The parser opens a ``<tbody>`` at a table's first row, after any comment
    placeholders before that row; a ``{% for %}`` left there would repeat the
    ``<tbody>`` once per row. Where the source itself wrote ``<tbody>`` after
    the placeholders, they stay outside.
    """

    def move(match: re.Match[str]) -> str:
        comments = _COMMENT.findall(match.group(2))
        at = protected.find(comments[-1])
        explicit = at >= 0 and re.match(r"\s*<tbody\b", protected[at + len(comments[-1]) :], re.IGNORECASE)
        if explicit:
            return match.group(0)
        inside = match.group(2)
        before = inside[: len(inside) - len(inside.lstrip())]
        return match.group(1) + before + "<tbody>" + inside[len(before):]

    return _IMPLICIT_TBODY.sub(move, inlined)


def prepare_inline_once(root: Path, name: str, resolver: StylesheetResolver) -> InlineOnce:
    """Flatten, protect, inline and restore ``NAME/message.html`` (see module doc)."""
    registry: list[str] = []

    def read(template: str) -> str:
        check_template_path(template)
        path = os.path.realpath(root / template)
        if not path.startswith(os.path.realpath(root) + os.sep):
            raise NotInlinable(f"{template} is outside the templates folder")
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    def protect(template: str, source: str) -> str:
        return _protect_source(template, source, registry, read)

    try:
        env = make_environment(root, html=False, transform=protect)
        flattened = env.get_template(f"{name}/message.html").render()
    except NotInlinable as exc:
        return InlineOnce(None, str(exc))
    except Exception as exc:  # the reference compile reports real errors
        return InlineOnce(None, f"could not flatten: {exc}")

    if any("\x01" in link.group(0) for link in _LINK.finditer(flattened)):
        return InlineOnce(None, "a <link> is built by Jinja")
    flattened = resolver.expand(flattened)
    css = style_blocks(flattened)
    reason, selected_attrs = selector_risks(css)
    if reason:
        return InlineOnce(None, reason)

    nonce = secrets.token_hex(4)
    originals: list[str] = []
    contexts = marker_contexts(flattened)
    pieces: list[str] = []
    pos = 0
    for match in _MARKER.finditer(flattened):
        context = contexts.get(match.start(), "data")
        text = registry[int(match.group(1))]
        if context == "tag":
            return InlineOnce(None, f"Jinja inside a tag outside attribute values: {text}")
        if context.startswith("attr:"):
            attr = context[5:]
            if attr in _STYLE_ATTRS or attr in selected_attrs:
                return InlineOnce(None, f"Jinja in a {attr} attribute decides which styles apply: {text}")
        if context.startswith("raw:") and context not in ("raw:title", "raw:textarea"):
            return InlineOnce(None, f"Jinja inside <{context[4:]}>: {text}")
        token = f"J{nonce}n{len(originals)}j"
        originals.append(text)
        pieces.append(flattened[pos : match.start()])
        pieces.append(f"<!--{token}-->" if context == "data" else token)
        pos = match.end()
    pieces.append(flattened[pos:])
    protected = "".join(pieces)

    inlined = inline_css(protected)
    inlined = _fix_implicit_tbody(inlined, protected)

    seen = [0] * len(originals)
    pattern = re.compile(rf"<!--J{nonce}n(\d+)j-->|J{nonce}n(\d+)j")

    def restore(match: re.Match[str]) -> str:
        index = int(match.group(1) or match.group(2))
        seen[index] += 1
        return originals[index]

    restored = pattern.sub(restore, inlined)
    if any(count != 1 for count in seen):
        return InlineOnce(None, "the HTML parser moved or dropped a Jinja tag")
    return InlineOnce(restored, None, inlined, tuple(originals), nonce)

