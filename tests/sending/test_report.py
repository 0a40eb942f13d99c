"""`mailcli report`: the JSON keys, event counts and totals that survive purge."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from mailcli.errors import ExitCode
from mailcli.send import ledger
from mailcli.store import open_store
from tests.conftest import Cli, Meanwhile, set_smtp
from tests.sendhelpers import add_contacts, people
from tests.smtpserver import SmtpServer

KEYS = {"audience", "sent", "failed", "deferred", "pending", "uncertain", "bounced", "unsubscribed", "complained"}


def _sent_campaign(project: Path, cli: Cli, n: int = 5) -> None:
    add_contacts(project / "mailcli.db", "news", people(n))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        server.script("RCPT", "person0@example.net", ["554 5.7.1 rejected by policy"])
        result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        assert result.exit_code == ExitCode.PARTIAL, result.output


def _report(cli: Cli, *args: str) -> object:
    result = cli("report", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_keys_events_and_listing(project: Path, cli: Cli) -> None:
    _sent_campaign(project, cli)
    conn = sqlite3.connect(project / "mailcli.db")
    campaign_id, contact = conn.execute("SELECT k.id, c.id FROM campaigns k, contacts c LIMIT 1").fetchone()
    for kind in ("bounced", "unsubscribed", "unsubscribed", "complained", "soft_bounced"):
        conn.execute("INSERT INTO events (contact_id, campaign_id, kind, created_at) VALUES (?, ?, ?, '2026-01-01T00:00:00Z')",
                     (contact, campaign_id, kind))
    conn.commit()
    conn.close()
    report = _report(cli, "spring")
    assert KEYS <= set(report) and all(isinstance(report[k], int) for k in KEYS)
    assert {k: report[k] for k in KEYS} == {
        "audience": 5, "sent": 4, "failed": 1, "deferred": 0, "pending": 0, "uncertain": 0,
        "bounced": 1, "unsubscribed": 2, "complained": 1}
    everything = _report(cli)
    assert isinstance(everything, list) and [r["campaign"] for r in everything] == ["spring"]
    table = cli("report")
    assert table.exit_code == 0 and "spring" in table.stdout and "audience" in table.stdout
    failed = cli("report", "spring", "--failed")
    assert "person0@example.net" in failed.stdout and "5.7.1" in failed.stdout
    missing = cli("report", "autumn")
    assert missing.exit_code == ExitCode.ERROR and "autumn" in missing.stderr


def test_totals_survive_deleting_delivery_rows_and_events(project: Path, cli: Cli) -> None:
    _sent_campaign(project, cli)
    conn = sqlite3.connect(project / "mailcli.db")
    conn.execute("INSERT INTO events (contact_id, campaign_id, kind, created_at)"
                 " SELECT MIN(id), 1, 'unsubscribed', '2026-01-01T00:00:00Z' FROM contacts")
    conn.commit()
    conn.close()
    before = _report(cli, "spring")
    store = open_store(project / "mailcli.db")
    with store.transaction() as tx:
        # What purge/erasure must do: fold the rows into the totals, then delete.
        assert ledger.archive_deliveries(tx, "campaign_id = ?", (1,)) == 5
        ledger.archive_events(tx, "campaign_id = ?", (1,))
        tx.execute("DELETE FROM deliveries WHERE campaign_id = 1")
        tx.execute("DELETE FROM events WHERE campaign_id = 1")
    store.close()
    after = _report(cli, "spring")
    assert {k: after[k] for k in KEYS} == {k: before[k] for k in KEYS}
    assert after["unsubscribed"] == 1 and after["sent"] == 4


def test_a_purge_between_the_reads_of_a_report_changes_none_of_its_counts(project: Path, cli: Cli) -> None:
    from mailcli import audit
    from mailcli.config import resolve
    from mailcli.send.report import campaign_report

    _sent_campaign(project, cli)
    before = _report(cli, "spring")

    def purge() -> None:  # another process folds the rows into the totals and deletes them
        other = open_store(project / "mailcli.db")
        with other.transaction() as tx:
            ledger.archive_deliveries(tx, "campaign_id = ?", (1,))
            tx.execute("DELETE FROM deliveries WHERE campaign_id = 1")
        other.close()

    store = open_store(project / "mailcli.db")
    audit.bind(store, resolve(directory=str(project)))  # --failed names people: audited
    store.conn = Meanwhile(store.conn, "FROM delivery_counts", purge)
    during = campaign_report(store, "spring", failures=True)[0]
    assert store.conn.written
    store.close()
    assert {k: during.counts[k] for k in KEYS} == {k: before[k] for k in KEYS}
    assert [f["email"] for f in during.failures or []] == ["person0@example.net"]
    assert _report(cli, "spring")["sent"] == 4  # the totals, now archived
