"""CSS inlining, and inlining a Jinja template once instead of every message.

Mail clients ignore most ``<style>`` blocks, so rules are copied into
``style`` attributes; ``@media`` and other at-rules stay in a ``<style>``
block (css-inline ``keep_at_rules=True``) for the clients that honour them.
Nothing is ever fetched (docs/guarantees.md#template-sandbox): a ``<link>``
to an ``http(s)://`` stylesheet is refused, and a local one is read from the
templates folder and inlined like a ``<style>`` block.

**Inline once.** Inlining costs more than the Jinja render, and the CSS is the
same for every recipient, so ``prepare_inline_once`` inlines the template
itself. Run naively that breaks the template: an HTML5 parser moves a
``{% for %}`` between table rows out of the table, and an inliner may rewrite
``{{ x }}`` inside ``href``. So, per template:

1. every Jinja tag except the structural ones (extends, block, include,
   super) is replaced by a neutral marker and Jinja itself flattens layouts
   and partials into one document (``jinjascan.protect_source``);
2. each marker becomes a placeholder that the parser keeps in place: an HTML
   comment in element content (comments are never foster-parented out of a
   table), a plain token inside attribute values and ``<title>``
   (``htmlscan.marker_contexts`` says which);
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailcli.errors import TemplateError

from .environment import check_template_path, display_path, make_environment
from .htmlscan import MARKER, marker_contexts, tag_attributes
from .jinjascan import NotInlinable, protect_source

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
            load_remote_stylesheets=False,  # never any network
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
_SCHEME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]*:|//)")
_IMPORT = re.compile(r"@import\b", re.IGNORECASE)


@dataclass
class StylesheetResolver:
    """Reads local stylesheets for ``<link rel=stylesheet>``; refuses remote ones."""

    root: Path  # the templates folder
    folder: Path  # the template's own folder, searched first
    origin: str  # shown in errors: the template being rendered
    _cache: dict[str, str] = field(default_factory=dict)
    _paths: dict[str, str] = field(default_factory=dict)  # href -> the file it was read from

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
                self._paths[href] = candidate
                return css
        raise TemplateError(f"{self.origin}: stylesheet {href!r} not found next to the template or in templates/")

    @property
    def files(self) -> dict[str, str]:
        """The file of every stylesheet read so far, by the ``href`` that named it."""
        return dict(self._paths)

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
    try:
        flattened = _flatten(root, name, registry)
    except NotInlinable as exc:
        return InlineOnce(None, str(exc))
    except Exception as exc:  # the reference compile reports real errors
        return InlineOnce(None, f"could not flatten: {exc}")
    if any("\x01" in link.group(0) for link in _LINK.finditer(flattened)):
        return InlineOnce(None, "a <link> is built by Jinja")
    flattened = resolver.expand(flattened)
    reason, selected_attrs = selector_risks(style_blocks(flattened))
    if reason:
        return InlineOnce(None, reason)
    nonce = secrets.token_hex(4)
    try:
        protected, originals = _placeholders(flattened, registry, selected_attrs, nonce)
    except NotInlinable as exc:
        return InlineOnce(None, str(exc))
    inlined = _fix_implicit_tbody(inline_css(protected), protected)
    restored = _restore(inlined, originals, nonce)
    if restored is None:
        return InlineOnce(None, "the HTML parser moved or dropped a Jinja tag")
    return InlineOnce(restored, None, inlined, tuple(originals), nonce)


def _flatten(root: Path, name: str, registry: list[str]) -> str:
    """The template with layouts and partials flattened by Jinja, every
    other tag a marker indexing ``registry``."""

    def read(template: str) -> str:
        check_template_path(template)
        path = os.path.realpath(root / template)
        if not path.startswith(os.path.realpath(root) + os.sep):
            raise NotInlinable(f"{template} is outside the templates folder")
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    def protect(template: str, source: str) -> str:
        return protect_source(template, source, registry, read)

    env = make_environment(root, html=False, transform=protect)
    return str(env.get_template(f"{name}/message.html").render())


def _placeholders(flattened: str, registry: list[str], selected_attrs: set[str],
                  nonce: str) -> tuple[str, list[str]]:
    """Each marker as a placeholder the HTML parser keeps in place, with the
    original tags in placeholder order; ``NotInlinable`` where a tag sits
    where the styles could depend on it."""
    originals: list[str] = []
    contexts = marker_contexts(flattened)
    pieces: list[str] = []
    pos = 0
    for match in MARKER.finditer(flattened):
        context = contexts.get(match.start(), "data")
        text = registry[int(match.group(1))]
        _check_context(context, text, selected_attrs)
        token = f"J{nonce}n{len(originals)}j"
        originals.append(text)
        pieces.append(flattened[pos : match.start()])
        pieces.append(f"<!--{token}-->" if context == "data" else token)
        pos = match.end()
    pieces.append(flattened[pos:])
    return "".join(pieces), originals


def _check_context(context: str, text: str, selected_attrs: set[str]) -> None:
    if context == "tag":
        raise NotInlinable(f"Jinja inside a tag outside attribute values: {text}")
    if context.startswith("attr:"):
        attr = context[5:]
        if attr in _STYLE_ATTRS or attr in selected_attrs:
            raise NotInlinable(f"Jinja in a {attr} attribute decides which styles apply: {text}")
    if context.startswith("raw:") and context not in ("raw:title", "raw:textarea"):
        raise NotInlinable(f"Jinja inside <{context[4:]}>: {text}")


def _restore(inlined: str, originals: list[str], nonce: str) -> str | None:
    """The inlined document with its placeholders back as Jinja tags; None
    unless each placeholder is there exactly once."""
    seen = [0] * len(originals)
    pattern = re.compile(rf"<!--J{nonce}n(\d+)j-->|J{nonce}n(\d+)j")

    def restore(match: re.Match[str]) -> str:
        index = int(match.group(1) or match.group(2))
        seen[index] += 1
        return originals[index]

    restored = pattern.sub(restore, inlined)
    if any(count != 1 for count in seen):
        return None
    return restored
