"""Compiling a template folder once, then rendering it per recipient.

``compile_template`` does all per-template work up front: it loads and
compiles ``message.html`` with every layout and partial it uses (so a syntax
error anywhere is reported before the first message, naming ``file:line``),
``message.txt`` and ``subject.txt`` when present, checks stylesheets, and
prepares the inline-once fast path (see ``inline.py``). ``CompiledTemplate
.render`` is then the only per-recipient step.

The fast path is checked three times over: against the built-in sample
contact at compile time, against the first ``AUTO_VERIFY`` recipients that
``render`` sees, and against whatever samples a caller passes to
``verify_inlining``. Any difference switches the template to per-message
inlining for good; ``fallback_reason`` says why.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Template, meta

from mailcli.errors import HeaderInjectionError, NotFoundError, TemplateError

from .environment import check_template_path, display_path, make_environment, translate
from .htmlscan import tag_attributes
from .inline import (
    StylesheetResolver,
    canonical_html,
    check_css_imports,
    inline_css,
    prepare_inline_once,
    style_blocks,
)
from .mime import check_header_value
from .text import ensure_footer, html_to_text, normalize_text
from .textonce import prepare_text_once
from .textrender import NeedsFullText, TextOnceTemplate, compile_text_once
from .values import RenderContext, RenderedParts, is_confirm_template

# A runaway loop must not produce a message of a hundred megabytes.
MAX_HTML_CHARS = 1_000_000
# How many of the first rendered recipients are compared with per-message inlining.
AUTO_VERIFY = 3


def _load_tree(env: Any, name: str, seen: dict[str, str], unnamed: set[str]) -> None:
    """Compile ``name`` and every template it extends or includes (recursively);
    a template that includes one whose name is known only as it renders
    (``{% include contact.lang ~ "/footer.html" %}``) goes into ``unnamed``."""
    if name in seen:
        return
    source, filename, _ = env.loader.get_source(env, name)
    seen[name] = filename
    env.get_template(name)
    for ref in meta.find_referenced_templates(env.parse(source, name, filename)):
        if isinstance(ref, str):
            _load_tree(env, ref, seen, unnamed)
        else:
            unnamed.add(name)


def _check_links(files: Mapping[str, str], resolver: StylesheetResolver) -> None:
    """Refuse remote stylesheets and @import before anything renders: nothing is ever fetched."""
    import re

    for filename in files.values():
        with open(filename, encoding="utf-8") as handle:
            source = handle.read()
        for match in re.finditer(r"<link\b[^>]*>", source, re.IGNORECASE):
            attrs = tag_attributes(match.group(0))
            if "stylesheet" in attrs.get("rel", "").lower().split() and "{" not in attrs.get("href", ""):
                line = source.count("\n", 0, match.start()) + 1
                saved = resolver.origin
                resolver.origin = f"{display_path(filename)}:{line}"
                try:
                    resolver.read(attrs.get("href", ""))
                finally:
                    resolver.origin = saved
        for css in style_blocks(source):
            check_css_imports(css, display_path(filename))


class CompiledTemplate:
    """One template folder, ready to render for any number of recipients."""

    def __init__(
        self,
        *,
        name: str,
        root: Path,
        html: Template,
        fast: Template | None,
        text: Template | None,
        subject: Template | None,
        resolver: StylesheetResolver,
        files: Mapping[str, str],
        fallback_reason: str | None,
        text_once: TextOnceTemplate | None = None,
        text_reason: str | None = None,
        reads_unnamed: bool = False,
    ) -> None:
        self.name = name
        self.root = root
        self.folder = root / name
        self.files = dict(files)  # template name -> file path, everything this template reads
        # True when it includes a template whose name only its data gives:
        # which files it reads is not known before it renders.
        self.reads_unnamed = reads_unnamed
        self.fallback_reason = fallback_reason
        # Why the text part is generated per message (None with message.txt or once per template).
        self.text_reason = None if text is not None or text_once is not None else text_reason
        self._html = html
        self._fast = fast
        self._text = text
        self._text_once = text_once
        # Messages whose text part was converted from their HTML although the
        # template has a text made once (their data needed it).
        self.text_converted = 0
        self._subject = subject
        self._resolver = resolver
        self._text_env = make_environment(root, html=False)
        self._subject_cache: dict[str, Template] = {}
        # The first few recipients are checked against per-message inlining
        # even if the caller never calls verify_inlining.
        self._auto_verify = AUTO_VERIFY
        # Which version of the templates folder this was compiled from
        # (``compile_template``); None when a file changed while it compiled.
        self.stamp: bytes | None = None
        # Which version of this template it is, as a short hex digest of the
        # files it reads (``compile_template``): unlike ``stamp``, the same
        # whatever else changes in the folder (another template, an image
        # copied with a new time), so a campaign can compare the version a
        # later run sends with the one its first run sent. None with ``stamp``.
        self.version: str | None = None

    # -- introspection ---------------------------------------------------
    @property
    def inline_once(self) -> bool:
        """True while the inline-once fast path is in use."""
        return self._fast is not None

    @property
    def has_text(self) -> bool:
        return self._text is not None

    @property
    def text_once(self) -> bool:
        """True while the text part is generated from the HTML once per template."""
        return self._text_once is not None

    @property
    def text_source(self) -> str:
        """Where the text part comes from, in words, for ``render -v`` and ``lint``."""
        if self._text is not None:
            return "from message.txt"
        if self._text_once is not None:
            return "generated from the HTML once per template"
        return f"generated from the HTML per message: {self.text_reason}"

    @property
    def has_subject(self) -> bool:
        return self._subject is not None

    def _disable_fast_path(self, reason: str) -> None:
        self._fast = None
        self.fallback_reason = reason
        if self._text_once is not None:  # it was made from the inlined template
            self._disable_text_once(f"the CSS is inlined per message ({reason})")

    def _disable_text_once(self, reason: str) -> None:
        self._text_once = None
        self.text_reason = reason

    # -- rendering -------------------------------------------------------
    def _call(self, template: Template, variables: dict[str, Any]) -> str:
        try:
            return template.render(variables)
        except Exception as exc:  # every Jinja failure becomes one line with file:line
            raise translate(exc, self.root, variables) from None

    def variables(self, ctx: RenderContext) -> dict[str, Any]:
        variables = ctx.variables()
        subject = self.render_subject(variables)
        # Inside the templates campaign.subject is the subject actually sent.
        variables["campaign"] = {**ctx.campaign, "subject": subject}
        return variables

    # Complexity: two sources of the subject (the campaign's, compiled once and cached, or subject.txt), each checked the same way.
    def render_subject(self, variables: dict[str, Any]) -> str:
        """The campaign's own subject (``--subject``) when it has one, else ``subject.txt``."""
        raw = str(variables["campaign"].get("subject") or "")
        if self._subject is not None and not raw:
            origin = ""  # named only on error: display_path costs a getcwd per message
            raw = self._call(self._subject, variables)
        else:
            origin = "the campaign subject"
            if "{{" in raw or "{%" in raw:
                template = self._subject_cache.get(raw)
                if template is None:
                    try:
                        template = self._text_env.from_string(raw)
                    except Exception as exc:
                        raise TemplateError(f"Subject: {translate(exc, self.root).message}") from None
                    self._subject_cache[raw] = template
                raw = self._call(template, variables)
        subject = raw.strip()
        if not subject:
            raise self._no_subject("is missing or renders empty")
        try:
            return check_header_value("Subject", subject)
        except HeaderInjectionError as exc:
            origin = origin or display_path(self.folder / "subject.txt")
            raise HeaderInjectionError(f"{origin}: {exc.message}", hint=exc.hint) from None

    def check_subject(self, subject: str | None) -> None:
        """Refuse, before anything renders, messages that could have no
        subject at all: no ``subject`` of their own and no subject.txt."""
        if not (subject or "").strip() and self._subject is None:
            raise self._no_subject("is missing")

    def _no_subject(self, why: str) -> TemplateError:
        return TemplateError(f"No subject for template {self.name!r}: {display_path(self.folder / 'subject.txt')} {why}",
                             hint="add subject.txt to the template folder or pass --subject")

    def _reference_html(self, variables: dict[str, Any]) -> str:
        rendered = self._within_bound(self._call(self._html, variables))
        return inline_css(self._resolver.expand(rendered))

    def _within_bound(self, html: str) -> str:
        """``html``, unless it passes the bound on a message's HTML (a runaway loop)."""
        if len(html) > MAX_HTML_CHARS:
            raise TemplateError(f"{display_path(self.folder / 'message.html')}: rendered HTML exceeds {MAX_HTML_CHARS:,} characters")
        return html

    def render_html(self, variables: dict[str, Any], *, per_message: bool = False) -> str:
        """The inlined HTML: fast path unless disabled or ``per_message``."""
        fast = self._fast
        if fast is None or per_message:
            return self._reference_html(variables)
        try:
            html = fast.render(variables)
        except Exception:
            # Errors must name the template file and line, which only the
            # original template can; if it succeeds, the fast path is wrong.
            html = self._reference_html(variables)
            self._disable_fast_path("the inlined template failed where the original did not")
            return html
        return self._within_bound(html)

    def render_text_source(self, variables: dict[str, Any]) -> str | None:
        """``message.txt`` rendered, before any footer is added (None without one)."""
        if self._text is None:
            return None
        return normalize_text(self._call(self._text, variables))

    def render_text_once(self, variables: dict[str, Any]) -> str | None:
        """The text part from the template generated once, before any footer;
        None where this recipient's data (or the template) needs the
        per-message conversion of the HTML."""
        once = self._text_once
        if once is None:
            return None
        try:
            return once.render(variables)
        except NeedsFullText:
            self.text_converted += 1
            return None
        except Exception:  # noqa: BLE001 - the HTML rendered, so the generated template is wrong here
            self._disable_text_once("the text template made once failed where the HTML did not")
            return None

    def render_text(self, variables: dict[str, Any], html: str) -> str:
        text = self.render_text_source(variables)
        if text is None:
            text = self.render_text_once(variables)
        if text is None:
            text = html_to_text(html)
        sender = variables["sender"]
        return ensure_footer(
            text,
            sender_name=str(sender.get("name") or ""),
            postal_address=str(sender.get("postal_address") or ""),
            unsubscribe_url=str(variables["unsubscribe_url"] or ""),
            language=str(variables.get("language") or "en"),
        )

    def render(self, ctx: RenderContext) -> RenderedParts:
        """Subject, text part and inlined HTML for one recipient.

        Raises ``TemplateError`` (undefined variable, sandbox violation, ...)
        naming the variable and ``file:line``, and ``HeaderInjectionError``
        when the rendered subject contains a line break or control character.
        """
        if self._auto_verify > 0 and self._fast is not None:
            self._auto_verify -= 1
            self.verify_inlining([ctx])
        variables = self.variables(ctx)
        html = self.render_html(variables)
        text = self.render_text(variables, html)
        return RenderedParts(subject=variables["campaign"]["subject"], text=text, html=html)

    def verify_inlining(self, contexts: Iterable[RenderContext]) -> bool:
        """Compare the fast path with per-message inlining on sample recipients.

        Returns True when the fast path is in use and matched every sample;
        on the first difference it switches this template to per-message
        inlining (``fallback_reason`` says why) and returns False.
        """
        if self._fast is None:
            return False
        for number, ctx in enumerate(contexts, 1):
            variables = self.variables(ctx)
            expected = canonical_html(self._reference_html(variables))
            try:
                fast_html: str | None = self._fast.render(variables)
            except Exception:
                fast_html = None
            if fast_html is None or canonical_html(fast_html) != expected:
                self._disable_fast_path(f"inlining once differed from per-message inlining for sample recipient {number}")
                return False
            if self._text_once is not None:
                once = self.render_text_once(variables)
                if once is not None and once != html_to_text(fast_html):
                    self._disable_text_once(f"the text made once differed from the per-message text for sample recipient {number}")
        return True


