"""One database, many processes: commands wait for a busy database, and no opt-out is lost.

Real processes throughout: `mailcli serve`, `mailcli import` of a large file
and the other commands as subprocesses, a real HTTP client, the database file
read with sqlite3.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mailcli.store.spool import pending_optouts, spool_dir
from tests.conftest import run_mailcli, set_smtp
from tests.importing.test_import_cli import write_big
from tests.serve_support import Server, member_statuses, one_click, tokens_by_email, wait_until
from tests.smtpserver import SmtpServer

PEOPLE = [f"p{i}@example.org" for i in range(30)]


def _seed(root: Path) -> dict[str, str]:
    source = root / "people.csv"
    source.write_text("email,first_name\n" + "".join(f"{p},P\n" for p in PEOPLE), encoding="utf-8")
    assert run_mailcli("import", str(source), "--list", "news", "--basis", "customer", cwd=root).returncode == 0
    return tokens_by_email(root)


def _writer_lock(root: Path) -> sqlite3.Connection:
    """Hold the database's write lock, as a long import or purge does."""
    conn = sqlite3.connect(root / "mailcli.db", isolation_level=None, timeout=30)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def _write_locked(root: Path) -> bool:
    conn = sqlite3.connect(root / "mailcli.db", isolation_level=None, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


def _start(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mailcli", *args], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def test_one_click_posts_and_commands_during_a_large_import(project: Path, tmp_path: Path) -> None:
    tokens = _seed(project)
    server = Server(project)
    big = tmp_path / "big.csv"
    write_big(big, 400_000)
    try:
        importing = _start(project, "import", str(big), "--list", "news", "--basis", "customer")
        wait_until(lambda: _write_locked(project) or importing.poll() is not None, what="the import to start writing")
        assert importing.poll() is None, "the import ended before the test could run next to it"
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            posts = [pool.submit(one_click, server.url, tokens[p]) for p in PEOPLE[:20]]
            commands = {name: _start(project, *args) for name, args in {
                "lists": ("lists",),
                "report": ("report",),
                "unsubscribe": ("unsubscribe", PEOPLE[25]),
                "dry-run": ("send", "spring", "--template", "newsletter", "--list", "news", "--dry-run", "--limit", "5"),
            }.items()}
            second = Server(project)  # starting serve during the import
            try:
                assert one_click(second.url, tokens[PEOPLE[20]]).status_code == 200
            finally:
                second.stop()
            answers = [p.result(timeout=120) for p in posts]
        assert [a.status_code for a in answers] == [200] * 20
        assert all("You are unsubscribed" in a.text for a in answers)
        outcomes = {name: (proc.wait(timeout=300), proc.communicate()) for name, proc in commands.items()}
        assert importing.wait(timeout=300) == 0
        for name, (code, (_out, err)) in outcomes.items():
            assert code == 0, (name, err)
            assert "locked" not in err and "Traceback" not in err, (name, err)
            if "Waiting" in err:  # a writer that waited says for whom
                assert f"`mailcli import {big.name}` (pid {importing.pid}," in err, (name, err)
        assert "Waiting" not in outcomes["lists"][1][1] + outcomes["report"][1][1]  # readers never wait
        # Every one-click POST is recorded once the import is done, spooled or not.
        wait_until(lambda: not pending_optouts(project / "mailcli.db"), what="the spool to be applied")
        statuses = member_statuses(project)
        assert [statuses[p] for p in PEOPLE[:21]] == ["unsubscribed"] * 21
        assert statuses[PEOPLE[25]] == "unsubscribed"
        assert statuses[PEOPLE[22]] == "subscribed"
        conn = sqlite3.connect(project / "mailcli.db")
        assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] > 400_000
        assert conn.execute("SELECT count(*) FROM events WHERE kind = 'unsubscribed' AND channel = 'one-click'"
                            ).fetchone()[0] == 21
        conn.close()
    finally:
        server.stop()


def _waits_then_succeeds(root: Path, *args: str) -> str:
    """Run a command while the write lock is held: its first line says it waits; it then
    succeeds once the lock is released. Returns that first line."""
    lock = _writer_lock(root)
    try:
        proc = _start(root, *args)
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert proc.poll() is None
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert proc.wait(timeout=60) == 0, proc.communicate()
    return line


def test_a_command_says_what_it_waits_for_and_then_succeeds(project: Path) -> None:
    _seed(project)
    line = _waits_then_succeeds(project, "unsubscribe", PEOPLE[0])
    assert "Waiting for the database mailcli.db (to write)" in line and "another process is writing" in line
    assert member_statuses(project)[PEOPLE[0]] == "unsubscribed"


def test_ctrl_c_ends_a_wait_at_once(project: Path) -> None:
    _seed(project)
    lock = _writer_lock(project)
    try:
        proc = _start(project, "unsubscribe", PEOPLE[0])
        assert proc.stderr is not None
        assert "Waiting for the database" in proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - start < 5
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert proc.returncode == 130 and "Interrupted" in err and "Traceback" not in err
    assert member_statuses(project)[PEOPLE[0]] == "subscribed"


def test_after_the_timeout_a_command_exits_with_one_clear_line(project: Path) -> None:
    _seed(project)
    lock = _writer_lock(project)
    try:
        result = run_mailcli("unsubscribe", PEOPLE[0], cwd=project, env={"MAILCLI_BUSY_TIMEOUT": "1"})
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "still busy after 1 s" in errors[0] and "nothing was changed" in errors[0]
    assert "MAILCLI_BUSY_TIMEOUT" in result.stderr and "Traceback" not in result.stderr
    assert member_statuses(project)[PEOPLE[0]] == "subscribed"
    bad = run_mailcli("lists", cwd=project, env={"MAILCLI_BUSY_TIMEOUT": "soon"})
    assert bad.returncode == 1 and "MAILCLI_BUSY_TIMEOUT must be a number" in bad.stderr


def test_a_spooled_opt_out_is_durable_before_the_200(project: Path) -> None:
    tokens = _seed(project)
    server = Server(project)
    lock = _writer_lock(project)
    try:
        before = time.monotonic()
        response = one_click(server.url, tokens[PEOPLE[3]])
        assert response.status_code == 200 and "You are unsubscribed" in response.text
        assert time.monotonic() - before < 10
        spooled = pending_optouts(project / "mailcli.db")
        assert [(e.channel, e.list_id) for e in spooled] == [("one-click", 1)]
        assert PEOPLE[3] not in spooled[0].path.read_text() and (spool_dir(project / "mailcli.db").stat().st_mode
                                                                 & 0o077) == 0
        # serve dies before the database is free again: the spool keeps the opt-out.
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=30)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
        server.stop()
    assert member_statuses(project)[PEOPLE[3]] == "subscribed"
    # The next mailcli process records it first, with the time of the request.
    report = run_mailcli("--json", "lists", cwd=project)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)[0]["unsubscribed"] == 1
    assert member_statuses(project)[PEOPLE[3]] == "unsubscribed"
    assert not pending_optouts(project / "mailcli.db")


