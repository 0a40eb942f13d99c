"""`mailcli reconfirm --list L`: exactly one confirmation mail per member asked, resumable, through aiosmtpd,
on both engines (the ``engine`` fixture)."""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections import Counter
from pathlib import Path

from mailcli.errors import ExitCode
from tests.conftest import Cli, Engine, set_smtp
from tests.sendhelpers import add_contacts, people
from tests.smtpserver import SmtpServer


def _setup(project: Path, engine: Engine) -> None:
    engine.use(project)
    db = engine.location(project)
    add_contacts(db, "news", people(3, start=0), basis="none")  # imported before the basis was recorded
    add_contacts(db, "news", people(2, start=10), status="unconfirmed", basis="none")
    add_contacts(db, "news", people(2, start=20))  # consent on record: not asked


def _asked(server: SmtpServer) -> Counter[str]:
    return Counter(server.recipients())


def test_each_member_without_a_basis_is_asked_exactly_once_and_a_rerun_resumes(project: Path, cli: Cli, engine: Engine) -> None:
    _setup(project, engine)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.script("RCPT", "person1@example.net", ["451 4.3.0 try again later"])
        first = cli("--json", "reconfirm", "--list", "news", "--yes")
        assert first.exit_code == ExitCode.PARTIAL, first.output
        data = json.loads(first.stdout)
        assert (data["added"], data["sent"], data["deferred"]) == (5, 4, 1)
        again = cli("--json", "reconfirm", "--list", "news", "--yes")
        assert again.exit_code == 0, again.output
        assert (json.loads(again.stdout)["added"], json.loads(again.stdout)["sent"]) == (0, 1)
        third = cli("reconfirm", "--list", "news", "--yes")
        assert third.exit_code == 0 and "0 asked now (0 new)" in third.stderr
        asked = _asked(server)
        assert asked == Counter({f"person{i}@example.net": 1 for i in (0, 1, 2, 10, 11)})
        message = email.message_from_bytes(server.messages[0].data, policy=email.policy.default)
        assert message["Subject"] == "Confirm your subscription to news"
        assert message["List-Unsubscribe"] is None
    report = json.loads(cli("report", "reconfirm-news", "--json").stdout)
    assert (report["audience"], report["sent"], report["confirmed"]) == (5, 5, 0)


def test_a_message_whose_dot_may_have_gone_out_is_never_sent_again(project: Path, cli: Cli, engine: Engine) -> None:
    _setup(project, engine)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.script("RCPT", "person2@example.net", ["451 4.3.0 try again later"])
        assert cli("reconfirm", "--list", "news", "--yes").exit_code == ExitCode.PARTIAL
        # As a run killed between the final dot and the reply leaves it:
        engine.execute(project, "UPDATE deliveries SET status = 'sending' WHERE status = 'deferred'")
        rerun = cli("--json", "reconfirm", "--list", "news", "--yes")
        assert json.loads(rerun.stdout)["sent"] == 0
        assert "person2@example.net" not in server.recipients()
    report = json.loads(cli("report", "reconfirm-news", "--json").stdout)
    assert (report["sent"], report["uncertain"]) == (4, 1)


def test_confirming_gives_the_basis_and_the_next_campaign_reaches_them(project: Path, cli: Cli,
                                                                      engine: Engine) -> None:
    import httpx

    from tests.serve_support import Server

    _setup(project, engine)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        assert cli("reconfirm", "--list", "news", "--yes").exit_code == 0
        mail = next(m for m in server.messages if m.rcpt_tos == ["person0@example.net"])
        text = email.message_from_bytes(mail.data, policy=email.policy.default).get_body(("plain",)).get_content()  # type: ignore[union-attr]
        token = re.search(r"/confirm\?t=([A-Za-z0-9_-]{40})", text).group(1)  # type: ignore[union-attr]
        served = Server(project)
        try:
            assert httpx.post(f"{served.base}/confirm", data={"t": token}).status_code == 200
        finally:
            served.stop()
        report = json.loads(cli("report", "reconfirm-news", "--json").stdout)
        assert report["confirmed"] == 1
        sent = cli("--json", "send", "july", "--template", "newsletter", "--list", "news", "--yes")
        assert sent.exit_code == 0, sent.output
        data = json.loads(sent.stdout)
        assert (data["sent"], data["no_basis"]) == (3, 2)  # the two with consent, and the one who confirmed
        assert "person0@example.net" in [m.rcpt_tos[0] for m in server.messages[-3:]]


def _rows(project: Path) -> dict[str, int]:
    import sqlite3

    conn = sqlite3.connect(project / "mailcli.db")
    try:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
                for table in ("campaigns", "deliveries", "signups")}
    finally:
        conn.close()


def test_without_a_terminal_it_needs_yes_and_a_dry_run_only_counts(project: Path, cli: Cli) -> None:
    _setup(project, Engine("sqlite"))
    nothing = {"campaigns": 0, "deliveries": 0, "signups": 0}
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        dry = cli("--json", "reconfirm", "--list", "news", "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert json.loads(dry.stdout) == {"campaign": "reconfirm-news", "list": "news", "dry_run": True,
                                          "added": 5, "would_ask": 5}
        text = cli("reconfirm", "--list", "news", "--dry-run")
        assert "Dry run: 5 member(s) of list news would be asked to confirm now (5 for the first time);" \
               " nothing was sent or changed" in text.stderr
        assert "To send: mailcli reconfirm --list news" in text.stderr
        refused = cli("reconfirm", "--list", "news")
        assert refused.exit_code == ExitCode.USAGE, refused.output
        assert refused.stderr.startswith("Error: Refusing to send without confirmation\nHint: pass --yes")
        assert server.messages == [] and _rows(project) == nothing
        sent = cli("reconfirm", "--list", "news", "--yes")
        assert sent.exit_code == 0, sent.output
        assert len(server.messages) == 5
        # Nobody left to ask: nothing to confirm, and the dry run says so.
        assert cli("reconfirm", "--list", "news").exit_code == 0
        again = cli("--json", "reconfirm", "--list", "news", "--dry-run")
        assert (json.loads(again.stdout)["would_ask"], len(server.messages)) == (0, 5)


def test_on_a_terminal_it_asks_first(project: Path) -> None:
    from tests.terminal import Terminal

    _setup(project, Engine("sqlite"))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        for answer, code, sent in (("n\n", ExitCode.USAGE, 0), ("y\n", 0, 5)):
            term = Terminal("reconfirm", "--list", "news", cwd=project)
            question = term.read_until("[y/N]:")
            assert "Send 5 confirmation mail(s) of reconfirm-news (5 member(s) of list news asked for the first" \
                   " time) via 127.0.0.1:" in question
            term.type(answer)
            assert term.wait() == code, term.text
            assert len(server.messages) == sent
            if not sent:  # "no" changed nothing
                assert _rows(project) == {"campaigns": 0, "deliveries": 0, "signups": 0}