def _sample_check(template: CompiledTemplate) -> None:
    """Compare both paths once with the built-in sample contact, where it renders."""
    from .preview import preview_context

    ctx = preview_context(now=datetime(2026, 1, 15, 9, 30, tzinfo=timezone.utc), subject="Preview")
    try:
        template._reference_html(template.variables(ctx))
    except Exception:  # e.g. custom attributes the sample contact lacks
        return
    template.verify_inlining([ctx])


def list_templates(templates_dir: Path) -> list[str]:
    """The names of the templates in ``templates_dir`` (folders with message.html, not _layouts)."""
    try:
        return sorted(p.parent.name for p in Path(templates_dir).glob("*/message.html")
                      if not p.parent.name.startswith("_"))
    except OSError:
        return []


def _templates_hint(root: Path, name: str) -> str:
    import difflib

    names = list_templates(root)
    if not names:
        return f"a template is a folder {display_path(root)}/NAME/ with message.html"
    guess = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    return (f"did you mean {guess[0]}? " if guess else "") + f"templates: {', '.join(names)}"


def _load(root: Path, name: str, html_env: Any, files: dict[str, str],
          unnamed: set[str]) -> tuple[Template, Template | None, Template | None]:
    """The HTML, text and subject templates of ``name`` (text and subject when
    the folder has them); every file they read goes into ``files``, and
    those that include a template named only as they render into ``unnamed``."""
    folder = root / name
    text_env = make_environment(root, html=False)
    try:
        _load_tree(html_env, f"{name}/message.html", files, unnamed)
        html = html_env.get_template(f"{name}/message.html")
        text = subject = None
        if (folder / "message.txt").is_file():
            _load_tree(text_env, f"{name}/message.txt", files, unnamed)
            text = text_env.get_template(f"{name}/message.txt")
        if (folder / "subject.txt").is_file():
            _load_tree(text_env, f"{name}/subject.txt", files, unnamed)
            subject = text_env.get_template(f"{name}/subject.txt")
    except Exception as exc:
        raise translate(exc, root) from None
    return html, text, subject


