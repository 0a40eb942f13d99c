"""Templates to rendered parts: sandbox, strictness, escaping, CSS inlining and the text part.

The inline-once fast path is compared with per-message inlining on templates
built to break it: loops between table rows, conditionals, Jinja inside
attributes, layouts and partials; templates where the styles depend on the
data must be detected and rendered per message instead.
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mailcli.errors import HeaderInjectionError, NotFoundError, TemplateError
from mailcli.render import RenderContext, compile_template
from mailcli.render.inline import canonical_html
from mailcli.render.preview import SAMPLE_SENDER

REPO = Path(__file__).resolve().parents[2]
SCAFFOLD = REPO / "mailcli" / "scaffold" / "templates"
NOW = datetime(2026, 3, 14, 9, 26, 53, tzinfo=timezone.utc)
UNSUB = "https://news.example.org/unsubscribe?t=TOKEN123"


def ctx(subject: str = "Spring news", **contact: str) -> RenderContext:
    """A context for Ann; ``subject`` is the campaign's own (``send --subject``), empty for subject.txt's."""
    base = {"email": "ann@example.org", "first_name": "Ann", "last_name": "Smith"}
    base.update(contact)
    return RenderContext(
        contact=base, campaign={"name": "spring", "subject": subject}, sender=dict(SAMPLE_SENDER),
        unsubscribe_url=UNSUB, now=NOW,
    )


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def tdir(tmp_path: Path) -> Path:
    return tmp_path / "templates"


FOOTER = '<p>{{ sender.name }}, {{ sender.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'


def page(body: str, style: str = "p { color: #123456; }") -> str:
    return f"<!DOCTYPE html>\n<html><head><style>{style}</style></head>\n<body>\n{body}\n{FOOTER}\n</body></html>\n"


# ---------------------------------------------------------------------------
# The example newsletter


def test_newsletter_parts_inline_styles_and_keeps_media_queries() -> None:
    template = compile_template(SCAFFOLD, "newsletter")
    assert template.inline_once, template.fallback_reason
    parts = template.render(ctx(subject=""))
    assert parts.subject == "Ann, your March update from Example Sender"
    # class rules became style attributes...
    assert re.search(r'<td class="masthead"[^>]*style="[^"]*background-color: #1f3a68', parts.html)
    assert re.search(r'<a class="button"[^>]*style="[^"]*display: inline-block', parts.html)
    # ...and only at-rules stay in <style>, for clients that honour them
    styles = re.findall(r"<style>(.*?)</style>", parts.html, re.DOTALL)
    assert len(styles) == 1
    assert "@media only screen and (max-width: 620px)" in styles[0]
    assert "@media (prefers-color-scheme: dark)" in styles[0]
    assert ".masthead {" not in styles[0].split("@media")[0]
    assert '<meta name="color-scheme" content="light dark">' in parts.html
    # the loop over articles wrote three rows inside the one table
    assert parts.html.count('<td class="article"') == 3
    assert parts.html.count("<tbody>") == 2  # outer page table and container, not one per row
    assert "Hi Ann," in parts.html and "Hi Ann," in parts.text
    for part in (parts.html, parts.text):
        assert UNSUB in part.replace("&amp;", "&")
        assert "Keizersgracht 1, 1015 AA Amsterdam" in part
        assert "object to direct marketing" in part


def test_newsletter_greets_without_a_first_name() -> None:
    parts = compile_template(SCAFFOLD, "newsletter").render(ctx(subject="", first_name=""))
    assert "<h1" in parts.html and ">Hello,</h1>" in parts.html
    assert "Hello," in parts.text and "Hi ," not in parts.text
    assert parts.subject.startswith("Your March update")


def test_newsletter_fast_path_matches_per_message_inlining() -> None:
    template = compile_template(SCAFFOLD, "newsletter")
    samples = [ctx(), ctx(first_name=""), ctx(first_name="Zoë <b>&\"'", last_name="O'Brien")]
    assert template.verify_inlining(samples)
    for sample in samples:
        variables = template.variables(sample)
        assert canonical_html(template.render_html(variables)) == canonical_html(
            template.render_html(variables, per_message=True)
        )


def test_example_project_uses_the_scaffold_templates() -> None:
    # examples/ is a runnable project; its templates are the ones init ships.
    assert (REPO / "examples" / "templates").resolve() == SCAFFOLD.resolve()
    assert (REPO / "examples" / "contacts.csv").resolve() == (SCAFFOLD.parent / "contacts.csv").resolve()


# ---------------------------------------------------------------------------
# Escaping, strictness, sandbox


def test_contact_values_are_html_escaped_but_plain_in_text_and_subject(tdir: Path) -> None:
    write(tdir, {
        "t/message.html": page('<p title="{{ contact.first_name }}">Hi {{ contact.first_name }}</p>'),
        "t/message.txt": "Hi {{ contact.first_name }}\n{{ unsubscribe_url }}\n",
        "t/subject.txt": "For {{ contact.first_name }}\n",
    })
    evil = '<script>alert("x")</script> & Co\'s'
    parts = compile_template(tdir, "t").render(ctx(subject="", first_name=evil))
    assert "<script>" not in parts.html
    html = canonical_html(parts.html)  # &#39; and ' are the same to every parser
    assert "Hi &lt;script&gt;alert(\"x\")&lt;/script&gt; &amp; Co's" in html
    assert 'title="<script>alert(&quot;x&quot;)</script> &amp; Co\'s"' in html  # an attribute value, not markup
    assert f"Hi {evil}\n" in parts.text
    assert parts.subject == f"For {evil}"


def test_undefined_variable_names_variable_file_and_line(tdir: Path) -> None:
    write(tdir, {"t/message.html": page("<p>one</p>\n<p>{{ contact.frist_name }}</p>"), "t/subject.txt": "S"})
    template = compile_template(tdir, "t")
    with pytest.raises(TemplateError) as caught:
        template.render(ctx())
    message = caught.value.message
    assert "contact.frist_name" in message
    assert re.search(r"t/message\.html:5: ", message), message
    assert "did you mean contact.first_name?" in message


def test_undefined_variable_in_a_layout_names_the_layout(tdir: Path) -> None:
    write(tdir, {
        "_layouts/base.html": "<html><body>\n{% block content %}{% endblock %}\n{{ sender.nmae }}\n</body></html>",
        "t/message.html": '{% extends "_layouts/base.html" %}{% block content %}<p>x</p>{% endblock %}',
        "t/subject.txt": "S",
    })
    with pytest.raises(TemplateError, match=r"_layouts/base\.html:3: undefined variable sender\.nmae \(did you mean sender\.name\?\)"):
        compile_template(tdir, "t").render(ctx())


def test_syntax_error_in_a_partial_fails_at_compile_with_file_and_line(tdir: Path) -> None:
    write(tdir, {
        "_partials/footer.html": "<p>ok</p>\n{% if x %}\n<p>never closed</p>\n",
        "t/message.html": page('{% include "_partials/footer.html" %}'),
    })
    with pytest.raises(TemplateError, match=r"_partials/footer\.html:\d+: .*(endif|end of template)"):
        compile_template(tdir, "t")


@pytest.mark.parametrize("expression", [
    "''.__class__.__mro__[1].__subclasses__()",
    "contact.__class__",
    "now.__class__.__init__.__globals__",
    "contact.update({'email': 'x@evil.example'})",
    "cycler.__init__.__globals__",
])
def test_sandbox_refuses_escapes(tdir: Path, expression: str) -> None:
    write(tdir, {"t/message.html": page("<p>{{ " + expression + " }}</p>"), "t/subject.txt": "S"})
    with pytest.raises(TemplateError) as caught:
        compile_template(tdir, "t").render(ctx())
    assert "t/message.html:4" in caught.value.message
    assert "\n" not in caught.value.message


def test_columns_named_like_dict_methods_are_data(tdir: Path) -> None:
    # A CSV column "items" or "keys" is what the author means, not dict.items.
    write(tdir, {"t/message.html": page("<p>{{ contact.items }} / {{ contact.keys }}</p>"), "t/subject.txt": "S"})
    html = compile_template(tdir, "t").render(ctx(items="3 books", keys="two")).html
    assert "3 books / two" in html


@pytest.mark.parametrize("reference", ["../outside.html", "/etc/passwd", "t/../../outside.html"])
def test_template_paths_cannot_leave_the_templates_folder(tdir: Path, reference: str) -> None:
    (tdir.parent / "outside.html").write_text("SECRET", encoding="utf-8")
    write(tdir, {"t/message.html": page('{% include "' + reference + '" %}'), "t/subject.txt": "S"})
    with pytest.raises(TemplateError) as caught:
        compile_template(tdir, "t").render(ctx())
    assert "SECRET" not in caught.value.message


def test_template_name_with_dotdot_is_refused(tdir: Path) -> None:
    write(tdir, {"t/message.html": page("x")})
    with pytest.raises(TemplateError, match="not allowed"):
        compile_template(tdir / "t", "../t")
    with pytest.raises(NotFoundError):
        compile_template(tdir, "missing")


def test_symlink_out_of_the_templates_folder_is_not_followed(tdir: Path) -> None:
    (tdir.parent / "secret.html").write_text("SECRET", encoding="utf-8")
    write(tdir, {"t/message.html": page('{% include "_partials/link.html" %}'), "t/subject.txt": "S"})
    (tdir / "_partials").mkdir()
    (tdir / "_partials" / "link.html").symlink_to(tdir.parent / "secret.html")
    with pytest.raises(TemplateError, match="not found"):
        compile_template(tdir, "t").render(ctx())


def test_rendered_html_is_capped(tdir: Path) -> None:
    write(tdir, {"t/message.html": page("{% for i in range(90000) %}<p>0123456789</p>{% endfor %}"), "t/subject.txt": "S"})
    with pytest.raises(TemplateError, match="exceeds"):
        compile_template(tdir, "t").render(ctx())


# ---------------------------------------------------------------------------
# Subject


def test_subject_from_the_campaign_else_subject_txt_else_error(tdir: Path) -> None:
    write(tdir, {"a/message.html": page("x"), "a/subject.txt": "  Hello {{ contact.first_name }}  \n",
                 "b/message.html": page("x")})
    assert compile_template(tdir, "a").render(ctx(subject="")).subject == "Hello Ann"
    assert compile_template(tdir, "a").render(ctx(subject="Spring news")).subject == "Spring news"  # --subject wins
    b = compile_template(tdir, "b")
    assert b.render(ctx(subject="Spring news")).subject == "Spring news"
    templated = RenderContext(contact=ctx().contact, campaign={"name": "c", "subject": "News for {{ contact.first_name }}"},
                              sender=ctx().sender, unsubscribe_url=UNSUB, now=NOW)
    assert b.render(templated).subject == "News for Ann"
    empty = RenderContext(contact=ctx().contact, campaign={"name": "c", "subject": ""}, sender=ctx().sender,
                          unsubscribe_url=UNSUB, now=NOW)
    with pytest.raises(TemplateError, match="No subject"):
        b.render(empty)


def test_line_break_from_contact_data_cannot_reach_the_subject(tdir: Path) -> None:
    write(tdir, {"a/message.html": page("x"), "a/subject.txt": "Hi {{ contact.first_name }}"})
    with pytest.raises(HeaderInjectionError, match=r"subject\.txt: Subject header value contains a carriage return"):
        compile_template(tdir, "a").render(ctx(subject="", first_name="x\r\nBcc: evil@example.org"))


# ---------------------------------------------------------------------------
# Text part


def test_text_part_generated_from_html_keeps_links_and_hides_preheader(tdir: Path) -> None:
    write(tdir, {"t/message.html": page(
        '<div class="preheader">Secret preview line</div>\n'
        '<h1>Big news</h1><p>Read <a href="https://example.org/story">the story</a>.</p>',
        style=".preheader { display: none; }")})
    parts = compile_template(tdir, "t").render(ctx())
    assert "Big news" in parts.text
    assert "https://example.org/story" in parts.text
    assert "Secret preview line" not in parts.text
    assert UNSUB in parts.text and "Keizersgracht 1" in parts.text
    assert "\r" not in parts.text and not re.search(r"[ \t]+\n", parts.text)


def test_text_part_always_identifies_sender_and_carries_unsubscribe_url(tdir: Path) -> None:
    write(tdir, {"t/message.html": page("<p>x</p>"), "t/message.txt": "Just a short note.\n"})
    text = compile_template(tdir, "t").render(ctx()).text
    assert text.startswith("Just a short note.\n")
    assert UNSUB in text
    assert "Example Sender, Keizersgracht 1, 1015 AA Amsterdam" in text
    assert "object to direct marketing" in text


def test_footer_not_duplicated_when_text_has_everything(tdir: Path) -> None:
    write(tdir, {"t/message.html": page("<p>x</p>"),
                 "t/message.txt": "Hi\n{{ sender.name }}, {{ sender.postal_address }}\n{{ unsubscribe_url }}\n"})
    text = compile_template(tdir, "t").render(ctx()).text
    assert text.count(UNSUB) == 1 and "-- " not in text


# ---------------------------------------------------------------------------
# Stylesheets: local files are inlined, nothing is ever fetched


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        type(self).requests.append(self.path)
        body = b"p { color: #ff0000; }"
        self.send_response(200)
        self.send_header("Content-Type", "text/css")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def css_server() -> Iterator[tuple[str, list[str]]]:
    _Recorder.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.requests
    finally:
        server.shutdown()
        server.server_close()


def test_local_linked_stylesheet_is_inlined(tdir: Path) -> None:
    write(tdir, {
        "t/style.css": ".note { color: #0a0b0c; } @media (max-width: 400px) { .note { color: #111111; } }",
        "_layouts/shared.css": "h1 { font-size: 30px; }",
        "t/message.html": '<html><head><link rel="stylesheet" href="style.css"><link rel="stylesheet" href="_layouts/shared.css"></head>'
                          '<body><h1>T</h1><p class="note">n</p>' + FOOTER + "</body></html>",
        "t/subject.txt": "S",
    })
    html = compile_template(tdir, "t").render(ctx()).html
    assert 'class="note" style="color: #0a0b0c;"' in html
    assert '<h1 style="font-size: 30px;">' in html
    assert "@media (max-width: 400px)" in html
    assert "<link" not in html


@pytest.mark.parametrize("form", [
    '<link rel="stylesheet" href="{url}/remote.css">',
    '<link href="{url}/remote.css" rel="stylesheet" type="text/css">',
    "<style>@import url({url}/remote.css); p {{ color: red; }}</style>",
])
def test_remote_stylesheet_is_refused_and_never_fetched(tdir: Path, css_server: tuple[str, list[str]], form: str) -> None:
    url, requests = css_server
    write(tdir, {"t/message.html": "<html><head>\n" + form.format(url=url) + "\n</head><body>" + FOOTER + "</body></html>",
                 "t/subject.txt": "S"})
    with pytest.raises(TemplateError) as caught:
        compile_template(tdir, "t")
    assert "t/message.html" in caught.value.message
    assert "network" in caught.value.message or "fetch" in caught.value.message
    assert requests == []


def test_remote_stylesheet_from_data_is_refused_at_render_and_never_fetched(
    tdir: Path, css_server: tuple[str, list[str]]
) -> None:
    url, requests = css_server
    write(tdir, {"t/message.html": '<html><head><link rel="stylesheet" href="{{ contact.css }}"></head><body>' + FOOTER + "</body></html>",
                 "t/subject.txt": "S"})
    template = compile_template(tdir, "t")
    with pytest.raises(TemplateError, match="refused"):
        template.render(ctx(css=f"{url}/x.css"))
    with pytest.raises(TemplateError, match="refused"):
        template.render(ctx(css=f"//127.0.0.1:{url.rsplit(':', 1)[1]}/x.css"))
    assert requests == []


# ---------------------------------------------------------------------------
# Inline once == inline per message, on templates built to break it

TRICKY = {
    "loop_between_rows": page(
        "<table class=\"list\">\n{% for item in contact.things.split(',') %}\n<tr><td class=\"cell\">{{ item }}</td></tr>\n{% endfor %}\n</table>",
        style="p { color: #123456; } .cell { padding: 4px; color: #222222; } table.list { width: 100%; }"),
    "loop_in_explicit_tbody": page(
        "<table><thead><tr><th>H</th></tr></thead><tbody>\n{% for i in range(3) %}<tr><td>{{ i }}</td></tr>{% endfor %}\n</tbody></table>\n"
        "<table>{% for i in range(2) %}<tr><td>{{ loop.index }}</td></tr>{% endfor %}</table>",
        style="td { border: 1px solid #000000; } th { font-weight: bold; }"),
    "conditionals": page(
        "{% if contact.first_name %}<h1 class=\"hi\">Hi {{ contact.first_name }}</h1>{% else %}<h1>Hello</h1>{% endif %}\n"
        "<table>{% if contact.last_name %}<tr><td>{{ contact.last_name }}</td></tr>{% endif %}<tr><td>always</td></tr></table>\n"
        "<p>{% if contact.first_name == 'Ann' %}Ann!{% elif contact.first_name %}Other{% else %}Nobody{% endif %}</p>",
        style="h1 { font-size: 20px; } .hi { color: #010203; } td { padding: 2px; }"),
    "attributes": page(
        '<p><a href="https://example.org/u/{{ contact.email }}?x=1&amp;y={{ contact.first_name|urlencode }}">link</a></p>\n'
        '<p><img src="https://img.example.org/{{ contact.last_name }}.png" alt="{{ contact.first_name }}\'s picture" width="10"></p>\n'
        '<p><a href="{% if contact.first_name %}https://a.example.org/{% else %}https://b.example.org/{% endif %}" title="{{ contact.last_name }}">t</a></p>',
        style="a { color: #0000ff; } img { border: 0; }"),
    "layout_partials_super": None,  # written below
    "title_and_whitespace_control": (
        "<!DOCTYPE html><html><head><title>{{ campaign.subject }} for {{ contact.first_name }}</title><style>p { margin: 0; }</style></head><body>\n"
        "<ul>\n{%- for w in ['a', 'b', 'c'] %}\n  <li><p>{{ w }}</p></li>\n{%- endfor %}\n</ul>\n"
        "{% set total = 3 %}<p>{{ total * 2 }} items</p>\n" + FOOTER + "\n</body></html>"),
    "nested_loops_and_include": None,  # written below
    "entities_and_text": page(
        "<p>Fish &amp; chips for {{ contact.first_name }} &copy; {{ now.year }} &nbsp;</p>\n<table>{{ contact.first_name }}<tr><td>x</td></tr></table>"),
}


@pytest.fixture
def tricky(tdir: Path) -> Path:
    files = {f"{name}/message.html": body for name, body in TRICKY.items() if body is not None}
    files.update({
        "_layouts/base.html": '<!DOCTYPE html><html><head><title>{% block title %}Base{% endblock %}</title>'
                              "<style>.box { padding: 8px; } td { color: #333333; } h2 { margin: 0; }</style></head><body>\n"
                              "<table>\n{% block rows %}<tr><td>default</td></tr>{% endblock %}\n</table>\n"
                              '{% include "_partials/foot.html" %}\n</body></html>',
        "_partials/foot.html": '<div class="box">' + FOOTER + "</div>",
        "_partials/row.html": "<tr><td>{{ group|length }}: {{ item }}</td></tr>",
        "layout_partials_super/message.html":
            '{% extends "_layouts/base.html" %}\n{% set greeting = "Hello " ~ contact.first_name %}\n'
            "{% block title %}{{ greeting }} - {{ super() }}{% endblock %}\n"
            "{% block rows %}{{ super() }}\n{% for item in ['x', 'y'] %}<tr><td><h2>{{ greeting }} {{ item }}</h2></td></tr>{% endfor %}{% endblock %}",
        "nested_loops_and_include/message.html": page(
            "<table>\n{% for group in [['a', 'b'], ['c']] %}\n{% for item in group %}\n"
            '{% include "_partials/row.html" %}\n{% endfor %}\n{% endfor %}\n</table>',
            style="td { padding: 3px; } p { color: #444444; }"),
    })
    for name in TRICKY:
        files[f"{name}/subject.txt"] = "Subject for {{ contact.first_name }}"
    return write(tdir, files)


SAMPLES = [
    {"first_name": "Ann", "last_name": "Smith", "things": "one,two,three"},
    {"first_name": "", "last_name": "", "things": "solo"},
    {"first_name": "Zoë <em>&\"'", "last_name": "O'Brien & Sons", "things": "a&b,<c>,\"d\""},
    {"first_name": "Bob", "last_name": "", "things": ",,"},
]


@pytest.mark.parametrize("name", list(TRICKY))
def test_inline_once_equals_per_message_inlining(tricky: Path, name: str) -> None:
    template = compile_template(tricky, name)
    assert template.inline_once, template.fallback_reason
    for sample in SAMPLES:
        variables = template.variables(ctx(**sample))
        fast = template.render_html(variables)
        slow = template.render_html(variables, per_message=True)
        assert canonical_html(fast) == canonical_html(slow), name
        assert 'style="' in fast
    assert template.verify_inlining([ctx(**s) for s in SAMPLES])
    assert template.inline_once


def test_loop_between_rows_stays_in_one_table(tricky: Path) -> None:
    html = compile_template(tricky, "loop_between_rows").render(ctx(things="one,two,three")).html
    table = html[html.index('<table class="list"'):html.index("</table>")]
    assert table.count("<tbody>") == 1
    assert table.count('<td class="cell" style="padding: 4px;color: #222222;">') == 3


FALLBACKS = {
    "class": ('<p class="{{ contact.kind }}">styled by data</p>', ".vip { color: #ff0000; }", "class"),
    "id": ('<p id="{{ contact.kind }}">x</p>', "#vip { color: #ff0000; }", "id"),
    "style_attr": ('<p style="color: {{ contact.kind }}">x</p>', "p { margin: 0; }", "style"),
    "style_block": ("<p>x</p>", "p { color: {{ 'red' }}; }", "<style>"),
    "attribute_selector": ('<p data-tier="{{ contact.kind }}">x</p>', '[data-tier="vip"] { color: #ff0000; }', "data-tier"),
    "structural_selector": ("{% for i in range(3) %}<p>{{ i }}</p>{% endfor %}", "p:first-child { color: #ff0000; }", "first-child"),
    "sibling_selector": ("<h1>x</h1>{% for i in range(2) %}<p>{{ i }}</p>{% endfor %}", "h1 + p { color: #ff0000; }", "+"),
    "macro": ("{% macro b(t) %}<p class=\"vip\">{{ t }}</p>{% endmacro %}{{ b('x') }}", ".vip { color: #ff0000; }", "macro"),
    "safe": ("{{ '<p class=\"vip\">x</p>'|safe }}", ".vip { color: #ff0000; }", "markup"),
    "tag_name": ("<h{{ 1 + 1 }}>x</h2>", "h2 { color: #ff0000; }", "tag"),
}


@pytest.mark.parametrize("name", list(FALLBACKS))
def test_templates_whose_styles_depend_on_data_are_inlined_per_message(tdir: Path, name: str) -> None:
    body, style, reason = FALLBACKS[name]
    write(tdir, {f"{name}/message.html": page(body, style=style), f"{name}/subject.txt": "S"})
    template = compile_template(tdir, name)
    assert not template.inline_once
    assert reason in (template.fallback_reason or "")
    parts = template.render(ctx(kind="vip"))
    variables = template.variables(ctx(kind="vip"))
    assert parts.html == template.render_html(variables, per_message=True)
    if name in ("class", "id", "attribute_selector", "macro", "safe"):
        assert "color: #ff0000" in parts.html  # the data-chosen style really applies


def test_sample_check_at_compile_catches_a_difference(tdir: Path) -> None:
    # Jinja writing half an entity: the parser sees "&" before the placeholder.
    write(tdir, {"t/message.html": page("<p>Fish &{{ 'amp' }}; chips</p>"), "t/subject.txt": "S"})
    template = compile_template(tdir, "t")
    assert not template.inline_once
    assert "differed" in (template.fallback_reason or "")
    assert "Fish &amp; chips" in template.render(ctx()).html


def test_verify_inlining_switches_to_per_message_when_samples_differ(tdir: Path) -> None:
    # contact.city is unknown to the built-in sample, so only real recipients can reveal the difference
    write(tdir, {"t/message.html": page("<p>{{ contact.city }}: fish &{{ 'amp' }}; chips</p>"), "t/subject.txt": "S"})
    template = compile_template(tdir, "t")
    assert template.inline_once
    sample = ctx(city="Delft")
    assert template.verify_inlining([sample]) is False
    assert not template.inline_once
    assert "sample recipient 1" in (template.fallback_reason or "")
    assert "Delft: fish &amp; chips" in template.render(sample).html


def test_render_compares_the_first_recipients_by_itself(tdir: Path) -> None:
    write(tdir, {"t/message.html": page("<p>{{ contact.city }}: fish &{{ 'amp' }}; chips</p>"), "t/subject.txt": "S"})
    template = compile_template(tdir, "t")
    assert template.inline_once
    parts = template.render(ctx(city="Delft"))  # no explicit verify_inlining call
    assert not template.inline_once
    assert "Delft: fish &amp; chips" in parts.html


def test_child_template_top_level_set_is_kept(tdir: Path) -> None:
    write(tdir, {
        "_layouts/l.html": "<html><head><style>p { color: #0f0f0f; }</style></head><body>{% block c %}{% endblock %}" + FOOTER + "</body></html>",
        "t/message.html": '{% extends "_layouts/l.html" %}\n{% set who = contact.first_name ~ "!" %}\n{% block c %}<p>{{ who }}</p>{% endblock %}',
        "t/subject.txt": "S",
    })
    template = compile_template(tdir, "t")
    assert template.inline_once, template.fallback_reason
    assert '<p style="color: #0f0f0f;">Ann!</p>' in template.render(ctx()).html


def test_a_template_changed_since_it_was_compiled_is_compiled_again(tdir: Path) -> None:
    # Compiling is done once per process while the files stay as they are;
    # any change under the templates folder (here a partial, rewritten at
    # once with the same size) is seen by the next compile.
    write(tdir, {"t/message.html": page('<p>{% include "_partials/p.html" %}</p>'),
                 "t/subject.txt": "Hello", "_partials/p.html": "one"})
    first = compile_template(tdir, "t")
    assert compile_template(tdir, "t") is first
    (tdir / "_partials" / "p.html").write_text("two", encoding="utf-8")
    second = compile_template(tdir, "t")
    assert second is not first
    assert "two" in second.render(ctx()).html and "one" not in second.render(ctx()).html


def test_a_templates_version_is_its_own_files_unless_it_includes_by_a_name_its_data_gives(tdir: Path) -> None:
    # A campaign compares the version a resumed run sends with the one its
    # first run sent: another template saved in the folder is no change of
    # this one, an edit to a partial it includes is. A template that picks
    # what it includes by its data may read any file: then any file counts.
    write(tdir, {"t/message.html": page('<p>{% include "_partials/p.html" %}</p>'),
                 "d/message.html": page('<p>{% include "_partials/" ~ contact.lang ~ ".html" %}</p>'),
                 "_partials/p.html": "one", "_partials/en.html": "English"})

    def versions() -> tuple[str | None, str | None]:
        return compile_template(tdir, "t").version, compile_template(tdir, "d").version

    plain, dynamic = versions()
    assert plain is not None and dynamic is not None and plain != dynamic
    write(tdir, {"other/message.html": page("<p>Another template</p>")})
    assert versions()[0] == plain and versions()[1] != dynamic
    write(tdir, {"_partials/p.html": "two"})
    assert versions()[0] != plain
