"""``mailcli send --kind service``: a message people cannot opt out of
reaches who left marketing, never who bounced, is restricted or erased;
no List-Unsubscribe; audited with its reason; ``report`` says so; ``lint
--kind service`` warns about offers."""

from __future__ import annotations

import email
import email.policy
import json
import sqlite3
from pathlib import Path

from tests.conftest import Cli, set_smtp
from tests.sendhelpers import add_contacts, deliveries, people
from tests.smtpserver import SmtpServer

REASON = "storing 3 december: het klantportaal is onbereikbaar"


def outage_template(project: Path, link: str = "https://status.example.org/") -> None:
    folder = project / "templates" / "outage"
    folder.mkdir()
    (folder / "subject.txt").write_text("Storing in het klantportaal\n", encoding="utf-8")
    (folder / "message.html").write_text(
        "<html><body><p>Beste {{ contact.first_name }},</p>"
        "<p>Het klantportaal is vannacht van 01:00 tot 03:00 onbereikbaar.</p>"
        f'<p><a href="{link}">Meer over de storing</a></p>'
        "<p>{{ sender.name }}, {{ sender.postal_address }}</p></body></html>\n", encoding="utf-8")


def customers(project: Path, cli: Cli) -> None:
    """p0 subscribed; p1 left the list; p2 left all marketing; p3 objected;
    p4 restricted; p5 erased; p6 bounced (by a real 550 5.1.1); p7 never
    confirmed; p8 complained (as ``bounces`` records an ARF report)."""
    db = project / "mailcli.db"
    add_contacts(db, "customers", people(7))
    add_contacts(db, "customers", people(1, start=7), status="unconfirmed")
    add_contacts(db, "customers", people(1, start=8))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE contacts SET status = 'complained' WHERE email = 'person8@example.net'")
    for args in (("unsubscribe", "person1@example.net", "--list", "customers"),
                 ("unsubscribe", "person2@example.net"),
                 ("privacy", "object", "person3@example.net"),
                 ("privacy", "restrict", "person4@example.net"),
                 ("privacy", "erase", "person5@example.net", "--yes")):
        result = cli(*args)
        assert result.exit_code == 0, (args, result.output)


def test_a_service_message_reaches_who_left_marketing_and_nobody_held_back(project: Path, cli: Cli) -> None:
    customers(project, cli)
    outage_template(project)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        # A marketing mail first, to a list of one: person6's address bounces hard.
        add_contacts(project / "mailcli.db", "bounce-check", [people(7)[6]])
        server.script("RCPT", "person6@example.net", ["550 5.1.1 <person6@example.net>: no such user"])
        sent = cli("send", "check", "--template", "newsletter", "--list", "bounce-check", "--yes")
        assert sent.exit_code == 3, sent.output
        server.messages.clear()

        result = cli("send", "outage-1203", "--template", "outage", "--list", "customers", "--kind", "service",
                     "--reason", REASON, "--yes")
        assert result.exit_code == 0, result.output
        assert "Service message (storing 3 december" in result.stderr
    assert sorted(server.recipients()) == [f"person{i}@example.net" for i in range(4)]
    for received in server.messages:
        msg = email.message_from_bytes(received.data, policy=email.policy.default)
        assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None
        assert msg["List-Id"] == "<news.example.org>"
        assert msg["Subject"] == "Storing in het klantportaal"
    # Nobody held back got a delivery row, so no one is counted as skipped either.
    assert sorted(deliveries(project / "mailcli.db", "outage-1203")) == [f"person{i}@example.net" for i in range(4)]
    report = json.loads(cli("report", "outage-1203", "--json").stdout)
    assert (report["kind"], report["reason"], report["sent"], report["audience"]) == ("service", REASON, 4, 4)
    table = cli("report", "outage-1203")
    assert table.stdout.splitlines()[1].split()[:2] == ["outage-1203", "service"]
    assert f"reason: {REASON}" in table.stderr
    assert json.loads(cli("report", "check", "--json").stdout)["kind"] == "marketing"
    # The run is in the audit log with its reason.
    conn = sqlite3.connect(project / "mailcli.db")
    rows = conn.execute("SELECT action, detail, reason FROM audit_log WHERE action = 'send' ORDER BY id").fetchall()
    assert [json.loads(d)["kind"] for _, d, _ in rows] == ["marketing", "service"]
    assert rows[-1][2] == REASON and json.loads(rows[-1][1])["recipients"] == 4
    (kind, reason) = conn.execute("SELECT kind, service_reason FROM campaigns WHERE name = 'outage-1203'").fetchone()
    assert (kind, reason) == ("service", REASON)


