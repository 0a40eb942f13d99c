"""The lawful basis meets workbooks, Mailchimp archives, service messages
and click counts: the same rules for every kind of file and message.

Real files, a real SQLite database, the real CLI and a real SMTP server on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import sqlite3
import zipfile
from pathlib import Path

import openpyxl

from tests.conftest import Cli, set_smtp
from tests.sendhelpers import add_contacts, people
from tests.sending.test_clicks import tracking
from tests.smtpserver import SmtpServer

DATA = Path(__file__).parent.parent / "data"


def _members(project: Path) -> dict[str, tuple[str, str]]:
    conn = sqlite3.connect(project / "mailcli.db")
    try:
        return {str(e): (str(s), str(b)) for e, s, b in conn.execute(
            "SELECT c.email, m.status, m.basis FROM memberships m JOIN contacts c ON c.id = m.contact_id")}
    finally:
        conn.close()


def _workbook(path: Path, *, opt_in: bool) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["E-mailadres", "Voornaam", *(["OPTIN_TIME"] if opt_in else [])])
    sheet.append(["ann@example.org", "Ann", *([dt.datetime(2024, 3, 1, 10, 0)] if opt_in else [])])
    sheet.append(["bob@example.org", "Bob", *([dt.datetime(2024, 3, 2, 10, 0)] if opt_in else [])])
    book.save(path)


def _archive(path: Path, subscribed: str) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(DATA / "mailchimp_unsubscribed.csv", "export/unsubscribed_members_export.csv")
        archive.writestr("export/subscribed_members_export.csv", subscribed)


def test_a_workbook_without_opt_in_times_is_refused_like_a_csv_file_and_takes_basis(
        project: Path, cli: Cli) -> None:
    _workbook(project / "fair.xlsx", opt_in=False)
    (project / "fair.csv").write_text("email,first_name\nann@example.org,Ann\nbob@example.org,Bob\n",
                                      encoding="utf-8")
    refused = cli("import", "fair.xlsx", "--list", "news")
    assert refused.exit_code == 2, refused.output
    as_csv = cli("import", "fair.csv", "--list", "news")
    assert as_csv.exit_code == 2
    assert refused.stderr.replace("fair.xlsx", "FILE") == as_csv.stderr.replace("fair.csv", "FILE")
    assert "Traceback" not in refused.output and _members(project) == {}
    taken = cli("--json", "import", "fair.xlsx", "--list", "news", "--basis", "customer")
    assert taken.exit_code == 0, taken.output
    assert json.loads(taken.stdout)["basis"] == "customer"
    assert _members(project) == {"ann@example.org": ("subscribed", "customer"),
                                 "bob@example.org": ("subscribed", "customer")}


def test_a_workbook_with_opt_in_times_is_evidence(project: Path, cli: Cli) -> None:
    _workbook(project / "leden.xlsx", opt_in=True)
    result = cli("--json", "import", "leden.xlsx", "--list", "news")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["no_basis"] == 0
    assert set(_members(project).values()) == {("subscribed", "consent")}


def test_a_mailchimp_archive_is_evidence_and_a_plain_file_in_one_is_refused(project: Path, cli: Cli) -> None:
    _archive(project / "export.zip", (DATA / "mailchimp_export.csv").read_text(encoding="utf-8"))
    result = cli("--json", "import", "export.zip", "--list", "news")
    assert result.exit_code == 0, result.output
    # Each row with an opt-in time is consent; Daan's row has none, so Daan has no basis.
    assert json.loads(result.stdout)["no_basis"] == 1
    members = _members(project)
    assert members["anna.dejong@example.nl"] == ("subscribed", "consent")
    assert members["daan@example.org"] == ("subscribed", "none")

    _archive(project / "plain.zip", "Email Address,First Name\ncid@example.org,Cid\n")
    refused = cli("import", "plain.zip", "--list", "other")
    assert refused.exit_code == 2, refused.output
    assert "plain.zip: export/subscribed_members_export.csv shows no consent" in refused.stderr
    assert "nothing was imported" in refused.stderr and "cid@example.org" not in _members(project)
    stated = cli("--json", "import", "plain.zip", "--list", "other", "--basis", "consent",
                 "--consent-source", "paper form, fair 2024")
    assert stated.exit_code == 0, stated.output
    assert json.loads(stated.stdout)["basis"] == "consent"
    assert _members(project)["cid@example.org"] == ("subscribed", "consent")


def test_a_service_message_needs_no_basis_but_never_reaches_an_unconfirmed_sign_up(
        project: Path, cli: Cli) -> None:
    db = project / "mailcli.db"
    add_contacts(db, "news", people(1, start=0))  # consent on record
    add_contacts(db, "news", people(1, start=1), basis="none")  # no basis: no marketing
    add_contacts(db, "news", people(1, start=2), status="unconfirmed", basis="none")
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("--json", "send", "outage", "--template", "newsletter", "--list", "news", "--kind", "service",
                     "--reason", "outage of the portal", "--yes")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["no_basis"] == 0
        assert "left out: no lawful basis" not in result.stderr
        assert sorted(server.recipients()) == ["person0@example.net", "person1@example.net"]
        marketing = cli("--json", "send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        assert marketing.exit_code == 0, marketing.output
        assert json.loads(marketing.stdout)["no_basis"] == 1
        assert sorted(server.recipients()) == ["person0@example.net", "person0@example.net", "person1@example.net"]


def test_reconfirm_is_a_service_campaign_with_its_reason_and_its_links_are_never_tracked(
        project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(2, start=0), basis="none")
    tracking(project, per_contact=False)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        assert cli("reconfirm", "--list", "news", "--yes").exit_code == 0
        for sent in server.messages:
            message = email.message_from_bytes(sent.data, policy=email.policy.default)
            body = message.get_body(("plain",))
            assert body is not None
            text = body.get_content()
            assert "/confirm?t=" in text and "/c/" not in text
        (listed,) = json.loads(cli("campaigns", "--json").stdout)
        assert (listed["campaign"], listed["kind"]) == ("reconfirm-news", "service")
        assert listed["reason"].startswith("reconfirmation")
        assert "Confirm your subscription to news" in cli("campaigns").stdout
        assert listed["subject"] == "Confirm your subscription to news"
        # Each of its messages carries a person's own link: send cannot run it.
        refused = cli("send", "reconfirm-news", "--yes")
        assert refused.exit_code == 2, refused.output
        assert "mailcli reconfirm" in refused.stderr
        assert len(server.messages) == 2


def test_a_campaign_link_to_the_sign_up_form_is_not_rewritten_for_click_counts(project: Path, cli: Cli) -> None:
    from tests.sending.test_clicks import members, parts, send, template

    template(project)
    folder = project / "templates" / "clicky"
    html = (folder / "message.html").read_text(encoding="utf-8")
    (folder / "message.html").write_text(
        html + '<p><a href="https://news.example.org/subscribe/news">Tell a friend</a></p>\n', encoding="utf-8")
    members(project)
    tracking(project, per_contact=False)
    for message in send(cli, project, "friends"):
        text, body = parts(message)
        assert 'href="https://news.example.org/subscribe/news"' in body
        assert "https://news.example.org/c/" in body  # the other links are counted
