"""A project on a PostgreSQL server: choosing it, the errors a user meets, the schema.

The server is real (``tests/pgserver.py``: initdb and pg_ctl in a temporary
folder, a loopback port, passwords checked). What works the same on both
engines is tested by ``test_engines.py`` on both.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from mailcli.store import open_store
from mailcli.store.postgres import translate
from mailcli.store.url import parse_database_url
from tests.conftest import PostgresDatabase, run_mailcli, use_database


def _one_line_error(result: object, *, secret: str | None = None) -> str:
    stderr = getattr(result, "stderr", "")
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    if secret is not None:
        assert secret not in stderr and secret not in getattr(result, "stdout", ""), stderr
    return errors[0]


def test_placeholders_are_translated_once_outside_quotes() -> None:
    assert translate("SELECT * FROM t WHERE a = ? AND b = ?") == "SELECT * FROM t WHERE a = %s AND b = %s"
    assert translate("SELECT '?', 'it''s ?' WHERE x = ?") == "SELECT '?', 'it''s ?' WHERE x = %s"
    assert translate("SELECT :start + :n, x::text, '50%' FROM t") == "SELECT %(start)s + %(n)s, x::text, '50%%' FROM t"
    assert translate("SELECT 1 -- why?\nWHERE a = ?") == "SELECT 1 -- why?\nWHERE a = %s"
    assert translate('SELECT "odd?name" FROM t') == 'SELECT "odd?name" FROM t'


def test_password_in_the_file_is_refused_and_never_printed(project: Path) -> None:
    use_database(project, "postgresql://news:hunter2secret@127.0.0.1:5432/newsletter")
    result = run_mailcli("lists", cwd=project)
    assert result.returncode == 4
    line = _one_line_error(result, secret="hunter2secret")
    assert "project.database" in line and "must not contain a password" in line
    assert "PGPASSWORD" in line


@pytest.mark.parametrize(("url", "words"), [
    ("mysql://news@127.0.0.1/newsletter", "must be a SQLite file path or a postgresql:// URL"),
    ("postgresql://news@127.0.0.1:99999/newsletter", "is not a valid PostgreSQL URL"),
    ("postgresql://news@127.0.0.1:5432/", "must name one database"),
    ("postgresql://news@127.0.0.1:5432/newsletter?password=hunter2secret", "must not contain a password"),
])
def test_bad_urls_name_the_key(project: Path, url: str, words: str) -> None:
    use_database(project, url)
    result = run_mailcli("lists", cwd=project)
    assert result.returncode == 4, result.stderr
    line = _one_line_error(result, secret="hunter2secret")
    assert "project.database" in line and words in line


def test_a_server_that_is_down_is_one_line_exit_1(project: Path) -> None:
    from tests.pgserver import free_port

    port = free_port()  # nothing listens there
    result = run_mailcli("lists", cwd=project,
                         env={"MAILCLI_DATABASE_URL": f"postgresql://news:hunter2secret@127.0.0.1:{port}/newsletter"})
    assert result.returncode == 1, result.stderr
    line = _one_line_error(result, secret="hunter2secret")
    assert f"Cannot connect to PostgreSQL at postgresql://news@127.0.0.1:{port}/newsletter" in line


def test_wrong_or_missing_password_and_unknown_database_are_config_errors(
        project: Path, pg_database: PostgresDatabase) -> None:
    use_database(project, pg_database.url)
    wrong = run_mailcli("lists", cwd=project, env={"PGPASSWORD": "hunter2secret"})
    assert wrong.returncode == 4
    assert "password authentication failed" in _one_line_error(wrong, secret="hunter2secret")

    missing = run_mailcli("lists", cwd=project, env={"PGPASSWORD": ""})
    assert missing.returncode == 4
    assert "no password supplied" in _one_line_error(missing)

    nodb = run_mailcli("lists", cwd=project,
                       env={"MAILCLI_DATABASE_URL": pg_database.url + "_missing", **pg_database.env})
    assert nodb.returncode == 4
    assert "does not exist" in _one_line_error(nodb, secret=pg_database.server.password)


def test_password_from_a_variable_the_file_names(project: Path, pg_database: PostgresDatabase,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD")
    use_database(project, pg_database.url)
    config = project / "mailcli.toml"
    config.write_text(config.read_text().replace("[project]\n", '[project]\ndatabase_password_env = "NEWS_DB_PASSWORD"\n'))
    result = run_mailcli("lists", "--json", cwd=project, env={"NEWS_DB_PASSWORD": pg_database.server.password})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    shown = run_mailcli("config", "show", cwd=project)
    assert f'database = "{pg_database.url}"' in shown.stdout
    assert 'database_password_env = "NEWS_DB_PASSWORD"' in shown.stdout
    assert pg_database.server.password not in shown.stdout


def _columns_sqlite(path: Path) -> dict[str, set[str]]:
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                         " AND name NOT LIKE 'sqlite_%'")]
    found = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}
    conn.close()
    return found


def test_migrations_give_both_engines_the_same_tables_and_triggers(
        tmp_path: Path, pg_database: PostgresDatabase) -> None:
    open_store(tmp_path / "x.db").close()
    url = parse_database_url(pg_database.url, from_file=True)
    store = open_store(url)
    conn = store.conn
    tables: dict[str, set[str]] = {}
    for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"):
        tables.setdefault(table, set()).add(column)
    assert tables == _columns_sqlite(tmp_path / "x.db")
    names = [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY name")]
    sqlite_names = [r[0] for r in sqlite3.connect(tmp_path / "x.db").execute("SELECT name FROM migrations ORDER BY name")]
    assert names == sqlite_names

    # The triggers work as on SQLite: an opt-out raises the counter, and the
    # delivery counts follow every insert, status change and delete.
    now = "2026-01-01T00:00:00Z"
    with store.transaction():
        conn.execute("INSERT INTO lists (name, created_at) VALUES ('news', ?)", (now,))
        conn.execute("INSERT INTO contacts (uid, email, email_key, created_at, updated_at, last_activity_at)"
                     " VALUES ('u1', 'a@example.org', 'a@example.org', ?, ?, ?)", (now, now, now))
        conn.execute("INSERT INTO memberships (contact_id, list_id, status, created_at, updated_at)"
                     " SELECT c.id, l.id, 'subscribed', ?, ? FROM contacts c, lists l", (now, now))
        conn.execute("INSERT INTO campaigns (uid, name, template, list_name, created_at)"
                     " VALUES ('k1', 'spring', 't', 'news', ?)", (now,))
        conn.execute("INSERT INTO deliveries (campaign_id, contact_id, message_id, created_at, updated_at)"
                     " SELECT k.id, c.id, 'm1', ?, ? FROM campaigns k, contacts c", (now, now))
    before = conn.execute("SELECT n FROM optout_counter").fetchone()[0]
    conn.execute("UPDATE memberships SET updated_at = ?", (now,))  # no opt-out: no change
    conn.execute("UPDATE deliveries SET attempts = 1")
    assert conn.execute("SELECT n FROM optout_counter").fetchone()[0] == before
    assert dict(conn.execute("SELECT status, n FROM delivery_counts")) == {"pending": 1}
    conn.execute("UPDATE memberships SET status = 'unsubscribed'")
    conn.execute("UPDATE deliveries SET status = 'sent'")
    assert conn.execute("SELECT n FROM optout_counter").fetchone()[0] == before + 1
    counts = dict(conn.execute("SELECT status, n FROM delivery_counts"))
    assert counts == {"pending": 0, "sent": 1}
    conn.execute("DELETE FROM deliveries")
    assert dict(conn.execute("SELECT status, n FROM delivery_counts")) == {"pending": 0, "sent": 0}
    store.close()


def test_processes_opening_a_new_database_at_once_migrate_it_once(pg_database: PostgresDatabase) -> None:
    url = parse_database_url(pg_database.url, from_file=True)
    errors: list[BaseException] = []

    def open_and_close() -> None:
        try:
            open_store(url).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_and_close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    store = open_store(url)
    names = [r[0] for r in store.conn.execute("SELECT name FROM migrations")]
    assert len(names) == len(set(names))
    store.close()


def test_a_dropped_connection_ends_a_send_in_one_line_and_a_rerun_resumes(
        project: Path, pg_database: PostgresDatabase) -> None:
    import json
    import os
    import subprocess
    import sys
    import time
    from collections import Counter

    from tests.conftest import set_smtp
    from tests.smtpserver import SmtpServer

    use_database(project, pg_database.url)
    (project / "p.csv").write_text("email\n" + "".join(f"r{i}@example.net\n" for i in range(150)), encoding="utf-8")
    assert run_mailcli("import", "p.csv", "--list", "news", "--basis", "customer", cwd=project).returncode == 0
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.delay = 0.05
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}
        proc = subprocess.Popen([sys.executable, "-m", "mailcli", "send", "spring", "--template", "newsletter",
                                 "--list", "news", "--yes"], cwd=project, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert server.wait_for(20, timeout=60)
        deadline = time.monotonic() + 30
        drop = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{pg_database.name}'"  # noqa: S608
        while proc.poll() is None and time.monotonic() < deadline:  # the server restarts, as it were
            pg_database.server.admin(drop + " AND pid != pg_backend_pid()")
            time.sleep(0.2)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 1, stderr
        assert "Traceback" not in stderr
        assert "Lost the connection to PostgreSQL at " + pg_database.url in stderr
        assert pg_database.server.password not in stderr
        server.delay = 0.0
        assert server.wait_idle()
        rerun = run_mailcli("send", "spring", "--yes", cwd=project)
        received = Counter(server.recipients())
    assert max(received.values()) == 1
    report = json.loads(run_mailcli("report", "spring", "--json", cwd=project).stdout)
    assert rerun.returncode == (3 if report["uncertain"] else 0), rerun.stderr
    assert report["uncertain"] <= 4
    assert report["sent"] + report["uncertain"] == 150


def test_doctor_shows_the_servers_wal_settings_next_to_retention(project: Path,
                                                                  pg_database: PostgresDatabase) -> None:
    (project / "mailcli.db").unlink()
    use_database(project, pg_database.url)
    result = run_mailcli("doctor", cwd=project)
    line = next(line for line in result.stdout.splitlines() if "server-wal" in line)
    assert line.startswith("PASS") and "wal_keep_size 0 MB, archive_mode off" in line
    assert "[retention] backups 30 days" in line
    # A slot no standby reads keeps every WAL file, deleted rows included, for as long as it exists.
    slot = f"idle_{pg_database.name}"
    pg_database.server.admin(f"SELECT pg_create_physical_replication_slot('{slot}', true)")
    try:
        result = run_mailcli("--json", "doctor", cwd=project)
    finally:
        pg_database.server.admin(f"SELECT pg_drop_replication_slot('{slot}')")
    check = next(c for c in json.loads(result.stdout) if c["name"] == "server-wal")
    assert check["verdict"] == "warn" and slot in check["summary"] and "unlimited" in check["summary"]
    assert check["details"]["replication_slots"][0]["name"] == slot and check["details"]["retention_backups"] == "30d"
    assert "pg_drop_replication_slot" in check["fix"]
