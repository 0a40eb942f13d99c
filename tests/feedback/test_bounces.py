"""`mailcli bounces`: DSNs, ARF complaints and mailto unsubscribes from mbox and Maildir."""

from __future__ import annotations

import base64
import json
import mailbox
import os
import quopri
from pathlib import Path
from string import Template

import pytest

from mailcli.feedback import reports
from tests.conftest import Cli
from tests.feedback.test_feedback_support import Seeded, add_campaign, seed

DATA = Path(__file__).parent.parent / "data" / "feedback"
PEOPLE = ["ann@example.org", "bob@example.org", "cy@example.org", "dee@example.org", "eve@example.org",
          "fay@example.org"]
_counter = [0]


def build(name: str, **values: str) -> bytes:
    """A fixture from tests/data/feedback with the placeholders filled in."""
    _counter[0] += 1
    values.setdefault("ref", f"r{_counter[0]:04d}")
    values.setdefault("subject_note", "Failure")
    text = Template((DATA / name).read_text(encoding="utf-8")).safe_substitute(values)
    return text.encode("utf-8")


def list_unsubscribe(s: Seeded, email: str, list_name: str = "news") -> str:
    """The header value the send engine writes (mailcli/send/headers.py)."""
    token = s.token(email, list_name)
    local, _, domain = (s.settings.unsubscribe.mailto or "").partition("@")
    return (f"<{s.settings.unsubscribe.url}?t={token}>, "
            f"<mailto:{local}+{token}@{domain}?subject=unsubscribe%20{token}>")


def dsn(s: Seeded, email: str, message_id: str, *, action: str, status: str | None, diagnostic: str) -> bytes:
    return build("dsn_generic.eml", rcpt=email, message_id=message_id, action=action,
                 status_line=f"Status: {status}" if status else "X-No-Status: none", diagnostic=diagnostic)


def mailto_request(s: Seeded, email: str, *, list_name: str = "news", in_subject: bool = True,
                   plus: bool = True) -> bytes:
    """What a mail client sends for the mailto: part of List-Unsubscribe."""
    header = list_unsubscribe(s, email, list_name)
    mailto = header.split("<mailto:", 1)[1].rstrip(">")
    address, _, query = mailto.partition("?subject=")
    local, _, domain = address.partition("@")
    to = address if plus else f"{local.split('+')[0]}@{domain}"
    subject = query.replace("%20", " ") if in_subject else "Unsubscribe"
    return build("mailto_unsubscribe.eml", rcpt=email, mailto_to=to, subject=subject)


def scenario(s: Seeded) -> tuple[int, list[bytes]]:
    """One campaign and what came back for it: every kind of feedback once."""
    campaign, mids = add_campaign(s, "may")
    messages = [
        build("postfix_550_511.eml", rcpt="ann@example.org", message_id=mids["ann@example.org"],
              list_unsubscribe=list_unsubscribe(s, "ann@example.org")),
        build("postfix_delayed_422.eml", rcpt="bob@example.org", message_id=mids["bob@example.org"],
              list_unsubscribe=list_unsubscribe(s, "bob@example.org")),
        build("yahoo_arf_abuse.eml", rcpt="cy@example.org", message_id=mids["cy@example.org"],
              list_unsubscribe=list_unsubscribe(s, "cy@example.org")),
        mailto_request(s, "dee@example.org"),
        build("vacation.eml", rcpt="eve@example.org", message_id=mids["eve@example.org"]),
        dsn(s, "fay@example.org", mids["fay@example.org"], action="failed", status="5.7.26",
            diagnostic="550 5.7.26 Unauthenticated email from example.org is not accepted due to domain's DMARC policy."),
        build("human.eml"),
    ]
    return campaign, messages


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    box = mailbox.mbox(str(path))
    for data in messages:
        box.add(data)
    box.flush()
    box.close()
    return path


def write_maildir(path: Path, messages: list[bytes]) -> Path:
    box = mailbox.Maildir(str(path), create=True)
    for data in messages:
        box.add(data)
    return path


