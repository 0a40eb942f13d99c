"""``backup create | list | prune | restore``."""

from __future__ import annotations

import json
import re
import sqlite3
import stat
from pathlib import Path

import pytest

from mailcli import tokens
from mailcli.addresses import normalise_address
from mailcli.store import open_store
from tests.conftest import use_database
from tests.privacy_support import (
    ZEB,
    ZEB_FORMS,
    add_contact,
    add_list,
    add_membership,
    ago,
    count,
    freeze,
    remnants,
    settings_for,
)

ANNA = "anna@example.nl"


@pytest.fixture
def world(project: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """Two people on a list, in a SQLite file (or, given the parameter "postgresql", on the test server)."""
    if getattr(request, "param", "sqlite") == "postgresql":
        pg = request.getfixturevalue("pg_database")
        (project / "mailcli.db").unlink()
        use_database(project, pg.url)
    clock = freeze(monkeypatch)
    store = open_store(settings_for(project).project.store_location)
    news = add_list(store.conn, "news")
    for email, first in ((ZEB, "Zebedeus"), (ANNA, "Anna")):
        add_membership(store.conn, add_contact(store.conn, email, first, "Quiggleworth" if first == "Zebedeus"
                                               else "de Vries", at=ago(100)), news, at=ago(100))
    store.close()
    return project, clock


# The tests that hold on both engines: a backup of a PostgreSQL project is a pg_dump archive.
both = pytest.mark.parametrize("world", ["sqlite", "postgresql"], indirect=True)


def _db(root: Path) -> Path:
    return settings_for(root).project.database


def _on_server(root: Path) -> bool:
    return settings_for(root).project.database_url is not None


def _lose_database(root: Path) -> None:
    """The database is gone: its files deleted, or the server's schema dropped and made again empty."""
    url = settings_for(root).project.database_url
    if url is None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{_db(root)}{suffix}").unlink(missing_ok=True)
        return
    from mailcli.store.postgres import connect

    conn = connect(url)
    try:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    finally:
        conn.close()


def _emails(root: Path) -> list[str]:
    store = open_store(settings_for(root).project.store_location)
    try:
        return sorted(r[0].lower() for r in store.conn.execute("SELECT email FROM contacts"))
    finally:
        store.close()


def _create(cli) -> Path:
    result = cli("--json", "backup", "create")
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["path"])


def test_create_writes_a_private_consistent_copy(world, cli) -> None:
    root, _ = world
    path = _create(cli)
    assert path.parent == root / "backups" and path.name == "mailcli-20260302T120000Z.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one self-contained file
    assert conn.execute("SELECT count(*) FROM contacts").fetchone() == (2,)
    conn.close()


def test_snapshot_is_consistent_while_another_connection_is_writing(world) -> None:
    """The online backup API copies the committed state; a send mid-transaction neither blocks nor leaks in."""
    from mailcli.privacy.backup import copy_database

    root, _ = world
    store = open_store(settings_for(root).project.store_location)
    writer = sqlite3.connect(_db(root), isolation_level=None, timeout=0.1)
    writer.execute("BEGIN IMMEDIATE")  # a send holding the write lock mid-transaction
    writer.execute("UPDATE contacts SET first_name = 'HALFWAY'")
    target = root / "snapshot.db"
    try:
        copy_database(store.conn, target)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        store.close()
    conn = sqlite3.connect(target)
    assert conn.execute("SELECT count(*) FROM contacts").fetchone() == (2,)
    assert conn.execute("SELECT count(*) FROM contacts WHERE first_name = 'HALFWAY'").fetchone() == (0,)
    conn.close()


@both
def test_list_and_prune_follow_the_backups_retention(world, cli) -> None:
    root, clock = world
    first = _create(cli)
    clock.advance(days=31)
    second = _create(cli)
    listing = json.loads(cli("--json", "backup", "list").stdout)
    assert [Path(b["path"]) for b in listing] == [first, second]
    assert listing[0]["created_at"] == "2026-03-02T12:00:00Z" and listing[0]["size"] == first.stat().st_size
    dry = cli("--json", "backup", "prune", "--dry-run")
    assert [Path(b["path"]) for b in json.loads(dry.stdout)] == [first] and first.exists()
    assert cli("backup", "prune").exit_code == 0
    assert not first.exists() and second.exists()


