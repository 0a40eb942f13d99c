"""The same commands on both engines: a SQLite file and a PostgreSQL server.

Every test here takes the ``engine`` fixture and runs once per engine, with
the same steps and the same expectations: what a user sees must not depend
on where the project's database lives. The commands that do not work on
PostgreSQL yet are listed in ``test_commands_not_yet_on_postgresql_refuse_clearly``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mailcli.config import resolve
from tests.conftest import Cli, Engine, PostgresDatabase, run_mailcli, set_smtp, use_database
from tests.privacy_support import freeze
from tests.serve_support import Server, one_click
from tests.smtpserver import SmtpServer

MAILCHIMP = (
    "Email Address,First Name,Last Name,CITY,UNSUB_TIME\n"
    "ann@example.org,Ann,Archer,Delft,\n"
    "ANN@example.org,,Andersen,Leiden,\n"  # a repeat: later non-empty values win
    "bob@example.org,Bob,Baker,Zwolle,2024-01-01 10:00:00\n"  # unsubscribed at the source
    "zoë@example.org,Zoë,,Gouda,\n"  # needs SMTPUTF8
    "not an address,,,,\n"
)


def _counts(result: Any) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    data.pop("file")
    data["rejects"] = [r["line"] for r in data["rejects"]]
    return data


def test_import_reimport_and_opt_outs(project: Path, engine: Engine) -> None:
    engine.use(project)
    (project / "mc.csv").write_text(MAILCHIMP, encoding="utf-8")
    first = _counts(engine.mailcli(project, "import", "mc.csv", "--list", "news", "--json"))
    assert first == {
        "list": "news", "imported": 2, "updated": 0, "unchanged": 0, "suppressed": 1, "rejected": 1,
        "duplicates": 1, "opted_out": 1, "needs_smtputf8": 1, "rejects": [6], "reencoded": 0, "reencoded_lines": [],
        "kept_rectified": 0, "basis": None, "basis_stated": 0, "no_basis": 2,
    }
    contacts = engine.rows(project, "SELECT email, first_name, last_name, attributes FROM contacts ORDER BY email")
    assert [(e, f, last, json.loads(a)) for e, f, last, a in contacts] == [
        ("ann@example.org", "Ann", "Andersen", {"city": "Leiden"}),
        ("zoë@example.org", "Zoë", "", {"city": "Gouda"}),
    ]
    members = engine.rows(project, "SELECT c.email, m.status, m.consent_source, m.consent_method FROM memberships m"
                                   " JOIN contacts c ON c.id = m.contact_id ORDER BY c.email")
    assert members == [("ann@example.org", "subscribed", "mc.csv line 2", "import"),
                       ("zoë@example.org", "subscribed", "mc.csv line 5", "import")]
    assert engine.rows(project, "SELECT scope, reason, channel FROM suppressions") == [("news", "unsubscribed", "import")]
    uids = [u for (u,) in engine.rows(project, "SELECT uid FROM contacts")]
    assert all(len(u) == 18 and int(u, 16) >= 0 for u in uids) and len(set(uids)) == 2

    assert engine.rows(project, "SELECT basis FROM memberships") == [("none",), ("none",)]
    held = json.loads(engine.mailcli(project, "lists", "--json").stdout)[0]
    assert (held["subscribed"], held["held_back_by"]["no_basis"]) == (0, 2)

    # The same file again changes nothing but the basis it states; bob stays out.
    again = _counts(engine.mailcli(project, "import", "mc.csv", "--list", "news", "--basis", "customer", "--json"))
    assert (again["imported"], again["updated"], again["unchanged"], again["suppressed"]) == (0, 0, 2, 1)
    assert (again["basis_stated"], again["no_basis"]) == (2, 0)
    assert engine.rows(project, "SELECT basis, consent_source FROM memberships ORDER BY consent_source") == [
        ("customer", "mc.csv line 2"), ("customer", "mc.csv line 5")]

    # A new name updates; a new address is imported; bob, subscribing again, is suppressed.
    (project / "more.csv").write_text(
        "email,first_name,city\nann@example.org,Anne,\ncy@example.org,Cy,Breda\nbob@example.org,Bob,\n",
        encoding="utf-8")
    more = _counts(engine.mailcli(project, "import", "more.csv", "--list", "news", "--basis", "customer", "--json"))
    assert (more["imported"], more["updated"], more["unchanged"], more["suppressed"]) == (1, 1, 0, 1)
    ann = engine.rows(project, "SELECT first_name, attributes FROM contacts WHERE email_key = 'ann@example.org'")
    assert ann[0][0] == "Anne" and json.loads(ann[0][1]) == {"city": "Leiden"}

    listed = engine.mailcli(project, "lists", "--json")
    assert listed.returncode == 0, listed.stderr
    (news,) = json.loads(listed.stdout)
    assert (news["name"], news["subscribed"], news["unsubscribed"]) == ("news", 3, 0)
    # Each import left one audit entry, chained.
    audit = engine.rows(project, "SELECT action, prev_hash, hash FROM audit_log WHERE action = 'import' ORDER BY id")
    assert len(audit) == 3
    assert all(later[1] != earlier[1] for earlier, later in zip(audit, audit[1:], strict=False))


def test_unconfirmed_then_subscribed_and_skip(project: Path, engine: Engine) -> None:
    engine.use(project)
    (project / "a.csv").write_text("email,first_name\ndee@example.org,Dee\n", encoding="utf-8")
    pending = _counts(engine.mailcli(project, "import", "a.csv", "--list", "news", "--status", "unconfirmed", "--json"))
    assert pending["imported"] == 1
    assert engine.rows(project, "SELECT status, confirmed_at FROM memberships") == [("unconfirmed", None)]
    confirmed = _counts(engine.mailcli(project, "import", "a.csv", "--list", "news", "--basis", "customer", "--json"))
    assert (confirmed["updated"], confirmed["unchanged"]) == (1, 0)
    assert engine.rows(project, "SELECT status FROM memberships") == [("subscribed",)]

    (project / "b.csv").write_text("email,first_name\ndee@example.org,Dora\n", encoding="utf-8")
    skipped = _counts(engine.mailcli(project, "import", "b.csv", "--list", "news", "--on-conflict", "skip",
                                            "--basis", "customer", "--json"))
    assert (skipped["updated"], skipped["unchanged"]) == (0, 1)
    assert engine.rows(project, "SELECT first_name FROM contacts") == [("Dee",)]


def test_contacts_list_show_and_set(project: Path, engine: Engine) -> None:
    engine.use(project)
    (project / "mc.csv").write_text(MAILCHIMP, encoding="utf-8")
    assert engine.mailcli(project, "import", "mc.csv", "--list", "news", "--basis", "customer").returncode == 0
    listed = engine.mailcli(project, "contacts", "--list", "news", "--status", "subscribed", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(c["email"], c["lists"], c["attributes"]) for c in json.loads(listed.stdout)] == [
        ("ann@example.org", ["news"], {"city": "Leiden"}), ("zoë@example.org", ["news"], {"city": "Gouda"})]
    assert len(json.loads(engine.mailcli(project, "contacts", "--json").stdout)) == 2
    changed = engine.mailcli(project, "contacts", "set", "ann@example.org", "city=Breda", "first_name=Anne")
    assert changed.returncode == 0, changed.stderr
    new_field = engine.mailcli(project, "contacts", "set", "ann@example.org", "shoe_size=42")
    assert new_field.returncode == 0 and "which no other contact has: shoe_size" in new_field.stderr
    shown = engine.mailcli(project, "contacts", "show", "ann@example.org", "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert (detail["first_name"], detail["attributes"]) == ("Anne", {"city": "Breda", "shoe_size": "42"})
    # What needs a contact from the database: a preview for one, the lint against one.
    preview = engine.mailcli(project, "render", "newsletter", "--to", "ann@example.org", "--format", "text")
    assert preview.returncode == 0 and "Anne" in preview.stdout, preview.stderr
    assert engine.mailcli(project, "lint", "newsletter", "--to", "ann@example.org", "-q").returncode == 0


def test_a_bad_file_changes_nothing(project: Path, engine: Engine) -> None:
    engine.use(project)
    (project / "ok.csv").write_text("email\neve@example.org\n", encoding="utf-8")
    assert engine.mailcli(project, "import", "ok.csv", "--list", "news", "--basis", "customer").returncode == 0
    (project / "bad.csv").write_bytes(b"email\nfay@example.org\n" + b"x" * (17 * 1024 * 1024) + b"\n")
    bad = engine.mailcli(project, "import", "bad.csv", "--list", "news")
    assert bad.returncode == 2, bad.stderr
    assert "Traceback" not in bad.stderr
    assert engine.rows(project, "SELECT email FROM contacts") == [("eve@example.org",)]


def _import_people(project: Path, engine: Engine, n: int) -> set[str]:
    engine.use(project)
    emails = [f"reader{i}@example.net" for i in range(n)]
    (project / "people.csv").write_text("email,first_name\n" + "".join(f"{e},Reader{i}\n" for i, e in enumerate(emails)),
                                        encoding="utf-8")
    result = engine.mailcli(project, "import", "people.csv", "--list", "news", "--basis", "customer")
    assert result.returncode == 0, result.stderr
    return set(emails)


def _spawn_send(project: Path, engine: Engine, *args: str) -> subprocess.Popen[str]:
    """``mailcli send spring`` in the background, on the engine's database."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}, **engine.env}
    return subprocess.Popen(
        [sys.executable, "-m", "mailcli", "send", "spring", "--template", "newsletter", "--list", "news", "--yes",
         *args], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_send_killed_then_rerun_sends_nobody_twice(project: Path, engine: Engine) -> None:
    emails = _import_people(project, engine, 300)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.delay = 0.03
        proc = _spawn_send(project, engine, "--concurrency", "4")
        try:
            assert server.wait_for(80, timeout=60), proc.stderr.read() if proc.poll() is not None else "slow"
        finally:
            proc.kill()
            proc.wait()
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()
        server.delay = 0.0
        assert server.wait_idle()
        assert 0 < len(set(server.recipients())) < 300
        rerun = engine.mailcli(project, "send", "spring", "--yes")
        received = Counter(server.recipients())
    assert max(received.values()) == 1  # nobody twice
    report = json.loads(engine.mailcli(project, "report", "spring", "--json").stdout)
    assert rerun.returncode == (3 if report["uncertain"] else 0), rerun.stderr
    assert report["uncertain"] <= 4  # at most one per connection
    assert report["sent"] + report["uncertain"] == 300
    missing = emails - set(received)
    uncertain = {e for (e,) in engine.rows(
        project, "SELECT c.email FROM deliveries d JOIN contacts c ON c.id = d.contact_id WHERE d.status = 'uncertain'")}
    assert missing <= uncertain


def test_a_second_send_of_the_campaign_is_refused_on_sqlite_and_joins_in_on_postgresql(
        project: Path, engine: Engine) -> None:
    emails = _import_people(project, engine, 120)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        first = _spawn_send(project, engine, "--rate", "50/s")
        try:
            assert server.wait_for(5, timeout=60)
            second = engine.mailcli(project, "send", "spring", "--yes")
        finally:
            _, stderr = first.communicate(timeout=120)
        assert first.returncode == 0, stderr
        if engine.name == "sqlite":
            assert second.returncode == 1, second.stderr
            assert f"is being sent by another process: pid {first.pid} on " in second.stderr, second.stderr
        else:  # senders share a campaign on a server: the second sends part of it
            assert second.returncode == 0, second.stderr
            assert "120 of 120 sent" in second.stderr, second.stderr
    received = Counter(server.recipients())
    assert set(received) == emails and set(received.values()) == {1}


def test_one_click_unsubscribe_through_serve_after_a_send(project: Path, engine: Engine) -> None:
    from mailcli import tokens

    _import_people(project, engine, 3)
    with SmtpServer() as smtp:
        set_smtp(project, "127.0.0.1", smtp.port)
        assert engine.mailcli(project, "send", "spring", "--template", "newsletter", "--list", "news",
                              "--yes").returncode == 0
    secret = resolve(directory=str(project)).secret()
    ((list_id,),) = engine.rows(project, "SELECT id FROM lists WHERE name = 'news'")
    ((uid,),) = engine.rows(project, "SELECT uid FROM contacts WHERE email_key = 'reader1@example.net'")
    token = tokens.make_unsubscribe_token(secret, uid, list_id)
    server = Server(project, env=engine.env)
    try:
        first = one_click(server.url, token)
        again = one_click(server.url, token)
        bad = one_click(server.url, token[:-2] + "xx")
    finally:
        assert server.stop() == 0, "".join(server.log)
    assert first.status_code == 200 and "unsubscribed" in first.text
    assert again.status_code == 200
    assert bad.status_code == 400
    assert engine.rows(project, "SELECT c.email_key, m.status, m.unsubscribe_channel FROM memberships m"
                                " JOIN contacts c ON c.id = m.contact_id WHERE m.status != 'subscribed'") == [
        ("reader1@example.net", "unsubscribed", "one-click")]
    assert engine.rows(project, "SELECT scope, reason, channel FROM suppressions") == [
        ("news", "unsubscribed", "one-click")]
    report = json.loads(engine.mailcli(project, "report", "spring", "--json").stdout)
    assert (report["sent"], report["unsubscribed"]) == (3, 1)
    # And by hand, from the command line: from all marketing.
    manual = engine.mailcli(project, "unsubscribe", "reader2@example.net")
    assert manual.returncode == 0, manual.stderr
    assert engine.rows(project, "SELECT no_marketing_at IS NOT NULL FROM contacts"
                                " WHERE email_key = 'reader2@example.net'") == [(True,)]
    assert "outcome=unsubscribed" in "".join(server.log) and "outcome=already" in "".join(server.log)


def _send_to(project: Path, engine: Engine, n: int) -> None:
    _import_people(project, engine, n)
    with SmtpServer() as smtp:
        set_smtp(project, "127.0.0.1", smtp.port)
        sent = engine.mailcli(project, "send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        assert sent.returncode == 0, sent.stderr


def test_bounces_from_an_mbox(project: Path, engine: Engine) -> None:
    import mailbox
    from string import Template

    _send_to(project, engine, 3)
    template = Template((Path(__file__).parent.parent / "data" / "feedback" / "dsn_generic.eml").read_text(encoding="utf-8"))
    ((message_id,),) = engine.rows(project, "SELECT d.message_id FROM deliveries d JOIN contacts c"
                                            " ON c.id = d.contact_id WHERE c.email_key = 'reader0@example.net'")
    bounce = template.safe_substitute(ref="r1", subject_note="Failure", rcpt="reader0@example.net",
                                      message_id=f"<{message_id}>", action="failed", status_line="Status: 5.1.1",
                                      diagnostic="550 5.1.1 no such user")
    box = mailbox.mbox(str(project / "bounces.mbox"))
    box.add(bounce.encode("utf-8"))
    box.flush()
    box.close()
    first = engine.mailcli(project, "bounces", "bounces.mbox", "--json")
    assert first.returncode == 0, first.stderr
    again = engine.mailcli(project, "bounces", "bounces.mbox", "--json")
    assert again.returncode == 0, again.stderr
    assert engine.rows(project, "SELECT email_key, status FROM contacts WHERE status != 'active'") == [
        ("reader0@example.net", "bounced")]
    assert engine.rows(project, "SELECT scope, reason FROM suppressions") == [("*", "bounced")]
    assert engine.rows(project, "SELECT count(*) FROM events WHERE kind = 'bounced'") == [(1,)]  # read once
    report = json.loads(engine.mailcli(project, "report", "spring", "--json").stdout)
    assert (report["sent"], report["bounced"]) == (3, 1)


def test_export_erase_purge_and_the_audit_chain(project: Path, engine: Engine, tmp_path: Path, cli: Cli) -> None:
    import zipfile

    _send_to(project, engine, 4)
    exported = engine.mailcli(project, "privacy", "export", "reader0@example.net", "-o", "x.zip")
    assert exported.returncode == 0, exported.stderr
    with zipfile.ZipFile(project / "x.zip") as archive:
        profile = archive.read("profile.csv").decode("utf-8")
        assert "reader0@example.net" in profile
        assert "spring" in archive.read("deliveries.csv").decode("utf-8")

    erased = engine.mailcli(project, "privacy", "erase", "reader0@example.net", "--yes", "--json")
    assert erased.returncode == 0, erased.stderr
    assert json.loads(erased.stdout)["found"] is True
    assert "trace" not in erased.stderr and "still held" not in erased.stderr
    assert engine.rows(project, "SELECT count(*) FROM contacts WHERE email_key = 'reader0@example.net'") == [(0,)]
    assert engine.rows(project, "SELECT scope FROM suppressions") == [("*",)]  # only a keyed hash stays
    for table, column in (("events", "detail"), ("audit_log", "detail"), ("contacts", "attributes")):
        assert engine.rows(project, f"SELECT count(*) FROM {table} WHERE {column} LIKE '%reader0%'") == [(0,)]  # noqa: S608
    # Importing the address again does not bring the person back.
    again = _counts(engine.mailcli(project, "import", "people.csv", "--list", "news", "--basis", "customer", "--json"))
    assert (again["imported"], again["suppressed"]) == (0, 1)

    dry = engine.mailcli(project, "privacy", "purge", "--dry-run", "--as-of", "2031-01-01", "--json")
    assert dry.returncode == 0, dry.stderr
    assert engine.rows(project, "SELECT count(*) FROM contacts") == [(3,)]
    with pytest.MonkeyPatch.context() as later:  # the day the dry run looked at has come
        freeze(later, "2031-01-01T00:00:00Z")
        purged = cli("privacy", "purge", "--json", env=engine.env)
    assert purged.exit_code == 0, purged.stderr
    plan, done = json.loads(dry.stdout), json.loads(purged.stdout)
    assert plan == done  # the dry run counted exactly what the purge removed
    gone = sum(done.get(rule, 0) for rule in ("unsubscribed", "bounced", "inactive"))
    assert engine.rows(project, "SELECT count(*) FROM contacts") == [(3 - gone,)]
    report = json.loads(engine.mailcli(project, "report", "spring", "--json").stdout)
    assert report["sent"] == 4  # the totals outlive the rows
    verified = engine.mailcli(project, "privacy", "audit", "--verify")
    assert verified.returncode == 0, verified.stderr
    assert "intact" in verified.stdout + verified.stderr
    added = engine.mailcli(project, "privacy", "requests", "add", "reader1@example.net", "--type", "access",
                           "--received", "2026-01-05")
    assert added.returncode == 0, added.stderr
    assert engine.rows(project, "SELECT id, kind FROM requests") == [(1, "access")]


def test_a_workbook_and_a_mailchimp_zip_import_as_their_csv_files(project: Path, engine: Engine,
                                                                    tmp_path: Path) -> None:
    import zipfile

    import openpyxl

    engine.use(project)
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["Ledenlijst, stand 1 december"])
    sheet.append([])
    sheet.append(["E-mailadres", "Voornaam", "Postcode"])
    for row in (["anna@example.nl", "Anna", 1015], ["Bram@Example.COM", "Bram", 2511], ["not an address", "Eva"]):
        sheet.append(row)
        sheet.cell(sheet.max_row, 3).number_format = "0000"
    workbook.save(project / "leden.xlsx")
    data = _counts(engine.mailcli(project, "import", "leden.xlsx", "--list", "leden", "--basis", "customer", "--json"))
    assert (data["imported"], data["rejected"], data["rejects"]) == (2, 1, [6])
    rows = engine.rows(project, "SELECT email_key, first_name, attributes FROM contacts ORDER BY email_key")
    assert [(e, f, json.loads(a)) for e, f, a in rows] == [
        ("anna@example.nl", "Anna", {"postcode": "1015"}), ("bram@example.com", "Bram", {"postcode": "2511"})]

    data_dir = Path(__file__).parent.parent / "data"
    with zipfile.ZipFile(project / "members_export.zip", "w") as archive:
        for name in ("subscribed", "unsubscribed", "cleaned"):
            source = "mailchimp_export.csv" if name == "subscribed" else f"mailchimp_{name}.csv"
            archive.write(data_dir / source, f"members_export/{name}_members_export.csv")
    data = _counts(engine.mailcli(project, "import", "members_export.zip", "--list", "news", "--json"))
    assert (data["imported"], data["opted_out"], data["rejected"]) == (2, 3, 1)
    assert sorted(engine.rows(project, "SELECT scope, reason FROM suppressions")) == [
        ("*", "bounced"), ("news", "unsubscribed"), ("news", "unsubscribed")]


def test_a_service_message_reaches_who_left_marketing(project: Path, engine: Engine) -> None:
    emails = sorted(_import_people(project, engine, 5))
    for args in (("unsubscribe", "reader1@example.net", "--list", "news"), ("unsubscribe", "reader2@example.net"),
                 ("privacy", "restrict", "reader3@example.net")):
        assert engine.mailcli(project, *args).returncode == 0, args
    with SmtpServer() as smtp:
        set_smtp(project, "127.0.0.1", smtp.port)
        sent = engine.mailcli(project, "send", "outage", "--template", "newsletter", "--list", "news",
                              "--kind", "service", "--reason", "the portal is down tonight", "--yes")
        assert sent.returncode == 0, sent.stderr
        marketing = engine.mailcli(project, "send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        assert marketing.returncode == 0, marketing.stderr
        received = Counter(smtp.recipients())
    # The service message: everyone but the restricted; the newsletter: only who is still subscribed.
    assert received == Counter([e for e in emails if e != "reader3@example.net"]
                               + ["reader0@example.net", "reader4@example.net"])
    report = json.loads(engine.mailcli(project, "report", "outage", "--json").stdout)
    assert (report["kind"], report["reason"], report["sent"]) == ("service", "the portal is down tonight", 4)


def test_click_counts_through_serve_and_per_contact_clicks(project: Path, engine: Engine, tmp_path: Path) -> None:
    import email
    import email.policy
    import re
    import zipfile

    import httpx

    folder = project / "templates" / "clicky"
    folder.mkdir()
    (folder / "subject.txt").write_text("News\n", encoding="utf-8")
    (folder / "message.html").write_text(
        '<p>Hello {{ contact.first_name }}, <a href="https://acme.example/agenda">agenda</a></p>\n'
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n', encoding="utf-8")
    config = project / "mailcli.toml"
    text = re.sub(r"\n\[tracking\][^\[]*", "\n", config.read_text(encoding="utf-8"))
    config.write_text(text + "\n[tracking]\nclicks = true\nper_contact = true\n", encoding="utf-8")
    _import_people(project, engine, 2)
    with SmtpServer() as smtp:
        set_smtp(project, "127.0.0.1", smtp.port)
        sent = engine.mailcli(project, "send", "june", "--template", "clicky", "--list", "news", "--yes")
        assert sent.returncode == 0, sent.stderr
        messages = [email.message_from_bytes(m.data, policy=email.policy.default) for m in smtp.messages]
    # Each person's link is their own (per-contact clicks are on); none of them is the destination.
    tokens = [re.findall(r"/c/([A-Za-z0-9_-]+)\"", msg.get_body(("html",)).get_content()) for msg in messages]
    assert len(tokens) == 2 and all(len(found) == 1 for found in tokens) and tokens[0] != tokens[1], tokens
    server = Server(project, env=engine.env)
    try:
        for found in tokens:
            response = httpx.get(f"{server.base}/c/{found[0]}", follow_redirects=False, timeout=60)
            assert (response.status_code, response.headers["location"]) == (302, "https://acme.example/agenda")
        bad = httpx.get(f"{server.base}/c/{tokens[0][0][:-2]}xx", follow_redirects=False, timeout=60)
        assert bad.status_code == 400
    finally:
        assert server.stop() == 0, "".join(server.log)
    report = json.loads(engine.mailcli(project, "report", "june", "--json").stdout)
    assert [(c["url"], c["clicks"], c["people"]) for c in report["clicks"]] == [("https://acme.example/agenda", 2, 2)]
    assert engine.rows(project, "SELECT count(*) FROM clicks") == [(2,)]
    exported = engine.mailcli(project, "privacy", "export", "reader0@example.net", "-o", "x.zip")
    assert exported.returncode == 0, exported.stderr
    with zipfile.ZipFile(project / "x.zip") as archive:
        assert "https://acme.example/agenda" in archive.read("clicks.csv").decode("utf-8")
    dry = engine.mailcli(project, "privacy", "purge", "--dry-run", "--as-of", "2099-01-01", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["clicks"] == 2


def test_a_sign_up_through_serve_and_its_double_opt_in(project: Path, engine: Engine) -> None:
    import email
    import email.policy
    import re
    import time

    import httpx

    engine.use(project)
    wording = "Yes, send me the monthly newsletter."
    with (project / "mailcli.toml").open("a", encoding="utf-8") as config:
        config.write(f'\n[lists.news]\nconsent_text = "{wording}"\n')
    with SmtpServer() as relay:
        set_smtp(project, "127.0.0.1", relay.port)
        server = Server(project, env=engine.env)
        try:
            answer = httpx.post(f"{server.base}/subscribe/news", timeout=30,
                                data={"email": "new@example.org", "first_name": "Ann", "consent": "yes", "website": ""})
            assert answer.status_code == 200, answer.text
            assert engine.rows(project, "SELECT m.status, m.basis FROM memberships m") == [("unconfirmed", "none")]
            deadline = time.monotonic() + 30
            while not relay.messages and time.monotonic() < deadline:
                time.sleep(0.05)
            assert relay.recipients() == ["new@example.org"], "".join(server.log)
            message = email.message_from_bytes(relay.messages[0].data, policy=email.policy.default)
            body = message.get_body(("plain",))
            assert body is not None
            match = re.search(r"/confirm\?t=([A-Za-z0-9_-]{40})", body.get_content())
            assert match, body.get_content()
            token = match.group(1)
            assert httpx.get(f"{server.base}/confirm", params={"t": token}, timeout=30).status_code == 200
            done = httpx.post(f"{server.base}/confirm", params={"t": token}, data={"t": token}, timeout=30)
            assert done.status_code == 200, done.text
        finally:
            assert server.stop() == 0, "".join(server.log)
    assert engine.rows(project, "SELECT m.status, m.basis, m.consent_method, t.text FROM memberships m"
                                " JOIN consent_texts t ON t.hash = m.consent_text") == [
        ("subscribed", "consent", "double opt-in", wording)]
    assert engine.rows(project, "SELECT mail_status, confirmed_at IS NOT NULL FROM signups") == [("sent", True)]


@pytest.mark.parametrize("args", [
    ("replicate",),
])
def test_commands_not_yet_on_postgresql_refuse_clearly(project: Path, pg_database: PostgresDatabase,
                                                       args: tuple[str, ...]) -> None:
    (project / "mailcli.db").unlink()
    use_database(project, pg_database.url)
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    result = run_mailcli(*args, cwd=project)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert f"`mailcli {args[0]}` does not work with a PostgreSQL database yet" in result.stderr
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before  # nothing written