def audience(s: Seeded, list_name: str = "news") -> set[str]:
    """Who the next campaign on the list may go to: active members, minus suppressed and restricted."""
    from mailcli import tokens

    secret = s.settings.secret()
    rows = s.store.conn.execute(
        "SELECT c.email_key FROM contacts c JOIN memberships m ON m.contact_id = c.id JOIN lists l ON l.id = m.list_id"
        " WHERE l.name = ? AND m.status = 'subscribed' AND c.status = 'active' AND c.restricted_at IS NULL"
        " AND c.no_marketing_at IS NULL",
        (list_name,),
    )
    suppressed = {r[0] for r in s.store.conn.execute("SELECT hmac FROM suppressions WHERE scope IN ('*', ?)", (list_name,))}
    return {key for (key,) in rows if tokens.address_hmac(secret, key) not in suppressed}


def _events_by_campaign(s: Seeded, campaign: int) -> dict[str, int]:
    rows = s.store.conn.execute("SELECT kind, count(*) FROM events WHERE campaign_id = ? GROUP BY kind", (campaign,))
    return dict(rows.fetchall())


@pytest.mark.parametrize("kind", ["mbox", "maildir"])
def test_feedback_mailbox_end_to_end(project: Path, cli: Cli, tmp_path: Path, kind: str) -> None:
    s = seed(project, PEOPLE)
    campaign, messages = scenario(s)
    source = (write_mbox(tmp_path / "bounces.mbox", messages) if kind == "mbox"
              else write_maildir(tmp_path / "Maildir", messages))

    result = cli("bounces", str(source), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("messages", "hard_bounces", "soft_bounces", "delays", "complaints", "unsubscribes",
                                 "policy_rejections", "ignored", "unmatched", "already_processed")} == {
        "messages": 7, "hard_bounces": 1, "soft_bounces": 0, "delays": 1, "complaints": 1, "unsubscribes": 1,
        "policy_rejections": 1, "ignored": 1, "unmatched": 1, "already_processed": 0}
    assert data["unmatched_messages"] == [{
        "message_id": data["unmatched_messages"][0]["message_id"], "from_domain": "example.net",
        "subject": "Question about your newsletter", "reason": "not a bounce, complaint or unsubscribe request",
        "first_seen": None}]
    assert data["policy_details"] == [{"campaign": "may", "status": "5.7.26", "messages": 1}]

    assert s.suppressions("ann@example.org") == {"*": "bounced"}
    assert s.contact("ann@example.org")["status"] == "bounced"  # type: ignore[index]
    assert s.suppressions("bob@example.org") == {}
    assert s.suppressions("cy@example.org") == {"*": "complained"}
    assert s.membership("dee@example.org")[::2] == ("unsubscribed", "mailto")
    assert s.suppressions("dee@example.org") == {"news": "unsubscribed"}
    assert s.suppressions("fay@example.org") == {}  # 5.7.x never suppresses the address
    # the next campaign skips the hard bounce, the complainer and the unsubscriber, keeps the delayed one
    assert audience(s) == {"bob@example.org", "eve@example.org", "fay@example.org"}
    # report counts these per campaign; the delay is an event on the delivery, not a bounce
    counts = _events_by_campaign(s, campaign)
    assert counts == {"bounced": 1, "delayed": 1, "complained": 1, "unsubscribed": 1, "policy_rejected": 1}

    before = s.counts()
    again = cli("bounces", str(source), "--json")
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["already_processed"] == 6 and second["messages"] == 7
    assert all(second[k] == 0 for k in ("hard_bounces", "soft_bounces", "complaints", "unsubscribes"))
    # the person's question is listed again until someone acknowledges it
    assert second["unmatched"] == 1 and second["unmatched_messages"][0]["first_seen"]
    assert s.counts() == before

    if kind == "maildir":
        # handled mail is marked seen; the one a person must read stays new (unread)
        assert len(os.listdir(source / "new")) == 1
        assert sorted(name.rsplit(":2,", 1)[1] for name in os.listdir(source / "cur")) == ["S"] * 6



def _scenario_mbox(project: Path, tmp_path: Path) -> tuple[Seeded, Path]:
    """The seeded people and the scenario's messages in an mbox file."""
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    return s, write_mbox(tmp_path / "b.mbox", messages)