def _text_made_once(root: Path, prepared: Any) -> tuple[TextOnceTemplate | None, str]:
    """The text template made once from the inlined HTML, or why not."""
    generated = prepare_text_once(prepared.placeholders, prepared.tags, prepared.nonce)
    if generated.source is None:
        return None, generated.reason or ""
    try:
        return compile_text_once(root, generated.source), ""
    except Exception as exc:
        return None, f"the generated text template did not compile: {exc}"


# Templates compiled in this process, by folder and name, with the contents
# they were compiled from: a send compiles its template four times before the
# first message (the subject for the plan, its check, the message factory),
# ~40 ms each for init's newsletter (benchmarks/README.md).
_COMPILED: dict[tuple[str, str], tuple[bytes, CompiledTemplate]] = {}
_COMPILED_KEPT = 16
# Files up to this size (templates, partials, stylesheets) are read for the
# fingerprint; larger ones (images kept beside them, say) are known by size
# and modification time, so that looking costs little.
_FINGERPRINT_READS = 64 * 1024


def _fingerprint(root: Path) -> bytes:
    """What every file under ``root`` holds (its name, and its bytes, or its
    size and time for a large one): a template, layout, partial or
    stylesheet changed since a compile shows here."""
    digest = hashlib.blake2b(digest_size=16)
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for file in sorted(names):
            path = os.path.join(folder, file)
            try:
                info = os.stat(path)
                digest.update(f"{os.path.relpath(path, root)}\0{info.st_size}\0".encode("utf-8", "surrogateescape"))
                if info.st_size <= _FINGERPRINT_READS:
                    with open(path, "rb") as handle:
                        digest.update(handle.read())
                else:
                    digest.update(str(info.st_mtime_ns).encode())
            except OSError:
                digest.update(b"?")
    return digest.digest()


