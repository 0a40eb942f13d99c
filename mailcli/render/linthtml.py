"""Lint's checks on the rendered, inlined HTML, element by element, so
styles from classes and layouts count: ``<script>``/``<form>``, images
without alt, links that are not https or mailto (plain http is an error:
clients and filters distrust it), links to a reserved example domain (a
placeholder left in), content hidden with CSS (display:none,
visibility:hidden, font-size:0, opacity:0, white on white) unless it is the
preheader (``class="preheader"``), and whether the unsubscribe link is
visible. For a service message, links that look like offers
(``offer_findings``).

Each start tag in the sources is tagged with a ``data-`` attribute holding
its file and line before rendering (``mark_lines``), which is how a finding
in the output points back at the template line that wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

from .findings import ERROR, WARNING, Finding
from .jinjascan import scan_jinja

_START_TAG = re.compile(r"<([A-Za-z][A-Za-z0-9-]*)(?=[\s/>])")
_SKIP_BLOCKS = re.compile(r"<!--.*?-->|<(style|script)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
LINE_ATTR = "data-mailcli-line"
_LINE_MARK = re.compile(r' data-mailcli-line="[0-9:]*"')


def unmark_lines(html: str) -> str:
    """``html`` without the marks ``mark_lines`` added."""
    return _LINE_MARK.sub("", html)


def mark_lines(source: str, file_index: int) -> str:
    """Add ``data-mailcli-line="F:L"`` to every start tag outside Jinja tags and comments."""
    skip: list[tuple[int, int]] = [(t.start, t.end) for t in scan_jinja(source)]
    skip += [(m.start() + 1, m.end()) for m in _SKIP_BLOCKS.finditer(source)]
    skip.sort()
    out: list[str] = []
    pos = 0
    index = 0
    for match in _START_TAG.finditer(source):
        while index < len(skip) and skip[index][1] <= match.start():
            index += 1
        if index < len(skip) and skip[index][0] <= match.start() < skip[index][1]:
            continue
        line = source.count("\n", 0, match.start()) + 1
        out.append(source[pos : match.end()])
        out.append(f' {LINE_ATTR}="{file_index}:{line}"')
        pos = match.end()
    out.append(source[pos:])
    return "".join(out)


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None
    children: list[Element] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def style(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for declaration in self.attrs.get("style", "").split(";"):
            if ":" in declaration:
                key, value = declaration.split(":", 1)
                result[key.strip().lower()] = value.strip().lower().replace("!important", "").strip()
        return result

    def ancestors(self) -> Iterator[Element]:
        node: Element | None = self
        while node is not None:
            yield node
            node = node.parent

    def has_content(self) -> bool:
        if any(t.strip() for t in self.text) or self.tag == "img":
            return True
        return any(child.has_content() for child in self.children)


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self.current = self.root
        self.elements: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: (v or "") for k, v in attrs}, self.current)
        self.current.children.append(element)
        self.elements.append(element)
        if tag not in _VOID:
            self.current = element

    def handle_endtag(self, tag: str) -> None:
        node: Element | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.text.append(data)


def parse_html(html: str) -> list[Element]:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.elements


_WHITE = {"#fff", "#ffffff", "white", "rgb(255,255,255)", "#fffffe"}
_ZERO = re.compile(r"^0(?:\.0+)?(?:px|pt|em|rem|%)?$")


def _is_white(value: str | None) -> bool:
    return value is not None and value.replace(" ", "") in _WHITE


def _background(element: Element) -> str | None:
    style = element.style()
    if "background-color" in style:
        return style["background-color"]
    if "background" in style:
        for token in re.split(r"\s+(?![^(]*\))", style["background"]):
            if token.startswith(("#", "rgb")) or token.isalpha():
                return token
    return element.attrs.get("bgcolor")


# Complexity: one check per CSS and attribute way of hiding content.
def _hidden_reason(element: Element) -> str | None:
    style = element.style()
    if style.get("display") == "none":
        return "display:none"
    if style.get("visibility") == "hidden":
        return "visibility:hidden"
    if _ZERO.match(style.get("font-size", "x")):
        return "font-size:0"
    if _ZERO.match(style.get("opacity", "x")):
        return "opacity:0"
    if any(t.strip() for t in element.text):
        color = next((a.style().get("color") for a in element.ancestors() if "color" in a.style()), None)
        background = next((b for b in (_background(a) for a in element.ancestors()) if b), "#ffffff")
        if _is_white(color) and _is_white(background):
            return "white text on a white background"
    return None


def _is_preheader(element: Element) -> bool:
    return any("preheader" in a.attrs.get("class", "").split() for a in element.ancestors())


_SAFE_SCHEMES = ("https://", "mailto:")
_DANGEROUS = re.compile(r"^\s*(javascript|data|vbscript|file):", re.IGNORECASE)


# Domains reserved for examples (RFC 2606, RFC 6761): a link there is a
# placeholder left from a scaffold or a sample, never a real destination.
_PLACEHOLDER_DOMAINS = ("example.com", "example.org", "example.net")
_PLACEHOLDER_TLDS = (".example", ".test", ".invalid", ".localhost")


def _is_placeholder(href: str) -> bool:
    from urllib.parse import urlsplit

    try:
        host = (urlsplit(href).hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    return bool(host) and (host.endswith(_PLACEHOLDER_TLDS) or host in ("example", "test", "invalid", "localhost")
                           or any(host == d or host.endswith("." + d) for d in _PLACEHOLDER_DOMAINS))


class _Locator:
    def __init__(self, files: list[str]) -> None:
        self.files = files

    def __call__(self, element: Element) -> tuple[str, int | None]:
        for node in element.ancestors():
            mark = node.attrs.get(LINE_ATTR)
            if mark:
                index, line = mark.split(":")
                return self.files[int(index)], int(line)
        return self.files[0], None


# Complexity: one check per element rule (images, links, scripts, forms, hidden content).
def element_findings(html: str, files: list[str], unsubscribe_url: str) -> tuple[list[Finding], bool]:
    """The findings about the elements of ``html`` (marked by ``mark_lines``
    with ``files``), and whether a visible link goes to ``unsubscribe_url``."""
    locate = _Locator(files)
    findings: list[Finding] = []
    unsubscribe_visible = False
    hidden: set[int] = set()
    for element in parse_html(html):
        if element.parent is not None and id(element.parent) in hidden:
            hidden.add(id(element))
            continue
        file, line = locate(element)
        findings += _tag_findings(element, file, line)
        if element.tag == "a" and "href" in element.attrs:
            href = element.attrs["href"].strip()
            findings += _link_findings(href, file, line, unsubscribe_url)
            unsubscribe_visible = unsubscribe_visible or bool(unsubscribe_url and unsubscribe_url in href)
        reason = _hidden_reason(element)
        if reason and element.has_content() and not _is_preheader(element):
            hidden.add(id(element))
            findings.append(Finding(WARNING, "hidden-content", file, line, f"<{element.tag}> content is hidden"
                                    f" ({reason}); only a preheader (class=\"preheader\") may be hidden"))
            if element.tag == "a" and unsubscribe_url and unsubscribe_url in element.attrs.get("href", ""):
                unsubscribe_visible = False
    return findings, unsubscribe_visible


def _tag_findings(element: Element, file: str, line: int | None) -> list[Finding]:
    tag = element.tag
    if tag in ("script", "form"):
        return [Finding(ERROR, tag, file, line,
                        f"<{tag}> does not belong in email: clients strip it and spam filters score it")]
    if tag == "img" and "alt" not in element.attrs:
        return [Finding(WARNING, "img-alt", file, line, f"image {element.attrs.get('src', '')!r} has no alt text")]
    return []


# Complexity: one check per kind of link target (https, mailto, placeholder, unsubscribe).
def _link_findings(href: str, file: str, line: int | None, unsubscribe_url: str) -> list[Finding]:
    findings = []
    if _DANGEROUS.match(href):
        findings.append(Finding(ERROR, "link-scheme", file, line,
                                f"link {href[:60]!r} uses a scheme mail clients block; use https:// or mailto:"))
    elif href.lower().startswith("http://") and not (unsubscribe_url and href.startswith(unsubscribe_url)):
        # Mail clients and spam filters distrust plain http; the
        # unsubscribe URL is checked by the configuration instead.
        findings.append(Finding(ERROR, "link-scheme", file, line, f"link {href[:60]!r} is not encrypted: use https://"))
    elif href.startswith("#"):
        findings.append(Finding(WARNING, "link-scheme", file, line,
                                f"link {href!r} is an in-page anchor; most mail clients ignore it"))
    elif not href.lower().startswith(_SAFE_SCHEMES):
        kind = "relative" if not re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", href) else "non-web"
        severity = ERROR if kind == "relative" else WARNING
        findings.append(Finding(severity, "link-scheme", file, line,
                                f"{kind} link {href[:60]!r}: links in email must be absolute https:// or mailto: URLs"))
    if not (unsubscribe_url and unsubscribe_url in href) and _is_placeholder(href):
        findings.append(Finding(WARNING, "link-placeholder", file, line,
                                f"link {href[:60]!r} goes to a reserved example domain: replace the placeholder"))
    return findings


# Words in a link's address or text that mark it as selling something (in
# English and Dutch): a service message with such a link is marketing, which
# needs consent and an opt-out. Matched as whole words, so "workshop" or
# "transactie" do not count.
OFFER_WORDS = frozenset({
    "offer", "offers", "deal", "deals", "discount", "discounts", "sale", "sales", "promo", "promotion",
    "promotions", "coupon", "coupons", "voucher", "vouchers", "shop", "webshop", "buy", "order", "upgrade",
    "aanbieding", "aanbiedingen", "korting", "kortingen", "kortingscode", "uitverkoop", "actie", "acties",
    "bestel", "bestellen", "koop", "kopen", "blackfriday", "cybermonday",
})
_WORD = re.compile(r"[^\W\d_]+")


def offer_findings(html: str, files: list[str], unsubscribe_url: str) -> list[Finding]:
    """A warning for each link of a service message whose address or text
    looks like an offer (``OFFER_WORDS``); the unsubscribe link is never one."""
    from urllib.parse import unquote

    locate = _Locator(files)
    findings = []
    for element in parse_html(html):
        if element.tag != "a" or "href" not in element.attrs:
            continue
        href = element.attrs["href"].strip()
        if unsubscribe_url and unsubscribe_url in href:
            continue
        words = {w.lower() for w in _WORD.findall(unquote(href).split(":", 1)[-1])}
        words |= {w.lower() for w in _WORD.findall(" ".join(_all_text(element)))}
        found = sorted(words & OFFER_WORDS)
        if found:
            file, line = locate(element)
            findings.append(Finding(WARNING, "service-offer", file, line,
                                    f"a service message links to what looks like an offer ({', '.join(found)}:"
                                    f" {href[:60]!r}): a message that sells needs consent and an opt-out;"
                                    " send it as marketing"))
    return findings


def _all_text(element: Element) -> Iterator[str]:
    yield from element.text
    for child in element.children:
        yield from _all_text(child)
