"""mailcli next to itself: real processes sharing one database.

Two configurations naming one database send a campaign once; opt-outs and
erasures made by other processes (commands, one-click POSTs to a real
`mailcli serve`, a purge) stop every message not yet on its way; a killed
send leaves no process behind; SIGTERM exits 130; a connection lost after
the final dot is reported, not taken for success.

The SMTP sink (tests/smtpserver.py) logs when each message's MAIL FROM
arrived; "mailed after the command returned" means a MAIL FROM the sink saw
after the opt-out command had exited.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from mailcli import tokens
from mailcli.config import load_settings
from mailcli.errors import ExitCode
from tests.conftest import Cli, run_mailcli, set_smtp
from tests.privacy_support import freeze
from tests.sendhelpers import add_contacts, deliveries, people
from tests.smtpserver import SmtpServer


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}


def _spawn_send(cwd: Path, *args: str, campaign: str = "spring") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailcli", "send", campaign, "--template", "newsletter", "--list", "news", "--yes",
         *args],
        cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for(server: SmtpServer, count: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Until the sink has ``count`` messages; fails at once if the send ended."""
    deadline = time.monotonic() + timeout
    while len(server.messages) < count:
        if proc.poll() is not None:
            raise AssertionError(f"the send ended (exit {proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
        assert time.monotonic() < deadline, f"only {len(server.messages)} messages after {timeout} s"
        time.sleep(0.01)


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        raise AssertionError(f"still running after {timeout} s: {stderr}") from None
    return proc.returncode, stderr


def _report(cwd: Path, campaign: str = "spring") -> dict[str, object]:
    result = run_mailcli("report", campaign, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _second_configuration(project: Path, tmp_path: Path) -> Path:
    """Another folder whose mailcli.toml names the first project's database."""
    other = tmp_path / "ci-checkout"
    shutil.copytree(project, other, ignore=shutil.ignore_patterns("mailcli.db*"))
    config = other / "mailcli.toml"
    config.write_text(config.read_text().replace('database = "mailcli.db"',
                                                  f'database = "{project / "mailcli.db"}"'))
    assert load_settings(config).project.database == project / "mailcli.db"
    return other


def test_two_configurations_sharing_a_database_send_each_person_once(project: Path, tmp_path: Path) -> None:
    members = people(150)
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        other = _second_configuration(project, tmp_path)
        # Both start at once and both would create the campaign.
        first = _spawn_send(project, "--rate", "60/s")
        second = _spawn_send(other, "--rate", "60/s")
        codes = [_finish(first), _finish(second)]
        assert sorted(code for code, _ in codes) == [0, ExitCode.ERROR], codes
        loser = next(err for code, err in codes if code == ExitCode.ERROR)
        assert "Campaign 'spring' is being sent by another process: pid " in loser, loser
        assert "`mailcli send spring`, since " in loser and "IntegrityError" not in loser
        assert len(loser.strip().splitlines()) == 2  # the line and its hint
        again = run_mailcli("send", "spring", "--yes", cwd=other)
        assert again.returncode == 0 and "nothing left to send" in again.stderr, again.stderr
    received = Counter(server.recipients())
    assert set(received) == {m["email"] for m in members} and set(received.values()) == {1}
    report = _report(other)
    assert (report["sent"], report["audience"], report["status"]) == (150, 150, "sent")


def test_a_lost_lock_file_still_refuses_a_second_send_of_the_campaign(project: Path, tmp_path: Path) -> None:
    members = people(120)
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        other = _second_configuration(project, tmp_path)
        first = _spawn_send(project, "--rate", "50/s")
        try:
            _wait_for(server, 5, first)
            shutil.rmtree(project / "mailcli.db-locks")  # someone cleans up the project folder
            second = run_mailcli("send", "spring", "--yes", cwd=other)
        finally:
            code, stderr = _finish(first)
        assert code == 0, stderr
        assert second.returncode == ExitCode.ERROR, second.stderr
        assert f"is being sent by another process: pid {first.pid} on " in second.stderr, second.stderr
    received = Counter(server.recipients())
    assert set(received) == {m["email"] for m in members} and set(received.values()) == {1}


def test_a_delivery_another_run_took_is_never_sent_again(project: Path) -> None:
    # The last line of defence: a message is marked 'sending' only from a
    # status this run may send, checked right before the final dot.
    members = people(80)
    ids = add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        proc = _spawn_send(project, "--rate", "40/s", "--concurrency", "1")
        try:
            _wait_for(server, 5, proc)
            conn = sqlite3.connect(project / "mailcli.db", timeout=30)
            taken = ids[30:40]
            marks = ",".join("?" * len(taken))
            with conn:  # as if another run had sent these meanwhile
                conn.execute(f"UPDATE deliveries SET status = 'sent', last_reply = 'other run' WHERE contact_id IN ({marks})",  # noqa: S608
                             taken)
            conn.close()
        finally:
            code, stderr = _finish(proc)
        assert code == 0, stderr
    received = Counter(server.recipients())
    assert set(received.values()) == {1}
    assert not {m["email"] for m in members[30:40]} & set(received)
    assert len(received) == 70
    status = deliveries(project / "mailcli.db", "spring")
    assert all(status[m["email"]] == "sent" for m in members)


def _uid_and_list(db: Path, email: str) -> tuple[str, int]:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT c.uid, m.list_id FROM contacts c JOIN memberships m ON m.contact_id = c.id"
                           " WHERE c.email_key = ?", (email,)).fetchone()
    finally:
        conn.close()
    return str(row[0]), int(row[1])


def test_opt_outs_and_erasures_during_a_send_stop_every_later_message(project: Path, cli: Cli) -> None:
    from tests.serve.test_serve import Server

    members = people(240)
    add_contacts(project / "mailcli.db", "news", members)
    emails = [m["email"] for m in members]
    secret = load_settings(project / "mailcli.toml").secret()
    serve = Server(project)
    returned: dict[str, float] = {}
    try:
        with SmtpServer() as server:
            set_smtp(project, "127.0.0.1", server.port)
            proc = _spawn_send(project, "--rate", "40/s", "--concurrency", "2")
            try:
                _wait_for(server, 10, proc)

                def ahead() -> str:
                    # Someone about a second ahead of the send: rendered, not yet mailed.
                    return emails[min(len(emails) - 1, len(server.messages) + 40)]

                for action in ("erase", "unsubscribe", "one-click", "restrict", "object"):
                    target = ahead()
                    assert target not in returned
                    if action == "one-click":
                        uid, list_id = _uid_and_list(project / "mailcli.db", target)
                        response = httpx.post(serve.url, params={"t": tokens.make_unsubscribe_token(secret, uid, list_id)},
                                              data={"List-Unsubscribe": "One-Click"})
                        assert response.status_code == 200, response.text
                    else:
                        args = {"erase": ("privacy", "erase", target, "--yes"), "unsubscribe": ("unsubscribe", target),
                                "restrict": ("privacy", "restrict", target),
                                "object": ("privacy", "object", target)}[action]
                        result = run_mailcli(*args, cwd=project)
                        assert result.returncode == 0, result.stderr
                    returned[target] = time.time()
                # Then a purge on a far future day cuts the send log of everyone left.
                with pytest.MonkeyPatch.context() as later:
                    freeze(later, "2100-01-01T00:00:00Z")
                    purge = cli("privacy", "purge")
                assert purge.exit_code == 0, purge.stderr
                purged = time.time()
            finally:
                code, stderr = _finish(proc)
            assert code == 0, stderr
    finally:
        serve.stop()
    late = [(m.rcpt_tos[0], m.mail_at - returned[m.rcpt_tos[0]]) for m in server.messages
            if m.rcpt_tos[0] in returned and m.mail_at > returned[m.rcpt_tos[0]]]
    assert late == [], late
    after_purge = [m.rcpt_tos[0] for m in server.messages if m.mail_at > purged]
    assert after_purge == []
    assert 10 <= len(server.messages) < 240
    assert max(Counter(server.recipients()).values()) == 1
    # The report counts exactly what the server accepted, and the campaign is complete.
    report = _report(project)
    assert report["sent"] == len(server.messages), report
    assert (report["pending"], report["deferred"], report["uncertain"], report["audience"]) == (0, 0, 0, 240), report
    assert report["status"] == "sent"


def test_erasing_a_pending_recipient_lets_the_campaign_complete(project: Path) -> None:
    members = people(5)
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        first = run_mailcli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", "--limit", "2",
                            cwd=project)
        assert first.returncode == 0, first.stderr
        erased = run_mailcli("privacy", "erase", "person3@example.net", "--yes", cwd=project)
        assert erased.returncode == 0, erased.stderr
        rest = run_mailcli("send", "spring", "--yes", cwd=project)
        assert rest.returncode == 0, rest.stderr
        again = run_mailcli("send", "spring", "--yes", cwd=project)
        assert again.returncode == 0 and "nothing left to send (4 of 5 sent)" in again.stderr, again.stderr
    assert sorted(server.recipients()) == sorted(m["email"] for m in members if m["email"] != "person3@example.net")
    report = _report(project)
    assert (report["audience"], report["sent"], report["pending"], report["skipped"], report["status"]) == (
        5, 4, 0, 1, "sent")