# How often a template is compiled again when a file changed while it compiled.
_COMPILE_TRIES = 3


def compile_template(templates_dir: Path, name: str) -> CompiledTemplate:
    """Load, check and prepare ``templates_dir/name/`` for rendering.

    Raises ``NotFoundError`` when the folder has no ``message.html`` and
    ``TemplateError`` (naming ``file:line``) for anything that cannot render.
    Compiled again only when a file under ``templates_dir`` has changed
    (every file the template reads is compared whole).
    The result's ``stamp`` says which version of the files it was compiled
    from, so another process can tell whether it compiled the same one (a
    send's render workers do); a file saved while it compiled is read again,
    and if the folder will not hold still, ``stamp`` is None. Its
    ``version`` says which version of this template's own files it is (what
    a campaign compares between its runs), None with ``stamp``.
    """
    root = Path(templates_dir)
    key = (str(root.resolve()), name)
    stamp = _fingerprint(root)
    kept = _COMPILED.get(key)
    if kept is not None and kept[0] == stamp and _stamp(stamp, _contents(kept[1])) == kept[1].stamp:
        return kept[1]
    for _ in range(_COMPILE_TRIES):
        template = _compile_template(root, name)
        after = _fingerprint(root)
        if after == stamp:
            break
        stamp = after  # a file changed while it compiled: which version it holds is not known
    else:
        return template  # stamp stays None: matches no other compile, and is not kept
    contents = _contents(template)
    template.stamp = _stamp(stamp, contents)
    # A template that includes files named only as it renders may read any
    # file of the folder: its version is then the folder's.
    template.version = (template.stamp if template.reads_unnamed else contents).hex()[:16]
    if len(_COMPILED) >= _COMPILED_KEPT:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[key] = (stamp, template)
    return template