@both
def test_restore_after_erase_does_not_bring_the_person_back(world, cli) -> None:
    root, clock = world
    backup = _create(cli)
    clock.advance(days=1)
    assert cli("privacy", "erase", ZEB, "--yes").exit_code == 0
    result = cli("backup", "restore", str(backup), "--yes")
    assert result.exit_code == 0, result.output
    assert "1 re-erasure" in result.stdout
    assert _emails(root) == [ANNA]
    assert remnants(root, *ZEB_FORMS) == []
    hmac = tokens.address_hmac(settings_for(root).secret(), normalise_address(ZEB).key)
    store = open_store(settings_for(root).project.store_location)
    assert store.conn.execute("SELECT reason FROM suppressions WHERE hmac = ? AND scope = '*'",
                              (hmac,)).fetchone() == ("erased",)
    store.close()
    # The replaced database was kept, and the erasure's audit entry carried over into a valid chain.
    assert any("pre-restore" in b["path"] for b in json.loads(cli("--json", "backup", "list").stdout))
    actions = [e["action"] for e in json.loads(cli("--json", "privacy", "audit").stdout)]
    assert actions == ["backup", "erase", "restore"]
    assert cli("privacy", "audit", "--verify").exit_code == 0


@both
def test_restore_reapplies_the_ledger_even_when_the_current_database_is_gone(world, cli) -> None:
    root, clock = world
    backup = _create(cli)
    clock.advance(days=1)
    assert cli("privacy", "erase", ZEB, "--yes").exit_code == 0
    _lose_database(root)
    result = cli("backup", "restore", str(backup), "--yes")
    assert result.exit_code == 0, result.output
    assert _emails(root) == [ANNA]


@both
def test_someone_who_came_back_after_the_erasure_is_kept(world, cli) -> None:
    root, clock = world
    assert cli("privacy", "erase", ZEB, "--yes").exit_code == 0
    clock.advance(days=2)
    store = open_store(settings_for(root).project.store_location)
    add_contact(store.conn, ZEB, "Zebedeus", "Quiggleworth", at=ago(0, clock.at.strftime("%Y-%m-%dT%H:%M:%SZ")))
    store.close()
    backup = _create(cli)
    assert cli("backup", "restore", str(backup), "--yes").exit_code == 0
    assert ZEB.lower().split("@")[0] in " ".join(_emails(root))


@both
def test_restore_reapplies_opt_outs_made_after_the_backup(world, cli) -> None:
    root, clock = world
    backup = _create(cli)
    clock.advance(days=1)
    assert cli("privacy", "object", ANNA).exit_code == 0
    assert cli("backup", "restore", str(backup), "--yes").exit_code == 0
    store = open_store(settings_for(root).project.store_location)
    statuses = store.conn.execute("SELECT m.status FROM memberships m JOIN contacts c ON c.id = m.contact_id"
                                  " WHERE c.email = ?", (ANNA,)).fetchall()
    hmac = tokens.address_hmac(settings_for(root).secret(), ANNA)
    reasons = store.conn.execute("SELECT reason FROM suppressions WHERE hmac = ?", (hmac,)).fetchall()
    store.close()
    assert statuses == [("unsubscribed",)] and reasons == [("objected",)]