def test_a_marketing_send_to_the_same_list_still_reaches_only_subscribers(project: Path, cli: Cli) -> None:
    customers(project, cli)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("send", "spring", "--template", "newsletter", "--list", "customers", "--yes")
        assert result.exit_code == 0, result.output
    assert server.recipients() == ["person0@example.net", "person6@example.net"]
    msg = email.message_from_bytes(server.messages[0].data, policy=email.policy.default)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_during_a_service_send_an_unsubscribe_does_not_stop_it_a_restriction_does(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "customers", people(4))
    outage_template(project)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        first = cli("send", "outage", "--template", "outage", "--list", "customers", "--kind", "service",
                    "--reason", REASON, "--yes", "--limit", "1")
        assert first.exit_code == 0, first.output
        assert cli("unsubscribe", "person2@example.net").exit_code == 0
        assert cli("privacy", "restrict", "person3@example.net").exit_code == 0
        rest = cli("send", "outage", "--yes")
        assert rest.exit_code == 0, rest.output
    assert sorted(server.recipients()) == [f"person{i}@example.net" for i in range(3)]
    status = deliveries(project / "mailcli.db", "outage")
    assert (status["person2@example.net"], status["person3@example.net"]) == ("sent", "skipped")
    conn = sqlite3.connect(project / "mailcli.db")
    reasons = [r for (r,) in conn.execute("SELECT reason FROM audit_log WHERE action = 'send' ORDER BY id")]
    assert reasons == [REASON, REASON]  # every run of it, a resume too


def test_service_options_are_checked(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "customers", people(2))
    outage_template(project)
    base = ("send", "x", "--template", "outage", "--list", "customers", "--yes")
    no_reason = cli(*base, "--kind", "service")
    assert no_reason.exit_code == 2
    assert "--kind service needs --reason TEXT" in no_reason.stderr
    assert cli(*base, "--kind", "service", "--reason", "  ").exit_code == 2
    assert "--reason is for service messages" in cli(*base, "--reason", "why").stderr
    assert "expected marketing or service" in cli(*base, "--kind", "transactional", "--reason", "x").stderr
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        assert cli("send", "spring", "--template", "newsletter", "--list", "customers", "--yes",
                   "--limit", "1").exit_code == 0
        switched = cli("send", "spring", "--kind", "service", "--reason", REASON, "--yes")
        assert switched.exit_code == 2
        assert "Campaign 'spring' is a marketing campaign, not service" in switched.stderr
        assert len(server.recipients()) == 1
    conn = sqlite3.connect(project / "mailcli.db")
    assert conn.execute("SELECT name, kind FROM campaigns").fetchall() == [("spring", "marketing")]


def test_lint_kind_service_warns_about_offers_and_needs_no_unsubscribe_link(project: Path, cli: Cli) -> None:
    outage_template(project)
    clean = cli("lint", "outage", "--kind", "service")
    assert clean.exit_code == 0, clean.output
    assert "service-offer" not in clean.stdout
    # As marketing, the same template lacks its unsubscribe link.
    marketing = cli("lint", "outage")
    assert marketing.exit_code == 1 and "unsubscribe-missing" in marketing.stdout
    (project / "templates" / "outage" / "message.html").write_text(
        "<p>Het portaal is weer bereikbaar.</p>\n"
        '<p><a href="https://shop.example.nl/aanbiedingen?utm=storing">Bekijk onze aanbiedingen</a></p>\n'
        '<p><a href="https://acme.nl/workshop">Workshop</a> <a href="https://acme.nl/x">20% korting</a></p>\n',
        encoding="utf-8")
    offers = cli("lint", "outage", "--kind", "service", "--json")
    assert offers.exit_code == 0, offers.output
    found = [f for f in json.loads(offers.stdout) if f["code"] == "service-offer"]
    assert [(f["line"], f["severity"]) for f in found] == [(2, "warning"), (3, "warning")]
    assert "aanbiedingen" in found[0]["message"] and "korting" in found[1]["message"]
    assert "workshop" not in found[1]["message"]


