"""`backup restore` next to a running `serve`, killed at any moment, and fed a doctored backup.

Real processes: `mailcli serve`, `mailcli backup restore` as a subprocess
killed with SIGKILL, a real HTTP client; the database read with sqlite3.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailcli.store.spool import pending_optouts
from tests.conftest import run_mailcli
from tests.serve_support import Server, member_statuses, one_click, tokens_by_email, wait_until

ZEB = "zebedeus.quiggleworth@example.org"
ANNA = "anna@example.org"
BOB = "bob@example.org"
LATE = "late.comer@example.org"
RESTRICTED = "filler00000@example.org"


def _import(root: Path, name: str, emails: list[str]) -> None:
    source = root / name
    source.write_text("email,first_name,last_name\n" + "".join(f"{e},Someone,Else\n" for e in emails),
                      encoding="utf-8")
    result = run_mailcli("import", str(source), "--list", "news", "--basis", "customer", cwd=root)
    assert result.returncode == 0, result.stderr
    source.unlink()


def _backup(root: Path) -> Path:
    result = run_mailcli("--json", "backup", "create", cwd=root)
    assert result.returncode == 0, result.stderr
    return Path(json.loads(result.stdout)["path"])


def _contacts(root: Path) -> set[str]:
    conn = sqlite3.connect(root / "mailcli.db")
    try:
        return {row[0] for row in conn.execute("SELECT email_key FROM contacts")}
    finally:
        conn.close()


def _files_with(root: Path, needle: bytes, *, skip: str = "backups") -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and skip not in path.relative_to(root).parts and needle in path.read_bytes().lower():
            hits.append(path)
    return hits


def test_restore_with_serve_running_loses_no_post(project: Path) -> None:
    people = [f"p{i:03d}@example.org" for i in range(120)]
    _import(project, "people.csv", people)
    backup = _backup(project)
    tokens = tokens_by_email(project)
    server = Server(project)
    try:
        before = [p for p in people[:10]]
        assert {one_click(server.url, tokens[p]).status_code for p in before} == {200}
        restore = subprocess.Popen([sys.executable, "-m", "mailcli", "backup", "restore", str(backup), "--yes"],
                                   cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        during: list[str] = []
        index = 10
        while restore.poll() is None and index < 60:  # one-click requests while the restore runs
            assert one_click(server.url, tokens[people[index]]).status_code == 200
            during.append(people[index])
            index += 1
        out, err = restore.communicate(timeout=120)
        assert restore.returncode == 0, err
        after = people[60:100]
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(lambda p: one_click(server.url, tokens[p]).status_code, after))
        assert codes == [200] * len(after)
        wait_until(lambda: not pending_optouts(project / "mailcli.db"), what="the spool to be applied")
        statuses = member_statuses(project)
        # Every POST after the restore is in the live database, and so is every one before and during it.
        assert [p for p in before + during + after if statuses[p] != "unsubscribed"] == []
        assert [p for p in people[100:] if statuses[p] != "subscribed"] == []
        assert "Restored" in out
    finally:
        server.stop()


@pytest.fixture(scope="module")
def history_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a backup, and after it an erasure, a one-click unsubscribe, an objection, a
    restriction and a new contact; made once, copied for each test."""
    base = tmp_path_factory.mktemp("history")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}
    env["HOME"] = str(base)
    assert subprocess.run([sys.executable, "-m", "mailcli", "init", "proj"], cwd=base, env=env,
                          capture_output=True).returncode == 0
    root = base / "proj"
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        filler = [f"filler{i:05d}@example.org" for i in range(20_000)]
        _import(root, "people.csv", [ZEB, ANNA, BOB, *filler])
        _backup(root)
        assert run_mailcli("privacy", "erase", ZEB, "--yes", cwd=root).returncode == 0
        server = Server(root)
        try:
            assert one_click(server.url, tokens_by_email(root)[ANNA]).status_code == 200
        finally:
            server.stop()
        assert run_mailcli("privacy", "object", BOB, cwd=root).returncode == 0
        assert run_mailcli("privacy", "restrict", RESTRICTED, cwd=root).returncode == 0
        _import(root, "late.csv", [LATE])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return root


@pytest.fixture
def history(project: Path, history_template: Path) -> Path:
    """The template's files in this test's project folder; returns the backup."""
    shutil.rmtree(project)
    shutil.copytree(history_template, project)
    (backup,) = [p for p in (project / "backups").iterdir() if "pre-restore" not in p.name]
    return backup