def test_restore_refuses_a_damaged_backup_and_changes_nothing(world, cli) -> None:
    root, _ = world
    backup = _create(cli)
    conn = sqlite3.connect(backup)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root_page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'contacts'").fetchone()[0]
    conn.close()
    data = bytearray(backup.read_bytes())
    start = (root_page - 1) * page_size
    data[start + 3:start + 8] = b"\xff\xff\xff\xff\xff"  # cell count and content offset of the contacts b-tree
    backup.write_bytes(bytes(data))
    garbage = root / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 200)
    before = _db(root).read_bytes()
    # A damaged backup, a file that is no database at all, or none there: an
    # input file that is not usable, exit 2 like any other command's.
    for bad in (backup, garbage):
        result = cli("backup", "restore", str(bad), "--yes")
        assert result.exit_code == 2, result.output
        assert "nothing was changed" in result.stderr and "Traceback" not in result.output
    assert _db(root).read_bytes() == before
    missing = cli("backup", "restore", "missing.db", "--yes")
    assert missing.exit_code == 2 and "Backup not found: missing.db" in missing.stderr
    # Said at once, not after a question whose answer would be for nothing.
    unasked = cli("backup", "restore", "missing.db")
    assert unasked.exit_code == 2 and unasked.stderr.splitlines()[0] == "Error: Backup not found: missing.db"
    folder = cli("backup", "restore", "backups", "--yes")
    assert folder.exit_code == 2 and folder.stderr.splitlines()[0] == "Error: backups is a folder, not a backup"


@both
def test_restore_without_a_terminal_needs_yes(world, cli) -> None:
    root, _ = world
    backup = _create(cli)
    result = cli("backup", "restore", str(backup))
    assert result.exit_code == 2 and "--yes" in result.stderr
    assert len(list((root / "backups").iterdir())) == 1  # no safety copy either: nothing happened


def test_restored_database_is_private(world, cli) -> None:
    root, _ = world
    backup = _create(cli)
    assert cli("backup", "restore", str(backup), "--yes").exit_code == 0
    assert stat.S_IMODE(_db(root).stat().st_mode) == 0o600
    assert count(sqlite3.connect(_db(root)), "contacts") == 2


def test_restore_refuses_a_backup_from_a_newer_mailcli(world, cli) -> None:
    root, _ = world
    backup = _create(cli)
    conn = sqlite3.connect(backup)
    conn.execute("INSERT INTO migrations (name, applied_at) VALUES ('m999_from_the_future', '2030-01-01T00:00:00Z')")
    conn.commit()
    conn.close()
    result = cli("backup", "restore", str(backup), "--yes")
    assert result.exit_code == 1 and "newer mailcli" in result.stderr
    assert _emails(root) == sorted([ANNA, normalise_address(ZEB).key])


def test_a_purged_opt_out_stays_suppressed_after_restoring_a_backup_from_before_it(world, cli) -> None:
    root, clock = world
    old = root / "offsite-copy.db"  # purge deletes the 32-day-old backup itself; an off-site copy remains
    old.write_bytes(_create(cli).read_bytes())
    clock.advance(days=1)
    assert cli("unsubscribe", ANNA).exit_code == 0
    clock.advance(days=31)
    purged = json.loads(cli("--json", "privacy", "purge").stdout)
    assert purged["unsubscribed"] == 1 and purged["backups"] == 1
    for suffix in ("", "-wal", "-shm"):  # the worst case: only the copy and the ledger survive
        Path(f"{_db(root)}{suffix}").unlink(missing_ok=True)
    assert cli("backup", "restore", str(old), "--yes").exit_code == 0
    assert _emails(root) == [normalise_address(ZEB).key]
    store = open_store(settings_for(root).project.store_location)
    hmac = tokens.address_hmac(settings_for(root).secret(), ANNA)
    assert store.conn.execute("SELECT scope FROM suppressions WHERE hmac = ?", (hmac,)).fetchall() == [("*",)]
    store.close()