def test_text_output_and_quiet(project: Path, cli: Cli, tmp_path: Path) -> None:
    s, box = _scenario_mbox(project, tmp_path)
    quiet = cli("-q", "bounces", str(box))
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""
    s.store.conn.execute("DELETE FROM processed_messages")
    loud = cli("bounces", str(box))
    assert loud.exit_code == 0, loud.output
    assert "7 messages from" in loud.stdout and "1 hard bounce, 0 soft bounces, 1 complaint" in loud.stdout and "1 delay notice" in loud.stdout
    assert "Question about your newsletter" in loud.stdout
    assert "policy reasons (5.7.26)" in loud.stderr and "doctor --dns" in loud.stderr


def test_delete_removes_processed_mail_but_keeps_the_unmatched(project: Path, cli: Cli, tmp_path: Path) -> None:
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    maildir = write_maildir(tmp_path / "Maildir", messages)
    box = write_mbox(tmp_path / "b.mbox", messages[:3] + [build("human.eml")])
    assert cli("bounces", str(maildir), "--delete").exit_code == 0
    assert len(os.listdir(maildir / "new")) == 1 and os.listdir(maildir / "cur") == []
    assert cli("bounces", str(box), "--delete").exit_code == 0
    left = mailbox.mbox(str(box))
    assert [m["Subject"] for m in left] == ["Question about your newsletter"]


def test_an_unreadable_maildir_entry_is_skipped_and_named_and_the_rest_is_processed(
        project: Path, cli: Cli, tmp_path: Path) -> None:
    # A folder or a broken link among the messages (EACCES takes the same
    # path, but root reads a file of mode 000) stopped every run at that
    # entry: the messages after it, a mailto unsubscribe among them, were
    # never processed.
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    maildir = write_maildir(tmp_path / "Maildir", messages)
    (maildir / "new" / "0000.dir").mkdir()  # sorts before every message mailbox.Maildir names
    (maildir / "new" / "0001.link").symlink_to(tmp_path / "gone")

    result = cli("bounces", str(maildir))
    assert result.exit_code == 3, result.output
    assert f"Warning: Cannot read {maildir}/new/0000.dir: Is a directory; skipped" in result.stderr
    assert f"Warning: Cannot read {maildir}/new/0001.link: a symbolic link to a file that does not exist" \
        in result.stderr
    assert f"Error: 2 entries of {maildir} could not be read and were skipped" in result.stderr
    assert "unexpected" not in result.stderr and "Traceback" not in result.output
    assert "7 messages from" in result.stdout
    assert s.membership("dee@example.org")[::2] == ("unsubscribed", "mailto")
    assert s.suppressions("ann@example.org") == {"*": "bounced"}
    assert sorted(os.listdir(maildir / "new"))[:2] == ["0000.dir", "0001.link"]
    assert len(os.listdir(maildir / "new")) == 3 and len(os.listdir(maildir / "cur")) == 6  # + the person's question

    before = s.counts()
    again = cli("bounces", str(maildir), "--json")
    assert again.exit_code == 3
    data = json.loads(again.stdout)
    assert data["unreadable"] == [
        {"entry": f"{maildir}/new/0000.dir", "reason": "Is a directory"},
        {"entry": f"{maildir}/new/0001.link", "reason": "a symbolic link to a file that does not exist"}]
    assert data["already_processed"] == 6 and s.counts() == before
    (maildir / "new" / "0000.dir").rmdir()
    (maildir / "new" / "0001.link").unlink()
    assert cli("bounces", str(maildir)).exit_code == 0


def global_dsn(final_recipient: str, message_id: str | None, *, encoding: str = "8bit") -> bytes:
    """An RFC 6533 report as an MTA writes it for a UTF-8 message: both report parts UTF-8 text,
    in base64 or quoted-printable when a 7-bit relay carried it."""
    status = ("Reporting-MTA: dns; mx.example\n"
              "Arrival-Date: Thu, 16 May 2024 10:00:00 +0000\n"
              "\n"
              f"Final-Recipient: {final_recipient}\n"
              "Action: failed\n"
              "Status: 5.1.1\n"
              "Remote-MTA: dns; mx.bücher.example\n"
              "Diagnostic-Code: smtp; 550 5.1.1 Empfänger unbekannt\n")
    headers = ("From: Example News <news@example.org>\nSubject: Grüße aus Köln\n"
               f"Message-ID: {message_id}\nMIME-Version: 1.0\n") if message_id else None

    def part(content_type: str, text: str) -> str:
        data = text.encode("utf-8")
        if encoding == "base64":
            body = base64.encodebytes(data).decode("ascii")
        elif encoding == "quoted-printable":
            body = quopri.encodestring(data).decode("ascii")
        else:
            body = text
        return f"--B\nContent-Type: {content_type}\nContent-Transfer-Encoding: {encoding}\n\n{body}\n"

    _counter[0] += 1
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example>\nTo: bounces@example.org\n"
        f"Subject: Undelivered Mail Returned to Sender\nMessage-ID: <global{_counter[0]}@mx.example>\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=global-delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain; charset=utf-8\n\nYour message could not be delivered.\n\n"
        + part("message/global-delivery-status", status)
        + (part("message/global-headers", headers) if headers else "")
        + "--B--\n"
    ).encode("utf-8")


