"""The text part generated once per template must be exactly the text the
per-message conversion makes from each message's HTML.

A property test builds random newsletters (paragraphs, headings, lists,
layout tables, links, line breaks, loops over constant and per-contact
lists, conditions with else branches, filters, whitespace of every kind
around the tags) and random contacts (blanks, tabs, line breaks, ``&``,
entities, markup, empty values), and compares the two texts. Templates whose
text layout depends on the data must say so and convert per message.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcli.render import RenderContext, compile_template
from mailcli.render.preview import SAMPLE_SENDER
from mailcli.render.text import ensure_footer, html_to_text

NOW = datetime(2026, 3, 14, 9, 26, 53, tzinfo=timezone.utc)
FIELDS = ("first_name", "last_name", "city", "note", "tags")
STYLE = "<style>p { color: #123456; } .hidden { display: none; }</style>"


def context(contact: dict[str, str], unsubscribe: str = "https://news.example.org/u?t=TOKEN&l=1") -> RenderContext:
    return RenderContext(
        contact={"email": "ann@example.org", **contact}, campaign={"name": "spring", "subject": "Spring"},
        sender=dict(SAMPLE_SENDER), unsubscribe_url=unsubscribe, now=NOW,
    )


def with_footer(text: str) -> str:
    return ensure_footer(text, sender_name=SAMPLE_SENDER["name"], postal_address=SAMPLE_SENDER["postal_address"],
                         unsubscribe_url="https://news.example.org/u?t=TOKEN&l=1")


def write_template(root: Path, body: str, head: str = "") -> None:
    folder = root / "t"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "message.html").write_text(
        f"<!DOCTYPE html>\n<html><head>{STYLE}{head}</head>\n<body>\n{body}\n"
        '<p>{{ sender.name }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n</body></html>\n',
        encoding="utf-8",
    )


def check(root: Path, contacts: list[dict[str, str]]) -> int:
    """Compare both texts for every contact; return how many used the text made once."""
    template = compile_template(root, "t")
    assert template.text_once, template.text_source
    once_count = 0
    for contact in contacts:
        variables = template.variables(context(contact))
        html = template.render_html(variables)
        once = template.render_text_once(variables)
        if once is not None:
            once_count += 1
            assert once == html_to_text(html), html
    return once_count


# ---------------------------------------------------------------------------
# Random templates

blank = st.sampled_from(["", " ", "\n", "  ", "\n  ", " \n\t", "\n\n"])
word = st.sampled_from(["Hello", "news", "from", "Utrecht,", "the", "end.", "&amp;", "caf&eacute;", "a&lt;b", "x", "—", "(see)"])
field = st.sampled_from(FIELDS)
filter_ = st.sampled_from(["", "|upper", "|title", "|trim", "|default('none', true)", "|truncate(12)", "|urlencode",
                           "|replace('a', 'A')", "|length"])


@st.composite
def output(draw: st.DrawFn, looping: bool) -> str:
    sources = ["contact.{f}", "contact.{f}", "sender.name"] + (["item", "loop.index"] if looping else [])
    source = draw(st.sampled_from(sources)).format(f=draw(field))
    return "{{ " + source + ("" if source == "loop.index" else draw(filter_)) + " }}"


def join(draw: st.DrawFn, parts: list[str]) -> str:
    return "".join(draw(blank) + part for part in parts) + draw(blank)


@st.composite
def inline(draw: st.DrawFn, depth: int = 0, looping: bool = False) -> str:
    kinds = ["word", "word", "output", "output", "br"] + (["strong", "link", "if", "span"] if depth < 2 else [])
    parts = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(kinds))
        if kind == "word":
            parts.append(draw(word))
        elif kind == "output":
            parts.append(draw(output(looping)))
        elif kind == "br":
            parts.append("<br>")
        elif kind == "strong":
            parts.append(f"<strong>{draw(inline(depth + 1, looping))}</strong>")
        elif kind == "span":
            parts.append(f'<span class="hidden">{draw(inline(depth + 1, looping))}</span>')
        elif kind == "link":
            href = draw(st.sampled_from(["https://example.org/{{ contact." + draw(field) + "|urlencode }}",
                                         "{{ contact.note }}", "https://example.org/a?b=1&amp;c={{ sender.name }}"]))
            parts.append(f'<a href="{href}">{draw(inline(depth + 1, looping))}</a>')
        else:
            conditions = ["contact.{f}", "not contact.{f}"] + (["loop.first"] if looping else [])
            condition = draw(st.sampled_from(conditions)).format(f=draw(field))
            other = f"{{% else %}}{draw(inline(depth + 1, looping))}" if draw(st.booleans()) else ""
            parts.append(f"{{% if {condition} %}}{draw(inline(depth + 1, looping))}{other}{{% endif %}}")
    return join(draw, parts)


@st.composite
def block(draw: st.DrawFn, depth: int = 0, looping: bool = False) -> str:
    kinds = ["p", "p", "h2", "div"] + (["ul", "table", "for", "if"] if depth < 2 else [])
    kind = draw(st.sampled_from(kinds))
    if kind in ("p", "h2"):
        return f"<{kind}>{draw(inline(0, looping))}</{kind}>"
    if kind == "div":
        inner = ([draw(block(depth + 1, looping)) for _ in range(draw(st.integers(1, 2)))] if depth < 2
                 else [draw(inline(0, looping))])
        return "<div>" + join(draw, inner) + "</div>"
    if kind == "ul":
        loop = looping or draw(st.booleans())
        items = [f"<li>{draw(st.sampled_from(['Item ', 'Point: ']))}{draw(inline(1, loop))}</li>"
                 for _ in range(draw(st.integers(1, 3)))]
        body = join(draw, items)
        return f"<ul>{{% for item in items %}}{body}{{% endfor %}}</ul>" if loop and not looping else f"<ul>{body}</ul>"
    if kind == "table":
        loop = draw(st.booleans())
        rows = "".join(f"<tr><td>{draw(block(depth + 1, looping or loop))}</td></tr>" for _ in range(draw(st.integers(1, 2))))
        role = draw(st.sampled_from(['', ' role="presentation"']))
        if loop:
            rows = f"{{% for item in items %}}{rows}{{% endfor %}}"
        return f"<table{role}>{rows}</table>"
    if kind == "for":
        source = draw(st.sampled_from(["items", "contact.tags.split(',')", "[]"]))
        otherwise = f"{{% else %}}{draw(block(depth + 1, looping))}" if draw(st.booleans()) else ""
        return f"{{% for item in {source} %}}{join(draw, [draw(block(depth + 1, True))])}{otherwise}{{% endfor %}}"
    condition = draw(st.sampled_from(["contact.{f}", "contact.{f} == 'x'"])).format(f=draw(field))
    return f"{{% if {condition} %}}{join(draw, [draw(block(depth + 1, looping))])}{{% endif %}}"


@st.composite
def newsletter(draw: st.DrawFn) -> str:
    blocks = [draw(block()) for _ in range(draw(st.integers(1, 4)))]
    return "{% set items = ['one', 'two & three', ''] %}\n" + join(draw, blocks)


value = st.one_of(
    st.text(alphabet=st.sampled_from("ab Zé,.\t\n&;<>\"'#\u00a0\u2028x"), max_size=10),
    st.sampled_from(["", " ", "Ann", "x", "a,b,,c", "AT&T", "R&D team", "&amp;", "&copy", "caf&eacute;",
                     "  spaced   out  ", "<b>bold</b>", "https://example.org/p?a=1&b=2", "\x07bell"]),
)
contact = st.fixed_dictionaries({name: value for name in FIELDS})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=newsletter(), contacts=st.lists(contact, min_size=1, max_size=4))
def test_text_made_once_equals_the_per_message_text(body: str, contacts: list[dict[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_template(root, body)
        template = compile_template(root, "t")
        if not template.text_once:
            # Only the documented reasons; any other means the generator gave up where it should not.
            assert any(reason in template.text_source for reason in ("starts a list item", "HTML entity", "hidden")), (
                template.text_source, body)
            return
        for person in contacts:
            variables = template.variables(context(person))
            html = template.render_html(variables)
            once = template.render_text_once(variables)
            if once is not None:
                assert once == html_to_text(html), (body, person)


# ---------------------------------------------------------------------------
# Examples


def test_plain_contacts_use_the_text_made_once(tmp_path: Path) -> None:
    write_template(tmp_path, """
