"""Several `send` processes working one campaign on a PostgreSQL server.

Real parts only: the suite's PostgreSQL server, an SMTP sink that records
every message with its Message-ID, and `python -m mailcli send` processes
started side by side, one of them stopped or killed with -9 half way.
Each sender claims batches of deliveries with a lease; its length is made
short here (``MAILCLI_SEND_LEASE``) so that an expiry is seen in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailcli import tokens
from mailcli.config import resolve
from mailcli.store import open_store
from tests.conftest import Cli, PostgresDatabase, project_rows, run_mailcli, set_smtp, use_database
from tests.privacy_support import freeze
from tests.serve_support import Server, one_click
from tests.smtpserver import SmtpServer

LEASE = "10"  # seconds: far more than a message in flight takes, even on a loaded machine
SHORT_LEASE = "3"  # where the test waits for one to expire


def _project_with(project: Path, pg: PostgresDatabase, n: int) -> list[str]:
    use_database(project, pg.url)
    emails = [f"reader{i:05d}@example.net" for i in range(n)]
    (project / "people.csv").write_text("email,first_name\n" + "".join(f"{e},R{i}\n" for i, e in enumerate(emails)),
                                        encoding="utf-8")
    done = run_mailcli("import", "people.csv", "--list", "news", "--basis", "customer", cwd=project)
    assert done.returncode == 0, done.stderr
    return emails


def _sender(project: Path, *args: str, lease: str = LEASE) -> subprocess.Popen[str]:
    """``mailcli send spring --json`` in the background, with a lease of ``lease`` seconds."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}, "MAILCLI_SEND_LEASE": lease}
    return subprocess.Popen(
        [sys.executable, "-m", "mailcli", "--json", "send", "spring", "--template", "newsletter", "--list", "news",
         "--yes", *args], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, dict[str, Any], str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (json.loads(out) if out.strip() else {}), err


def _until(what: Callable[[], Any], timeout: float = 60, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out: {message}")


def _message_ids(server: SmtpServer) -> dict[str, Counter[str]]:
    """Per recipient, how often each Message-ID arrived."""
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for m in list(server.messages):
        for rcpt in m.rcpt_tos:
            seen[rcpt][m.message_id] += 1
    return seen


def _each_once(seen: dict[str, Counter[str]]) -> bool:
    """Every recipient got one message, once (``_message_ids``)."""
    return all(len(ids) == 1 and set(ids.values()) == {1} for ids in seen.values())


def _uncertain_emails(project: Path) -> set[str]:
    return {e for (e,) in project_rows(project, "SELECT c.email FROM deliveries d JOIN contacts c"
                                         " ON c.id = d.contact_id WHERE d.status = 'uncertain'")}


def _leases(project: Path, status: str) -> dict[int, set[int]]:
    """Run number -> ids of the campaign's deliveries in ``status`` that it holds."""
    found: dict[int, set[int]] = defaultdict(set)
    for owner, delivery in project_rows(project, "SELECT lease_owner, id FROM deliveries WHERE status = ?"
                                          " AND lease_owner IS NOT NULL", (status,)):
        found[int(owner)].add(int(delivery))
    return found


def _emails_of(project: Path, ids: set[int]) -> set[str]:
    rows = project_rows(project, "SELECT d.id, c.email FROM deliveries d JOIN contacts c ON c.id = d.contact_id")
    return {email for delivery, email in rows if delivery in ids}


def _one_then_another(project: Path, server: SmtpServer, after: int, concurrency: str,
                      procs: list[subprocess.Popen[str]], lease: str = LEASE) -> int:
    """Start a sender, and another once ``after`` messages arrived; the first one's run number.
    Both go into ``procs`` (for the test to end them, whatever happens)."""
    procs.append(_sender(project, "--concurrency", concurrency, lease=lease))
    assert server.wait_for(after, timeout=60), "the first sender is too slow"
    (first,) = _leases(project, "pending")
    procs.append(_sender(project, "--concurrency", concurrency, lease=lease))
    return first


def _end(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()


def test_two_senders_one_killed_half_way_each_recipient_once_and_its_claims_taken_over(
        project: Path, pg_database: PostgresDatabase) -> None:
    emails = _project_with(project, pg_database, 2000)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.delay = 0.01
        procs: list[subprocess.Popen[str]] = []
        try:
            doomed = _one_then_another(project, server, 50, "4", procs)
            killed, survivor = procs
            # Half way, with both at work: stop the first where it is, note what it
            # holds, and kill it with -9.
            _until(lambda: len(server.messages) >= 1000 and len(_leases(project, "pending")) == 2,
                   message="both senders at work half way")
            killed.send_signal(signal.SIGSTOP)
            claimed = _leases(project, "pending")[doomed]
            in_flight = _leases(project, "sending").get(doomed, set())
            killed.kill()
            killed.wait()
            code, summary, stderr = _finish(survivor)
        finally:
            _end(procs)
        seen = _message_ids(server)

    assert claimed, "the killed sender held no pending delivery"
    assert len(in_flight) <= 4  # at most one per connection
    report = json.loads(run_mailcli("report", "spring", "--json", cwd=project).stdout)
    assert code == (3 if report["uncertain"] else 0), stderr
    assert summary["completed"] is True
    # Nobody twice; every recipient once, or uncertain: only what the killed
    # sender had after the final dot, never more than its connections.
    assert _each_once(seen)
    uncertain = _uncertain_emails(project)
    assert uncertain <= _emails_of(project, in_flight)
    assert set(seen) | uncertain == set(emails)
    assert report["sent"] + report["uncertain"] == 2000 and report["uncertain"] <= 4
    # Taken over: what the killed sender had claimed and not sent, the survivor sent, each once.
    taken = project_rows(project, "SELECT status, lease_owner FROM deliveries WHERE id = ANY(?)", (sorted(claimed),))
    assert len(taken) == len(claimed)
    assert {status for status, _ in taken} == {"sent"}
    assert doomed not in {owner for _, owner in taken}
    assert _emails_of(project, claimed) <= set(seen)
    assert project_rows(project, "SELECT status FROM campaigns") == [("sent",)]


def test_a_stopped_sender_loses_its_claims_when_its_lease_expires_and_sends_nothing_twice(
        project: Path, pg_database: PostgresDatabase) -> None:
    emails = _project_with(project, pg_database, 600)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.delay = 0.02
        procs: list[subprocess.Popen[str]] = []
        try:
            first = _one_then_another(project, server, 30, "2", procs, lease=SHORT_LEASE)
            stopped, other = procs
            _until(lambda: len(_leases(project, "pending")) == 2, message="both senders at work")
            stopped.send_signal(signal.SIGSTOP)  # alive, its lock held, but renewing nothing
            claimed = _leases(project, "pending").get(first, set())
            # The other sender waits for the lease to expire, then sends what
            # the stopped one held, and the rest.
            code, summary, stderr = _finish(other)
            assert code in (0, 3), stderr
            assert summary["completed"] is True
            taken = project_rows(project, "SELECT DISTINCT status FROM deliveries WHERE id = ANY(?)", (sorted(claimed),))
            assert claimed and taken == [("sent",)]
            # Woken up, the stopped sender finishes what it had after its
            # final dots, and withdraws what the other took over.
            stopped.send_signal(signal.SIGCONT)
            back, _, back_err = _finish(stopped)
            assert back in (0, 1, 3), back_err
        finally:
            _end(procs)
        seen = _message_ids(server)
    assert _each_once(seen)
    report = json.loads(run_mailcli("report", "spring", "--json", cwd=project).stdout)
    uncertain = _uncertain_emails(project)
    assert report["uncertain"] == len(uncertain) <= 2  # what it had after a final dot, had it died
    assert set(seen) | uncertain == set(emails)
    assert report["sent"] + report["uncertain"] == 600


def test_two_senders_share_a_campaign_without_a_duplicate_and_complete_it_once(
        project: Path, pg_database: PostgresDatabase) -> None:
    emails = _project_with(project, pg_database, 805)
    # Five members without a lawful basis are held back: the sender that
    # finds the campaign created and frozen by the other a moment before
    # joins in, rather than taking it for a list nobody can be mailed.
    held = emails[-5:]
    project_rows(project, "UPDATE memberships SET basis = 'none' WHERE contact_id IN"
                   " (SELECT id FROM contacts WHERE email_key = ANY(?)) RETURNING 1", (held,))
    emails = emails[:-5]
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.delay = 0.02
        senders = [_sender(project, "--concurrency", "3"), _sender(project, "--concurrency", "3")]
        assert server.wait_for(100, timeout=60)
        # While both run, report counts their messages in flight as pending, never uncertain.
        during = []
        while all(proc.poll() is None for proc in senders) and len(during) < 3:
            during.append(json.loads(run_mailcli("report", "spring", "--json", cwd=project).stdout))
        results = [_finish(proc) for proc in senders]
        seen = _message_ids(server)
    assert during
    for report in during:
        assert report["uncertain"] == 0, report
        assert report["sent"] + report["pending"] == report["audience"] == 800, report
    for code, _, stderr in results:
        assert code == 0, stderr
    summaries = [summary for _, summary, _ in results]
    assert all(s["sent"] > 0 for s in summaries), summaries  # both took part
    assert sum(s["sent"] for s in summaries) == 800
    assert sorted(s["completed"] for s in summaries) == [False, True]  # completed by one of them, once
    assert set(seen) == set(emails) and _each_once(seen)
    report = json.loads(run_mailcli("report", "spring", "--json", cwd=project).stdout)
    assert (report["status"], report["sent"], report["pending"], report["uncertain"]) == ("sent", 800, 0, 0)
    assert project_rows(project, "SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL"
                          " AND status IN ('pending', 'deferred', 'sending')") == [(0,)]


def test_an_erasure_and_one_click_opt_outs_through_two_serve_processes_stop_both_senders(
        project: Path, pg_database: PostgresDatabase) -> None:
    emails = _project_with(project, pg_database, 1200)
    erased, left_a, left_b = emails[-1], emails[-2], emails[-3]
    (project / "more.csv").write_text("email\n" + "".join(f"new{i}@example.net\n" for i in range(200)),
                                      encoding="utf-8")
    settings = resolve(directory=str(project))
    ((list_id,),) = project_rows(project, "SELECT id FROM lists WHERE name = 'news'")
    uids = dict(project_rows(project, "SELECT email_key, uid FROM contacts WHERE email_key IN (?, ?)", (left_a, left_b)))
    serve = [Server(project), Server(project)]  # two hosts behind one load balancer, as it were
    try:
        with SmtpServer() as server:
            set_smtp(project, "127.0.0.1", server.port)
            server.delay = 0.01
            senders = [_sender(project, "--concurrency", "2"), _sender(project, "--concurrency", "2")]
            try:
                assert server.wait_for(100, timeout=60)
                gone = run_mailcli("privacy", "erase", erased, "--yes", cwd=project)
                assert gone.returncode == 0, gone.stderr
                # An import while both send: new members wait for a later campaign.
                more = run_mailcli("import", "more.csv", "--list", "news", "--basis", "customer", cwd=project)
                assert more.returncode == 0, more.stderr
                for host, email in zip(serve, (left_a, left_b), strict=True):
                    answer = one_click(host.url, tokens.make_unsubscribe_token(settings.secret(), uids[email], list_id))
                    assert answer.status_code == 200
                acted_at = len(server.messages)
                results = [_finish(proc) for proc in senders]
            finally:
                _end(senders)
            seen = _message_ids(server)
    finally:
        for host in serve:
            host.stop()
    assert acted_at < 1100, "the senders were through the list before the opt-outs: the test shows nothing"
    for code, _, stderr in results:
        assert code == 0, stderr
    assert all(s["sent"] > 0 for _, s, _ in results)
    assert {erased, left_a, left_b}.isdisjoint(seen)
    assert set(seen) == set(emails) - {erased, left_a, left_b}
    assert _each_once(seen)
    report = json.loads(run_mailcli("report", "spring", "--json", cwd=project).stdout)
    assert (report["status"], report["sent"], report["pending"]) == ("sent", 1197, 0)
    assert project_rows(project, "SELECT count(*) FROM contacts WHERE email_key = ?", (erased,)) == [(0,)]
    assert project_rows(project, "SELECT count(*) FROM contacts WHERE email_key LIKE 'new%'") == [(200,)]


@pytest.mark.parametrize("value", ["soon", "0"])
def test_a_bad_lease_length_is_one_line(project: Path, pg_database: PostgresDatabase, value: str) -> None:
    _project_with(project, pg_database, 3)
    result = run_mailcli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", cwd=project,
                         env={"MAILCLI_SEND_LEASE": value})
    assert result.returncode != 0
    assert "MAILCLI_SEND_LEASE must be" in result.stderr and "Traceback" not in result.stderr
    assert project_rows(project, "SELECT count(*) FROM deliveries WHERE status = 'sent'") == [(0,)]


def _dsn(project: Path, email: str) -> bytes:
    """A remote server's delivery status notification: the message to ``email`` bounced (5.1.1)."""
    ((message_id,),) = project_rows(project, "SELECT d.message_id FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
                                      " WHERE c.email_key = ?", (email,))
    return (f"From: MAILER-DAEMON@mx.example.net\r\nTo: news@example.org\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-{email}>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
            f"--B\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n"
            f"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
            f"Final-Recipient: rfc822; {email}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
            f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {message_id}\r\n\r\n--B--\r\n").encode()


def test_bounces_and_a_purge_while_two_senders_share_a_campaign(project: Path, pg_database: PostgresDatabase,
                                                                tmp_path: Path, cli: Cli) -> None:
    import mailbox

    emails = _project_with(project, pg_database, 1200)
    refused = emails[300:303]  # the relay says at RCPT that they do not exist
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.delay = 0.02
        for email in refused:
            server.script("RCPT", email, [f"550 5.1.1 <{email}>: user unknown"])
        senders = [_sender(project, "--concurrency", "2"), _sender(project, "--concurrency", "2")]
        try:
            assert server.wait_for(100, timeout=60)
            # A bounce of a message already out comes back by mail and is read meanwhile.
            bounced = server.recipients()[10]
            box = mailbox.mbox(str(tmp_path / "bounces.mbox"))
            box.add(_dsn(project, bounced))
            box.close()
            read = run_mailcli("--json", "bounces", str(tmp_path / "bounces.mbox"), cwd=project)
            assert read.returncode == 0, read.stderr
            assert json.loads(read.stdout)["hard_bounces"] == 1, read.stdout
            assert server.wait_for(400, timeout=60)
            # Then a purge on a far future day cuts the send log of everyone left.
            with pytest.MonkeyPatch.context() as later:
                freeze(later, "2100-01-01T00:00:00Z")
                purge = cli("privacy", "purge")
            assert purge.exit_code == 0, purge.stderr
            purged = time.time()
            results = [_finish(proc) for proc in senders]
        finally:
            _end(senders)
        seen = _message_ids(server)
        late = [m.rcpt_tos[0] for m in list(server.messages) if m.mail_at > purged]
    assert late == [], late
    assert 400 <= len(seen) < 1200, "the purge came after the send: the test shows nothing"
    for code, _, stderr in results:
        assert code in (0, 3), stderr  # 3: some messages failed (the three refused)
    assert sum(s["failed"] for _, s, _ in results) == 3
    assert _each_once(seen)
    assert set(refused).isdisjoint(seen)
    report = json.loads(run_mailcli("report", "spring", "--json", cwd=project).stdout)
    assert report["sent"] == len(seen) and (report["pending"], report["uncertain"]) == (0, 0), report
    # Three refused at RCPT and one bounced by mail; everyone the purge took is skipped.
    assert (report["status"], report["failed"], report["bounced"]) == ("sent", 3, 4), report
    assert report["sent"] + report["failed"] + report["skipped"] == report["audience"] == 1200, report


def test_a_ledger_batch_the_server_breaks_off_for_a_deadlock_is_written_again(
        project: Path, pg_database: PostgresDatabase) -> None:
    import asyncio

    import psycopg

    from mailcli.send import ledger
    from mailcli.send.writer import LedgerWriter

    _project_with(project, pg_database, 3)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        first = run_mailcli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", "--limit", "1",
                            cwd=project)
        assert first.returncode == 0, first.stderr
    settings = resolve(directory=str(project))
    store = open_store(settings.project.store_location)
    campaign = ledger.get_campaign(store.conn, "spring")
    assert campaign is not None
    a, b = (row[0] for row in store.conn.execute(
        "SELECT id FROM deliveries WHERE status = 'pending' ORDER BY id").fetchall())
    other = psycopg.connect(pg_database.url, autocommit=False)

    def hold_b() -> None:  # another command's transaction has row b...
        other.execute("SET LOCAL deadlock_timeout = '30s'")  # ...and leaves finding the deadlock to the writer
        other.execute("UPDATE deliveries SET attempts = attempts WHERE id = %s", (b,))

    def take_a_then_commit() -> None:
        other.execute("UPDATE deliveries SET attempts = attempts WHERE id = %s", (a,))
        other.commit()

    def writer_waits() -> bool:
        with psycopg.connect(pg_database.url, autocommit=True) as look:
            row = look.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
            return bool(row and row[0])

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        writer = LedgerWriter(store, settings, campaign)
        writer.start()
        try:
            await loop.run_in_executor(None, hold_b)
            writer.submit(("sending", a))
            marked = writer.submit(("sending", b), wait=True)  # one batch: a, then b (held)
            assert marked is not None
            await loop.run_in_executor(None, _until, writer_waits, 20, "the writer waiting for row b")
            # Now each transaction waits for the other: the server breaks one off, the writer's.
            crossing = loop.run_in_executor(None, take_a_then_commit)
            await asyncio.wait_for(marked, 30)
            await crossing
        finally:
            await writer.close()

    try:
        asyncio.run(scenario())
        statuses = dict(store.conn.execute("SELECT id, status FROM deliveries WHERE id IN (?, ?)", (a, b)).fetchall())
    finally:
        other.close()
        store.close()
    # Both marks are on disk: the batch the server broke off was written again, whole.
    assert statuses == {a: "sending", b: "sending"}


def test_a_sender_joining_a_shared_campaign_shows_the_whole_campaign_on_its_bar(
        project: Path, pg_database: PostgresDatabase) -> None:
    import re

    from tests.terminal import Terminal

    _project_with(project, pg_database, 800)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.delay = 0.02
        first = _sender(project, "--concurrency", "2")
        try:
            assert server.wait_for(200, timeout=60)
            term = Terminal("send", "spring", "--yes", "--concurrency", "2", cwd=project,
                            env={"MAILCLI_SEND_LEASE": LEASE})
            assert term.wait(timeout=120) == 0, term.text
            code, _, stderr = _finish(first)
        finally:
            _end([first])
    assert code == 0, stderr
    screen = term.text
    (own,) = (int(n) for n in re.findall(r"Campaign spring: (\d+) sent", screen))
    frames = [(int(done), int(total)) for done, total in re.findall(r"(\d+)/(\d+)", screen)]
    assert frames, screen
    # The bar counts what both senders settled; its label says how much was the other's.
    assert "by other senders" in screen, screen
    assert max(done for done, _ in frames) > own, (own, frames[-5:])