@pytest.mark.parametrize("form", ["delivery-status", "global 8bit", "global base64", "global quoted-printable"])
def test_an_internationalised_report_bounces_like_a_classic_one(
        project: Path, cli: Cli, tmp_path: Path, form: str) -> None:
    # RFC 6533: the stdlib parses a message/global-delivery-status part as one
    # message, so its per-recipient fields were read as a body and the report
    # was listed as "delivery report without recipient fields".
    s = seed(project, PEOPLE)
    campaign, mids = add_campaign(s, "may")
    if form == "delivery-status":
        report = dsn(s, "ann@example.org", mids["ann@example.org"], action="failed", status="5.1.1",
                     diagnostic="550 5.1.1 user unknown")
    else:
        report = global_dsn("rfc822; ann@example.org", mids["ann@example.org"], encoding=form.split()[1])
    result = cli("bounces", str(write_mbox(tmp_path / "b.mbox", [report])), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["hard_bounces"], data["unmatched"], data["suppressed"]) == (1, 0, 1), data["unmatched_messages"]
    assert s.suppressions("ann@example.org") == {"*": "bounced"}
    assert s.contact("ann@example.org")["status"] == "bounced"  # type: ignore[index]
    assert _events_by_campaign(s, campaign) == {"bounced": 1}
    assert audience(s) == {p for p in PEOPLE if p != "ann@example.org"}


def test_a_utf8_address_in_a_report_is_read_with_its_escapes(project: Path, cli: Cli, tmp_path: Path) -> None:
    # A report that quotes no Message-ID falls back to the address it names;
    # RFC 6533 writes a UTF-8 one as "utf-8; " with \x{HEX} escapes.
    s = seed(project, ["jörg@example.org", *PEOPLE])
    add_campaign(s, "may")
    report = global_dsn("utf-8; J\\x{F6}rg@example.org", None)
    parsed = reports.parse_dsn(reports.parse_bytes(report))
    assert parsed is not None
    (recipient,) = parsed.recipients
    assert (recipient.final_recipient, recipient.verdict.kind, recipient.diagnostic) == (
        "Jörg@example.org", "hard", "smtp; 550 5.1.1 Empfänger unbekannt")
    assert recipient.remote_mta == "mx.bücher.example"
    result = cli("bounces", str(write_mbox(tmp_path / "b.mbox", [report])), "--json")
    assert json.loads(result.stdout)["hard_bounces"] == 1, result.output
    assert s.suppressions("jörg@example.org") == {"*": "bounced"}


NEW_MAIL = (b"From MAILER-DAEMON Thu May 16 10:00:00 2024\nFrom: someone@example.net\nTo: bounces@example.org\n"
            b"Subject: Just delivered\nMessage-ID: <just-delivered@example.net>\n\nNew mail.\n\n")


def _deliver(box: Path) -> None:
    """What an MTA does: append one message to the mbox."""
    with box.open("ab") as handle:
        handle.write(NEW_MAIL)


