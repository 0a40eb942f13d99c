"""``mailcli render``: previews for a sample, a JSON file or a stored contact; errors as one line."""

from __future__ import annotations

import email
import email.policy
import json
import sqlite3
from pathlib import Path

import pytest

from mailcli.render.preview import PREVIEW_TOKEN
from tests.conftest import Cli, run_mailcli
from tests.sendhelpers import add_contacts


def test_render_html_text_and_eml_for_the_sample_contact(project: Path, cli: Cli) -> None:
    html = cli("render", "newsletter")
    assert html.exit_code == 0, html.output
    assert html.stdout.startswith("<!DOCTYPE html>") and "Hi Jane," in html.stdout
    assert f"t={PREVIEW_TOKEN}" in html.stdout and 'style="' in html.stdout

    text = cli("render", "newsletter", "--format", "text")
    assert text.exit_code == 0 and "Hi Jane," in text.stdout and "<" not in text.stdout.split("\n")[0]
    assert f"https://news.example.org/unsubscribe?t={PREVIEW_TOKEN}" in text.stdout

    out = project / "preview.eml"
    eml = cli("render", "newsletter", "--format", "eml", "-o", str(out))
    assert eml.exit_code == 0 and eml.stdout == "" and "Wrote" in eml.stderr
    message = email.message_from_bytes(out.read_bytes(), policy=email.policy.default)
    assert message.defects == [] and message["To"].addresses[0].addr_spec == "jane.doe@example.org"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["List-Unsubscribe"].startswith(f"<https://news.example.org/unsubscribe?t={PREVIEW_TOKEN}>")
    assert message["Subject"].startswith("Jane, your ")