def test_a_segment_narrows_a_service_message_to_its_part_of_the_service_audience(project: Path, cli: Cli) -> None:
    customers(project, cli)
    outage_template(project)
    where = "city in ('City1', 'City2', 'City4', 'City5', 'City6', 'City7', 'City8')"
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("send", "outage-utrecht", "--template", "outage", "--list", "customers", "--where", where,
                     "--kind", "service", "--reason", REASON, "--yes")
        assert result.exit_code == 0, result.output
        # The same segment as marketing, for comparison: only who is still subscribed.
        marketing = cli("send", "offer-utrecht", "--template", "newsletter", "--list", "customers",
                        "--where", where, "--yes")
        assert marketing.exit_code == 0, marketing.output
    # In the segment: person1 and person2 left marketing and still get the
    # service message; the restricted, erased, unconfirmed and complained
    # ones do not. person0 and person3 are outside it.
    assert sorted(deliveries(project / "mailcli.db", "outage-utrecht")) == [
        "person1@example.net", "person2@example.net", "person6@example.net"]
    assert sorted(deliveries(project / "mailcli.db", "offer-utrecht")) == ["person6@example.net"]
    # A resumed service campaign keeps its segment, like any other.
    other = cli("send", "outage-utrecht", "--where", "city = 'City0'", "--yes")
    assert other.exit_code == 2 and "was started for segment" in other.stderr


def test_campaigns_shows_a_service_message_with_its_kind_and_reason(project: Path, cli: Cli) -> None:
    customers(project, cli)
    outage_template(project)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        for args in (("outage-1203", "--template", "outage", "--kind", "service", "--reason", REASON),
                     ("juni", "--template", "newsletter")):
            result = cli("send", *args, "--list", "customers", "--yes")
            assert result.exit_code == 0, result.output
    table = cli("campaigns")
    assert table.exit_code == 0, table.output
    rows = {line.split()[0]: line.split()[1] for line in table.stdout.splitlines()[1:]}
    assert rows == {"outage-1203": "service", "juni": "marketing"}
    listed = {c["campaign"]: c for c in json.loads(cli("campaigns", "--json").stdout)}
    assert (listed["outage-1203"]["kind"], listed["outage-1203"]["reason"]) == ("service", REASON)
    assert (listed["juni"]["kind"], listed["juni"]["reason"]) == ("marketing", None)
    assert listed["outage-1203"]["sent"] == 5 and listed["juni"]["sent"] == 2


def test_a_test_send_of_a_service_message_has_no_list_unsubscribe(project: Path, cli: Cli) -> None:
    customers(project, cli)
    outage_template(project)
    db = project / "mailcli.db"
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        # A new campaign, tested with the options of the real send.
        new = cli("send", "outage-1203", "--template", "outage", "--list", "customers", "--kind", "service",
                  "--reason", REASON, "--test-to", "me@example.net")
        assert new.exit_code == 0, new.output
        unexplained = cli("send", "outage-1203", "--template", "outage", "--kind", "service",
                          "--test-to", "me@example.net")
        assert unexplained.exit_code == 2 and "--reason" in unexplained.stderr
        sent = cli("send", "outage-1203", "--template", "outage", "--list", "customers", "--kind", "service",
                   "--reason", REASON, "--limit", "1", "--yes")
        assert sent.exit_code == 0, sent.output
        server.messages.clear()
        # The campaign exists: a test send takes its kind from it.
        existing = cli("send", "outage-1203", "--test-to", "me@example.net")
        assert existing.exit_code == 0, existing.output
        wrong = cli("send", "outage-1203", "--kind", "marketing", "--test-to", "me@example.net")
        assert wrong.exit_code == 2 and "is a service campaign" in wrong.stderr
        marketing = cli("send", "juni", "--template", "newsletter", "--test-to", "me@example.net")
        assert marketing.exit_code == 0, marketing.output
        tests = [email.message_from_bytes(m.data, policy=email.policy.default) for m in server.messages]
    assert server.recipients() == ["me@example.net", "me@example.net"]
    service_test, marketing_test = tests
    assert str(service_test["Subject"]) == "[TEST] Storing in het klantportaal"
    assert service_test["List-Unsubscribe"] is None and service_test["List-Unsubscribe-Post"] is None
    assert marketing_test["List-Unsubscribe"] is not None
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name, kind FROM campaigns").fetchall() == [("outage-1203", "service")]