<h1>{% if contact.first_name %}Hi {{ contact.first_name }},{% else %}Hello,{% endif %}</h1>
<table role="presentation">
{% for item in ['one', 'two'] %}
<tr><td><p>{{ loop.index }}. {{ item|upper }} for {{ contact.city }}</p>
<p><a href="https://example.org/{{ item }}?r={{ contact.email|urlencode }}">Read</a></p></td></tr>
{% endfor %}
</table>""")
    people = [{"first_name": "Ann", "city": "Utrecht"}, {"first_name": "", "city": ""},
              {"first_name": "  Zoë \t", "city": "Den\nHaag"}]
    assert check(tmp_path, people) == 3


def test_a_line_of_values_that_are_all_empty_goes(tmp_path: Path) -> None:
    write_template(tmp_path, "<ul><li>Item<br>\n{{ contact.note }} {{ contact.tags }}\n{{ contact.city }}</li>"
                             "<li>Point</li></ul><p>{{ contact.city }} {{ contact.note }}</p><p>End</p>")
    assert check(tmp_path, [{"note": "", "tags": "", "city": ""}, {"note": "a", "tags": "", "city": ""},
                            {"note": "", "tags": " ", "city": "x"}]) == 3


def test_values_that_need_the_html_convert_that_message_only(tmp_path: Path) -> None:
    write_template(tmp_path, "<p>Hello {{ contact.first_name }}!</p>")
    template = compile_template(tmp_path, "t")
    assert template.text_once
    for name in ("AT&T", "&copy", "bell\x07"):
        variables = template.variables(context({"first_name": name}))
        assert template.render_text_once(variables) is None
        parts = template.render(context({"first_name": name}))
        assert parts.text == with_footer(html_to_text(parts.html))
    assert template.render_text_once(template.variables(context({"first_name": "R&D team"}))) is not None


def test_an_empty_link_target_converts_that_message(tmp_path: Path) -> None:
    write_template(tmp_path, '<p><a href="{{ contact.note }}">Your page</a></p>')
    template = compile_template(tmp_path, "t")
    empty = template.variables(context({"note": ""}))
    assert template.render_text_once(empty) is None
    assert "Your page" in template.render(context({"note": ""})).text
    full = template.variables(context({"note": "https://example.org/me"}))
    assert "[Your page](https://example.org/me)" in (template.render_text_once(full) or "")


@pytest.mark.parametrize(("body", "reason"), [
    ("<table><tr><th>Name</th><th>City</th></tr><tr><td>{{ contact.first_name }}</td><td>x</td></tr></table>",
     "data table"),
    ("<ol>{% for item in ['a', 'b'] %}<li>{{ item }}</li>{% endfor %}</ol>", "numbered list"),
    ("<pre>{{ contact.first_name }}</pre>", "preformatted"),
    ("<p>{% if contact.city %}<b>in </p><p>{{ contact.city }}{% endif %}</p>", "closes in another"),
    ("<p>AT&amp{{ contact.first_name }}</p>", "HTML entity"),
    ("<p><q>{{ contact.first_name }}</q></p>", "<q>"),
])
def test_templates_whose_text_layout_depends_on_the_data_say_why(tmp_path: Path, body: str, reason: str) -> None:
    write_template(tmp_path, body)
    template = compile_template(tmp_path, "t")
    assert not template.text_once
    assert reason in template.text_source
    parts = template.render(context({"first_name": "Ann", "city": "Utrecht"}))
    assert parts.text == with_footer(html_to_text(parts.html))


def test_message_txt_wins_over_the_generated_text(tmp_path: Path) -> None:
    write_template(tmp_path, "<p>Hello {{ contact.first_name }}</p>")
    (tmp_path / "t" / "message.txt").write_text("Hi {{ contact.first_name }}\n{{ unsubscribe_url }}\n", encoding="utf-8")
    template = compile_template(tmp_path, "t")
    assert not template.text_once and template.text_source == "from message.txt"


def test_a_tag_indented_on_the_line_after_another_is_trimmed_as_jinja_does(tmp_path: Path) -> None:
    # lstrip_blocks drops the indentation before the second tag, then trim_blocks the newline after
    # the first: the words join, in the text made once as in the HTML.
    write_template(tmp_path, "<p>{% if contact.first_name %}Hello{% endif %}\n  {% if contact.city %}Hello{% endif %}Hello</p>\n"
                             "<div>{% if contact.first_name %}<b>A</b>{% endif %}\n  {% if contact.city %}<b>B</b>{% endif %}C</div>")
    people = [{"first_name": "Ann", "city": ""}, {"first_name": ";", "city": "x"}, {"first_name": "", "city": ""}]
    assert check(tmp_path, people) == 3