def test_render_eml_has_the_headers_a_send_writes(project: Path, cli: Cli) -> None:
    from tests.conftest import set_smtp
    from tests.smtpserver import SmtpServer

    add_contacts(project / "mailcli.db", "news", [{"email": "ann@example.org", "first_name": "Ann"}])
    shown = cli("render", "newsletter", "--to", "ann@example.org", "--format", "eml")
    assert shown.exit_code == 0, shown.output
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        assert result.exit_code == 0, result.output
    sent = email.message_from_bytes(server.messages[0].data, policy=email.policy.default)
    preview = email.message_from_bytes(shown.stdout.encode("utf-8"), policy=email.policy.default)
    assert sorted(preview.keys()) == sorted(key for key in sent.keys() if key != "DKIM-Signature")
    token = str(sent["List-Unsubscribe"]).split("?t=", 1)[1].split(">", 1)[0]
    # The same List-Unsubscribe, mailto included, but with a token that unsubscribes nobody.
    assert str(preview["List-Unsubscribe"]).replace(PREVIEW_TOKEN, token) == str(sent["List-Unsubscribe"])
    assert preview["List-Unsubscribe-Post"] == sent["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_render_with_data_file(project: Path, cli: Cli) -> None:
    (project / "zoe.json").write_text(json.dumps({"email": "zoe@bücher.example", "first_name": "Zoë & <Co>"}), encoding="utf-8")
    result = cli("render", "newsletter", "--data", "zoe.json", "--format", "eml")
    assert result.exit_code == 0, result.output
    message = email.message_from_bytes(result.stdout.encode("utf-8"), policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == "zoe@xn--bcher-kva.example"
    html = message.get_body(("html",)).get_content()
    assert "Zo&#235; &amp; &lt;Co&gt;" in html  # escaped; its non-ASCII letter as a character reference


@pytest.mark.parametrize(("first", "last"), [
    ("A" * 1200, "Smith"),  # one word too long for any line
    (" ".join(["Ann"] * 300), "Smith, Jr."),  # many words, in a quoted-string
])
def test_render_eml_folds_a_long_display_name(project: Path, cli: Cli, first: str, last: str) -> None:
    from email.header import decode_header, make_header
    from email.utils import parseaddr

    (project / "long.json").write_text(json.dumps({"email": "long@example.net", "first_name": first,
                                                   "last_name": last}), encoding="utf-8")
    result = cli("render", "newsletter", "--data", "long.json", "--format", "eml", "-o", "long.eml")
    assert result.exit_code == 0, result.output
    raw = (project / "long.eml").read_bytes()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    # Read back as RFC 2047 says (whitespace between encoded-words dropped;
    # the standard library's address parser keeps it).
    unfolded = email.message_from_bytes(raw)["To"].replace("\r\n", "").replace("\n", "")  # RFC 5322 §2.2.3
    name, address = parseaddr(unfolded)
    assert address == "long@example.net"
    assert str(make_header(decode_header(name))) == f"{first} {last}"


def test_render_json_output(project: Path, cli: Cli) -> None:
    result = cli("render", "newsletter", "--json")
    data = json.loads(result.stdout)
    assert set(data) >= {"subject", "text", "html", "html_bytes", "inline_once"}
    assert data["inline_once"] is True and data["html_bytes"] < 90 * 1024


def test_render_to_a_stored_contact_is_audited(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", [{"email": "ann@example.org", "first_name": "Ann", "city": "Delft"}])
    (project / "templates" / "city").mkdir()
    (project / "templates" / "city" / "message.html").write_text(
        '<html><body><p>{{ contact.first_name }} in {{ contact.city }}</p><a href="{{ unsubscribe_url }}">u</a></body></html>',
        encoding="utf-8")
    result = cli("render", "city", "--to", "ANN@example.org", "--subject", "Hi", "--format", "text")
    assert result.exit_code == 0, result.output
    assert "Ann in Delft" in result.stdout
    conn = sqlite3.connect(project / "mailcli.db")
    actions = [row[0] for row in conn.execute("SELECT action FROM audit_log")]
    assert "render_preview" in actions
    assert all("ann@example.org" not in str(row) for row in conn.execute("SELECT * FROM audit_log"))
    missing = cli("render", "city", "--to", "nobody@example.org", "--subject", "Hi")
    assert missing.exit_code == 1 and "No contact" in missing.stderr


def test_render_errors_are_one_line_without_traceback(project: Path) -> None:
    folder = project / "templates" / "broken"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hi", encoding="utf-8")
    (folder / "message.html").write_text("<html><body>\n<p>ok</p>\n<p>{{ contact.frist_name }}</p>\n</body></html>", encoding="utf-8")
    for command in (["render", "broken"], ["lint", "broken"]):
        result = run_mailcli(*command, cwd=project)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "templates/broken/message.html:3" in result.stdout + result.stderr
        assert "contact.frist_name" in result.stdout + result.stderr
    result = run_mailcli("render", "broken", cwd=project)
    assert result.stderr.strip() == "Error: templates/broken/message.html:3: undefined variable contact.frist_name (did you mean contact.first_name?)"

    (folder / "message.html").write_text("<html><body>{{ ''.__class__.__mro__[1].__subclasses__() }}</body></html>", encoding="utf-8")
    result = run_mailcli("render", "broken", cwd=project)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: templates/broken/message.html:1: not allowed in a template")
    assert "object" not in result.stdout


def test_render_usage_errors(project: Path, cli: Cli) -> None:
    (project / "bad.json").write_text('{"email": "a@example.org",\n "first_name": }', encoding="utf-8")
    bad = cli("render", "newsletter", "--data", "bad.json")
    assert bad.exit_code == 2 and "bad.json:2: not valid JSON" in bad.stderr
    assert cli("render", "newsletter", "--format", "pdf").exit_code == 2
    assert cli("render", "newsletter", "--to", "a@example.org", "--data", "bad.json").exit_code == 2
    outside = cli("render", "../newsletter")
    assert outside.exit_code == 1 and "Traceback" not in outside.output


def test_open_without_a_desktop_says_where_the_file_is(project: Path, cli: Cli) -> None:
    result = cli("render", "newsletter", "--open", "-o", "p.html")
    assert result.exit_code == 0
    assert f"no desktop to open a browser on; the preview is in {project / 'p.html'}" in result.stderr
    assert "render newsletter --serve" in result.stderr
    assert (project / "p.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_render_verbose_says_how_the_text_part_is_made(project: Path, cli: Cli) -> None:
    shown = cli("-v", "render", "newsletter", "--format", "text")
    assert "Text part from message.txt" in shown.stderr
    (project / "templates" / "newsletter" / "message.txt").unlink()
    (project / "plain.json").write_text(json.dumps({"email": "ann@example.org", "first_name": "Ann"}), encoding="utf-8")
    (project / "amp.json").write_text(json.dumps({"email": "ann@example.org", "first_name": "AT&T"}), encoding="utf-8")
    plain = cli("-v", "render", "newsletter", "--data", "plain.json", "--format", "text")
    assert "Text part generated from the HTML once per template\n" in plain.stderr
    assert "Hi Ann," in plain.stdout
    amp = cli("-v", "render", "newsletter", "--data", "amp.json", "--format", "text")
    assert "this contact's data needed the conversion of this message's HTML" in amp.stderr
    assert "Hi AT&T," in amp.stdout


def test_a_template_outside_templates_is_refused_by_path_and_by_name(project: Path, cli: Cli) -> None:
    outside = project / "outside"
    outside.mkdir()
    (outside / "message.html").write_text('<html><body>{% include "mailcli.toml" %}</body></html>',
                                          encoding="utf-8")
    (outside / "message.txt").write_text('{% include "mailcli.toml" %}\n', encoding="utf-8")
    (outside / "subject.txt").write_text("Hello\n", encoding="utf-8")
    for command in ("render", "lint"):
        for name in ("outside", "./outside", str(outside), "templates/../outside", "../proj/outside"):
            result = cli(command, name)
            assert result.exit_code in (1, 2), (command, name, result.output)
            assert "Traceback" not in result.output and "[sender]" not in result.output, (command, name)
    # By path, a template inside templates/ still renders.
    assert cli("render", "templates/newsletter", "--format", "text").exit_code == 0


@pytest.mark.parametrize("body", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}",
    "{{ 'x' * 10**8 }}",
    "{{ 'x'.center(10**9) }}",
    "{{ 'x' | center(10**9) }}",
    "{{ 10 ** 100000000 }}",
])
def test_runaway_templates_stop_at_the_limits_naming_the_template(project: Path, body: str) -> None:
    import time

    config = project / "mailcli.toml"
    config.write_text(config.read_text(encoding="utf-8").replace("timeout = 5 ", "timeout = 1 "), encoding="utf-8")
    folder = project / "templates" / "runaway"
    folder.mkdir()
    (folder / "message.html").write_text(f"<html><body><p>Hi</p>\n<p>{body}</p></body></html>\n", encoding="utf-8")
    (folder / "message.txt").write_text("Hi\n", encoding="utf-8")
    (folder / "subject.txt").write_text("Hi\n", encoding="utf-8")
    for command in ("render", "lint"):
        started = time.monotonic()
        result = run_mailcli(command, "runaway", cwd=project, timeout=60)
        assert time.monotonic() - started < 20, command
        assert result.returncode == 1, (command, result.stderr)
        assert "templates/runaway/message.html" in result.stdout + result.stderr, (command, result.stderr)
        assert "limit" in result.stdout + result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("target", "said"), [
    ("mailcli.db", "that is the project's database"),
    (".mailcli/secret", "that is in mailcli's private folder"),
    ("mailcli.toml", "that is the configuration file"),
    ("templates", "is a folder, not a file"),
])
def test_render_never_writes_over_mailclis_own_files(project: Path, cli: Cli, target: str, said: str) -> None:
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    result = cli("render", "newsletter", "--format", "eml", "-o", target)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0] == f"Error: -o {target}: {said}" + (
        "" if said.startswith("is a") else "; mailcli never writes over its own files")
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file()} == before


def test_render_never_writes_over_its_own_data_file(project: Path, cli: Cli) -> None:
    data = project / "data.json"
    data.write_text('{"email": "z@example.org", "first_name": "Z"}', encoding="utf-8")
    result = cli("render", "newsletter", "--data", str(data), "-o", str(data))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: -o {data}: that is the file being read; it would be overwritten")
    assert data.read_text(encoding="utf-8").startswith('{"email"')
