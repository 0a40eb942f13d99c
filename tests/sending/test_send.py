"""`mailcli send` end to end against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from mailcli.errors import ExitCode
from mailcli.send.pool import worker_count
from tests.conftest import Cli, set_smtp
from tests.sendhelpers import add_contacts, deliveries, people
from tests.smtpserver import SmtpServer, free_port


def _send(cli: Cli, *args: str) -> object:
    return cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", *args)


def _report(cli: Cli, campaign: str = "spring") -> dict[str, int]:
    result = cli("report", campaign, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _header_checks(raw: bytes, rcpt: str) -> email.message.EmailMessage:
    # Wire format: CRLF only, no line over 998 octets.
    assert raw.count(b"\n") == raw.count(b"\r\n") and raw.count(b"\r") == raw.count(b"\r\n")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "List-Id",
                 "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert len(msg.get_all(name) or []) == 1, name
    assert msg.get_all("Cc") is None and msg.get_all("Bcc") is None
    assert msg["To"].addresses[0].addr_spec == rcpt and len(msg["To"].addresses) == 1
    assert msg["From"].addresses[0].addr_spec == "news@example.org"
    assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
    assert msg["MIME-Version"] == "1.0"
    assert msg["List-Id"] == "<news.example.org>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = [part.strip() for part in str(msg["List-Unsubscribe"]).split(",")]
    assert https.startswith("<https://news.example.org/unsubscribe?t=") and https.endswith(">")
    assert mailto.startswith("<mailto:unsubscribe+") and "?subject=unsubscribe%20" in mailto
    local = rcpt.split("@")[0]
    assert local not in str(msg["List-Unsubscribe"]) and local not in str(msg["Message-ID"])
    assert msg.get_content_type() == "multipart/alternative"
    types = [part.get_content_type() for part in msg.iter_parts()]
    assert types == ["text/plain", "text/html"]
    assert "Precedence: bulk" in head
    return msg


def test_two_hundred_members_get_exactly_one_message_each(project: Path, cli: Cli) -> None:
    members = people(200)
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        dry = _send(cli, "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert "200 message(s) rendered" in dry.stderr
        assert server.messages == []
        assert cli("report", "--json").stdout.strip() == "[]"  # a dry run changes nothing

        result = _send(cli)
        assert result.exit_code == 0, result.output
        assert "200 sent" in result.stderr
        again = cli("send", "spring", "--yes")
        assert again.exit_code == 0, again.output
        assert "nothing left to send" in again.stderr
    received = Counter(server.recipients())
    assert set(received) == {m["email"] for m in members}
    assert set(received.values()) == {1}
    ids = set()
    for message in server.messages:
        rcpt = message.rcpt_tos[0]
        msg = _header_checks(message.data, rcpt)
        n = rcpt.split("@")[0].removeprefix("person")
        assert f"First{n}" in msg.get_body(("plain",)).get_content()
        ids.add(msg["Message-ID"])
        assert message.mail_from == "news@example.org"
    assert len(ids) == 200
    report = _report(cli)
    assert {k: report[k] for k in ("audience", "sent", "failed", "deferred", "pending", "uncertain")} == {
        "audience": 200, "sent": 200, "failed": 0, "deferred": 0, "pending": 0, "uncertain": 0}


def test_audience_read_page_by_page_and_a_limited_dry_run_writes_nothing(
        project: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailcli.send import ledger

    monkeypatch.setattr(ledger, "AUDIENCE_PAGE", 7)  # pages end between suppressed members
    members = people(30)
    add_contacts(project / "mailcli.db", "news", members)
    for n in (3, 7, 8):
        assert cli("unsubscribe", f"person{n}@example.net").exit_code == 0
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        dry = _send(cli, "--dry-run", "--limit", "5")
        assert dry.exit_code == 0, dry.output
        assert "audience of 27" in dry.stderr and "5 message(s) rendered" in dry.stderr
        assert cli("report", "--json").stdout.strip() == "[]"
        assert sqlite3.connect(project / "mailcli.db").execute("SELECT count(*) FROM deliveries").fetchone() == (0,)
        result = _send(cli)
        assert result.exit_code == 0, result.output
    assert sorted(server.recipients()) == sorted(m["email"] for m in members if m["email"] not in
                                                 {f"person{n}@example.net" for n in (3, 7, 8)})
    assert _report(cli)["audience"] == 27


def test_transient_replies_then_success_and_hard_bounce(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(6))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.script("RCPT", "person1@example.net", ["451 4.3.0 greylisted"])
        server.script("RCPT", "person2@example.net", ["421 4.7.0 too many connections, closing"])
        server.script("DATA", "person3@example.net", ["452 4.3.1 insufficient storage"])
        server.script("RCPT", "person4@example.net", ["550 5.1.1 <person4@example.net>: no such user"])
        result = _send(cli)
        assert result.exit_code == ExitCode.PARTIAL, result.output
        assert "report spring --failed" in result.stderr
    assert Counter(server.recipients()) == Counter(f"person{i}@example.net" for i in (0, 1, 2, 3, 5))
    report = _report(cli)
    assert (report["sent"], report["failed"], report["bounced"]) == (5, 1, 1)
    failed = cli("report", "spring", "--failed", "--json")
    [failure] = json.loads(failed.stdout)["failures"]
    assert failure["email"] == "person4@example.net" and "5.1.1" in failure["reply"]

    # The hard bounce suppressed the address: the next campaign skips it.
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("send", "summer", "--template", "newsletter", "--list", "news", "--yes")
        assert result.exit_code == 0, result.output
    assert "person4@example.net" not in server.recipients()
    assert len(server.recipients()) == 5


def test_retry_window_then_deferred_and_rerun_delivers(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(3))
    config = project / "mailcli.toml"
    config.write_text(config.read_text().replace('retry_window = "2m"', 'retry_window = "1s"'))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.script("RCPT", "person0@example.net", ["451 4.3.0 try later"] * 20)
        result = _send(cli)
        assert result.exit_code == ExitCode.PARTIAL, result.output
        assert deliveries(project / "mailcli.db", "spring")["person0@example.net"] == "deferred"
        server.script("RCPT", "person0@example.net", [])
        with server._lock:
            server._scripts.clear()
        rerun = cli("send", "spring", "--yes")
        assert rerun.exit_code == 0, rerun.output
    assert Counter(server.recipients()) == Counter(f"person{i}@example.net" for i in range(3))


def test_header_injection_in_a_name_fails_that_delivery_only(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", [
        {"email": "eve@example.net", "first_name": "Eve\r\nBcc: evil@attacker.example", "last_name": ""},
        *people(3),
    ])
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = _send(cli)
        assert result.exit_code == ExitCode.PARTIAL, result.output
    assert sorted(server.recipients()) == [f"person{i}@example.net" for i in range(3)]
    for message in server.messages:
        assert b"attacker" not in message.data and b"Bcc" not in message.data
    status = deliveries(project / "mailcli.db", "spring")
    assert status["eve@example.net"] == "failed"
    failure = json.loads(cli("report", "spring", "--failed", "--json").stdout)["failures"][0]
    assert "line feed" in failure["reply"] or "carriage return" in failure["reply"]


def test_missing_merge_field_aborts_before_any_connection(project: Path, cli: Cli) -> None:
    template = project / "templates" / "newsletter" / "message.html"
    template.write_text(template.read_text().replace("<h1>", "<h1>{{ contact.company }}"))
    add_contacts(project / "mailcli.db", "news", [{**p, "company": "Acme"} for p in people(3)])
    add_contacts(project / "mailcli.db", "news", people(2, start=10))  # no company column
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = _send(cli)
        assert result.exit_code == ExitCode.ERROR, result.output
        assert "company" in result.stderr and "nothing was sent" in result.stderr
        assert server.ehlo_count == 0 and server.messages == []
    assert _campaigns(project) == []


def test_unsubscribe_during_a_send_takes_effect(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(6))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        first = _send(cli, "--limit", "2")
        assert first.exit_code == 0, first.output
        assert cli("unsubscribe", "person4@example.net").exit_code == 0
        rest = cli("send", "spring", "--yes")
        assert rest.exit_code == 0, rest.output
    assert "person4@example.net" not in server.recipients()
    assert len(server.recipients()) == 5
    assert deliveries(project / "mailcli.db", "spring")["person4@example.net"] == "skipped"


def test_include_new_adds_members_who_joined_since(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(2))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        assert _send(cli).exit_code == 0
        add_contacts(project / "mailcli.db", "news", people(1, start=50))
        assert cli("send", "spring", "--yes").exit_code == 0
        assert len(server.recipients()) == 2
        assert cli("send", "spring", "--yes", "--include-new").exit_code == 0
    assert sorted(server.recipients()) == ["person0@example.net", "person1@example.net", "person50@example.net"]


def test_confirmation_expect_count_and_lock(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(3))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        no_tty = cli("send", "spring", "--template", "newsletter", "--list", "news")
        assert no_tty.exit_code == ExitCode.USAGE and "--yes" in no_tty.stderr
        wrong = _send(cli, "--expect-count", "7")
        assert wrong.exit_code == ExitCode.USAGE and "3 recipients" in wrong.stderr
        assert cli("report", "--json").stdout.strip() == "[]"

        from mailcli.config import load_settings
        from mailcli.locks import campaign_lock

        with campaign_lock(load_settings(project / "mailcli.toml"), "spring"):
            locked = _send(cli)
        assert locked.exit_code == ExitCode.ERROR and "another process" in locked.stderr
        assert server.messages == []
        assert _send(cli, "--expect-count", "3").exit_code == 0
    assert len(server.messages) == 3


def test_server_down_exit_5_after_the_retry_window_then_rerun_completes(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(4))
    port = free_port()
    set_smtp(project, "127.0.0.1", port, extra=['connect_backoff = 0.2'])
    config = project / "mailcli.toml"
    config.write_text(config.read_text().replace('retry_window = "2m"', 'retry_window = "2s"'))
    started = time.monotonic()
    down = _send(cli)
    assert down.exit_code == ExitCode.TRANSPORT, down.output
    assert time.monotonic() - started >= 2  # connections were retried for the whole window
    assert f"127.0.0.1:{port}" in down.stderr and "retry_window" in down.stderr
    with SmtpServer(port=port) as server:
        again = cli("send", "spring", "--yes")
        assert again.exit_code == 0, again.output
    assert sorted(server.recipients()) == sorted(p["email"] for p in people(4))


def test_starttls_auth_and_certificates(project: Path, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add_contacts(project / "mailcli.db", "news", people(2))
    password = "Sup3r-secret-pw"
    with SmtpServer(tls="starttls", cert_dir=tmp_path / "cert", auth={"news": password}) as server:
        set_smtp(project, "localhost", server.port, security="starttls", extra=['username = "news"'])
        monkeypatch.setenv("MAILCLI_SMTP_PASSWORD", password)
        untrusted = _send(cli)
        assert untrusted.exit_code == ExitCode.TRANSPORT and "not trusted" in untrusted.stderr
        config = project / "mailcli.toml"
        config.write_text(config.read_text().replace('username = "news"', f'username = "news"\nca_file = "{server.ca_file}"'))
        monkeypatch.setenv("MAILCLI_SMTP_PASSWORD", "wrong-" + password)
        wrong = cli("send", "spring", "--yes", "-v")
        assert wrong.exit_code == ExitCode.TRANSPORT, wrong.output
        assert "authentication" in wrong.stderr and password not in wrong.output
        assert server.messages == []
        monkeypatch.setenv("MAILCLI_SMTP_PASSWORD", password)
        ok = cli("send", "spring", "--yes", "-v")
        assert ok.exit_code == 0, ok.output
        assert password not in ok.output
    assert len(server.messages) == 2


# The server offers AUTH without TLS on purpose (aiosmtpd warns about it).
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_no_login_in_clear_text_even_to_a_local_relay(project: Path, cli: Cli,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    add_contacts(project / "mailcli.db", "news", people(2))
    monkeypatch.setenv("MAILCLI_SMTP_PASSWORD", "pw")
    with SmtpServer(auth={"u": "pw"}) as server:
        set_smtp(project, "127.0.0.1", server.port, security="none", extra=['username = "u"'])
        for args in (("send", "spring", "--template", "newsletter", "--list", "news", "--yes"),
                     ("send", "spring", "--template", "newsletter", "--test-to", "me@example.net"),
                     ("doctor", "--smtp")):
            result = cli(*args)
            assert result.exit_code == ExitCode.CONFIG, (args, result.output)
            assert result.stderr.splitlines()[0] == (
                'Error: mailcli.toml: smtp.username: set with security = "none", but mailcli sends the login (AUTH)'
                " only over TLS"), args
        assert server.sessions == 0 and server.auth_attempts == [] and server.messages == []


# ---------------------------------------------------------------------------
# Interruptions: a real `mailcli send` process, killed or stopped mid-run


def _spawn(project: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}
    return subprocess.Popen(
        [sys.executable, "-m", "mailcli", "send", "spring", "--template", "newsletter", "--list", "news",
         "--yes", "--concurrency", "4", *args],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@contextlib.contextmanager
def _send_under_way(project: Path, count: int, *, delay: float,
                    landed: int) -> Iterator[tuple[list[dict[str, str]], SmtpServer, subprocess.Popen[str]]]:
    """A send to ``count`` members of a server that answers every message
    after ``delay`` seconds, handed over once ``landed`` of them arrived;
    killed at the end if the test left it running."""
    members = people(count)
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.delay = delay
        proc = _spawn(project)
        try:
            assert server.wait_for(landed, timeout=60), proc.stderr.read() if proc.poll() is not None else "slow"
            yield members, server, proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _statuses(db: Path) -> Counter[str]:
    conn = sqlite3.connect(db)
    try:
        return Counter(row[0] for row in conn.execute("SELECT status FROM deliveries"))
    finally:
        conn.close()


def test_kill_9_mid_send_then_rerun_no_duplicates(project: Path, cli: Cli) -> None:
    with _send_under_way(project, 400, delay=0.03, landed=100) as (members, server, proc):
        proc.kill()
        proc.wait()
        server.delay = 0.0
        assert server.wait_idle()  # what the killed process had sent has landed
        before = set(server.recipients())
        assert 0 < len(before) < 400
        rerun = cli("send", "spring", "--yes")
    received = Counter(server.recipients())
    assert max(received.values()) == 1  # zero duplicates
    report = _report(cli)
    # Uncertain messages left are not a success: exit 3, saying why.
    assert rerun.exit_code == (ExitCode.PARTIAL if report["uncertain"] else 0), rerun.output
    if report["uncertain"]:
        assert "a run ended (killed" in rerun.stderr and "--resend-uncertain" in rerun.stderr
    missing = {m["email"] for m in members} - set(received)
    assert report["uncertain"] <= 4
    assert len(missing) <= report["uncertain"]
    uncertain = {e for e, s in deliveries(project / "mailcli.db", "spring").items() if s == "uncertain"}
    assert missing <= uncertain
    assert report["sent"] + report["uncertain"] == 400


def _kill_9_with_messages_in_flight(project: Path, server: SmtpServer, *args: str) -> str:
    """Start a send, kill -9 it while messages wait for the reply to their
    final dot (the server answers slowly), and return its stderr."""
    server.delay = 0.5
    proc = _spawn(project, *args)
    try:
        deadline = time.monotonic() + 60
        while _statuses(project / "mailcli.db")["sending"] == 0 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        assert server.wait_for(2, timeout=30)
        assert _statuses(project / "mailcli.db")["sending"] > 0
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=30)
    server.delay = 0.0
    assert server.wait_idle()
    return stderr


def test_an_uncertain_message_of_someone_erased_lets_the_campaign_complete(project: Path, cli: Cli) -> None:
    # An uncertain message can be resent or accepted by its Message-ID; once
    # its person is erased, neither is possible. It is counted apart, and no
    # later run ends as partial because of it.
    add_contacts(project / "mailcli.db", "news", people(60))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        _kill_9_with_messages_in_flight(project, server)
        rerun = cli("send", "spring", "--yes")
        assert rerun.exit_code == ExitCode.PARTIAL, rerun.output
        uncertain = sorted(e for e, s in deliveries(project / "mailcli.db", "spring").items() if s == "uncertain")
        assert uncertain
        for address in uncertain:
            erased = cli("privacy", "erase", address, "--yes")
            assert erased.exit_code == 0, erased.output
        for args in (("--resend-uncertain",), ("--accept-uncertain", "all"), ()):
            again = cli("send", "spring", "--yes", *args)
            assert again.exit_code == 0, again.output
            assert "Error" not in again.stderr and "--accept-uncertain MESSAGE-ID" not in again.stderr
            assert f"{len(uncertain)} uncertain of people since erased" in again.output
    report = _report(cli)
    assert report["uncertain"] == 0 and report["uncertain_erased"] == len(uncertain)
    assert report["status"] == "sent"
    assert report["sent"] + report["uncertain_erased"] == report["audience"] == 60
    table = cli("report", "spring")
    assert "uncertain erased" in table.stdout
    assert "failed, deferred and uncertain" not in cli("report", "spring", "--failed").stdout  # nobody listed


def _table(text: str) -> list[dict[str, str]]:
    """The rows of a plain table (columns at least two spaces apart) as dicts."""
    lines = [line for line in text.splitlines() if line.strip()]
    head = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(head, re.split(r"\s{2,}", line.strip()), strict=True)) for line in lines[1:]]


def test_every_member_of_the_audience_is_in_a_column_of_each_table(project: Path, cli: Cli) -> None:
    # People who opted out mid-send are skipped; a killed run leaves some
    # uncertain. Each table accounts for everyone, as report --json does,
    # and campaigns says that uncertain messages are left.
    add_contacts(project / "mailcli.db", "news", people(60))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        _kill_9_with_messages_in_flight(project, server)
        left = sorted(e for e, s in deliveries(project / "mailcli.db", "spring").items() if s == "pending")
        for address in left[-2:]:
            assert cli("unsubscribe", address).exit_code == 0
        rerun = cli("send", "spring", "--yes")
        assert rerun.exit_code == ExitCode.PARTIAL, rerun.output
        assert ", 2 skipped;" in rerun.stderr
    report = _report(cli)
    assert report["skipped"] == 2 and report["uncertain"] > 0 and report["status"] == "sent"
    delivery = ("sent", "failed", "deferred", "pending", "uncertain", "skipped")
    assert sum(report[k] for k in delivery) == report["audience"] == 60
    listed = json.loads(cli("campaigns", "--json").stdout)[0]
    assert listed["status"] == "sent" and listed["skipped"] == 2
    for args in (("report",), ("report", "spring"), ("campaigns",)):
        (row,) = _table(cli(*args).stdout)
        assert {k: int(row[k]) for k in ("audience", *delivery)} == {k: report[k] for k in ("audience", *delivery)}
    (row,) = _table(cli("campaigns").stdout)
    assert row["status"] == f"sent, {report['uncertain']} uncertain"


def test_kill_9_of_a_send_with_render_workers_prints_no_python_diagnostics(project: Path, cli: Cli) -> None:
    # A send of a thousand messages or more renders in worker processes; when
    # it is killed, multiprocessing's resource tracker cleans up after it and
    # must not print its own warning (and source line) to the user's terminal.
    if worker_count(1100) == 0:
        pytest.skip("render workers need two cores")
    add_contacts(project / "mailcli.db", "news", people(1100))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        stderr = _kill_9_with_messages_in_flight(project, server)  # waits for the children's stderr too
    assert "resource_tracker" not in stderr and "Warning" not in stderr and "warnings.warn" not in stderr, stderr


def test_sigterm_mid_send_exits_130_and_rerun_completes(project: Path, cli: Cli) -> None:
    with _send_under_way(project, 200, delay=0.03, landed=40) as (members, server, proc):
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == ExitCode.INTERRUPTED, stderr
        assert "resume with: mailcli send spring" in stderr
        assert _statuses(project / "mailcli.db")["sending"] == 0
        assert len(server.recipients()) < 200
        server.delay = 0.0
        rerun = cli("send", "spring", "--yes")
        assert rerun.exit_code == 0, rerun.output
    received = Counter(server.recipients())
    assert set(received) == {m["email"] for m in members}
    assert set(received.values()) == {1}


def test_a_send_started_with_sigint_and_sigterm_ignored_keeps_them_ignored(project: Path, cli: Cli) -> None:
    # A job in the background of a script (or under nohup, or a service
    # manager that ignores them) inherits ignored signals, and expects a
    # Ctrl-C at the terminal not to stop it: Python leaves SIGINT ignored,
    # and so must the send.
    members = people(200)
    add_contacts(project / "mailcli.db", "news", members)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}

    def ignore() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.delay = 0.02
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailcli", "send", "spring", "--template", "newsletter", "--list", "news",
             "--yes", "--concurrency", "2"],
            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore,
        )
        try:
            assert server.wait_for(20, timeout=60)
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    assert Counter(server.recipients()) == Counter(m["email"] for m in members)


def test_large_send_renders_in_worker_processes_exactly_once(project: Path, cli: Cli) -> None:
    # 1,000 messages is where rendering moves to worker processes (pool.py).
    # While the workers start, this process renders too, and dot-stuffs what
    # it renders as the workers do: a line starting with "." must arrive
    # intact either way.
    text = project / "templates" / "newsletter" / "message.txt"
    text.write_text(".dot first {{ contact.email }}\n" + text.read_text(encoding="utf-8"), encoding="utf-8")
    members = people(1000)
    add_contacts(project / "mailcli.db", "news", [
        *members, {"email": "mallory@example.net", "first_name": "M\nBcc: x@attacker.example"}])
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = _send(cli, "--concurrency", "4")
        assert result.exit_code == ExitCode.PARTIAL, result.output
    received = Counter(server.recipients())
    assert set(received) == {m["email"] for m in members} and set(received.values()) == {1}
    for message in server.messages:
        assert f".dot first {message.rcpt_tos[0]}".encode() in message.data.splitlines()
    assert deliveries(project / "mailcli.db", "spring")["mallory@example.net"] == "failed"


@pytest.mark.parametrize("broken", ["{{ contact.first_name }", "{{ contact.no_such_field }}"])
def test_a_broken_template_stops_a_large_send_with_one_line(project: Path, broken: str) -> None:
    # 1,000 recipients start a render worker: its error must not surface
    # as a traceback next to the command's own message.
    from tests.conftest import run_mailcli

    template = project / "templates" / "newsletter" / "message.html"
    template.write_text(template.read_text(encoding="utf-8").replace("<h1>", "<h1>" + broken), encoding="utf-8")
    add_contacts(project / "mailcli.db", "news", people(1000))
    port = free_port()  # nothing listens: the run must stop before connecting
    set_smtp(project, "127.0.0.1", port)
    result = run_mailcli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", cwd=project)
    assert result.returncode == ExitCode.ERROR, result.stderr
    assert "Traceback" not in result.stderr
    assert "message.html" in result.stderr and "Error" in result.stderr
    # Nothing sent; a template that does not compile stops before the campaign is even created.
    assert set(deliveries(project / "mailcli.db", "spring").values()) <= {"pending"}


def test_a_field_missing_for_some_contacts_stops_the_send_before_any_connection(project: Path) -> None:
    # The preflight renders one recipient of every distinct set of contact
    # fields: contact 250 of 300 has no city, and the template uses it.
    from tests.conftest import run_mailcli

    template = project / "templates" / "newsletter" / "message.html"
    template.write_text(template.read_text(encoding="utf-8").replace("<h1>", "<h1>{{ contact.city }} "),
                        encoding="utf-8")
    members = people(300)
    del members[250]["city"]
    add_contacts(project / "mailcli.db", "news", members)
    set_smtp(project, "127.0.0.1", free_port())  # nothing listens: it must stop before connecting
    result = run_mailcli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", cwd=project)
    assert result.returncode == ExitCode.ERROR, result.stderr
    assert "contact.city" in result.stderr and "nothing was sent or changed" in result.stderr, result.stderr
    assert "frozen" not in result.stderr
    # The preflight ran before the campaign was committed: none is left behind to be resumed.
    assert _campaigns(project) == [] and deliveries(project / "mailcli.db", "spring") == {}
    # A dry run says what the real run would: the same one line, exit 1, nothing changed.
    dry = run_mailcli("send", "spring", "--template", "newsletter", "--list", "news", "--dry-run", cwd=project)
    assert dry.returncode == ExitCode.ERROR, dry.stderr
    assert dry.stderr.splitlines()[0] == result.stderr.splitlines()[0]
    assert _campaigns(project) == []


def test_a_run_with_limit_checks_the_fields_of_the_recipients_it_sends(project: Path, cli: Cli) -> None:
    # A run with --limit 20 checks the 20 people it sends to, as its dry run
    # does, not the whole audience (seconds for a million): person250, who
    # has no city, stops the run that reaches them, before its first connection.
    template = project / "templates" / "newsletter" / "message.html"
    template.write_text(template.read_text(encoding="utf-8").replace("<h1>", "<h1>{{ contact.city }} "),
                        encoding="utf-8")
    members = people(300)
    del members[250]["city"]
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        dry = cli("send", "spring", "--template", "newsletter", "--list", "news", "--dry-run", "--limit", "20")
        assert dry.exit_code == ExitCode.OK, dry.output
        first = _send(cli, "--limit", "20")
        assert first.exit_code == ExitCode.OK, first.output
        assert len(server.messages) == 20
        rest = cli("send", "spring", "--yes")
        assert rest.exit_code == ExitCode.ERROR, rest.output
        assert "contact.city" in rest.stderr and "nothing was sent" in rest.stderr, rest.stderr
        on = cli("send", "spring", "--yes", "--limit", "240")  # person20 to person259
        assert on.exit_code == ExitCode.ERROR and "contact.city" in on.stderr, on.stderr
        assert len(server.messages) == 20
        assert _send(cli, "--limit", "230").exit_code == ExitCode.OK  # person20 to person249
        assert len(server.messages) == 250


def _campaigns(project: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(project / "mailcli.db")
    try:
        return conn.execute("SELECT name, status FROM campaigns ORDER BY name").fetchall()
    finally:
        conn.close()


def test_a_send_refused_before_sending_leaves_no_campaign_behind(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(2))
    folder = project / "templates" / "nosubj"
    folder.mkdir()
    (folder / "message.html").write_text('<p><a href="{{ unsubscribe_url }}">u</a></p>\n', encoding="utf-8")
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        # A template without a subject: refused up front, in a real run and in a dry run alike.
        for extra in ("--yes", "--dry-run"):
            result = cli("send", "f1", "--template", "nosubj", "--list", "news", extra)
            assert result.exit_code == ExitCode.ERROR, result.output
            assert result.stderr.startswith("Error: No subject for template 'nosubj': templates/nosubj/subject.txt"
                                            " is missing\n"), result.stderr
            assert "frozen" not in result.stderr and "would fail" not in result.stderr
        assert _campaigns(project) == []
        # A configuration error found before the freeze: nothing frozen, exit 4.
        path = project / "mailcli.toml"
        configured = path.read_text(encoding="utf-8")
        path.write_text(configured.replace("[smtp]\n", '[smtp]\nusername = "u"\n', 1), encoding="utf-8")
        result = cli("send", "f1", "--template", "newsletter", "--list", "news", "--yes")
        assert result.exit_code == ExitCode.CONFIG, result.output
        assert "smtp.username" in result.stderr and "frozen" not in result.stderr
        assert _campaigns(project) == []
        path.write_text(configured, encoding="utf-8")
        # The name is free for the corrected command.
        result = cli("send", "f1", "--template", "newsletter", "--list", "news", "--yes")
        assert result.exit_code == 0, result.output
        assert len(server.messages) == 2 and _campaigns(project) == [("f1", "sent")]


def test_a_dry_run_hint_names_no_place_when_the_problem_has_none(project: Path, cli: Cli) -> None:
    members = people(3)
    members[1]["last_name"] = ""  # the subject is this field alone: empty for this contact
    add_contacts(project / "mailcli.db", "news", members)
    (project / "templates" / "newsletter" / "subject.txt").write_text("{{ contact.last_name }}\n", encoding="utf-8")
    result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--dry-run")
    assert result.exit_code == ExitCode.PARTIAL, result.output
    assert "Warning: No subject for template 'newsletter'" in result.stderr and "(1 message(s))" in result.stderr
    assert "Error: 1 message(s) of campaign spring would fail\n" in result.stderr
    assert "Hint: fix the template as the warning above says, then run the dry run again\n" in result.stderr


def test_a_template_error_of_some_contacts_in_a_large_send_is_one_line_with_its_count(project: Path, cli: Cli) -> None:
    # 1,000 messages render in worker processes. A template error there was
    # told per contact (five masked addresses, the rest not at all), while
    # the same error in a small send or a dry run is one line with a count.
    if worker_count(1000) == 0:
        pytest.skip("render workers need two cores")
    template = project / "templates" / "newsletter" / "message.html"
    template.write_text(template.read_text(encoding="utf-8").replace("<h1>", "<h1>{{ 10 // (contact.n|int) }}"),
                        encoding="utf-8")
    members = [{**person, "n": "0" if i % 125 == 124 else "1"} for i, person in enumerate(people(1000))]
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = _send(cli)
    assert result.exit_code == ExitCode.PARTIAL, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert warnings == ["Warning: templates/newsletter/message.html:8: ZeroDivisionError: integer division or"
                        " modulo by zero (8 message(s))"], result.stderr
    assert len(server.messages) == 992


def test_unsubscribe_headers_format() -> None:
    from types import SimpleNamespace

    from mailcli.send.headers import list_unsubscribe_header, unsubscribe_url

    settings = SimpleNamespace(unsubscribe=SimpleNamespace(url="https://n.example/u", mailto="stop@n.example"))
    assert unsubscribe_url(settings, "TOK") == "https://n.example/u?t=TOK"
    assert list_unsubscribe_header(settings, "TOK") == (
        "<https://n.example/u?t=TOK>, <mailto:stop+TOK@n.example?subject=unsubscribe%20TOK>")
    settings.unsubscribe.mailto = None
    assert list_unsubscribe_header(settings, "TOK") == "<https://n.example/u?t=TOK>"


def test_rate_holds_the_throughput_under_the_ceiling(project: Path, cli: Cli) -> None:
    # Three connections could take the forty messages in a fraction of a
    # second; at 50/s they take about 0.8 s, one every 20 ms.
    add_contacts(project / "mailcli.db", "news", people(40))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = _send(cli, "--rate", "50/s", "--concurrency", "3")
        assert result.exit_code == 0, result.output
    assert len(server.messages) == 40
    assert server.throughput() <= 50 * 1.15, f"{server.throughput():.0f} messages/s"


def test_the_domain_cap_holds_messages_in_flight_per_domain(project: Path, cli: Cli) -> None:
    # Two domains, three connections, a server that takes 50 ms per message:
    # without the cap two or three of them would be at one domain at once.
    contacts = [{"email": f"p{i}@d{i % 2}.example", "first_name": "P", "last_name": str(i)} for i in range(16)]
    add_contacts(project / "mailcli.db", "news", contacts)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port, extra=["domain_concurrency = 1"])
        server.delay = 0.05
        result = _send(cli, "--concurrency", "3")
        assert result.exit_code == 0, result.output
    assert sorted(server.recipients()) == sorted(c["email"] for c in contacts)
    assert server.most_at_once(lambda m: m.domain) == {"d0.example": 1, "d1.example": 1}
    assert server.most_at_once() == {"": 2}  # the two domains were served side by side


def test_a_render_past_the_size_limit_fails_that_message_naming_the_template(project: Path, cli: Cli) -> None:
    folder = project / "templates" / "newsletter"
    html = (folder / "message.html").read_text(encoding="utf-8")
    assert "{% block content %}" in html
    (folder / "message.html").write_text(
        html.replace("{% block content %}", "{% block content %}<p>{{ 'x' * (contact.copies | int) }}</p>", 1),
        encoding="utf-8")
    crowd = [{**p, "copies": "1"} for p in people(6)]
    crowd[4]["copies"] = "100000000"  # 100 MB for this one person only
    add_contacts(project / "mailcli.db", "news", crowd)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = _send(cli)
        assert "templates/newsletter/message.html" in result.stderr and "max_size_mb" in result.stderr
        assert "Traceback" not in result.output
        sent = deliveries(project / "mailcli.db", "spring")
        if sent:  # the preflight samples did not hit it: only that message failed
            assert sent.pop("person4@example.net") == "failed"
            assert set(sent.values()) == {"sent"} and len(server.messages) == 5
        else:  # the preflight did: nothing was sent
            assert result.exit_code != 0 and server.messages == []


def test_the_configured_render_limits_hold_in_the_render_workers_too(project: Path, cli: Cli) -> None:
    # [render] max_size_mb = 0.5: render workers kept the default 10 MB, so a
    # send of a thousand messages delivered the ones they built although
    # `mailcli render` (and this process) refused them.
    if worker_count(1000) == 0:
        pytest.skip("render workers need two cores")
    config = project / "mailcli.toml"
    config.write_text(config.read_text(encoding="utf-8").replace("max_size_mb = 10 ", "max_size_mb = 0.5"),
                      encoding="utf-8")
    folder = project / "templates" / "newsletter"
    html = (folder / "message.html").read_text(encoding="utf-8")
    (folder / "message.html").write_text(
        html.replace("{% block content %}", "{% block content %}<p>{{ 'x' * (contact.copies | int) }}</p>", 1),
        encoding="utf-8")
    crowd = [{**p, "copies": "700000" if i % 100 == 99 else "1"} for i, p in enumerate(people(1000))]
    add_contacts(project / "mailcli.db", "news", crowd)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = _send(cli)
        assert result.exit_code == ExitCode.PARTIAL, result.output
        assert "past the limit of 0.5 MB ([render] max_size_mb) (10 message(s))" in result.stderr, result.stderr
        assert len(server.messages) == 990
    statuses = deliveries(project / "mailcli.db", "spring")
    assert {email for email, status in statuses.items() if status == "failed"} == {
        p["email"] for p in crowd if p["copies"] != "1"}


def test_subject_option_wins_over_the_templates_subject_txt(project: Path, cli: Cli) -> None:
    assert (project / "templates" / "newsletter" / "subject.txt").is_file()
    add_contacts(project / "mailcli.db", "news", people(3))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = _send(cli, "--subject", "Special: {{ contact.first_name }} only")
        assert result.exit_code == 0, result.output
    subjects = sorted(email.message_from_bytes(m.data, policy=email.policy.default)["Subject"] for m in server.messages)
    assert subjects == ["Special: First0 only", "Special: First1 only", "Special: First2 only"]


def test_bodies_go_as_8bit_utf8_where_the_relay_takes_them_else_as_quoted_printable(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", [{"email": "zoe@example.net", "first_name": "Zoë"}])
    for campaign, offers in (("eight", True), ("seven", False)):
        with SmtpServer(eightbitmime=offers) as server:
            set_smtp(project, "127.0.0.1", server.port)
            result = cli("send", campaign, "--template", "newsletter", "--list", "news", "--yes")
            assert result.exit_code == 0, result.output
        [message] = server.messages
        head, _ = message.data.split(b"\r\n\r\n", 1)
        assert head.isascii()
        if offers:
            assert "BODY=8BITMIME" in message.mail_options
            assert b"Content-Transfer-Encoding: 8bit" in message.data and "Zoë".encode() in message.data
        else:
            assert message.data.isascii() and "BODY=8BITMIME" not in message.mail_options
            assert b"Content-Transfer-Encoding: quoted-printable" in message.data
        # Either way a mail client reads the same text.
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        assert "Zoë" in parsed.get_body(("plain",)).get_content()
        assert "Zoë" in parsed.get_body(("html",)).get_content() or "Zo&#235;" in parsed.get_body(("html",)).get_content()


def _render_workers(pid: int) -> list[int]:
    """The render worker processes of the send ``pid`` (not the resource tracker)."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in cmdline:
            found.append(int(child))
    return found


