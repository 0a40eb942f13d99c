"""``lint``: one test per finding class, line numbers through layouts, and the CLI contract."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mailcli.render.lint import Finding, lint_template
from tests.conftest import Cli

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 14, 9, 0, tzinfo=timezone.utc)
FOOTER = '<p>{{ sender.name }}, {{ sender.postal_address }}. You can object at any time: <a href="{{ unsubscribe_url }}">unsubscribe</a></p>'


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def page(body: str, style: str = "p { margin: 0; }") -> str:
    return f"<!DOCTYPE html>\n<html><head><style>{style}</style></head>\n<body>\n{body}\n{FOOTER}\n</body></html>\n"


def lint(tmp_path: Path, files: dict[str, str], name: str = "t", **kwargs: object) -> list[Finding]:
    root = write(tmp_path / "templates", files)
    return lint_template(root, name, now=NOW, **kwargs)  # type: ignore[arg-type]


def codes(findings: list[Finding], severity: str | None = None) -> list[str]:
    return [f.code for f in findings if severity is None or f.severity == severity]


def only(findings: list[Finding], code: str) -> Finding:
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, findings
    return matching[0]


CLEAN = {"t/message.html": page("<p>Hi {{ contact.first_name }}</p>"), "t/subject.txt": "Hello"}


@pytest.mark.parametrize("root", [REPO / "mailcli" / "scaffold" / "templates", REPO / "examples" / "templates"])
def test_shipped_newsletter_passes_lint_without_findings(root: Path) -> None:
    # Only its sample links, which the user is to replace, are pointed out.
    findings = lint_template(root, "newsletter", now=NOW)
    assert {f.code for f in findings} == {"link-placeholder"}
    assert all(f.severity == "warning" and "acme.example" in f.message for f in findings)


def test_links_to_example_domains_are_placeholders(tmp_path: Path) -> None:
    findings = lint(tmp_path, {"t/message.html": page(
        '<a href="https://acme.example/kerst">a</a>\n<a href="https://www.example.com/x">b</a>\n'
        '<a href="https://bakkerij-dejong.nl/kerst">c</a>\n<a href="mailto:info@example.org">d</a>'),
        "t/subject.txt": "S"})
    placeholders = [(f.line, f.severity) for f in findings if f.code == "link-placeholder"]
    assert placeholders == [(4, "warning"), (5, "warning")]


def test_clean_template_has_no_findings(tmp_path: Path) -> None:
    assert lint(tmp_path, CLEAN) == []


def test_misspelt_and_undefined_variables_all_reported_with_lines_and_suggestions(tmp_path: Path) -> None:
    findings = lint(tmp_path, {
        "t/message.html": page("<p>{{ contact.frist_name }}</p>\n<p>{{ sendr.name }}</p>\n<p>{{ contact.city }}</p>\n"
                               "<p>{{ contact.plan|default('free') }} {% if contact.vip is defined %}VIP{% endif %}</p>"),
        "t/subject.txt": "Hi {{ campaing.name }}",
    })
    undefined = [f for f in findings if f.code == "undefined-variable"]
    assert [(Path(f.file).name, f.line) for f in undefined] == [("message.html", 4), ("message.html", 5), ("message.html", 6), ("subject.txt", 1)]
    assert "contact.frist_name (did you mean contact.first_name?)" in undefined[0].message
    assert "sendr (did you mean sender?)" in undefined[1].message
    assert "contact.city" in undefined[2].message and "--data" in undefined[2].message
    assert "campaing (did you mean campaign?)" in undefined[3].message
    assert all(f.severity == "error" for f in undefined)


def test_custom_attributes_from_a_data_sample_are_known(tmp_path: Path) -> None:
    files = {"t/message.html": page("<p>{{ contact.city }}</p>"), "t/subject.txt": "S"}
    assert "undefined-variable" in codes(lint(tmp_path, files))
    assert lint(tmp_path, files, contact={"email": "a@example.org", "first_name": "A", "city": "Delft"}) == []


def test_safe_filter_on_contact_data_is_an_error(tmp_path: Path) -> None:
    finding = only(lint(tmp_path, {"t/message.html": page("<p>{{ contact.first_name|safe }}</p>"), "t/subject.txt": "S"}), "unsafe-filter")
    assert finding.severity == "error" and finding.line == 4


def test_missing_unsubscribe_link_in_html_and_text(tmp_path: Path) -> None:
    findings = lint(tmp_path, {
        "t/message.html": "<html><body><p>{{ sender.name }}, {{ sender.postal_address }}</p></body></html>",
        "t/message.txt": "Hello {{ contact.first_name }}\n",
        "t/subject.txt": "S",
    })
    missing = [f for f in findings if f.code == "unsubscribe-missing"]
    assert sorted(Path(f.file).name for f in missing) == ["message.html", "message.txt"]
    assert all(f.severity == "error" for f in missing)
    assert only(findings, "sender-identity").severity == "warning"


def test_hidden_unsubscribe_link_does_not_count(tmp_path: Path) -> None:
    findings = lint(tmp_path, {"t/message.html": '<html><body><div style="display:none"><a href="{{ unsubscribe_url }}">u</a></div></body></html>',
                               "t/subject.txt": "S"})
    assert "unsubscribe-missing" in codes(findings, "error")


def test_missing_subject_and_reply_prefix(tmp_path: Path) -> None:
    finding = only(lint(tmp_path, {"t/message.html": page("<p>x</p>")}), "subject-missing")
    assert finding.severity == "error" and finding.file.endswith("t/subject.txt")
    assert lint(tmp_path, {"t/message.html": page("<p>x</p>")}, subject="Spring news") == []
    assert only(lint(tmp_path, {**CLEAN, "t/subject.txt": "Re: your order"}), "subject-prefix").severity == "warning"


def test_html_size_after_inlining(tmp_path: Path) -> None:
    row = '<p class="x">{{ i }} Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>\n'
    style = ".x { color: #333333; font-family: Georgia, serif; line-height: 1.5; }"
    big = lint(tmp_path, {"t/message.html": page("{% for i in range(800) %}" + row + "{% endfor %}", style), "t/subject.txt": "S"})
    assert only(big, "html-size").severity == "error" and "102 KB" in only(big, "html-size").message
    near = lint(tmp_path, {"t/message.html": page("{% for i in range(660) %}" + row + "{% endfor %}", style), "t/subject.txt": "S"})
    assert only(near, "html-size").severity == "warning"


def test_images_without_alt(tmp_path: Path) -> None:
    findings = lint(tmp_path, {"t/message.html": page('<img src="https://x.example/a.png">\n<img src="https://x.example/b.png" alt="">'),
                               "t/subject.txt": "S"})
    finding = only(findings, "img-alt")
    assert finding.line == 4 and finding.severity == "warning" and "a.png" in finding.message


def test_self_closing_tags_as_xhtml_editors_write_them(tmp_path: Path) -> None:
    # <img ... /> is an image without alt all the same. <div ... /> is no
    # empty div: browsers (and the CSS inliner) read it as an opening tag, so
    # the footer after a hidden one is hidden too, and lint says so.
    findings = lint(tmp_path, {"t/message.html": page('<img src="https://x.example/a.png" /><br/>\n'
                                                      '<div style="display:none" /><span class="x" />'),
                               "t/subject.txt": "S"})
    assert only(findings, "img-alt").line == 4
    assert only(findings, "hidden-content").line == 5
    assert only(findings, "unsubscribe-missing").severity == "error"
    shown = lint(tmp_path, {"t/message.html": page('<img src="https://x.example/a.png" alt="" />\n'
                                                   '<div style="display:none"></div>'), "t/subject.txt": "S"})
    assert codes(shown) == []  # closed, it hides nothing


def test_links_that_are_not_https_or_mailto(tmp_path: Path) -> None:
    findings = lint(tmp_path, {"t/message.html": page(
        '<a href="javascript:alert(1)">a</a>\n<a href="data:text/html,x">b</a>\n<a href="page.html">c</a>\n'
        '<a href="tel:+31201234567">d</a>\n<a href="https://ok.example">e</a> <a href="mailto:hi@ok.example">f</a>\n'
        '<a href="{{ contact.site }}">g</a>'), "t/subject.txt": "S"},
        contact={"email": "a@example.org", "site": "javascript:void(0)"})
    links = [(f.line, f.severity) for f in findings if f.code == "link-scheme"]
    assert links == [(4, "error"), (5, "error"), (6, "error"), (7, "warning"), (9, "error")]


@pytest.mark.parametrize("markup", [
    '<p style="display: none">hidden</p>',
    '<p class="gone">hidden</p>',
    '<p style="font-size:0px">tiny</p>',
    '<p style="visibility: hidden">hidden</p>',
    '<p style="color: #ffffff">white on white</p>',
    '<table bgcolor="#ffffff"><tr><td><span style="color:white">white</span></td></tr></table>',
])
def test_hidden_content_is_flagged(tmp_path: Path, markup: str) -> None:
    finding = only(lint(tmp_path, {"t/message.html": page(markup, style=".gone { display: none; }"), "t/subject.txt": "S"}), "hidden-content")
    assert finding.line == 4 and finding.severity == "warning"


def test_preheader_and_white_on_dark_are_not_hidden_content(tmp_path: Path) -> None:
    findings = lint(tmp_path, {"t/message.html": page(
        '<div class="preheader" style="display:none;font-size:1px;color:#fff">Preview text <span>more</span></div>\n'
        '<table><tr><td style="background-color:#1f3a68"><p style="color:#ffffff">white on blue</p></td></tr></table>'),
        "t/subject.txt": "S"})
    assert "hidden-content" not in codes(findings)


def test_script_and_form(tmp_path: Path) -> None:
    findings = lint(tmp_path, {"t/message.html": page('<script>alert(1)</script>\n<form action="https://x.example"><input name="q"></form>'),
                               "t/subject.txt": "S"})
    assert only(findings, "script").line == 4
    assert only(findings, "form").line == 5
    assert codes(findings, "error") == ["script", "form"]


def test_findings_in_layouts_and_partials_point_at_their_own_lines(tmp_path: Path) -> None:
    findings = lint(tmp_path, {
        "_layouts/base.html": "<html><body>\n{% block content %}{% endblock %}\n\n<img src=\"https://x.example/logo.png\">\n"
                              '{% include "_partials/foot.html" %}\n</body></html>',
        "_partials/foot.html": FOOTER + '\n\n<a href="relative/page">more</a>\n',
        "t/message.html": '{% extends "_layouts/base.html" %}\n{% block content %}\n<p>x</p>\n<img src="https://x.example/in-child.png">\n{% endblock %}',
        "t/subject.txt": "S",
    })
    located = {(Path(f.file).name, f.line, f.code) for f in findings}
    assert located == {("base.html", 4, "img-alt"), ("foot.html", 3, "link-scheme"), ("message.html", 4, "img-alt")}


def test_syntax_errors_and_remote_stylesheets_become_findings(tmp_path: Path) -> None:
    syntax = only(lint(tmp_path, {"t/message.html": page("{% if %}"), "t/subject.txt": "S"}), "syntax")
    assert syntax.line == 4 and syntax.file.endswith("t/message.html")
    remote = only(lint(tmp_path, {"u/message.html": '<html><head>\n<link rel="stylesheet" href="https://cdn.example/x.css">\n</head></html>'}, "u"), "syntax")
    assert remote.line == 2 and "never fetches" in remote.message


# ---------------------------------------------------------------------------
# The command


BAD = {
    "templates/bad/message.html": "<html><body>\n<p>{{ contact.frist_name }}</p>\n<img src=\"https://x.example/a.png\">\n</body></html>\n",
    "templates/bad/subject.txt": "Hello",
}


def test_lint_command_exit_codes_and_output(project: Path, cli: Cli) -> None:
    issue = project / "templates" / "newsletter" / "issue.jinja"
    issue.write_text(issue.read_text(encoding="utf-8").replace("acme.example", "bakkerij-dejong.nl"), encoding="utf-8")
    ok = cli("lint", "newsletter")
    assert ok.exit_code == 0, ok.output
    assert ok.stdout == "" and "no problems" in ok.stderr
    write(project, BAD)
    bad = cli("lint", "newsletter", "bad")
    assert bad.exit_code == 1
    lines = bad.stdout.splitlines()
    assert "templates/bad/message.html:2: error: undefined variable contact.frist_name (did you mean contact.first_name?) [undefined-variable]" in lines
    assert "templates/bad/message.html:3: warning: image 'https://x.example/a.png' has no alt text [img-alt]" in lines
    assert "templates/bad/message.html: error: the HTML has no visible unsubscribe link" in bad.stdout
    assert bad.stderr.strip().splitlines() == ["Error: lint found 2 error(s) and 1 warning(s) in newsletter, bad"]
    assert "Traceback" not in bad.output


def test_lint_json_is_a_list_of_findings(project: Path, cli: Cli) -> None:
    write(project, BAD)
    result = cli("lint", "bad", "--json")
    assert result.exit_code == 1
    findings = json.loads(result.stdout)
    assert isinstance(findings, list) and len(findings) == 3
    assert set(findings[0]) == {"severity", "code", "file", "line", "message"}
    assert {f["code"] for f in findings} == {"undefined-variable", "img-alt", "unsubscribe-missing"}
    clean = cli("lint", "newsletter", "--json")
    assert clean.exit_code == 0 and {f["code"] for f in json.loads(clean.stdout)} == {"link-placeholder"}


def test_lint_by_path_needs_no_project(tmp_path: Path, cli: Cli) -> None:
    write(tmp_path, BAD)
    result = cli("lint", "templates/bad")
    assert result.exit_code == 1 and "templates/bad/message.html:2" in result.stdout
    missing = cli("lint", "nosuch")
    assert missing.exit_code == 1 and "not found" in missing.stderr and "Traceback" not in missing.output


def test_lint_notes_what_is_made_per_message_and_why(tmp_path: Path) -> None:
    findings = lint(tmp_path, {
        "t/message.html": page("<table><tr><th>Name</th></tr><tr><td>{{ contact.first_name }}</td></tr></table>"),
        "t/subject.txt": "Hello",
        "u/message.html": page('<p class="{{ contact.first_name }}">Hi</p>'),
        "u/subject.txt": "Hello",
    })
    note = only(findings, "text-per-message")
    assert note.severity == "note" and "data table" in note.message
    other = lint_template(tmp_path / "templates", "u", now=NOW)
    assert {f.code for f in other} == {"inline-per-message", "text-per-message"}
    assert "class attribute" in only(other, "inline-per-message").message
    assert lint(tmp_path / "clean", CLEAN) == []  # made once: nothing to say


def test_lint_command_counts_notes_as_neither_errors_nor_warnings(project: Path, cli: Cli) -> None:
    write(project, {"templates/dt/message.html": page("<table><tr><th>A</th></tr><tr><td>{{ contact.email }}</td></tr></table>"),
                    "templates/dt/subject.txt": "Hello"})
    result = cli("lint", "dt")
    assert result.exit_code == 0, result.output
    assert "note: the text part is converted from the HTML per message" in result.stdout
    assert "no problems found" in result.stderr