def _promises_hold(root: Path) -> None:
    """Whatever state the database is in, nothing that happened after the backup is undone."""
    conn = sqlite3.connect(root / "mailcli.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM contacts WHERE email_key = ?", (ZEB,)).fetchone() == (0,)
        assert conn.execute("SELECT restricted_at IS NOT NULL FROM contacts WHERE email_key = ?",
                            (RESTRICTED,)).fetchone() == (1,)
        assert conn.execute("SELECT no_marketing_at IS NOT NULL FROM contacts WHERE email_key = ?",
                            (BOB,)).fetchone() == (1,)
    finally:
        conn.close()
    statuses = member_statuses(root)
    assert statuses[ANNA] == "unsubscribed" and statuses[BOB] == "unsubscribed"


def _start_restore(root: Path, backup: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mailcli", "backup", "restore", str(backup), "--yes"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _moment(root: Path, which: str) -> bool:
    """Whether the restore has reached a point worth killing it at."""
    if which == "safety copy":
        return any(p.name.startswith(".mailcli-") for p in (root / "backups").iterdir())
    if which == "preparing":
        return any(root.glob(".restore-*.db"))
    if which == "prepared":
        return any(root.glob(".restore-*.db")) and not any(root.glob(".restore-*.db-journal"))
    if which == "swapping":
        try:  # the WAL may go between a look and a stat: a checkpoint truncates it, SQLite removes it
            return (root / "mailcli.db-wal").stat().st_size > 4 << 20
        except FileNotFoundError:
            return False
    raise AssertionError(which)


@pytest.mark.parametrize("moment", ["safety copy", "preparing", "prepared", "swapping", "at once"])
def test_kill_9_of_restore_then_a_rerun(project: Path, history: Path, moment: str) -> None:
    backup = history
    proc = _start_restore(project, backup)
    if moment != "at once":
        deadline = time.monotonic() + 60
        while proc.poll() is None and not _moment(project, moment) and time.monotonic() < deadline:
            time.sleep(0.001)
    assert proc.poll() is None, f"the restore ended before the moment {moment!r}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    # Killed anywhere: the old database or the fully restored one, never the raw backup.
    _promises_hold(project)
    # A rerun completes the restore and leaves no copy with personal data behind.
    rerun = run_mailcli("backup", "restore", str(backup), "--yes", cwd=project)
    assert rerun.returncode == 0, rerun.stderr
    _promises_hold(project)
    assert LATE not in _contacts(project)  # the backup's content, not the old database
    assert not list(project.glob(".restore-*"))
    assert not [p for p in (project / "backups").iterdir() if not p.name.startswith("mailcli-")]
    assert _files_with(project, ZEB.encode()) == []
    assert run_mailcli("privacy", "audit", "--verify", cwd=project).returncode == 0


def test_a_killed_restore_is_cleaned_up_by_purge_too(project: Path, history: Path) -> None:
    proc = _start_restore(project, history)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not _moment(project, "preparing") and time.monotonic() < deadline:
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert run_mailcli("privacy", "purge", cwd=project).returncode == 0
    assert not list(project.glob(".restore-*"))


def _doctored(backup: Path, statement: str) -> Path:
    copy = backup.with_name("doctored.db")
    copy.write_bytes(backup.read_bytes())
    conn = sqlite3.connect(copy)
    conn.executescript(statement)
    conn.commit()
    conn.close()
    return copy


@pytest.mark.parametrize(("statement", "named"), [
    ("CREATE TRIGGER forget AFTER INSERT ON suppressions BEGIN DELETE FROM suppressions; END;", "trigger"),
    ("CREATE VIEW everyone AS SELECT email FROM contacts;", "view"),
    ("CREATE TABLE notes (text TEXT);", "table"),
    ("DROP INDEX contacts_status;", "index"),
    ("CREATE INDEX sneaky ON contacts(email);", "index"),
])
def test_restore_refuses_a_schema_mailcli_did_not_make(project: Path, statement: str, named: str) -> None:
    _import(project, "people.csv", [ANNA, BOB])
    backup = _backup(project)
    doctored = _doctored(backup, statement)
    before = (project / "mailcli.db").read_bytes()
    result = run_mailcli("backup", "restore", str(doctored), "--yes", cwd=project)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and named in errors[0] and "nothing was changed" in errors[0], result.stderr
    assert (project / "mailcli.db").read_bytes() == before
    assert not list(project.glob(".restore-*"))
    assert run_mailcli("backup", "restore", str(backup), "--yes", cwd=project).returncode == 0


def test_a_restored_backup_with_a_suppression_eating_trigger_is_never_live(project: Path) -> None:
    _import(project, "people.csv", [ANNA, BOB])
    backup = _doctored(_backup(project), "CREATE TRIGGER forget AFTER INSERT ON suppressions"
                                         " BEGIN DELETE FROM suppressions; END;")
    assert run_mailcli("backup", "restore", str(backup), "--yes", cwd=project).returncode == 1
    assert run_mailcli("unsubscribe", ANNA, cwd=project).returncode == 0
    conn = sqlite3.connect(project / "mailcli.db")
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'forget'").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM suppressions").fetchone() == (1,)
    conn.close()