def _stamp(fingerprint: bytes, contents: bytes) -> bytes:
    """The folder's fingerprint together with the template's ``_contents``:
    equal for two compiles of the same files."""
    return hashlib.blake2b(fingerprint + contents, digest_size=16).digest()


def _contents(template: CompiledTemplate) -> bytes:
    """A digest of the whole of every file the template reads, by its name
    inside the templates folder, a large one too (which the folder's
    fingerprint knows by its size and time only, and an edit can keep both)."""
    digest = hashlib.blake2b(digest_size=16)
    used = {**template.files, **{f"<link> {href}": path for href, path in template._resolver.files.items()}}
    for name, path in sorted(used.items()):
        digest.update(f"\0{name}\0".encode("utf-8", "surrogateescape"))
        try:
            with open(path, "rb") as handle:
                digest.update(handle.read())
        except OSError:
            digest.update(b"?")
    return digest.digest()


# Complexity: the steps of loading a template in order, each failure with its own message.
def _compile_template(root: Path, name: str) -> CompiledTemplate:
    name = name.strip("/")
    check_template_path(name)
    if name.split("/")[0].startswith("_") and not is_confirm_template(name):
        raise TemplateError(f"{name!r} is a layout or partial folder, not a template")
    folder = root / name
    html_path = folder / "message.html"
    if not html_path.is_file():
        raise NotFoundError(
            f"Template {name!r} not found: {display_path(html_path)} does not exist",
            hint=_templates_hint(root, name),
        )
    html_env = make_environment(root, html=True)
    files: dict[str, str] = {}
    unnamed: set[str] = set()
    html, text, subject = _load(root, name, html_env, files, unnamed)
    resolver = StylesheetResolver(root=root, folder=folder, origin=display_path(html_path))
    html_files = {k: v for k, v in files.items() if not k.endswith(".txt")}
    _check_links(html_files, resolver)

    prepared = prepare_inline_once(root, name, resolver)
    fast: Template | None = None
    reason = prepared.reason
    if prepared.source is not None:
        try:
            fast = html_env.from_string(prepared.source)
        except Exception as exc:
            reason = f"the inlined template did not compile: {exc}"
    text_once: TextOnceTemplate | None = None
    text_reason = f"the CSS is inlined per message ({reason})"
    if fast is not None and text is None and prepared.placeholders is not None:
        text_once, text_reason = _text_made_once(root, prepared)
    template = CompiledTemplate(
        name=name, root=root, html=html, fast=fast, text=text, subject=subject,
        resolver=resolver, files=files, fallback_reason=reason, text_once=text_once, text_reason=text_reason,
        reads_unnamed=bool(unnamed),
    )
    if fast is not None:
        _sample_check(template)
    return template
