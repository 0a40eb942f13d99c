"""Templates get their globals as a plain dict, not Jinja's ChainMap over the
environment's: every feature that passes names between templates (extends,
blocks, super, self, include, import with and without context, macros, call
blocks, the globals themselves) must render exactly as plain Jinja renders it,
for one recipient after another."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailcli.render.environment import make_environment

FILES = {
    "_layouts/base.html": (
        "<title>{% block title %}Base {{ sender.name }}{% endblock %}</title>\n"
        "{% block body %}base body{% endblock %}\n"
        "<p>{{ self.title() }}</p>\n"
        "{% include 'partial.html' %}|{% include 'partial.html' without context %}\n"
    ),
    "partial.html": "<p>{{ range(3)|list|join(',') }} {% if contact is defined %}{{ contact.email }}"
                    "{% else %}no contact{% endif %}</p>",
    "macros.jinja": (
        "{% set shared = {'x': contact is defined} %}\n"
        "{% macro hello(name) %}<b>Hello {{ name }}{% if contact is defined %} ({{ contact.first_name }})"
        "{% endif %}</b>{% endmacro %}\n"
        "{% macro rows(n) %}{% for i in range(n) %}<i>{{ loop.index }}/{{ loop.length }}{{ caller() }}</i>"
        "{% endfor %}{% endmacro %}\n"
    ),
    "message.html": (
        "{% extends '_layouts/base.html' %}\n"
        "{% import 'macros.jinja' as plain %}\n"
        "{% import 'macros.jinja' as with_context with context %}\n"
        "{% from 'macros.jinja' import hello, shared with context %}\n"
        "{% from 'macros.jinja' import shared as plain_shared %}\n"
        "{% block title %}{{ super() }} / {{ campaign.subject }}{% endblock %}\n"
        "{% block body %}\n"
        "{{ plain.hello(contact.first_name or 'you') }} {{ with_context.hello('x') }} {{ hello('y') }}"
        " {{ shared.x }} {{ plain_shared.x }} {{ plain.shared.x }}\n"
        "{% call plain.rows(2) %}*{% endcall %}\n"
        "{% set ns = namespace(total=0) %}{% for k in range(4) %}{% set ns.total = ns.total + k %}{% endfor %}"
        "{{ ns.total }}\n"
        "{% set c = cycler('odd', 'even') %}{% set j = joiner('; ') %}"
        "{% for a in [1, 2, 3] %}{{ j() }}<span class=\"{{ c.next() }}\">{{ a }}</span>{% endfor %}\n"
        "{{ dict(a=1)|tojson }} {{ lipsum is defined }} {{ unsubscribe_url }}\n"
        "{% endblock %}\n"
    ),
}


def _plain(root: Path, html: bool) -> jinja2.Environment:
    """Jinja's own sandbox with the same options: the reference."""
    return ImmutableSandboxedEnvironment(loader=jinja2.FileSystemLoader(str(root)), autoescape=html,
                                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _variables(first_name: str, email: str) -> dict[str, object]:
    return {"contact": {"first_name": first_name, "email": email}, "sender": {"name": "Acme & Co"},
            "campaign": {"subject": "<Spring>"}, "unsubscribe_url": "https://news.example.org/u?t=1&x=2"}


@pytest.mark.parametrize("html", [True, False])
def test_templates_render_as_plain_jinja_for_one_recipient_after_another(tmp_path: Path, html: bool) -> None:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    ours = make_environment(tmp_path, html=html).get_template("message.html")
    plain = _plain(tmp_path, html).get_template("message.html")
    recipients = [_variables("Zoë", "zoe@example.org"), _variables("", "<b>@example.org"),
                  _variables("Zoë", "zoe@example.org")]
    for variables in recipients:
        assert ours.render(variables) == plain.render(variables)
    assert "Hello y (Zo" in ours.render(recipients[0])  # imported with context: sees the recipient
    assert "<b>Hello x</b>" not in ours.render(recipients[0])


def test_template_globals_are_the_environments_and_stay_per_template(tmp_path: Path) -> None:
    (tmp_path / "uses.txt").write_text("{% from 'lib.txt' import show %}{{ show() }} {{ greeting }}", encoding="utf-8")
    (tmp_path / "lib.txt").write_text("{% macro show() %}[{{ greeting }}]{% endmacro %}", encoding="utf-8")
    (tmp_path / "other.txt").write_text("{{ greeting is defined }}", encoding="utf-8")
    env = make_environment(tmp_path, html=False)
    own = env.get_template("uses.txt", globals={"greeting": "hi"})
    assert type(own.globals) is dict
    assert own.globals == {**env.globals, "greeting": "hi"}
    # A name only one template has is handed to what it imports, as Jinja does.
    assert own.render({}) == "[hi] hi"
    assert "greeting" not in env.globals
    assert env.get_template("other.txt").render({}) == "False"