def test_delete_keeps_mail_that_came_in_while_the_mbox_was_read(
        project: Path, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The mail server appended to the mbox between the read and the delete:
    # "Error: unexpected ExternalClashError: Size of mailbox file changed",
    # exit 1, nothing deleted. Now the delete reads the mbox again under the
    # lock and removes exactly the messages it processed.
    s, box = _scenario_mbox(project, tmp_path)
    lock = mailbox.mbox.lock

    def deliver_then_lock(self: mailbox.mbox) -> None:  # the delivery lands just before the delete locks
        _deliver(box)
        lock(self)

    monkeypatch.setattr(mailbox.mbox, "lock", deliver_then_lock)
    result = cli("bounces", str(box), "--delete")
    assert result.exit_code == 0, result.output
    assert "7 messages from" in result.stdout and s.suppressions("ann@example.org") == {"*": "bounced"}
    left = [m["Subject"] for m in mailbox.mbox(str(box))]
    assert left == ["Question about your newsletter", "Just delivered"]
    assert not (tmp_path / "b.mbox.lock").exists()


def test_delete_says_so_when_the_mbox_changes_under_its_lock(
        project: Path, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A program that writes without taking the lock: nothing is deleted,
    # the run says why in one line (exit 3), and a rerun deletes.
    s, box = _scenario_mbox(project, tmp_path)
    flush = mailbox.mbox.flush
    delivered: list[bool] = []

    def deliver_then_flush(self: mailbox.mbox) -> None:
        if not delivered:
            delivered.append(True)
            _deliver(box)
        flush(self)

    monkeypatch.setattr(mailbox.mbox, "flush", deliver_then_flush)
    result = cli("bounces", str(box), "--delete")
    assert result.exit_code == 3, result.output
    assert result.stderr.splitlines()[-2:] == [
        f"Error: {box}: the mailbox changed while it was read (new mail came in); nothing was deleted",
        "Hint: run the same command again to delete what was read"]
    assert "unexpected" not in result.stderr
    assert s.suppressions("ann@example.org") == {"*": "bounced"}  # what was read is applied
    assert len(mailbox.mbox(str(box))) == 8 and not (tmp_path / "b.mbox.lock").exists()

    monkeypatch.setattr(mailbox.mbox, "flush", flush)
    again = cli("bounces", str(box), "--delete", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["not_deleted"] is None
    assert [m["Subject"] for m in mailbox.mbox(str(box))] == ["Question about your newsletter", "Just delivered"]


def test_delete_waits_for_the_mbox_lock_then_says_so(
        project: Path, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailcli.feedback import sources

    seed(project, PEOPLE)
    box = write_mbox(tmp_path / "b.mbox", [build("vacation.eml", rcpt="ann@example.org", message_id="<x@y>")])
    (tmp_path / "b.mbox.lock").write_text("")  # an MTA delivering (or one that died holding the lock)
    monkeypatch.setattr(sources, "LOCK_WAIT", 0.3)
    result = cli("bounces", str(box), "--delete", "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["not_deleted"] == "another program kept the mailbox locked"
    assert f"Error: {box}: another program kept the mailbox locked; nothing was deleted" in result.stderr
    assert len(mailbox.mbox(str(box))) == 1
    (tmp_path / "b.mbox.lock").unlink()
    assert cli("bounces", str(box), "--delete").exit_code == 0
    assert len(mailbox.mbox(str(box))) == 0


def test_redacted_complaint_is_matched_by_the_returned_token(project: Path, cli: Cli, tmp_path: Path) -> None:
    s = seed(project, PEOPLE)
    campaign, _ = add_campaign(s, "may")
    box = write_mbox(tmp_path / "b.mbox", [
        build("arf_redacted_headers.eml", list_unsubscribe=list_unsubscribe(s, "eve@example.org")),
    ])
    data = json.loads(cli("bounces", str(box), "--json").stdout)
    assert data["complaints"] == 1
    assert s.suppressions("eve@example.org") == {"*": "complained"}
    assert _events_by_campaign(s, campaign) == {"complained": 1}


def test_attribution_never_guesses(project: Path, cli: Cli, tmp_path: Path) -> None:
    s = seed(project, PEOPLE)
    _, mids = add_campaign(s, "may")
    foreign = dsn(s, "ann@example.org", "<someone-else@mail.example.org>", action="failed", status="5.1.1",
                  diagnostic="550 5.1.1 user unknown")
    no_id = build("dsn_generic.eml", rcpt="Bob@Example.org", message_id="", action="failed", status_line="Status: 5.1.1",
                  diagnostic="550 5.1.1 user unknown").replace(b"Message-ID: \n", b"")
    stranger = dsn(s, "zed@example.org", "<x@y.example>", action="failed", status="5.1.1", diagnostic="550 5.1.1 no")
    box = write_mbox(tmp_path / "b.mbox", [foreign, no_id, stranger])
    data = json.loads(cli("bounces", str(box), "--json").stdout)
    assert data["hard_bounces"] == 1 and data["unmatched"] == 2
    assert [u["reason"] for u in data["unmatched_messages"]] == ["bounce of a message mailcli has no record of"] * 2
    assert s.suppressions("ann@example.org") == {}  # a quoted Message-ID that is not ours: not acted on
    assert s.suppressions("bob@example.org") == {"*": "bounced"}  # no Message-ID: exact address match


def test_nonstandard_bounce_through_flufl(project: Path, cli: Cli, tmp_path: Path) -> None:
    s = seed(project, PEOPLE)
    _, mids = add_campaign(s, "may")
    box = write_mbox(tmp_path / "b.mbox", [build("qmail_nonstandard.eml", rcpt="ann@example.org",
                                                   message_id=mids["ann@example.org"])])
    data = json.loads(cli("bounces", str(box), "--json").stdout)
    assert data["hard_bounces"] == 1
    assert s.suppressions("ann@example.org") == {"*": "bounced"}


def test_mailto_variants(project: Path, cli: Cli, tmp_path: Path) -> None:
    s = seed(project, PEOPLE, lists=("news", "events"))
    add_campaign(s, "may")
    only_subject = mailto_request(s, "ann@example.org", plus=False)
    only_plus = mailto_request(s, "bob@example.org", list_name="events", in_subject=False)
    bad = mailto_request(s, "cy@example.org").replace(b"unsubscribe+", b"unsubscribe+X").replace(
        b"Subject: unsubscribe ", b"Subject: unsubscribe X")
    no_token = build("mailto_unsubscribe.eml", rcpt="dee@example.org", mailto_to="unsubscribe@example.org",
                     subject="please remove me")
    box = write_mbox(tmp_path / "b.mbox", [only_subject, only_plus, bad, no_token])
    data = json.loads(cli("bounces", str(box), "--json").stdout)
    assert data["unsubscribes"] == 2 and data["unmatched"] == 2
    assert {u["reason"] for u in data["unmatched_messages"]} == {
        "unsubscribe request with an invalid token",
        "unsubscribe request without a token: unsubscribe the sender by hand"}
    assert s.membership("ann@example.org", "news")[0] == "unsubscribed"
    assert s.membership("bob@example.org", "events")[0] == "unsubscribed"
    assert s.membership("bob@example.org", "news")[0] == "subscribed"
    assert s.membership("cy@example.org")[0] == "subscribed"
    assert s.membership("dee@example.org")[0] == "subscribed"


def test_soft_bounces_from_enough_campaigns_suppress(project: Path, cli: Cli, tmp_path: Path) -> None:
    s = seed(project, PEOPLE)
    messages = []
    for name in ("c1", "c2", "c3"):
        _, mids = add_campaign(s, name)
        messages.append(dsn(s, "bob@example.org", mids["bob@example.org"], action="failed", status="5.2.2",
                            diagnostic="552 5.2.2 mailbox full"))
    write_mbox(tmp_path / "one.mbox", messages[:2])
    write_mbox(tmp_path / "two.mbox", messages[2:])
    assert json.loads(cli("bounces", str(tmp_path / "one.mbox"), "--json").stdout)["soft_bounces"] == 2
    assert s.suppressions("bob@example.org") == {}
    data = json.loads(cli("bounces", str(tmp_path / "two.mbox"), "--json").stdout)
    assert data["soft_bounces"] == 1 and data["suppressed"] == 1
    assert s.suppressions("bob@example.org") == {"*": "bounced"}


@pytest.mark.parametrize(
    ("action", "status", "diagnostic", "kind", "code"),
    [
        ("failed", "5.1.1", "550 5.1.1 <x@example.net>: Recipient address rejected: User unknown", "hard", "5.1.1"),
        ("failed", "5.2.2", "552 5.2.2 Mailbox full", "soft", "5.2.2"),
        ("delayed", "4.7.0", "421 4.7.0 Try again later, closing connection. (rate limited)", "delayed", "4.7.0"),
        ("failed", "5.7.26", "550 5.7.26 This mail has been blocked because the sender is unauthenticated.", "policy", "5.7.26"),
        ("failed", "5.1.10", "556 5.1.10 Recipient address has null MX", "hard", "5.1.10"),
        ("failed", None, "550 Requested action not taken: mailbox unavailable", "hard", "550"),
        ("failed", "5.0.0", "550 User unknown", "hard", "550"),
        ("failed", "5.0.0", "550 Message rejected as spam", "policy", "550"),
        ("failed", "5.0.0", "smtp; 5.1.2 host not found", "hard", "5.1.2"),
        ("delayed", "4.4.1", "connect to mx.example.net[192.0.2.25]:25: Connection timed out", "delayed", "4.4.1"),
        ("delayed", "5.1.1", "550 5.1.1 quoted from an earlier try", "delayed", "5.1.1"),
        ("relayed", "2.0.0", "relayed to a server without DSN", "relayed", "2.0.0"),
        ("expanded", "2.0.0", "expanded to 3 list members", "expanded", "2.0.0"),
        ("failed", "4.4.7", "delivery time expired", "soft", "4.4.7"),
        ("failed", "5.2.1", "550 5.2.1 The email account that you tried to reach is disabled.", "hard", "5.2.1"),
        ("failed", "5.4.4", "unable to route", "soft", "5.4.4"),
        ("delivered", "2.0.0", "250 2.0.0 Ok", "none", "2.0.0"),
        ("failed", None, "no code here at all", "unknown", None),
    ],
)
def test_c04_status_codes_are_classified(action: str, status: str | None, diagnostic: str, kind: str,
                                         code: str | None) -> None:
    raw = Template((DATA / "dsn_generic.eml").read_text()).safe_substitute(
        rcpt="x@example.net", message_id="<m@example.org>", action=action,
        status_line=f"Status: {status}" if status else "X-Note: no status", diagnostic=diagnostic, ref="r")
    parsed = reports.parse_dsn(reports.parse_bytes(raw.encode()))
    assert parsed is not None
    (recipient,) = parsed.recipients
    assert recipient.final_recipient == "x@example.net"
    assert recipient.remote_mta == "mx.example.net"
    assert parsed.original.message_id == "<m@example.org>"
    assert (recipient.verdict.kind, recipient.verdict.code) == (kind, code)


def test_arf_fields_are_read() -> None:
    raw = Template((DATA / "yahoo_arf_abuse.eml").read_text()).safe_substitute(
        rcpt="x@example.net", message_id="<m@example.org>", list_unsubscribe="<https://x.example/u?t=abc>", ref="r")
    arf = reports.parse_arf(reports.parse_bytes(raw.encode()))
    assert arf is not None
    assert (arf.feedback_type, arf.user_agent, arf.version) == ("abuse", "Yahoo!-Mail-Feedback/2.0", "1")
    assert arf.original.message_id == "<m@example.org>"
    assert reports.parse_dsn(reports.parse_bytes(raw.encode())) is None



@pytest.mark.parametrize("last", ["-", "_", "A"])
def test_a_token_is_read_whole_from_the_subject_and_the_plus_address(last: str) -> None:
    # Real tokens with each kind of last character: "-" ends one token in 64.
    from mailcli.tokens import make_unsubscribe_token, parse_unsubscribe_token

    secret = b"k" * 32
    uid = next(u for n in range(10_000) if make_unsubscribe_token(secret, u := f"{n:018x}", 1).endswith(last))
    token = make_unsubscribe_token(secret, uid, 1)
    for subject in (f"unsubscribe {token}", f"Re: Unsubscribe {token}.", f"unsubscribe {token} (sent from my phone)"):
        msg = reports.parse_bytes(f"To: unsubscribe@example.org\nSubject: {subject}\n\nbye\n".encode())
        assert reports.mailto_tokens(msg, "unsubscribe@example.org") == [token], subject
    msg = reports.parse_bytes(f"To: unsubscribe+{token}@example.org\nSubject: x\n\nbye\n".encode())
    assert reports.mailto_tokens(msg, "unsubscribe@example.org") == [token]
    parsed = parse_unsubscribe_token(secret, token)
    assert parsed is not None and parsed.contact_uid == uid

def test_bad_sources(project: Path, cli: Cli, tmp_path: Path) -> None:
    seed(project, [])
    missing = cli("bounces", str(tmp_path / "nope.mbox"))
    assert missing.exit_code == 2 and "nope.mbox" in missing.stderr and "Traceback" not in missing.output
    not_mbox = tmp_path / "notes.txt"
    not_mbox.write_text("hello\n")
    bad = cli("bounces", str(not_mbox))
    assert bad.exit_code == 2 and "not an mbox file" in bad.stderr
    folder = tmp_path / "plain"
    folder.mkdir()
    assert cli("bounces", str(folder)).exit_code == 2
    no_password = cli("bounces", "imaps://bounces@127.0.0.1:1/INBOX")
    assert no_password.exit_code == 4 and "MAILCLI_IMAP_PASSWORD" in no_password.stderr
    clear = cli("bounces", "imap://bounces@mail.example.org/INBOX", env={"MAILCLI_IMAP_PASSWORD": "x"})
    assert clear.exit_code == 2 and "only allowed to localhost" in clear.stderr
    in_url = cli("bounces", "imaps://bounces:secret@mail.example.org/INBOX")
    assert in_url.exit_code == 2 and "secret" not in in_url.stderr
    refused = cli("bounces", "imaps://bounces@127.0.0.1:1/INBOX", env={"MAILCLI_IMAP_PASSWORD": "x"})
    assert refused.exit_code == 5 and "cannot connect" in refused.stderr


def test_reports_that_name_nobody_are_left_with_their_reason(project: Path, cli: Cli, tmp_path: Path) -> None:
    # What a mailbox of bounces also holds: success notices, reports without
    # recipients or a status, notices and complaints about mail that is not
    # ours. Each is counted or listed with why it was left; none changes anyone.
    s = seed(project, PEOPLE)
    _, mids = add_campaign(s, "may")

    def report(rcpt: str, message_id: str, action: str, status: str | None) -> bytes:
        data = dsn(s, rcpt, message_id, action=action, status=status, diagnostic="smtp; see the status")
        return data if message_id else data.replace(b"Message-ID: \n", b"")

    def arf(rcpt: str, message_id: str, feedback_type: str = "abuse") -> bytes:
        return build("yahoo_arf_abuse.eml", rcpt=rcpt, message_id=message_id).replace(
            b"Feedback-Type: abuse", f"Feedback-Type: {feedback_type}".encode())

    no_recipient = b"".join(line for line in report("ann@example.org", mids["ann@example.org"], "failed", "5.1.1")
                            .splitlines(keepends=True) if not line.startswith((b"Final-", b"Action", b"Status",
                                                                                b"Remote", b"Diagnostic")))
    messages = [
        report("ann@example.org", mids["ann@example.org"], "delivered", "2.0.0"),
        no_recipient,
        report("bob@example.org", "<not-ours@mail.example.net>", "delayed", "4.4.1"),
        report("zed@example.org", "", "delayed", "4.4.1"),
        arf("cy@example.org", mids["cy@example.org"], "fraud"),
        arf("zed@example.org", "<not-ours@mail.example.net>"),
    ]
    before = s.counts()
    result = cli("bounces", str(write_mbox(tmp_path / "b.mbox", messages)), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["messages"], data["ignored"], data["unmatched"]) == (6, 1, 5)  # the success notice is ignored
    assert [u["reason"] for u in data["unmatched_messages"]] == [
        "delivery report without a status code",
        "delayed notice about a message mailcli has no record of",
        "delayed notice for an address that is not a contact",
        "feedback report of type 'fraud'",
        "complaint about a message mailcli has no record of",
    ]
    assert all(data[k] == 0 for k in ("hard_bounces", "soft_bounces", "complaints", "delays", "suppressed"))
    assert s.counts() == before
    again = json.loads(cli("bounces", str(tmp_path / "b.mbox"), "--json").stdout)
    assert again["unmatched"] == 5 and all(u["first_seen"] for u in again["unmatched_messages"])  # listed again


def test_an_auto_submitted_header_with_an_8bit_byte_is_read_not_a_crash(
        project: Path, cli: Cli, tmp_path: Path) -> None:
    # The lenient parser hands such a header over as a Header object, and
    # .strip() on it ended the run with "unexpected AttributeError".
    seed(project, PEOPLE)
    box = write_mbox(tmp_path / "b.mbox", [
        b"From: ann@example.org\nTo: news@example.org\nSubject: Away\nAuto-Submitted: auto-replied \xe9t\xe9\n"
        b"Message-ID: <away.1@example.org>\n\nI am away.\n"])
    result = cli("bounces", str(box), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ignored"] == 1
