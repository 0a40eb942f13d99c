"""``lint``: what a CI job should refuse before a template reaches anyone.

Each finding names the file and line. Errors fail the lint (exit 1);
warnings are reported and pass; notes say how a template will be rendered
where that costs speed. Checks:

* the template compiles and renders with a sample contact; undefined or
  misspelt variables and ``|safe`` on contact data, found statically in
  every file (``lintsource.py``);
* a visible unsubscribe link in the HTML and in ``message.txt``, and the
  sender's name and postal address in the text
  (docs/guarantees.md#message-format);
* a subject (``subject.txt`` or the campaign's), not starting Re:/Fwd:, which
  pretends to be a reply;
* HTML size after inlining: warning from 90 KB, error from 102 KB, where
  Gmail clips;
* the elements of the rendered, inlined HTML (``linthtml.py``): images
  without alt, links that are not https or mailto, placeholder links, hidden
  content, ``<script>``/``<form>``.

A service message (``kind="service"``: an outage, a change to the terms) is
one people cannot opt out of, so it needs no unsubscribe link; instead each
link that looks like an offer is a warning: selling is marketing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from mailcli.errors import HeaderInjectionError, TemplateError

from .environment import display_path, make_environment, translate
from .findings import ERROR, NOTE, WARNING, Finding, from_error
from .inline import inline_css
from .linthtml import element_findings, mark_lines, offer_findings, unmark_lines
from .lintsource import static_findings
from .preview import SAMPLE_SENDER, preview_context
from .template import CompiledTemplate, compile_template
from .text import normalize_text
from .values import is_confirm_template

__all__ = ["ERROR", "NOTE", "WARNING", "Finding", "lint_template"]

SAMPLE_CONFIRM_URL = "https://example.org/confirm?t=SAMPLE-CONFIRMATION-TOKEN"
HTML_WARN_BYTES = 90 * 1024
HTML_MAX_BYTES = 102 * 1024
_REPLY_PREFIX = re.compile(r"^\s*(re|fwd?|aw|wg)\s*:", re.IGNORECASE)


# Complexity: each stage (parse, render, inline, text part) may fail and is then a finding; read top to bottom.
def lint_template(
    templates_dir: Path,
    name: str,
    *,
    now: datetime,
    contact: Mapping[str, Any] | None = None,
    sender: Mapping[str, Any] | None = None,
    unsubscribe_base: str | None = None,
    subject: str = "",
    kind: str = "marketing",
) -> list[Finding]:
    """Every finding for ``templates_dir/name``, errors and warnings, in file/line order.

    ``kind`` is the campaign's: ``"service"`` checks for offers instead of an unsubscribe link.

    Raises ``NotFoundError`` when the template does not exist.
    """
    folder = Path(templates_dir) / name
    html_file = display_path(folder / "message.html")
    try:
        template = compile_template(templates_dir, name)
    except TemplateError as exc:
        return [from_error("syntax", exc, html_file)]

    ctx = preview_context(now=now, contact=contact, sender=sender or SAMPLE_SENDER, unsubscribe_base=unsubscribe_base,
                          subject=subject)
    # The confirmation mail is a service message: it needs its confirmation
    # link, and no unsubscribe link (there is no subscription yet).
    confirm = is_confirm_template(name)
    if confirm:
        ctx = replace(ctx, unsubscribe_url="", confirm_url=SAMPLE_CONFIRM_URL)
    known = {"contact": set(ctx.contact), "campaign": {"name", "subject"}, "sender": set(ctx.sender)}
    findings = _Findings(static_findings(template, known))
    findings.extend(_speed_notes(template, html_file))
    variables = ctx.variables()
    rendered_subject = _check_subject(findings, template, variables, subject, display_path(folder / "subject.txt"))
    variables["campaign"] = {**ctx.campaign, "subject": rendered_subject}

    # Render as it will be sent; if that fails (already reported), render
    # leniently so the remaining checks still see the document.
    html: str | None = None
    text: str | None = None
    try:
        html = template.render_html(variables)
        text = template.render_text_source(variables)
    except (TemplateError, HeaderInjectionError) as exc:
        findings.add_new(from_error("render", exc, html_file))
    html_names = [n for n in template.files if not n.endswith(".txt")]
    try:
        marked = _render_marked(template, html_names, variables)
    except Exception as exc:
        if html is None:
            findings.append(from_error("render", translate(exc, template.root), html_file))  # type: ignore[arg-type]
            return findings.sorted()
        marked = html
    if html is None:
        html = unmark_lines(marked)
    if text is None and template.has_text:
        text = _lenient_text(template, variables)

    findings.extend(_size_findings(html, html_file))
    files = [display_path(template.files[n]) for n in html_names]
    element, link_visible = element_findings(marked, files, (ctx.confirm_url or "") if confirm else ctx.unsubscribe_url)
    findings.extend(element)
    if confirm:
        findings.extend(_confirm_link_findings(link_visible, text, html_file, display_path(folder / "message.txt")))
        return findings.sorted()
    service = kind == "service"
    if service:
        findings.extend(offer_findings(marked, files, ctx.unsubscribe_url))
    elif not link_visible:
        findings.append(Finding(ERROR, "unsubscribe-missing", html_file, None,
                                "the HTML has no visible unsubscribe link: add <a href=\"{{ unsubscribe_url }}\">"))
    if text is not None:
        findings.extend(_text_findings(text, ctx, display_path(folder / "message.txt"), unsubscribe=not service))
    return findings.sorted()


def _confirm_link_findings(visible: bool, text: str | None, html_file: str, text_file: str) -> list[Finding]:
    """The confirmation mail must carry its link in both parts."""
    found = []
    if not visible:
        found.append(Finding(ERROR, "confirm-missing", html_file, None,
                             "the HTML has no visible confirmation link: add <a href=\"{{ confirm_url }}\">"))
    if text is not None and SAMPLE_CONFIRM_URL not in text:
        found.append(Finding(ERROR, "confirm-missing", text_file, None,
                             "the text part has no confirmation URL: add {{ confirm_url }}"))
    return found


class _Findings(list[Finding]):
    """Findings so far; an error at a place already reported is not repeated."""

    def __init__(self, first: list[Finding]) -> None:
        super().__init__(first)
        self._seen = {(f.file, f.line) for f in first}

    def add_new(self, finding: Finding) -> None:
        if (finding.file, finding.line) not in self._seen:
            self.append(finding)

    def sorted(self) -> list[Finding]:
        unique = list(dict.fromkeys(self))
        return sorted(unique, key=lambda f: (f.file, f.line or 0, f.severity != ERROR, f.code))


def _check_subject(findings: _Findings, template: CompiledTemplate, variables: dict[str, Any], subject: str,
                   subject_file: str) -> str:
    """Check the subject; returns it rendered (or a stand-in when it does not render)."""
    try:
        rendered = template.render_subject(variables)
    except (TemplateError, HeaderInjectionError) as exc:
        finding = from_error("subject", exc, subject_file)
        if not template.has_subject and not subject:
            finding = Finding(ERROR, "subject-missing", subject_file, None,
                              "no subject: add subject.txt (or pass --subject when sending)")
        findings.add_new(finding)
        return "(no subject)"
    if _REPLY_PREFIX.match(rendered):
        findings.append(Finding(WARNING, "subject-prefix", subject_file, 1,
                                f"subject {rendered!r} pretends to be a reply or forward"))
    return rendered


def _render_marked(template: CompiledTemplate, html_names: list[str], variables: dict[str, Any]) -> str:
    """The HTML rendered leniently and inlined, each start tag marked with its file and line."""
    index = {n: i for i, n in enumerate(html_names)}

    def transform(template_name: str, source: str) -> str:
        return mark_lines(source, index[template_name]) if template_name in index else source

    marked_env = make_environment(template.root, html=True, transform=transform, strict=False)
    marked = marked_env.get_template(f"{template.name}/message.html").render(variables)
    return inline_css(template._resolver.expand(marked))


def _lenient_text(template: CompiledTemplate, variables: dict[str, Any]) -> str | None:
    try:
        text_env = make_environment(template.root, html=False, strict=False)
        return normalize_text(text_env.get_template(f"{template.name}/message.txt").render(variables))
    except Exception:
        return None


def _size_findings(html: str, html_file: str) -> list[Finding]:
    size = len(html.encode("utf-8"))
    if size >= HTML_MAX_BYTES:
        return [Finding(ERROR, "html-size", html_file, None,
                        f"HTML is {size / 1024:.0f} KB after inlining; Gmail clips messages over ~102 KB")]
    if size >= HTML_WARN_BYTES:
        return [Finding(WARNING, "html-size", html_file, None,
                        f"HTML is {size / 1024:.0f} KB after inlining; Gmail clips at ~102 KB")]
    return []


def _text_findings(text: str, ctx: Any, text_file: str, *, unsubscribe: bool = True) -> list[Finding]:
    findings = []
    if unsubscribe and ctx.unsubscribe_url not in text:
        findings.append(Finding(ERROR, "unsubscribe-missing", text_file, None,
                                "the text part has no unsubscribe URL: add {{ unsubscribe_url }}"))
    sender_name = str(ctx.sender.get("name") or "")
    postal = str(ctx.sender.get("postal_address") or "")
    if (sender_name and sender_name not in text) or (postal and postal not in text):
        findings.append(Finding(WARNING, "sender-identity", text_file, None,
                                "the text part lacks the sender name or postal address; a footer will be appended"))
    return findings


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
