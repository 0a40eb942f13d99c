"""Loops over constant lists are unrolled when a template compiles; the output
(and every error) must be exactly what Jinja's own loop gives."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcli.render.environment import make_environment
from mailcli.render.unroll import unroll_constant_loops

ITEMS = [{"title": "One & two", "tags": ["a", "b"], "n": 1}, {"title": "<Three>", "tags": [], "n": 22},
         {"title": "four", "tags": ["c"], "n": 0}]


def _outcome(template: jinja2.Template, variables: dict[str, object]) -> tuple[str, str]:
    try:
        return "ok", template.render(variables)
    except Exception as exc:  # noqa: BLE001 - compared, not handled
        return "error", f"{type(exc).__name__}: {exc}"


class PlainEnvironment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """The same sandbox without unrolling, as the reference."""


body_part = st.sampled_from([
    "{{ item.title }}", "{{ item.title|upper }}", "{{ item.n * 2 }}", "{{ loop.index }}/{{ loop.length }}",
    "{% if loop.first %}first {% endif %}", "{% if loop.last %}last{% else %}, {% endif %}",
    "{{ loop.revindex0 }}", "{% set x = item.n %}{{ x }}", "{{ x }}", "{{ contact.name }}",
    "{% if contact.name == item.title %}match{% endif %}", "{% for tag in item.tags %}[{{ tag }}{{ loop.index }}]{% endfor %}",
    "{{ item.missing }}", "{{ loop.cycle('odd', 'even') }}", " text ", "{{ items|length }}",
    "{{ '-' * item.title|length }}", "{{ item.title * item.n }}", "{{ loop.index * '=' }}", "{{ item.tags * 2 }}",
    "{{ item.n * item.n }}", "{{ item.title * (item.n - 2) }}", "{{ item.title * 5000 }}", "{{ item.title * 'x' }}",
    "{{ contact.name * item.n }}",
])


@st.composite
def template_source(draw: st.DrawFn) -> str:
    parts = "".join(draw(st.lists(body_part, min_size=1, max_size=6)))
    head = draw(st.sampled_from(["{% set items = ITEMS %}", "{% from 'lib.jinja' import items %}",
                                 "{% set items = contact.list %}", "{% set x = 'outer' %}{% set items = ITEMS %}"]))
    loop = draw(st.sampled_from(["{% for item in items %}BODY{% endfor %}",
                                 "{% for item in items %}BODY{% else %}none{% endfor %}",
                                 "{% for item in [] %}BODY{% else %}none{% endfor %}",
                                 "{% for item in items if item.n %}BODY{% endfor %}"]))
    tail = draw(st.sampled_from(["", "{{ x }}", "{{ item }}", "{{ loop }}"]))
    return (head + loop.replace("BODY", parts) + tail).replace("ITEMS", repr(ITEMS))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=template_source(), html=st.booleans(), name=st.sampled_from(["<Three>", "four", "Ann"]))
def test_unrolled_loops_render_exactly_as_jinja_loops(tmp_path_factory: pytest.TempPathFactory, source: str,
                                                      html: bool, name: str) -> None:
    root = tmp_path_factory.mktemp("t")
    (root / "lib.jinja").write_text("{% set items = " + repr(ITEMS) + " %}", encoding="utf-8")
    ours = make_environment(root, html=html)
    plain = PlainEnvironment(loader=jinja2.FileSystemLoader(str(root)), autoescape=html,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    variables = {"contact": {"name": name, "list": ITEMS[:2]}}
    assert _outcome(ours.from_string(source), variables) == _outcome(plain.from_string(source), variables)


def test_a_loop_over_constant_articles_leaves_only_the_recipient_to_render(tmp_path: Path) -> None:
    env = make_environment(tmp_path, html=True)
    source = ("{% set articles = [{'title': 'A & B', 'url': 'https://x.example/1'}, {'title': 'C', 'url': 'https://x.example/2'}] %}"
              "{% for a in articles %}<h2>{{ loop.index }}. {{ a.title|upper }}</h2>"
              "<a href=\"{{ a.url }}?r={{ contact.email|urlencode }}\">more</a>{% endfor %}")
    code = env.compile(source, raw=True)
    assert "for " not in code.split("def root", 1)[1].split("blocks = ", 1)[0]  # no loop left at render
    assert "1. A &amp; B" in code and "2. C" in code
    assert env.from_string(source).render(contact={"email": "a+b@x.example"}).count("r=a%2Bb%40x.example") == 2


def test_an_underline_of_constants_is_written_in(tmp_path: Path) -> None:
    env = make_environment(tmp_path, html=False)
    source = "{% for t in ['Spring news', 'Dates'] %}{{ t }}\n{{ '-' * t|length }}\n{% endfor %}"
    code = env.compile(source, raw=True)
    assert "call_binop" not in code and "-----------" in code  # nothing left to check per message
    assert env.from_string(source).render() == "Spring news\n-----------\nDates\n-----\n"


def test_loops_over_data_are_left_alone(tmp_path: Path) -> None:
    env = make_environment(tmp_path, html=False)
    tree = env.parse("{% for t in contact.tags %}{{ t }}{% endfor %}{% for i in [1, 2] %}{{ loop.changed(i) }}{% endfor %}")
    unroll_constant_loops(env, tree)
    assert len(list(tree.find_all(jinja2.nodes.For))) == 2