def test_a_render_worker_killed_mid_send_ends_the_run_with_one_line_and_the_rerun_completes(
        project: Path, cli: Cli) -> None:
    if worker_count(1100) == 0:
        pytest.skip("render workers need two cores")
    if not Path("/proc/self/task").is_dir():
        pytest.skip("finding the worker process needs /proc")
    with _send_under_way(project, 1100, delay=0.01, landed=100) as (members, server, proc):
        (worker,) = _render_workers(proc.pid)
        os.kill(worker, signal.SIGKILL)
        out, stderr = proc.communicate(timeout=60)
        assert proc.returncode == ExitCode.ERROR, (out, stderr)
        assert "Error: A render worker process ended unexpectedly" in stderr, (out, stderr)
        assert "Traceback" not in stderr
        server.delay = 0
        rerun = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        report = json.loads(cli("report", "spring", "--json").stdout)
        received = Counter(m.rcpt_tos[0] for m in list(server.messages))
    assert rerun.exit_code in (ExitCode.OK, ExitCode.PARTIAL), rerun.stderr
    assert max(received.values()) == 1  # nobody twice
    # Everyone got the message, but for those the killed run left uncertain.
    assert len(received) + report["uncertain"] >= len(members) and report["pending"] == 0, report


def test_a_large_audience_shows_a_bar_while_it_is_frozen_on_a_terminal_and_nothing_when_piped(
        project: Path, cli: Cli) -> None:
    # Freezing a million members took seconds with nothing on the screen: on
    # a terminal a bar says what is going on, first while the question's
    # numbers are counted, then while the audience is frozen; each is gone
    # before the next thing is shown, so neither draws over the question.
    from mailcli.commands.send import FREEZE_BAR_FROM
    from tests.terminal import Terminal

    audience = FREEZE_BAR_FROM + 100
    add_contacts(project / "mailcli.db", "news", people(audience))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        term = Terminal("send", "spring", "--template", "newsletter", "--list", "news", "--limit", "3", cwd=project)
        before = term.read_until("[y/N]:")
        assert re.search(rf"Counting the audience of spring.*{audience}/{audience}", before), before
        question = before.rsplit("Send ", 1)[1]
        assert "━" not in question and "\r" not in question, before
        assert "Freezing" not in before
        term.type("y\n")
        assert term.wait() == 0, term.text
        after = term.text.split("[y/N]:", 1)[1]
        assert re.search(rf"Freezing the audience of spring.*{audience}/{audience}", after), after
        assert after.index("Freezing the audience") < after.index("Sending spring"), after
        assert len(server.messages) == 3

        piped = cli("send", "autumn", "--template", "newsletter", "--list", "news", "--limit", "3", "--yes")
        assert piped.exit_code == 0, piped.output
    assert not any(word in piped.stderr for word in ("Freezing", "Counting", "━")), piped.stderr
    assert piped.stderr.splitlines()[0] == f"Campaign autumn: audience of {audience} frozen from list news"


def test_a_dry_run_of_a_large_audience_counts_it_under_a_bar_on_a_terminal(project: Path) -> None:
    from mailcli.commands.send import FREEZE_BAR_FROM
    from tests.terminal import Terminal

    audience = FREEZE_BAR_FROM + 100
    add_contacts(project / "mailcli.db", "news", people(audience))
    term = Terminal("send", "spring", "--template", "newsletter", "--list", "news", "--dry-run", "--limit", "3",
                    cwd=project)
    assert term.wait() == 0, term.text
    assert re.search(rf"Counting the audience of spring.*{audience}/{audience}", term.text), term.text
    assert "Freezing" not in term.text
    assert term.text.index("Counting the audience") < term.text.index("Rendering spring"), term.text
    assert sqlite3.connect(project / "mailcli.db").execute("SELECT count(*) FROM deliveries").fetchone() == (0,)
