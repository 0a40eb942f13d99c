"""Dutch and English for what recipients read: dates, the footer mailcli adds, `init --language nl`."""

from __future__ import annotations

import email
import email.policy
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mailcli.locales import texts
from mailcli.render import RenderContext, compile_template
from tests.conftest import Cli

DAY = datetime(2026, 12, 6, 9, 30, tzinfo=timezone.utc)


def _context(language: str) -> RenderContext:
    return RenderContext(contact={"email": "ann@example.org", "first_name": "Ann", "last_name": ""},
                         campaign={"name": "december", "subject": ""},
                         sender={"name": "Acme", "address": "news@example.org", "postal_address": "Keizersgracht 1",
                                 "reply_to": "", "list_id": "news.example.org"},
                         unsubscribe_url="https://news.example.org/unsubscribe?t=X", now=DAY, language=language)


@pytest.mark.parametrize(("language", "long", "short"), [("nl", "6 december 2026", "06-12-2026"),
                                                         ("en", "December 6, 2026", "12/6/26")])
def test_the_date_filter_writes_dates_as_the_recipients_language_does(
        tmp_path: Path, language: str, long: str, short: str) -> None:
    folder = tmp_path / "templates" / "t"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text('{{ now|date("d MMMM") }}', encoding="utf-8")
    (folder / "message.html").write_text(
        '<p>{{ now|date("long") }} / {{ now|date("short") }} / {{ now|date }}</p>'
        '<p><a href="{{ unsubscribe_url }}">x</a> Acme, Keizersgracht 1</p>', encoding="utf-8")
    parts = compile_template(tmp_path / "templates", "t").render(_context(language))
    assert f"{long} / {short} / {long}" in parts.html
    assert parts.subject == ("6 december" if language == "nl" else "6 December")


def test_dates_kept_between_messages_follow_each_messages_day_and_language(tmp_path: Path) -> None:
    import dataclasses

    folder = tmp_path / "templates" / "t"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text('{{ now|date("d MMMM") }}', encoding="utf-8")
    (folder / "message.html").write_text('<p>{{ now|date("long") }}</p><p><a href="{{ unsubscribe_url }}">x</a></p>',
                                         encoding="utf-8")
    template = compile_template(tmp_path / "templates", "t")
    next_day = DAY.replace(day=7, hour=0)
    seen = []
    for moment, language in [(DAY, "nl"), (DAY, "en"), (next_day, "nl"), (DAY, "nl"), (next_day, "en")]:
        parts = template.render(dataclasses.replace(_context(language), now=moment))
        seen.append((parts.subject, parts.html.split("<p>")[1].split("</p>")[0]))
    assert seen == [("6 december", "6 december 2026"), ("6 December", "December 6, 2026"),
                    ("7 december", "7 december 2026"), ("6 december", "6 december 2026"),
                    ("7 December", "December 7, 2026")]


@pytest.mark.parametrize("language", ["nl", "en"])
def test_the_footer_mailcli_adds_to_the_text_part_is_in_the_recipients_language(tmp_path: Path, language: str) -> None:
    folder = tmp_path / "templates" / "t"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hi", encoding="utf-8")
    # No message.txt, and no sender in the HTML: mailcli writes the footer of the text part.
    (folder / "message.html").write_text('<p>News</p><p><a href="{{ unsubscribe_url }}">x</a></p>', encoding="utf-8")
    text = compile_template(tmp_path / "templates", "t").render(_context(language)).text
    wording = texts(language)["footer"]["unsubscribe"].split("{url}")[0]
    assert wording in text and "https://news.example.org/unsubscribe?t=X" in text


def test_the_language_files_have_the_same_keys() -> None:
    english, dutch = texts("en"), texts("nl")
    assert {s: set(k) for s, k in english.items()} == {s: set(k) for s, k in dutch.items()}
    for section, entries in english.items():
        for key, value in entries.items():
            if key != "lang":
                assert value != dutch[section][key], f"{section}.{key} is not translated"


def test_init_language_nl_scaffolds_a_dutch_newsletter_config_and_confirmation_mail(tmp_path: Path, cli: Cli) -> None:
    root = tmp_path / "nieuwsbrief"
    assert cli("init", str(root), "--language", "nl").exit_code == 0
    config = (root / "mailcli.toml").read_text(encoding="utf-8")
    assert 'language = "nl"' in config and "# Configuratie van een mailcli-project" in config
    lint = cli("-C", str(root), "lint", "newsletter", "_confirm", "-q")
    assert lint.exit_code == 0, lint.output
    eml = cli("-C", str(root), "render", "newsletter", "--format", "eml").stdout
    message = email.message_from_string(eml, policy=email.policy.default)
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert '<html lang="nl">' in html and "Lees verder" in html
    assert "maandelijks nieuws" in text and "Je kunt je altijd verzetten tegen direct marketing" in text
    assert message["Subject"].startswith("Jane, je nieuws van")
    assert "Bevestig je aanmelding" in (root / "templates" / "_confirm" / "subject.txt").read_text(encoding="utf-8")
    assert cli("init", str(tmp_path / "x"), "--language", "de").exit_code == 2