def test_serve_applies_the_spool_as_soon_as_the_database_is_free(project: Path) -> None:
    tokens = _seed(project)
    server = Server(project)
    lock = _writer_lock(project)
    try:
        codes = [one_click(server.url, tokens[p]).status_code for p in PEOPLE[:5]]
        assert codes == [200] * 5
        assert len(pending_optouts(project / "mailcli.db")) == 5
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    try:
        wait_until(lambda: not pending_optouts(project / "mailcli.db"), timeout=30, what="serve to apply the spool")
        statuses = member_statuses(project)
        assert [statuses[p] for p in PEOPLE[:5]] == ["unsubscribed"] * 5
        # The database is free again: the next POST is written directly.
        assert one_click(server.url, tokens[PEOPLE[6]]).status_code == 200
        assert member_statuses(project)[PEOPLE[6]] == "unsubscribed"
    finally:
        server.stop()
    log = "".join(server.log)
    assert log.count("outcome=spooled") == 5
    assert sum(int(n) for n in re.findall(r"applied (\d+) spooled opt-out", log)) == 5
    assert "outcome=unsubscribed" in log


def test_serve_says_in_one_line_that_the_database_is_busy(project: Path) -> None:
    with (project / "mailcli.toml").open("a", encoding="utf-8") as config:
        config.write("\n[lists.news]\n")
    server = Server(project)
    lock = _writer_lock(project)  # an import or a restore writes
    try:
        sign_up = httpx.post(f"{server.base}/subscribe/news", data={"email": "new@example.org", "consent": "yes"},
                             timeout=30)
        assert sign_up.status_code == 503 and sign_up.headers["retry-after"] == "60"
        # the confirmation mails' thread tries every 5 s: it finds the database busy too
        wait_until(lambda: "confirmation mails wait" in "".join(server.log), timeout=30,
                   what="the mail thread to find the database busy")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    try:
        assert httpx.post(f"{server.base}/subscribe/news", data={"email": "new@example.org", "consent": "yes"},
                          timeout=30).status_code == 200
    finally:
        assert server.stop() == 0
    log = "".join(server.log)
    assert "Traceback" not in log and "StoreBusyError" not in log, log
    assert "POST /subscribe/news 503 token=- outcome=busy" in log
    assert log.count("confirmation mails wait: another process is writing to the database") == 1


@pytest.mark.parametrize("command", [("privacy", "purge"), ("backup", "create")])
def test_maintenance_commands_wait_too(project: Path, command: tuple[str, ...]) -> None:
    _seed(project)
    assert "Waiting for the database" in _waits_then_succeeds(project, *command)


def test_restore_waits_for_a_writer_too(project: Path) -> None:
    _seed(project)
    backup = json.loads(run_mailcli("--json", "backup", "create", cwd=project).stdout)["path"]
    line = _waits_then_succeeds(project, "backup", "restore", backup, "--yes")
    assert "Waiting for the database mailcli.db (to restore it)" in line