@both
def test_restore_reapplies_opt_outs_from_the_ledger_when_the_database_is_gone(world, cli) -> None:
    root, clock = world
    backup = _create(cli)
    clock.advance(days=1)
    assert cli("unsubscribe", ANNA, "--list", "news").exit_code == 0
    assert cli("privacy", "restrict", ZEB).exit_code == 0
    ledger = root / "mailcli.db-ledgers" / "optouts.jsonl"
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    text = ledger.read_text()
    assert ANNA not in text and "zeb" not in text.lower()
    assert [json.loads(line)["reason"] for line in text.splitlines()] == ["unsubscribed", "restricted"]
    _lose_database(root)  # only the backup and the ledger remain
    assert cli("backup", "restore", str(backup), "--yes").exit_code == 0
    store = open_store(settings_for(root).project.store_location)
    try:
        status = store.conn.execute("SELECT m.status, m.unsubscribed_at FROM memberships m JOIN contacts c"
                                    " ON c.id = m.contact_id WHERE c.email_key = ?", (ANNA,)).fetchone()
        restricted = store.conn.execute("SELECT restricted_at FROM contacts WHERE email_key = ?",
                                        (normalise_address(ZEB).key,)).fetchone()
    finally:
        store.close()
    assert status == ("unsubscribed", "2026-03-03T12:00:00Z") and restricted == ("2026-03-03T12:00:00Z",)
    clock.advance(days=1)
    assert cli("privacy", "unrestrict", ZEB).exit_code == 0
    assert cli("backup", "restore", str(backup), "--yes").exit_code == 0
    store = open_store(settings_for(root).project.store_location)
    try:
        assert store.conn.execute("SELECT restricted_at FROM contacts WHERE email_key = ?",
                                  (normalise_address(ZEB).key,)).fetchone() == (None,)
    finally:
        store.close()


@both
@pytest.mark.parametrize("ledger", ["optouts.jsonl", "erasures.jsonl"])
def test_restore_stops_at_a_damaged_ledger_line_naming_it(world, cli, ledger: str) -> None:
    root, _ = world
    backup = _create(cli)
    assert cli("unsubscribe", ANNA).exit_code == 0
    path = root / "mailcli.db-ledgers" / ledger
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"hmac": "abc"}\n')
    before = _emails(root)
    result = cli("backup", "restore", str(backup), "--yes")
    assert result.exit_code == 1
    assert f"{ledger}:" in result.stderr and "not a valid" in result.stderr and "Traceback" not in result.output
    assert _emails(root) == before


def test_a_backup_with_other_pages_is_restored_into_the_live_page_size(world, cli) -> None:
    root, _ = world
    backup = _create(cli)
    conn = sqlite3.connect(backup, isolation_level=None)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("VACUUM")  # as a database made before 16 KiB pages was
    assert conn.execute("PRAGMA page_size").fetchone() == (4096,)
    conn.close()
    assert cli("unsubscribe", ANNA).exit_code == 0
    result = cli("backup", "restore", str(backup), "--yes")
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(_db(root))
    assert conn.execute("PRAGMA page_size").fetchone() == (16384,)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    assert _emails(root) == sorted([ANNA, normalise_address(ZEB).key])


# -- encrypted backups ------------------------------------------------------------------

def _encrypting(root: Path) -> None:
    config = root / "mailcli.toml"
    text = config.read_text(encoding="utf-8")
    assert "encrypt = false" in text
    config.write_text(text.replace("encrypt = false", "encrypt = true"), encoding="utf-8")


@both
def test_an_encrypted_backup_holds_no_plain_byte_and_restores_with_its_key(world, cli) -> None:
    from pyrage import x25519

    root, clock = world
    _encrypting(root)
    identity = str(x25519.Identity.generate())
    env = {"MAILCLI_BACKUP_KEY": identity}
    no_key = cli("backup", "create", env={"MAILCLI_BACKUP_KEY": ""})
    assert no_key.exit_code == 4 and "MAILCLI_BACKUP_KEY is not set" in no_key.stderr
    result = cli("--json", "backup", "create", env=env)
    assert result.exit_code == 0, result.output
    backup = Path(json.loads(result.stdout)["path"])
    assert backup.name.endswith(".dump.age" if _on_server(root) else ".db.age")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    data = backup.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n") and b"SQLite format 3" not in data and b"PGDMP" not in data
    assert all(form.encode("utf-8").lower() not in data.lower() for form in ZEB_FORMS)
    listed = json.loads(cli("--json", "backup", "list", env=env).stdout)
    assert [(Path(b["path"]).name, b["encrypted"]) for b in listed] == [(backup.name, True)]
    clock.advance(days=1)
    assert cli("privacy", "erase", ZEB, "--yes").exit_code == 0
    restored = cli("backup", "restore", str(backup), "--yes", env=env)
    assert restored.exit_code == 0, restored.output
    assert _emails(root) == [ANNA]  # the backup came back, and the later erasure was applied to it
    assert cli("privacy", "audit", "--verify").exit_code == 0
    # The replaced database was kept encrypted too.
    assert all(b["encrypted"] for b in json.loads(cli("--json", "backup", "list", env=env).stdout))


