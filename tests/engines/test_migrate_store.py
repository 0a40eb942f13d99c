"""``migrate-store``: a project moved from a SQLite file to a PostgreSQL server and back.

What must survive the move is what makes mailcli's promises: every row (counted
per table, on the target, independently of what the command says), the audit
chain (``privacy audit --verify`` on the target), erasures, and the send ledger:
a send killed on SQLite is finished on the server without anyone getting a
second message.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from mailcli.config import resolve
from mailcli.store.transfer import user_tables
from tests.conftest import PostgresDatabase, project_store, run_mailcli, set_smtp
from tests.smtpserver import SmtpServer


def _mailcli(project: Path, pg: PostgresDatabase, *args: str) -> subprocess.CompletedProcess[str]:
    return run_mailcli(*args, cwd=project, env=pg.env)


def _counts(project: Path) -> dict[str, int]:
    """Rows per table of the database the project names now, counted here."""
    with project_store(project) as store:
        return {t: int(store.conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])  # noqa: S608
                for t in user_tables(store.conn)}


def _database_line(project: Path) -> str:
    return next(line for line in (project / "mailcli.toml").read_text(encoding="utf-8").splitlines()
                if line.startswith("database ="))


def _kill_send_half_way(project: Path, server: SmtpServer, n: int) -> None:
    server.delay = 0.03
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}
    proc = subprocess.Popen([sys.executable, "-m", "mailcli", "send", "spring", "--template", "newsletter", "--list",
                             "news", "--yes", "--concurrency", "2"], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert server.wait_for(n, timeout=60), proc.stderr.read() if proc.poll() is not None else "slow"
    finally:
        proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    server.delay = 0.0
    assert server.wait_idle()


def test_a_project_moves_to_postgresql_and_back_and_its_send_resumes(project: Path,
                                                                     pg_database: PostgresDatabase) -> None:
    emails = [f"reader{i}@example.net" for i in range(150)]
    (project / "people.csv").write_text("email,first_name\n" + "".join(f"{e},R{i}\n" for i, e in enumerate(emails)),
                                        encoding="utf-8")
    assert _mailcli(project, pg_database, "import", "people.csv", "--list", "news", "--basis", "customer"
                    ).returncode == 0
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        _kill_send_half_way(project, server, 40)
        first = Counter(server.recipients())
        assert 0 < len(first) < 150
        erased = sorted(set(emails) - set(first))[-1]  # not mailed yet: must never be, on the new database
        assert _mailcli(project, pg_database, "privacy", "erase", erased, "--yes").returncode == 0
        on_sqlite = _counts(project)

        moved = _mailcli(project, pg_database, "--json", "migrate-store", "--to", pg_database.url, "--switch")
        assert moved.returncode == 0, moved.stderr
        data = json.loads(moved.stdout)
        assert data["switched"] and data["audit_verified"] and data["target"] == pg_database.url
        assert _database_line(project) == f'database = "{pg_database.url}"'
        on_server = _counts(project)
        # One more audit entry on both: the move itself, recorded before the copy.
        assert on_server == data["tables"] == {**on_sqlite, "audit_log": on_sqlite["audit_log"] + 1}
        assert "mailcli.db still holds everyone's data" in moved.stderr
        assert _mailcli(project, pg_database, "privacy", "audit", "--verify").returncode == 0

        rerun = _mailcli(project, pg_database, "send", "spring", "--yes")
        received = Counter(server.recipients())
    assert max(received.values()) == 1, [e for e, n in received.items() if n > 1]  # nobody twice
    assert erased not in received
    report = json.loads(_mailcli(project, pg_database, "report", "spring", "--json").stdout)
    assert rerun.returncode == (3 if report["uncertain"] else 0), rerun.stderr
    assert report["sent"] + report["uncertain"] == 149 and report["uncertain"] <= 2

    back = _mailcli(project, pg_database, "--json", "migrate-store", "--to", "back.db", "--switch")
    assert back.returncode == 0, back.stderr
    assert _database_line(project) == 'database = "back.db"'
    assert json.loads(back.stdout)["tables"] == _counts(project)
    assert _counts(project)["contacts"] == 149
    assert _mailcli(project, pg_database, "privacy", "audit", "--verify").returncode == 0
    assert json.loads(_mailcli(project, pg_database, "report", "spring", "--json").stdout) == report
    conn = sqlite3.connect(project / "back.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM contacts WHERE email = ?", (erased,)).fetchone() == (0,)
    finally:
        conn.close()
    # The erasure ledger came along, so a restore on the new database re-applies it too.
    assert (project / "back.db-ledgers" / "erasures.jsonl").read_text() == \
        (project / "mailcli.db-ledgers" / "erasures.jsonl").read_text()


def test_a_target_that_holds_data_is_refused_unless_replaced(project: Path, pg_database: PostgresDatabase) -> None:
    (project / "a.csv").write_text("email\nann@example.org\n", encoding="utf-8")
    assert _mailcli(project, pg_database, "import", "a.csv", "--list", "news", "--basis", "customer").returncode == 0
    assert _mailcli(project, pg_database, "migrate-store", "--to", pg_database.url).returncode == 0
    before = _database_line(project)
    again = _mailcli(project, pg_database, "migrate-store", "--to", pg_database.url)
    assert again.returncode == 1, again.stderr
    assert "already holds data" in again.stderr and "--replace" in again.stderr and "Traceback" not in again.stderr
    replaced = _mailcli(project, pg_database, "migrate-store", "--to", pg_database.url, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert f'database = "{pg_database.url}"' in replaced.stderr  # how to switch, since --switch was not given
    assert _database_line(project) == before


def test_a_password_in_the_target_url_is_refused_and_never_printed(project: Path) -> None:
    result = run_mailcli("migrate-store", "--to", "postgresql://mailcli:s3cret-pw@127.0.0.1:1/news", cwd=project)
    assert result.returncode == 2, result.stderr
    assert "must not contain a password" in result.stderr and "s3cret-pw" not in result.stderr + result.stdout


def test_a_move_is_refused_while_a_send_holds_its_lock(project: Path, pg_database: PostgresDatabase) -> None:
    from mailcli.locks import campaign_lock

    with campaign_lock(resolve(directory=str(project)), "spring"):
        result = _mailcli(project, pg_database, "migrate-store", "--to", pg_database.url)
    assert result.returncode == 1, result.stderr
    assert "A send is running on" in result.stderr and "`mailcli send spring`" in result.stderr
    assert _counts_on(pg_database) == {}


def _counts_on(pg: PostgresDatabase) -> dict[str, Any]:
    """The tables holding rows on the server (none: nothing was copied)."""
    import psycopg

    with psycopg.connect(pg.url, password=pg.server.password) as conn:
        tables = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables"
                                             " WHERE table_schema = 'public'")]
        return {t: n for t in tables if (n := conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])  # noqa: S608
                and t not in ("migrations", "optout_counter")}


def test_completion_offers_migrate_store(project: Path) -> None:
    line = "mailcli migr"
    env = {"_MAILCLI_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": "1",
           "_TYPER_COMPLETE_ARGS": line}
    result = run_mailcli(cwd=project, env=env)
    assert result.returncode == 0 and result.stdout.split() == ["migrate-store"], result.stderr
