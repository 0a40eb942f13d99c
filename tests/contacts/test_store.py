"""The store: file modes, pragmas on every connection, migrations, atomicity."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from mailcli.store import open_store
from mailcli.store.db import connect
from mailcli.store.migrations import MIGRATIONS
from tests.conftest import migrate_until


def test_new_database_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = open_store(tmp_path / "x.db")
        with store.transaction() as conn:
            conn.execute("INSERT INTO lists (name, created_at) VALUES ('a', 'now')")
    finally:
        os.umask(old)
    for name in ("x.db", "x.db-wal", "x.db-shm"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    store.close()


def test_pragmas_on_every_connection(tmp_path: Path) -> None:
    open_store(tmp_path / "x.db").close()
    conn = connect(tmp_path / "x.db")
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_new_databases_use_16_kib_pages_and_old_ones_keep_theirs(tmp_path: Path) -> None:
    open_store(tmp_path / "new.db").close()
    assert connect(tmp_path / "new.db").execute("PRAGMA page_size").fetchone()[0] == 16384
    old = sqlite3.connect(tmp_path / "old.db")
    old.execute("PRAGMA page_size=4096")
    old.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")  # an older mailcli's
    old.close()
    store = open_store(tmp_path / "old.db")
    assert store.conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert store.conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0


def test_status_changes_of_a_send_touch_no_index(tmp_path: Path) -> None:
    # Each message moves its delivery pending -> sending -> sent in a commit
    # the connection waits for; no index may include the status.
    store = open_store(tmp_path / "x.db")
    indexed = {row[2] for (name,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'"
                                                          " AND tbl_name = 'deliveries'")
               for row in store.conn.execute(f"PRAGMA index_info('{name}')")}
    assert "status" not in indexed and "campaign_id" in indexed


def test_active_contacts_are_not_in_the_status_index(tmp_path: Path) -> None:
    # Imports create active contacts by the million; only the other statuses
    # are looked up by status, and the purge of bounced contacts still is.
    store = open_store(tmp_path / "x.db")
    conn = store.conn
    for i, status in enumerate(["active", "active", "bounced"]):
        conn.execute("INSERT INTO contacts (uid, email, email_key, status, created_at, updated_at, last_activity_at)"
                     " VALUES (?, ?, ?, ?, '2020', '2020', '2020')", (f"u{i}", f"p{i}@example.org", f"p{i}@example.org", status))
    indexed = conn.execute("SELECT count(*) FROM contacts INDEXED BY contacts_status WHERE status != 'active'").fetchone()
    assert indexed == (1,)
    from mailcli.privacy import retention

    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    cut = dict.fromkeys(("unconfirmed", "unsubscribed", "bounced", "inactive", "send_log", "audit_log", "clicks"),
                        "2030")
    retention._plan(conn, cut)
    conn.set_trace_callback(None)
    (bounced,) = [sql for sql in statements if "'bounced'" in sql and "purge_contacts" in sql]
    plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + bounced[bounced.index("SELECT"):]))
    assert "INDEX contacts_status" in plan, plan
    assert conn.execute("SELECT id FROM temp.purge_contacts WHERE rule = 'bounced'").fetchall() == [(3,)]
    store.close()


def _counts_by_reading(conn: sqlite3.Connection) -> dict[tuple[int, str], int]:
    return {(c, s): n for c, s, n in conn.execute("SELECT campaign_id, status, count(*) FROM deliveries GROUP BY 1, 2")}


def _kept_counts(conn: sqlite3.Connection) -> dict[tuple[int, str], int]:
    return {(c, s): n for c, s, n in conn.execute("SELECT campaign_id, status, n FROM delivery_counts WHERE n != 0")}


def _add_deliveries(conn: sqlite3.Connection, campaign: int, contacts: range) -> None:
    conn.execute("INSERT OR IGNORE INTO lists (id, name, created_at) VALUES (1, 'news', 'now')")
    conn.execute("INSERT INTO campaigns (id, uid, name, template, list_id, list_name, created_at)"
                 " VALUES (?, ?, ?, 't', 1, 'news', 'now')", (campaign, f"c{campaign}", f"c{campaign}"))
    for i in contacts:
        conn.execute("INSERT OR IGNORE INTO contacts (id, uid, email, email_key, created_at, updated_at, last_activity_at)"
                     " VALUES (?, ?, ?, ?, 'now', 'now', 'now')", (i, f"u{i}", f"p{i}@example.org", f"p{i}@example.org"))
        conn.execute("INSERT INTO deliveries (campaign_id, contact_id, message_id, created_at, updated_at)"
                     " VALUES (?, ?, ?, 'now', 'now')", (campaign, i, f"<{campaign}.{i}@example.org>"))


def test_delivery_counts_follow_every_insert_status_change_and_delete(tmp_path: Path) -> None:
    # A report reads these counts instead of every delivery of the campaign.
    from mailcli.store.deliveries import delivery_status_counts

    store = open_store(tmp_path / "x.db")
    conn = store.conn
    _add_deliveries(conn, 1, range(1, 11))
    _add_deliveries(conn, 2, range(1, 6))
    conn.execute("UPDATE deliveries SET status = 'sending' WHERE contact_id <= 6")
    conn.execute("UPDATE deliveries SET status = 'sent' WHERE status = 'sending' AND contact_id != 3")
    conn.execute("UPDATE deliveries SET status = 'failed' WHERE contact_id = 3 AND campaign_id = 1")
    conn.execute("UPDATE deliveries SET last_reply = '250 ok'")  # not a status change
    conn.execute("DELETE FROM contacts WHERE id = 4")  # an erasure: its deliveries go by cascade
    conn.execute("DELETE FROM deliveries WHERE campaign_id = 1 AND contact_id = 9")
    assert _kept_counts(conn) == _counts_by_reading(conn)
    assert delivery_status_counts(conn, 1) == {"sent": 4, "failed": 1, "pending": 3}
    conn.execute("DELETE FROM campaigns WHERE id = 2")
    assert conn.execute("SELECT count(*) FROM delivery_counts WHERE campaign_id = 2").fetchone() == (0,)
    assert _kept_counts(conn) == _counts_by_reading(conn)
    store.close()


def test_delivery_counts_of_an_existing_database_are_counted_when_it_is_migrated(tmp_path: Path) -> None:
    from mailcli.store.db import apply_migrations

    conn = connect(tmp_path / "x.db")
    migrate_until(conn, "m008_delivery_counts")
    _add_deliveries(conn, 1, range(1, 8))
    conn.execute("UPDATE deliveries SET status = 'sent' WHERE contact_id < 5")
    conn.commit()
    assert "m008_delivery_counts" in apply_migrations(conn)
    assert _kept_counts(conn) == {(1, "sent"): 4, (1, "pending"): 3}
    conn.close()


def test_migrations_recorded_and_idempotent(tmp_path: Path) -> None:
    store = open_store(tmp_path / "x.db")
    names = [row[0] for row in store.conn.execute("SELECT name FROM migrations ORDER BY rowid")]
    assert names == [name for name, _ in MIGRATIONS]
    store.close()
    store = open_store(tmp_path / "x.db")
    assert store.conn.execute("SELECT count(*) FROM migrations").fetchone()[0] == len(MIGRATIONS)


def test_transaction_rolls_back_on_interrupt(tmp_path: Path) -> None:
    store = open_store(tmp_path / "x.db")
    with pytest.raises(KeyboardInterrupt):
        with store.transaction() as conn:
            conn.execute("INSERT INTO lists (name, created_at) VALUES ('a', 'now')")
            with store.transaction():
                conn.execute("INSERT INTO lists (name, created_at) VALUES ('b', 'now')")
            raise KeyboardInterrupt
    assert store.conn.execute("SELECT count(*) FROM lists").fetchone()[0] == 0


def test_nested_savepoint_rolls_back_alone(tmp_path: Path) -> None:
    store = open_store(tmp_path / "x.db")
    with store.transaction() as conn:
        conn.execute("INSERT INTO lists (name, created_at) VALUES ('a', 'now')")
        with pytest.raises(ValueError):
            with store.transaction():
                conn.execute("INSERT INTO lists (name, created_at) VALUES ('b', 'now')")
                raise ValueError
    assert [r[0] for r in store.conn.execute("SELECT name FROM lists")] == ["a"]


def test_database_from_newer_version_is_refused(tmp_path: Path) -> None:
    from mailcli.store import StoreError

    store = open_store(tmp_path / "x.db")
    store.conn.execute("INSERT INTO migrations VALUES ('m999_future', 'now')")
    store.close()
    with pytest.raises(StoreError, match="newer mailcli"):
        open_store(tmp_path / "x.db")


def test_group_readable_database_is_tightened(tmp_path: Path) -> None:
    open_store(tmp_path / "x.db").close()
    os.chmod(tmp_path / "x.db", 0o644)
    open_store(tmp_path / "x.db").close()
    assert stat.S_IMODE((tmp_path / "x.db").stat().st_mode) == 0o600


def test_a_campaign_stuck_on_an_erased_pending_delivery_completes_after_the_upgrade(tmp_path: Path) -> None:
    # Before m005 erasing someone whose message was still pending archived it
    # as "pending" for good; the upgrade counts it as skipped.
    from mailcli.store.db import apply_migrations
    from mailcli.store.migrations import statements

    path = tmp_path / "old.db"
    conn = connect(path)
    conn.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for name, step in MIGRATIONS[:4]:
        assert isinstance(step, str)
        for statement in statements(step):
            conn.execute(statement)
        conn.execute("INSERT INTO migrations VALUES (?, 'then')", (name,))
    conn.execute("INSERT INTO lists (name, created_at) VALUES ('news', 'then')")
    conn.execute("INSERT INTO campaigns (uid, name, template, list_id, list_name, status, archived_counts, created_at)"
                 " VALUES ('u1', 'spring', 'newsletter', 1, 'news', 'sending',"
                 " '{\"audience\": 3, \"pending\": 1, \"deferred\": 1, \"sent\": 1}', 'then')")
    apply_migrations(conn)
    from mailcli.send import ledger

    campaign = ledger.get_campaign(conn, "spring")
    assert campaign is not None
    counts = ledger.campaign_counts(conn, campaign)
    assert (counts["audience"], counts["sent"], counts["pending"], counts["deferred"], counts["skipped"]) == (3, 1, 0, 0, 2)
    assert campaign.status == "sent" and campaign.finished_at
    conn.close()


def test_the_address_hmac_is_rfc_2104_hmac_sha256() -> None:
    import hashlib
    import hmac

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mailcli.tokens import address_hasher, address_hmac

    @settings(max_examples=200, deadline=None)
    @given(st.binary(min_size=1, max_size=200), st.text(max_size=80))
    def same(secret: bytes, address: str) -> None:
        expected = hmac.new(secret, b"address:" + address.strip().lower().encode("utf-8"), hashlib.sha256).hexdigest()
        assert address_hmac(secret, address) == expected
        assert address_hasher(secret)(address) == expected

    same()


def test_the_first_command_after_an_upgrade_says_it_upgrades_the_database(project: Path, cli) -> None:
    fresh = cli("lists")
    assert fresh.exit_code == 0 and "Upgrading" not in fresh.stderr, fresh.stderr
    # The database as an earlier mailcli left it: migrated up to m008.
    path = project / "mailcli.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = connect(path)
    migrate_until(conn, "m008_delivery_counts")
    conn.commit()
    conn.close()
    later = len(MIGRATIONS) - [name for name, _ in MIGRATIONS].index("m008_delivery_counts")
    first = cli("lists")
    assert first.exit_code == 0, first.output
    assert f"Upgrading the database for this version of mailcli ({later} steps, once;" in first.stderr
    again = cli("lists")
    assert again.exit_code == 0 and "Upgrading" not in again.stderr


def test_a_freeze_counts_its_rows_once_and_puts_the_count_trigger_back_as_it_was(tmp_path: Path) -> None:
    # A freeze inserts its rows without the per-row count trigger and counts
    # them in one statement: the counts and the schema come out as the
    # trigger would have left them, and no other connection sees it missing.
    from mailcli.store.deliveries import FREEZE_CACHE_FROM, FREEZE_CACHE_KIB, pending_inserts
    from mailcli.store.schema import schema_differences, schema_objects

    store = open_store(tmp_path / "x.db")
    conn = store.conn
    _add_deliveries(conn, 1, range(1, 1001 + FREEZE_CACHE_FROM))
    conn.execute("DELETE FROM deliveries WHERE contact_id > 5")  # the others are not in the campaign yet
    schema = schema_objects(conn)
    (cache,) = conn.execute("PRAGMA cache_size").fetchone()
    reader = connect(tmp_path / "x.db")

    def rows(contacts: range) -> list[tuple[int, int, str, str]]:
        return [(1, i, f"<1.{i}@example.org>", "now") for i in contacts]

    with store.transaction():
        with pending_inserts(conn, 1) as inserts:
            inserts.insert(rows(range(1, 21)))  # 1..5 are there already and keep their rows
            inserts.insert([])
            assert conn.execute("PRAGMA cache_size").fetchone() == (cache,)  # for a few rows, as it was
            assert reader.execute("SELECT count(*) FROM sqlite_master WHERE name = 'deliveries_count_insert'"
                                  ).fetchone() == (1,)
            inserts.insert(rows(range(21, 26)))
            inserts.insert(rows(range(1000, 1000 + FREEZE_CACHE_FROM)))
            assert conn.execute("PRAGMA cache_size").fetchone() == (-FREEZE_CACHE_KIB,)
        assert inserts.added == 20 + FREEZE_CACHE_FROM
        assert conn.execute("PRAGMA cache_size").fetchone() == (cache,)  # given back
        assert _kept_counts(reader) == {(1, "pending"): 5}  # nothing before the commit
    assert _kept_counts(conn) == _counts_by_reading(conn) == {(1, "pending"): 25 + FREEZE_CACHE_FROM}
    assert schema_objects(conn) == schema and schema_differences(conn) == []

    # An error on the way undoes the rows and puts the trigger back, even
    # where the transaction around it goes on and commits.
    with store.transaction():
        with pytest.raises(KeyError), pending_inserts(conn, 1) as inserts:
            inserts.insert(rows(range(26, 29)))
            raise KeyError("stop")
        conn.execute("INSERT INTO deliveries (campaign_id, contact_id, message_id, created_at, updated_at)"
                     " VALUES (1, 30, '<1.30@example.org>', 'now', 'now')")  # counted by the trigger
    assert _kept_counts(conn) == _counts_by_reading(conn) == {(1, "pending"): 26 + FREEZE_CACHE_FROM}
    assert schema_objects(conn) == schema and conn.execute("PRAGMA cache_size").fetchone() == (cache,)
    reader.close()
    store.close()


def test_the_first_page_of_a_send_does_not_read_older_campaigns_deliveries(tmp_path: Path) -> None:
    # Pages are read by delivery id; the first one began at the first row of
    # the table and stepped over every older campaign's rows (0.67 s for ten
    # million), in every run and dry run.
    from mailcli.send.ledger import get_campaign, iter_sendable

    store = open_store(tmp_path / "x.db")
    conn = store.conn
    conn.execute("BEGIN")
    _add_deliveries(conn, 1, range(1, 20_001))
    _add_deliveries(conn, 2, range(1, 11))
    conn.execute("COMMIT")
    campaign = get_campaign(conn, "c2")
    assert campaign is not None
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 100)  # one call per hundred virtual machine instructions
    pages = list(iter_sendable(conn, campaign, b"secret"))
    conn.set_progress_handler(None, 0)
    assert [len(page) for page in pages] == [10]
    assert steps[0] < 100, f"{steps[0] * 100} instructions for ten rows"
    store.close()


def test_counting_the_members_without_a_basis_reads_only_them(tmp_path: Path) -> None:
    # Every freeze counts the list's members it leaves out for want of a
    # lawful basis; the count read the contact of every subscribed member
    # (0.35 s for a million) where the partial index holds the few without one.
    from mailcli.store.audience import count_no_basis

    store = open_store(tmp_path / "x.db")
    conn = store.conn
    conn.execute("BEGIN")
    _add_deliveries(conn, 1, range(1, 5_001))
    conn.execute("INSERT INTO memberships (contact_id, list_id, status, basis, created_at, updated_at)"
                 " SELECT id, 1, 'subscribed', CASE WHEN id % 1000 = 0 THEN 'none' ELSE 'consent' END, 'now', 'now'"
                 " FROM contacts")
    conn.execute("COMMIT")
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 100)
    assert count_no_basis(conn, 1) == 5
    conn.set_progress_handler(None, 0)
    assert steps[0] < 10, f"{steps[0] * 100} instructions for five members"
    store.close()