@both
@pytest.mark.parametrize("key", ["wrong passphrase", "wrong identity", "missing", "tampered"])
def test_an_encrypted_backup_with_a_wrong_key_or_changed_bytes_replaces_nothing(world, cli, key: str) -> None:
    from pyrage import x25519

    root, _ = world
    _encrypting(root)
    right = "the right passphrase, long enough" if key == "wrong passphrase" else str(x25519.Identity.generate())
    env = {"MAILCLI_BACKUP_KEY": right}
    backup = Path(json.loads(cli("--json", "backup", "create", env=env).stdout)["path"])
    assert cli("privacy", "erase", ANNA, "--yes").exit_code == 0
    before = _emails(root)
    if key == "tampered":
        data = bytearray(backup.read_bytes())
        data[-40] ^= 1
        backup.write_bytes(bytes(data))
    else:
        wrong = {"missing": "", "wrong passphrase": "a wrong passphrase of some length"}
        env = {"MAILCLI_BACKUP_KEY": wrong.get(key) or str(x25519.Identity.generate())}
    result = cli("backup", "restore", str(backup), "--yes", env=env)
    assert result.exit_code == 4, result.output
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.output
    assert "nothing was restored" in result.stderr or "not set" in result.stderr
    assert _emails(root) == before and len(before) == 1  # the erasure after the backup still holds
    assert not [p for p in root.iterdir() if p.name.startswith(".restore")]


def test_a_backup_carries_the_audit_head_and_one_trimmed_behind_mailcli_is_refused(world, cli) -> None:
    root, clock = world
    assert cli("privacy", "export", ANNA, "-o", "a.zip").exit_code == 0
    backup = _create(cli)
    conn = sqlite3.connect(backup)
    assert conn.execute("SELECT value FROM project_facts WHERE name = 'audit_head'").fetchone() is not None
    conn.execute("DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)")
    conn.commit()
    conn.close()
    before = _emails(root)
    result = cli("backup", "restore", str(backup), "--yes")
    assert result.exit_code == 1, result.output
    assert "its audit log is not as mailcli wrote it" in result.stderr and "nothing was changed" in result.stderr
    assert _emails(root) == before


@both
def test_a_backup_made_with_another_secret_is_refused(world, cli) -> None:
    root, _ = world
    backup = _create(cli)
    result = cli("backup", "restore", str(backup), "--yes",
                 env={"MAILCLI_SECRET": "another secret, long enough to be one"})
    assert result.exit_code == 4
    assert "not the one the database" in result.stderr or "another HMAC secret" in result.stderr


def _run_sql(root: Path, *statements: str) -> None:
    """Change the project's database behind mailcli's back."""
    store = open_store(settings_for(root).project.store_location)
    try:
        for statement in statements:
            store.conn.execute(statement)
    finally:
        store.close()


# A trigger that empties the suppression list: what an altered backup could bring back with it.
FORGET = {
    "sqlite": ("CREATE TRIGGER forget AFTER INSERT ON suppressions BEGIN DELETE FROM suppressions; END",),
    "postgresql": ("CREATE FUNCTION forget() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM suppressions;"
                   " RETURN NULL; END $$",
                   "CREATE TRIGGER forget AFTER INSERT ON suppressions FOR EACH STATEMENT EXECUTE FUNCTION forget()"),
}
UNFORGET = {"sqlite": ("DROP TRIGGER forget",), "postgresql": ("DROP TRIGGER forget ON suppressions",
                                                                "DROP FUNCTION forget()")}


