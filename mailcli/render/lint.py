"""``lint``: what a CI job should refuse before a template reaches anyone.

Each finding names the file and line. Errors fail the lint (exit 1);
warnings are reported and pass. Checks:

* the template compiles and renders with a sample contact; undefined or
  misspelt variables are found statically in every file (with the nearest
  known name), so one run lists them all (F04, F08);
* ``|safe`` on contact data (F09);
* a visible unsubscribe link in the HTML and in ``message.txt`` (B13), and
  sender identity in the text (B29);
* a subject (``subject.txt`` or the campaign's), not starting Re:/Fwd: (A24);
* HTML size after inlining: warning from 90 KB, error from 102 KB, where
  Gmail clips (A20);
* images without ``alt``; links that are not https or mailto (plain http is
  an error: clients and filters distrust it); links to a reserved example
  domain (a placeholder left in);
* content hidden with CSS (display:none, visibility:hidden, font-size:0,
  opacity:0, white on white) unless it is the preheader
  (``class="preheader"``), and ``<script>``/``<form>`` (A23).

Element checks run on the rendered, inlined HTML, so styles from classes and
layouts count; each start tag in the sources is tagged with a ``data-``
attribute holding its file and line before rendering, which is how a finding
in the output points back at the template line that wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from jinja2 import meta, nodes

from mailcli.errors import HeaderInjectionError, TemplateError

from .environment import display_path, make_environment, suggest, translate
from .inline import inline_css
from .jinjascan import scan_jinja
from .preview import SAMPLE_SENDER, preview_context
from .template import CompiledTemplate, compile_template
from .text import normalize_text
from .values import TEMPLATE_VARIABLES

HTML_WARN_BYTES = 90 * 1024
HTML_MAX_BYTES = 102 * 1024
ERROR = "error"
WARNING = "warning"
NOTE = "note"  # not a problem: how the template will be rendered, where that costs speed


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str  # "error" | "warning" | "note"
    code: str
    file: str
    line: int | None
    message: str

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message} [{self.code}]"


_LOCATED = re.compile(r"^(?P<file>[^:\n]+?):(?P<line>\d+): (?P<message>.*)$", re.DOTALL)


def _from_error(code: str, exc: TemplateError | HeaderInjectionError, fallback: str) -> Finding:
    match = _LOCATED.match(exc.message)
    if match:
        return Finding(ERROR, code, match["file"], int(match["line"]), match["message"])
    return Finding(ERROR, code, fallback, None, exc.message)


# ---------------------------------------------------------------------------
# Static checks on the Jinja sources

_DICT_METHODS = {"get", "items", "keys", "values"}
_GUARD_FILTERS = {"default", "d"}
_GUARD_TESTS = {"defined", "undefined", "none"}


def _walk(node: nodes.Node, parent: nodes.Node | None = None) -> Iterator[tuple[nodes.Node, nodes.Node | None]]:
    yield node, parent
    for child in node.iter_child_nodes():
        yield from _walk(child, node)


def _guarded(node: nodes.Node, parent: nodes.Node | None) -> bool:
    if isinstance(parent, nodes.Filter) and parent.name in _GUARD_FILTERS and parent.node is node:
        return True
    return isinstance(parent, nodes.Test) and parent.name in _GUARD_TESTS and parent.node is node


def _assigned_names(tree: nodes.Template) -> set[str]:
    names: set[str] = set()
    for node, _ in _walk(tree):
        if isinstance(node, nodes.Name) and node.ctx in ("store", "param"):
            names.add(node.name)
        elif isinstance(node, nodes.FromImport):
            names.update(n if isinstance(n, str) else n[1] for n in node.names)
        elif isinstance(node, nodes.Import):
            names.add(node.target)
        elif isinstance(node, nodes.Macro):
            names.add(node.name)
    return names


def _static_findings(
    template: CompiledTemplate, known: Mapping[str, set[str]]
) -> list[Finding]:
    env = make_environment(template.root, html=False)
    trees: dict[str, tuple[str, nodes.Template]] = {}
    for name, filename in template.files.items():
        with open(filename, encoding="utf-8") as handle:
            source = handle.read()
        trees[name] = (display_path(filename), env.parse(source, name, filename))
    assigned: set[str] = set()
    for _, tree in trees.values():
        assigned |= _assigned_names(tree)
    allowed = set(TEMPLATE_VARIABLES) | set(env.globals) | assigned | {"loop", "super", "self", "varargs", "kwargs", "caller"}

    findings: list[Finding] = []
    for file, tree in trees.values():
        undeclared = meta.find_undeclared_variables(tree) - allowed
        for node, parent in _walk(tree):
            if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in undeclared:
                if _guarded(node, parent):
                    continue
                near = suggest(node.name, TEMPLATE_VARIABLES)
                hint = f" (did you mean {near}?)" if near else f"; templates see {', '.join(TEMPLATE_VARIABLES)}"
                findings.append(Finding(ERROR, "undefined-variable", file, node.lineno, f"undefined variable {node.name}{hint}"))
            attr: str | None = None
            if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
                attr = node.attr
            elif (isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name)
                  and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)):
                attr = node.arg.value
            if attr is not None:
                base = node.node.name  # type: ignore[attr-defined]
                if base in known and base not in assigned and attr not in known[base] and attr not in _DICT_METHODS:
                    if _guarded(node, parent):
                        continue
                    near = suggest(attr, known[base])
                    if near:
                        message = f"undefined variable {base}.{attr} (did you mean {base}.{near}?)"
                    elif base == "contact":
                        message = (f"undefined variable contact.{attr}: the sample contact has no such field; "
                                   f"if it is a custom attribute every recipient has, lint with --data, "
                                   f"else write contact.{attr}|default('')")
                    else:
                        message = f"undefined variable {base}.{attr}; {base} has {', '.join(sorted(known[base]))}"
                    findings.append(Finding(ERROR, "undefined-variable", file, node.lineno, message))
            if isinstance(node, nodes.Filter) and node.name == "safe" and node.node is not None:
                if any(isinstance(n, nodes.Name) and n.name == "contact" for n, _ in _walk(node.node)):
                    findings.append(Finding(
                        ERROR, "unsafe-filter", file, node.lineno,
                        "|safe on contact data would let a contact's value inject HTML; remove |safe",
                    ))
    return findings


# ---------------------------------------------------------------------------
# Tagging start tags with their source line

_START_TAG = re.compile(r"<([A-Za-z][A-Za-z0-9-]*)(?=[\s/>])")
_SKIP_BLOCKS = re.compile(r"<!--.*?-->|<(style|script)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
LINE_ATTR = "data-mailcli-line"
_LINE_MARK = re.compile(r' data-mailcli-line="[0-9:]*"')


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

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.current = self.current.parent or self.root

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


def _element_findings(html: str, files: list[str], unsubscribe_url: str) -> tuple[list[Finding], bool]:
    locate = _Locator(files)
    findings: list[Finding] = []
    unsubscribe_visible = False
    hidden: set[int] = set()
    for element in parse_html(html):
        if element.parent is not None and id(element.parent) in hidden:
            hidden.add(id(element))
            continue
        file, line = locate(element)
        tag = element.tag
        if tag in ("script", "form"):
            findings.append(Finding(ERROR, tag, file, line, f"<{tag}> does not belong in email: clients strip it and spam filters score it"))
        if tag == "img" and "alt" not in element.attrs:
            findings.append(Finding(WARNING, "img-alt", file, line, f"image {element.attrs.get('src', '')!r} has no alt text"))
        if tag == "a" and "href" in element.attrs:
            href = element.attrs["href"].strip()
            if _DANGEROUS.match(href):
                findings.append(Finding(ERROR, "link-scheme", file, line, f"link {href[:60]!r} uses a scheme mail clients block; use https:// or mailto:"))
            elif href.lower().startswith("http://") and not (unsubscribe_url and href.startswith(unsubscribe_url)):
                # Mail clients and spam filters distrust plain http; the
                # unsubscribe URL is checked by the configuration instead.
                findings.append(Finding(ERROR, "link-scheme", file, line, f"link {href[:60]!r} is not encrypted: use https://"))
            elif href.startswith("#"):
                findings.append(Finding(WARNING, "link-scheme", file, line, f"link {href!r} is an in-page anchor; most mail clients ignore it"))
            elif not href.lower().startswith(_SAFE_SCHEMES):
                kind = "relative" if not re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", href) else "non-web"
                severity = ERROR if kind == "relative" else WARNING
                findings.append(Finding(severity, "link-scheme", file, line, f"{kind} link {href[:60]!r}: links in email must be absolute https:// or mailto: URLs"))
            if unsubscribe_url and unsubscribe_url in href:
                unsubscribe_visible = True
            elif _is_placeholder(href):
                findings.append(Finding(WARNING, "link-placeholder", file, line,
                                        f"link {href[:60]!r} goes to a reserved example domain: replace the placeholder"))
        reason = _hidden_reason(element)
        if reason and element.has_content() and not _is_preheader(element):
            hidden.add(id(element))
            findings.append(Finding(WARNING, "hidden-content", file, line, f"<{tag}> content is hidden ({reason}); only a preheader (class=\"preheader\") may be hidden"))
            if tag == "a" and unsubscribe_url and unsubscribe_url in element.attrs.get("href", ""):
                unsubscribe_visible = False
    return findings, unsubscribe_visible


# ---------------------------------------------------------------------------
# The whole lint


def lint_template(
    templates_dir: Path,
    name: str,
    *,
    now: datetime,
    contact: Mapping[str, Any] | None = None,
    sender: Mapping[str, Any] | None = None,
    unsubscribe_base: str | None = None,
    subject: str = "",
) -> list[Finding]:
    """Every finding for ``templates_dir/name``, errors and warnings, in file/line order.

    Raises ``NotFoundError`` when the template does not exist.
    """
    folder = Path(templates_dir) / name
    html_file = display_path(folder / "message.html")
    try:
        template = compile_template(templates_dir, name)
    except TemplateError as exc:
        return [_from_error("syntax", exc, html_file)]

    ctx = preview_context(now=now, contact=contact, sender=sender or SAMPLE_SENDER, unsubscribe_base=unsubscribe_base, subject=subject)
    known = {
        "contact": set(ctx.contact),
        "campaign": {"name", "subject"},
        "sender": set(ctx.sender),
    }
    findings = _static_findings(template, known)
    seen = {(f.file, f.line) for f in findings}
    findings += _speed_notes(template, html_file)

    # Subject
    variables = ctx.variables()
    subject_file = display_path(folder / "subject.txt")
    try:
        rendered_subject = template.render_subject(variables)
    except (TemplateError, HeaderInjectionError) as exc:
        finding = _from_error("subject", exc, subject_file)
        if not template.has_subject and not subject:
            finding = Finding(ERROR, "subject-missing", subject_file, None, "no subject: add subject.txt (or pass --subject when sending)")
        if (finding.file, finding.line) not in seen:
            findings.append(finding)
        rendered_subject = "(no subject)"
    else:
        if re.match(r"^\s*(re|fwd?|aw|wg)\s*:", rendered_subject, re.IGNORECASE):
            findings.append(Finding(WARNING, "subject-prefix", subject_file, 1,
                                    f"subject {rendered_subject!r} pretends to be a reply or forward"))
    variables["campaign"] = {**ctx.campaign, "subject": rendered_subject}

    # Render as it will be sent; if that fails (already reported), render
    # leniently so the remaining checks still see the document.
    html: str | None = None
    text: str | None = None
    try:
        html = template.render_html(variables)
        text = template.render_text_source(variables)
    except (TemplateError, HeaderInjectionError) as exc:
        finding = _from_error("render", exc, html_file)
        if (finding.file, finding.line) not in seen:
            findings.append(finding)

    html_names = [n for n in template.files if not n.endswith(".txt")]
    files = [display_path(template.files[n]) for n in html_names]
    index = {n: i for i, n in enumerate(html_names)}

    def transform(template_name: str, source: str) -> str:
        return mark_lines(source, index[template_name]) if template_name in index else source

    marked_env = make_environment(template.root, html=True, transform=transform, strict=False)
    try:
        marked = marked_env.get_template(f"{template.name}/message.html").render(variables)
        marked = inline_css(template._resolver.expand(marked))
    except Exception as exc:
        if html is None:
            findings.append(_from_error("render", translate(exc, template.root), html_file))  # type: ignore[arg-type]
            return _sorted(findings)
        marked = html
    if html is None:
        html = _LINE_MARK.sub("", marked)
    if text is None and template.has_text:
        try:
            text_env = make_environment(template.root, html=False, strict=False)
            text = normalize_text(text_env.get_template(f"{template.name}/message.txt").render(variables))
        except Exception:
            text = None

    size = len(html.encode("utf-8"))
    if size >= HTML_MAX_BYTES:
        findings.append(Finding(ERROR, "html-size", html_file, None,
                                f"HTML is {size / 1024:.0f} KB after inlining; Gmail clips messages over ~102 KB"))
    elif size >= HTML_WARN_BYTES:
        findings.append(Finding(WARNING, "html-size", html_file, None,
                                f"HTML is {size / 1024:.0f} KB after inlining; Gmail clips at ~102 KB"))

    element_findings, unsubscribe_visible = _element_findings(marked, files, ctx.unsubscribe_url)
    findings += element_findings
    if not unsubscribe_visible:
        findings.append(Finding(ERROR, "unsubscribe-missing", html_file, None,
                                "the HTML has no visible unsubscribe link: add <a href=\"{{ unsubscribe_url }}\">"))

    if text is not None:
        text_file = display_path(folder / "message.txt")
        if ctx.unsubscribe_url not in text:
            findings.append(Finding(ERROR, "unsubscribe-missing", text_file, None,
                                    "the text part has no unsubscribe URL: add {{ unsubscribe_url }}"))
        sender_name = str(ctx.sender.get("name") or "")
        postal = str(ctx.sender.get("postal_address") or "")
        if (sender_name and sender_name not in text) or (postal and postal not in text):
            findings.append(Finding(WARNING, "sender-identity", text_file, None,
                                    "the text part lacks the sender name or postal address; a footer will be appended"))
    return _sorted(findings)


def _speed_notes(template: CompiledTemplate, html_file: str) -> list[Finding]:
    """Say when CSS or the text part is made per message instead of once per template."""
    notes = []
    if not template.inline_once:
        notes.append(Finding(NOTE, "inline-per-message", html_file, None,
                             f"the CSS is inlined per message, which is slower: {template.fallback_reason}"))
    if template.text_reason is not None:
        notes.append(Finding(NOTE, "text-per-message", html_file, None,
                             f"the text part is converted from the HTML per message, which is slower:"
                             f" {template.text_reason} (a message.txt avoids it)"))
    return notes


def _sorted(findings: list[Finding]) -> list[Finding]:
    unique = list(dict.fromkeys(findings))
    return sorted(unique, key=lambda f: (f.file, f.line or 0, f.severity != ERROR, f.code))