def _process_tree(pid: int) -> list[int]:
    """The descendants of ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
def test_kill_9_of_a_send_leaves_no_process_behind(project: Path) -> None:
    add_contacts(project / "mailcli.db", "news", people(1200))  # enough for render workers
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.delay = 0.05
        proc = _spawn_send(project)
        try:
            _wait_for(server, 20, proc)
            helpers = _process_tree(proc.pid)
            assert helpers, "the send started no helper process"
        finally:
            proc.kill()
            proc.wait()
        deadline = time.monotonic() + 5
        while any(_running(p) for p in helpers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p for p in helpers if _running(p)] == []


def test_sigterm_during_import_exits_130_and_changes_nothing(project: Path, tmp_path: Path) -> None:
    from tests.importing.test_import_cli import dump, start_big_import

    before, proc = start_big_import(project, tmp_path)
    wal = project / "mailcli.db-wal"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and (not wal.exists() or wal.stat().st_size < 1 << 20):
        time.sleep(0.01)  # it is writing its pages
    assert proc.poll() is None, "the import ended before it could be stopped; make the file bigger"
    proc.send_signal(signal.SIGTERM)  # a service manager or `kill`: this process only
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert "Interrupted" in stderr and "Traceback" not in stderr
    assert dump(project) == before


def test_sigterm_during_purge_exits_130(project: Path) -> None:
    db = project / "mailcli.db"
    add_contacts(db, "news", people(20000))
    conn = sqlite3.connect(db)
    with conn:  # all long inactive: the purge erases them one by one
        conn.execute("UPDATE contacts SET created_at = '2001-01-01T00:00:00Z', last_activity_at = '2001-01-01T00:00:00Z'")
        conn.execute("UPDATE memberships SET created_at = '2001-01-01T00:00:00Z', updated_at = '2001-01-01T00:00:00Z',"
                     " consent_at = '2001-01-01T00:00:00Z'")
    conn.close()
    proc = subprocess.Popen([sys.executable, "-m", "mailcli", "privacy", "purge"], cwd=project, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = project / "mailcli.db-locks" / "maintenance.lock"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if lock.exists() and f'"pid": {proc.pid}' in lock.read_text():
            break  # it holds the maintenance lock: the purge is under way
        time.sleep(0.005)
    assert proc.poll() is None, "the purge ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert "Interrupted" in stderr and "Traceback" not in stderr
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] in (0, 20000)  # all or nothing
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_a_connection_lost_after_the_dot_exits_3_and_lists_the_message(project: Path) -> None:
    members = people(4)
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.script("DATA", "person2@example.net", ["DROP"])  # a relay restarting after the dot
        result = run_mailcli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", cwd=project)
        assert result.returncode == ExitCode.PARTIAL, result.stderr
        assert "1 message(s) uncertain: the connection to the server was lost after the final dot" in result.stderr
        assert "killed" not in result.stderr and "--resend-uncertain" in result.stderr
        failed = run_mailcli("report", "spring", "--failed", "--json", cwd=project)
        [entry] = json.loads(failed.stdout)["failures"]
        assert entry["email"] == "person2@example.net" and entry["status"] == "uncertain"
        assert entry["reply"].startswith("connection lost after the final dot"), entry
        table = run_mailcli("report", "spring", "--failed", cwd=project)
        assert "person2@example.net" in table.stdout and "uncertain" in table.stdout
        # A rerun is not a success either, and does not resend it.
        rerun = run_mailcli("send", "spring", "--yes", cwd=project)
        assert rerun.returncode == ExitCode.PARTIAL and "connection to the server was lost" in rerun.stderr
        resend = run_mailcli("send", "spring", "--yes", "--resend-uncertain", cwd=project)
        assert resend.returncode == 0, resend.stderr
    assert Counter(server.recipients()) == Counter(m["email"] for m in members)


def test_uncertain_messages_found_in_the_relays_log_are_settled_by_hand(project: Path) -> None:
    members = people(5)
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        for who in ("person1@example.net", "person3@example.net"):
            server.script("DATA", who, ["DROP"])
        result = run_mailcli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", cwd=project)
        assert result.returncode == ExitCode.PARTIAL, result.stderr
        assert "--accept-uncertain" in result.stderr
        failures = json.loads(run_mailcli("report", "spring", "--failed", "--json", cwd=project).stdout)["failures"]
        ids = {f["email"]: f["message_id"] for f in failures}
        assert set(ids) == {"person1@example.net", "person3@example.net"}
        assert all(i.startswith("<") and i.endswith(">") for i in ids.values())
        assert ids["person1@example.net"] in run_mailcli("report", "spring", "--failed", cwd=project).stdout

        # A value that names no uncertain message changes nothing.
        wrong = run_mailcli("send", "spring", "--yes", "--accept-uncertain", "<nobody@example.org>", cwd=project)
        assert wrong.returncode == ExitCode.USAGE and "<nobody@example.org>" in wrong.stderr
        assert "Traceback" not in wrong.stderr
        after = json.loads(run_mailcli("report", "spring", "--json", cwd=project).stdout)
        assert (after["sent"], after["uncertain"]) == (3, 2)

        # The relay's log showed person1's message (by Message-ID, brackets optional) accepted; person3's
        # was not there, so it is sent again, in the same run.
        settled = run_mailcli("send", "spring", "--yes", "--accept-uncertain", ids["person1@example.net"].strip("<>"),
                              "--resend-uncertain", cwd=project)
        assert settled.returncode == 0, settled.stderr
        assert "1 uncertain message(s) counted as sent" in settled.stderr
    report = json.loads(run_mailcli("report", "spring", "--json", cwd=project).stdout)
    assert (report["sent"], report["uncertain"], report["pending"]) == (5, 0, 0)
    received = Counter(server.recipients())
    assert received["person3@example.net"] == 1 and received["person1@example.net"] == 0
    assert run_mailcli("send", "spring", "--yes", cwd=project).returncode == 0


def test_all_uncertain_messages_can_be_counted_as_sent_by_address_or_at_once(project: Path) -> None:
    add_contacts(project / "mailcli.db", "news", people(4))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        for who in ("person0@example.net", "person2@example.net", "person3@example.net"):
            server.script("DATA", who, ["DROP"])
        first = run_mailcli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", cwd=project)
        assert first.returncode == ExitCode.PARTIAL, first.stderr
        one = run_mailcli("send", "spring", "--yes", "--accept-uncertain", "Person0@Example.NET", cwd=project)
        assert one.returncode == ExitCode.PARTIAL and "1 uncertain message(s) counted as sent" in one.stderr
        rest = run_mailcli("send", "spring", "--yes", "--accept-uncertain", "all", cwd=project)
        assert rest.returncode == 0 and "2 uncertain message(s) counted as sent" in rest.stderr, rest.stderr
    report = json.loads(run_mailcli("report", "spring", "--json", cwd=project).stdout)
    assert (report["sent"], report["uncertain"]) == (4, 0)


def _optout_counter(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT n FROM optout_counter").fetchone()[0])
    finally:
        conn.close()


def test_every_change_that_ends_someones_mail_raises_the_opt_out_counter(project: Path, cli: Cli,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A running send rechecks its recipients when the counter moves; every
    # path that stops mail must move it, in its own transaction.
    db = project / "mailcli.db"
    data = Path(__file__).parent.parent / "data"
    steps: list[tuple[tuple[str, ...], bool]] = [
        (("import", str(data / "mailchimp_export.csv"), "--list", "news"), False),
        (("import", str(data / "mailchimp_export.csv"), "--list", "news"), False),  # updates nothing that matters
        (("import", str(data / "mailchimp_unsubscribed.csv"), "--list", "news"), True),
        (("unsubscribe", "anna.dejong@example.nl", "--list", "news"), True),
        (("privacy", "restrict", "daan@example.org"), True),
        (("privacy", "unrestrict", "daan@example.org"), False),
        (("privacy", "object", "daan@example.org"), True),
        (("privacy", "erase", "bram.visser@example.com", "--yes"), True),
        (("unsubscribe", "nobody-known@example.org"), True),  # a suppression alone
        (("privacy", "purge"), True),  # run on a far future day (below): those who left are erased
    ]
    for args, raises in steps:
        before = _optout_counter(db)
        if args == ("privacy", "purge"):
            freeze(monkeypatch, "2100-01-01T00:00:00Z")
        result = cli(*args)
        assert result.exit_code in (0, 1), (args, result.output)
        assert (_optout_counter(db) > before) is raises, args
