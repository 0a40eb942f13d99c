"""Templates of only text and ``{{ field }}`` outputs render without Jinja's
generator; the output (and every error) must be exactly Jinja's."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from mailcli.render.environment import MailTemplate, make_environment

FIELDS = [("contact", "first_name"), ("contact", "city"), ("contact", "items"), ("sender", "name"),
          ("unsubscribe_url", None), ("contact", "missing")]


def _source(pieces: list[str | tuple[str, str | None]]) -> str:
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
        else:
            name, attr = piece
            out.append("{{ " + name + ("." + attr if attr else "") + " }}")
    return "".join(out)


def _jinja(template: jinja2.Template, variables: dict[str, object]) -> str:
    """What Jinja's own compiled code renders, bypassing the flat path."""
    return jinja2.Template.render(template, variables)


def _outcome(render: object, *args: object) -> tuple[str, str]:
    try:
        return "ok", render(*args)  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - compared, not handled
        return "error", f"{type(exc).__name__}: {exc}"


text = st.text(alphabet=st.sampled_from("ab <>&\"'\n{}%#é\u00a0"), max_size=12).filter(
    lambda t: "{{" not in t and "{%" not in t and "{#" not in t and not t.endswith("{"))
values = st.one_of(st.none(), st.integers(), st.text(alphabet="ab<>&\"' é", max_size=8),
                   st.builds(Markup, st.text(alphabet="ab<i>&", max_size=8)))


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.one_of(text, st.sampled_from(FIELDS)), max_size=12),
       contact=st.dictionaries(st.sampled_from(["first_name", "city", "items"]), values),
       html=st.booleans())
def test_flat_render_is_jinja_render(tmp_path_factory: pytest.TempPathFactory, pieces: list[str | tuple[str, str | None]],
                                     contact: dict[str, object], html: bool) -> None:
    env = make_environment(tmp_path_factory.mktemp("t"), html=html)
    template = env.from_string(_source(pieces))
    assert isinstance(template, MailTemplate)
    assert template.renders_flat
    variables = {"contact": contact, "sender": {"name": "Ann & Co <news>"}, "unsubscribe_url": "https://x.example/u?a=1&b=2"}
    assert _outcome(template.render, variables) == _outcome(_jinja, template, variables)


@pytest.mark.parametrize("source", [
    "{% if contact.city %}{{ contact.city }}{% endif %}",
    "{{ contact.city | upper }}",
    "{{ contact['city'] }}",
    "{{ contact.city ~ '!' }}",
    "{% for x in contact %}{{ x }}{% endfor %}",
    '{% extends "base.html" %}',
    "{% set x = 1 %}{{ x }}",
    "{{ 'literal' }}",
])
def test_anything_beyond_plain_fields_renders_through_jinja(tmp_path: Path, source: str) -> None:
    (tmp_path / "base.html").write_text("base", encoding="utf-8")
    template = make_environment(tmp_path, html=True).from_string(source)
    assert not template.renders_flat  # type: ignore[attr-defined]


def test_missing_field_still_fails_like_jinja(tmp_path: Path) -> None:
    template = make_environment(tmp_path, html=True).from_string("<p>{{ contact.frist_name }}</p>")
    assert template.renders_flat  # type: ignore[attr-defined]
    with pytest.raises(jinja2.UndefinedError, match="frist_name"):
        template.render({"contact": {"first_name": "Ann"}})


def test_lint_environment_renders_undefined_as_empty(tmp_path: Path) -> None:
    template = make_environment(tmp_path, html=True, strict=False).from_string("[{{ contact.nope }}]")
    assert template.render({"contact": {}}) == "[]"