@both
def test_a_restore_that_fails_half_way_leaves_the_database_as_it_was(world, cli) -> None:
    root, clock = world
    engine = "postgresql" if _on_server(root) else "sqlite"
    _run_sql(root, *FORGET[engine])
    backup = _create(cli)
    _run_sql(root, *UNFORGET[engine])
    clock.advance(days=1)
    assert cli("privacy", "erase", ZEB, "--yes").exit_code == 0
    assert cli("unsubscribe", ANNA).exit_code == 0
    store = open_store(settings_for(root).project.store_location)
    suppressions = store.conn.execute("SELECT hmac, scope, reason FROM suppressions ORDER BY hmac, scope").fetchall()
    audit_rows = store.conn.execute("SELECT id, hash FROM audit_log ORDER BY id").fetchall()
    store.close()
    result = cli("backup", "restore", str(backup), "--yes")
    assert result.exit_code == 1, result.output
    assert "mailcli does not create" in result.stderr and "nothing was changed" in result.stderr
    assert "Traceback" not in result.output
    store = open_store(settings_for(root).project.store_location)
    try:
        assert store.conn.execute("SELECT hmac, scope, reason FROM suppressions ORDER BY hmac, scope"
                                  ).fetchall() == suppressions and len(suppressions) == 2
        assert store.conn.execute("SELECT id, hash FROM audit_log ORDER BY id").fetchall() == audit_rows
        if engine == "postgresql":  # the schema set aside during the attempt went with its transaction
            assert store.conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE '%replaced%'"
                                      ).fetchall() == []
    finally:
        store.close()
    assert _emails(root) == [ANNA]
    assert cli("privacy", "audit", "--verify").exit_code == 0
    assert not [p for p in root.iterdir() if p.name.startswith(".restore")]


@both
def test_a_restore_is_refused_while_a_send_holds_its_lock(world, cli) -> None:
    from mailcli.locks import campaign_lock

    root, _ = world
    backup = _create(cli)
    assert cli("privacy", "erase", ANNA, "--yes").exit_code == 0
    with campaign_lock(settings_for(root), "spring"):
        result = cli("backup", "restore", str(backup), "--yes")
    assert result.exit_code == 1, result.output
    assert "A send is running on this database" in result.stderr and "`mailcli send spring`" in result.stderr
    assert _emails(root) == [normalise_address(ZEB).key]  # not restored: the erasure still holds


def test_a_backup_of_the_other_engine_is_refused_naming_the_move(world, cli, pg_database) -> None:
    root, _ = world
    sqlite_backup = _create(cli)
    (root / "mailcli.db").unlink()
    use_database(root, pg_database.url)
    result = cli("backup", "restore", str(sqlite_backup), "--yes")
    assert result.exit_code == 4, result.output
    assert "is a backup of a SQLite database" in result.stderr and "migrate-store" in result.stderr


def test_without_pg_dump_a_backup_of_a_server_stops_in_one_line(world, cli, pg_database, tmp_path: Path) -> None:
    root, _ = world
    (root / "mailcli.db").unlink()
    use_database(root, pg_database.url)
    empty = tmp_path / "no-client"
    empty.mkdir()
    result = cli("backup", "create", env={"MAILCLI_PG_BINDIR": str(empty)})
    assert result.exit_code == 4, result.output
    assert result.stderr.splitlines()[0] == f"Error: pg_dump is not installed (looked in {empty} (MAILCLI_PG_BINDIR))"
    old = tmp_path / "old-client"
    old.mkdir()
    fake = old / "pg_dump"  # a client that reports an older major version than the server's
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n", encoding="utf-8")
    fake.chmod(0o755)
    result = cli("backup", "create", env={"MAILCLI_PG_BINDIR": str(old)})
    assert result.exit_code == 4, result.output
    assert re.search(r"pg_dump is older than the PostgreSQL \d+ server", result.stderr) and "version 9" in result.stderr
    assert not (root / "backups").exists() or not list((root / "backups").iterdir())