def test_a_damaged_spool_entry_is_set_aside_and_the_others_applied(project: Path) -> None:
    from mailcli.store.spool import spool_optout

    _seed(project)
    database = project / "mailcli.db"
    conn = sqlite3.connect(database)
    uid = conn.execute("SELECT uid FROM contacts WHERE email_key = ?", (PEOPLE[1],)).fetchone()[0]
    conn.close()
    spool_optout(database, contact_uid=uid, list_id=1, at="2026-01-02T03:04:05Z", channel="one-click")
    (spool_dir(database) / "00000000000000000000-1-deadbeef.json").write_text("{not json", encoding="utf-8")
    assert run_mailcli("lists", cwd=project).returncode == 0
    assert member_statuses(project)[PEOPLE[1]] == "unsubscribed"
    assert sorted(p.name for p in spool_dir(database).iterdir()) == ["00000000000000000000-1-deadbeef.json.unreadable"]
    conn = sqlite3.connect(database)
    assert conn.execute("SELECT unsubscribed_at FROM memberships m JOIN contacts c ON c.id = m.contact_id"
                        " WHERE c.email_key = ?", (PEOPLE[1],)).fetchone() == ("2026-01-02T03:04:05Z",)
    conn.close()


def _sending(root: Path, sink: SmtpServer, rate: str, *, first: int) -> subprocess.Popen[str]:
    """`send spring` to the sink at ``rate`` on one connection, once ``first`` messages arrived."""
    set_smtp(root, "127.0.0.1", sink.port)
    send = _start(root, "send", "spring", "--template", "newsletter", "--list", "news", "--yes",
                  "--rate", rate, "--concurrency", "1")
    wait_until(lambda: len(sink.messages) >= first or send.poll() is not None, what="the send to start")
    return send


def test_a_running_send_honours_an_opt_out_still_in_the_spool(project: Path) -> None:
    from tests.sendhelpers import add_contacts, people

    members = [m["email"] for m in people(120)]
    add_contacts(project / "mailcli.db", "news", people(120))
    tokens = tokens_by_email(project)
    server = Server(project)
    with SmtpServer() as sink:
        send = _sending(project, sink, "40/s", first=5)
        try:
            lock = _writer_lock(project)  # an import starts: the send and serve both wait for it
            try:
                target = members[min(len(members) - 1, len(sink.messages) + 40)]  # a second ahead of the send
                assert one_click(server.url, tokens[target]).status_code == 200
                assert [e.contact_uid for e in pending_optouts(project / "mailcli.db")]
                answered = time.time()
                server.proc.send_signal(signal.SIGKILL)  # serve dies before it can record it
                server.proc.wait(timeout=30)
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            _, err = send.communicate(timeout=120)
        finally:
            if send.poll() is None:
                send.kill()
            server.stop()
    assert send.returncode == 0, err
    mailed = {m.rcpt_tos[0]: m.mail_at for m in sink.messages}
    assert target not in mailed, (target, mailed.get(target, 0) - answered)
    assert len(mailed) == len(members) - 1
    report = json.loads(run_mailcli("report", "spring", "--json", cwd=project).stdout)
    assert report["sent"] == len(members) - 1 and report["status"] == "sent"
    # The next command records the opt-out itself.
    assert run_mailcli("lists", cwd=project).returncode == 0
    assert member_statuses(project)[target] == "unsubscribed"


def test_a_send_and_a_restore_never_overlap(project: Path, tmp_path: Path) -> None:
    _seed(project)
    backup = json.loads(run_mailcli("--json", "backup", "create", cwd=project).stdout)["path"]
    with SmtpServer() as sink:
        send = _sending(project, sink, "10/s", first=2)
        try:
            refused = run_mailcli("backup", "restore", backup, "--yes", cwd=project)
        finally:
            send.send_signal(signal.SIGINT)
            send.communicate(timeout=60)
    assert refused.returncode == 1
    assert "A send is running on this database" in refused.stderr and "`mailcli send spring`" in refused.stderr
    assert not list(project.glob(".restore-*"))
    # A restore waiting for an import holds the database: a send is refused meanwhile.
    big = tmp_path / "big.csv"
    write_big(big, 400_000)
    importing = _start(project, "import", str(big), "--list", "news", "--basis", "customer")
    wait_until(lambda: _write_locked(project) or importing.poll() is not None, what="the import to start writing")
    restore = _start(project, "backup", "restore", backup, "--yes")
    assert restore.stderr is not None
    line = restore.stderr.readline()
    assert f"Waiting for `mailcli import big.csv` (pid {importing.pid}," in line, line
    second = run_mailcli("send", "autumn", "--template", "newsletter", "--list", "news", "--yes", cwd=project)
    assert second.returncode == 1 and "A restore is replacing the database" in second.stderr, second.stderr
    assert importing.wait(timeout=300) == 0 and restore.wait(timeout=300) == 0
    conn = sqlite3.connect(project / "mailcli.db")
    assert conn.execute("SELECT count(*) FROM contacts").fetchone() == (len(PEOPLE),)  # the backup's
    assert conn.execute("SELECT count(*) FROM campaigns WHERE name = 'autumn'").fetchone() == (0,)
    conn.close()
