"""`mailcli campaigns`, test sends (`send --test-to`) and scheduling (`send --not-before`),
end to end against a real aiosmtpd server on 127.0.0.1, with the clock frozen; what
`campaigns` shows and scheduling run on both engines (the ``engine`` fixture)."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import sqlite3
import zipfile
from pathlib import Path

import pytest

from mailcli.errors import ExitCode
from mailcli.render.preview import PREVIEW_TOKEN
from tests.conftest import Cli, Engine, set_smtp
from tests.privacy_support import freeze
from tests.sendhelpers import add_contacts
from tests.serve_support import Server, member_statuses, one_click
from tests.smtpserver import SmtpServer

MEMBERS = [
    {"email": "ann@example.org", "first_name": "Ann", "city": "Utrecht"},
    {"email": "bob@example.org", "first_name": "Bob", "city": "Amsterdam"},
]


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_campaigns_lists_kind_status_audience_subject_dates_and_counts(project: Path, cli: Cli, engine: Engine,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    clock = freeze(monkeypatch, "2026-11-30T10:00:00Z")
    engine.use(project)
    add_contacts(engine.location(project), "news", MEMBERS)
    empty = cli("campaigns")
    assert empty.exit_code == 0 and "No campaigns yet" in empty.stderr and empty.stdout == ""
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        sent = cli("send", "nov", "--template", "newsletter", "--list", "news", "--where", "city = 'Utrecht'",
                   "--yes")
        assert sent.exit_code == 0, sent.output
        clock.advance(days=1)
        later = cli("send", "dec", "--template", "newsletter", "--list", "news",
                    "--not-before", "2026-12-24 09:00", "--tz", "Europe/Amsterdam", "--yes")
        assert later.exit_code == 0, later.output
    listed = json.loads(cli("campaigns", "--json").stdout)
    assert [c["campaign"] for c in listed] == ["nov", "dec"]
    nov, dec = listed
    assert nov["kind"] == "marketing" and nov["status"] == "sent" and nov["template"] == "newsletter"
    assert nov["list"] == "news" and nov["segment"] is None and nov["where"] == "city = 'Utrecht'"
    # The subject without anyone's data: the template's {% else %} branch, the month of the send.
    assert nov["subject"] == "Your November update from Proj"
    assert nov["created_at"] == nov["first_sent_at"] == nov["last_sent_at"] == "2026-11-30T10:00:00Z"
    assert (nov["audience"], nov["sent"], nov["failed"], nov["pending"]) == (1, 1, 0, 0)
    assert dec["status"] == "scheduled" and dec["not_before"] == "2026-12-24T08:00:00Z"
    assert dec["subject"] == "Your December update from Proj"  # as of now; set again when it is sent
    assert dec["first_sent_at"] is None and dec["audience"] == 0
    table = cli("campaigns").stdout
    assert "kind" in table and "scheduled for 2026-12-24 08:00Z" in table
    assert "news where city = 'Utrecht'" in table and "Your November update from Proj" in table

    # A person's export names the subject of what they were sent.
    assert cli("privacy", "export", "ann@example.org", "-o", "ann.zip").exit_code == 0
    with zipfile.ZipFile(project / "ann.zip") as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("deliveries.csv").decode("utf-8-sig"))))
    assert [(r["campaign"], r["campaign_subject"]) for r in rows] == [("nov", "Your November update from Proj")]


def test_a_test_send_reaches_only_the_test_address_and_records_nothing(project: Path, cli: Cli) -> None:
    db = project / "mailcli.db"
    add_contacts(db, "news", MEMBERS)
    before = _rows(db, "SELECT count(*) FROM campaigns UNION ALL SELECT count(*) FROM deliveries")
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        sample = cli("send", "spring", "--template", "newsletter", "--test-to", "me@example.net")
        assert sample.exit_code == 0, sample.output
        assert "sent to me@example.net" in sample.stderr and "nothing was recorded" in sample.stderr
        real = cli("send", "spring", "--template", "newsletter", "--test-to", "me@example.net",
                   "--as", "ann@example.org", "--json")
        assert real.exit_code == 0, real.output
        assert json.loads(real.stdout)["rendered_for"] == "ann@example.org"
        assert server.recipients() == ["me@example.net", "me@example.net"]
        first, second = (email.message_from_bytes(m.data, policy=email.policy.default) for m in server.messages)
    assert first["To"].addresses[0].addr_spec == "me@example.net"
    assert str(first["Subject"]).startswith("[TEST] Jane, your ")  # the sample contact
    assert str(second["Subject"]).startswith("[TEST] Ann, your ")
    assert f"t={PREVIEW_TOKEN}" in str(second["List-Unsubscribe"])
    assert f"t={PREVIEW_TOKEN}" in second.get_body(("html",)).get_content()
    # Nothing recorded: no campaign, no delivery.
    assert _rows(db, "SELECT count(*) FROM campaigns UNION ALL SELECT count(*) FROM deliveries") == before
    assert cli("report", "--json").stdout.strip() == "[]"
    # The unsubscribe link in a test message changes nothing.
    serve = Server(project)
    try:
        answer = one_click(serve.url, PREVIEW_TOKEN)
    finally:
        serve.stop()
    assert answer.status_code == 400
    assert member_statuses(project) == {"ann@example.org": "subscribed", "bob@example.org": "subscribed"}


def test_a_test_send_of_a_new_campaign_needs_a_template_and_a_real_address(project: Path, cli: Cli) -> None:
    no_template = cli("send", "spring", "--test-to", "me@example.net")
    assert no_template.exit_code == ExitCode.USAGE and "needs --template" in no_template.stderr
    bad = cli("send", "spring", "--template", "newsletter", "--test-to", "not an address")
    assert bad.exit_code == ExitCode.USAGE and "--test-to 'not an address' is not a valid address" in bad.stderr
    alone = cli("send", "spring", "--template", "newsletter", "--as", "ann@example.org")
    assert alone.exit_code == ExitCode.USAGE and "--as goes with --test-to" in alone.stderr


def test_not_before_sends_nothing_until_the_time_then_sends_once(project: Path, cli: Cli, engine: Engine,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    clock = freeze(monkeypatch, "2026-12-24T07:50:00Z")  # 08:50 in Amsterdam
    engine.use(project)
    add_contacts(engine.location(project), "news", MEMBERS)
    cron = ["send", "xmas", "--template", "newsletter", "--list", "news", "--not-before", "2026-12-24 09:00",
            "--tz", "Europe/Amsterdam", "--yes"]
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        early = cli(*cron)
        assert early.exit_code == 0, early.output
        assert "nothing is sent before 2026-12-24 09:00 CET (2026-12-24T08:00:00Z)" in early.stderr
        assert cli("-q", *cron).output == ""  # cron hears nothing
        clock.advance(minutes=9, seconds=59)
        resumed = cli("send", "xmas", "--yes", "--json")  # the time it was scheduled for is kept
        assert resumed.exit_code == 0 and json.loads(resumed.stdout)["scheduled"] is True
        assert server.messages == []
        assert engine.rows(project, "SELECT status, frozen_at FROM campaigns") == [("scheduled", None)]
        clock.advance(seconds=1)
        on_time = cli(*cron)
        assert on_time.exit_code == 0, on_time.output
        assert "2 sent" in on_time.stderr, on_time.output
        assert sorted(server.recipients()) == ["ann@example.org", "bob@example.org"]
        clock.advance(minutes=10)
        assert "nothing left to send" in cli(*cron).stderr
        assert len(server.messages) == 2
    listed = json.loads(cli("campaigns", "--json").stdout)[0]
    assert listed["status"] == "sent" and listed["first_sent_at"] == "2026-12-24T08:00:00Z"


def test_not_before_reschedules_and_refuses_what_is_not_a_time(project: Path, cli: Cli, engine: Engine,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    freeze(monkeypatch, "2026-12-01T12:00:00Z")
    engine.use(project)
    add_contacts(engine.location(project), "news", MEMBERS)
    base = ["send", "xmas", "--template", "newsletter", "--list", "news", "--yes"]
    assert cli(*base, "--not-before", "2026-12-24T09:00+01:00").exit_code == 0
    assert cli(*base, "--not-before", "2026-12-23 09:00", "--tz", "UTC").exit_code == 0
    assert json.loads(cli("campaigns", "--json").stdout)[0]["not_before"] == "2026-12-23T09:00:00Z"
    for args, words in [(["--not-before", "24-12-2026 09:00"], "is not a date and time"),
                        (["--not-before", "2026-12-24"], "has no time of day"),
                        (["--not-before", "2026-12-24 09:00", "--tz", "Europe/Amsterdm"],
                         "--tz 'Europe/Amsterdm' is not a time zone (did you mean Europe/Amsterdam?)"),
                        (["--tz", "UTC"], "--tz goes with --not-before")]:
        result = cli(*base, *args)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert words in result.stderr


def test_completion_scripts_and_the_names_they_complete(project: Path, cli: Cli,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import run_mailcli

    for shell, marker in (("bash", "complete -o default -F _mailcli_completion mailcli"),
                          ("zsh", "compdef _mailcli_completion mailcli"), ("fish", "complete --command mailcli")):
        result = cli("completion", shell)
        assert result.exit_code == 0 and marker in result.stdout and "_MAILCLI_COMPLETE" in result.stdout
    assert cli("completion", "tcsh").exit_code == ExitCode.USAGE

    add_contacts(project / "mailcli.db", "news", MEMBERS)
    add_contacts(project / "mailcli.db", "nieuws", MEMBERS)
    path = project / "mailcli.toml"
    path.write_text(path.read_text(encoding="utf-8") + "\n[segments]\nutrecht = \"city = 'Utrecht'\"\n",
                    encoding="utf-8")
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        assert cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes").exit_code == 0

    def offered(line: str, shell: str = "bash") -> list[str]:
        words = line.split(" ")
        env = {"_MAILCLI_COMPLETE": f"complete_{shell}", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1),
               "_TYPER_COMPLETE_ARGS": line, "_TYPER_COMPLETE_FISH_ACTION": "get-args"}
        result = run_mailcli(cwd=project, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert offered("mailcli camp") == ["campaigns"]
    assert "--not-before" in offered("mailcli send x --")
    assert offered("mailcli send x --template ") == ["newsletter"]
    assert offered("mailcli send x --list n") == ["news", "nieuws"]
    assert offered("mailcli send x --segment ") == ["utrecht"]
    assert offered("mailcli report ") == ["spring"]
    assert offered("mailcli contacts --list nie", "fish") == ["nieuws"]
    assert offered("mailcli -C elsewhere send x --list ") == []  # no project there: nothing, and no error
