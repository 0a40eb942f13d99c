"""The ledger writer's group commit: marks and results in one statement, all
or nothing, and one by one wherever that is not the same."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from mailcli.config import resolve
from mailcli.send import ledger
from mailcli.send.writer import LedgerWriter
from mailcli.store import open_store
from tests.conftest import Cli, set_smtp
from tests.sendhelpers import add_contacts, people
from tests.smtpserver import SmtpServer


def _campaign_with_pending(project: Path, cli: Cli, n: int) -> list[int]:
    """A frozen campaign of ``n`` + 1 people, one of them sent: the ids of the pending rest."""
    add_contacts(project / "mailcli.db", "news", people(n + 1))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        first = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", "--limit", "1")
        assert first.exit_code == 0, first.stderr
    conn = sqlite3.connect(project / "mailcli.db")
    try:
        return [row[0] for row in conn.execute("SELECT id FROM deliveries WHERE status = 'pending' ORDER BY id")]
    finally:
        conn.close()


def _write(project: Path, *batches: list[tuple[object, ...]]) -> dict[int, str]:
    """Each batch through a real writer, waiting for it to be on disk; the outcomes of its marks."""
    settings = resolve(directory=str(project))
    store = open_store(settings.project.store_location)
    campaign = ledger.get_campaign(store.conn, "spring")
    assert campaign is not None

    async def scenario() -> dict[int, str]:
        writer = LedgerWriter(store, settings, campaign)
        writer.start()
        try:
            for batch in batches:
                waits = [writer.submit(op, wait=True) for op in batch]
                for done in waits:
                    assert done is not None
                    await asyncio.wait_for(done, 30)
        finally:
            await writer.close()
        return dict(writer.outcomes)

    try:
        return asyncio.run(scenario())
    finally:
        store.close()


def _rows(project: Path) -> tuple[dict[int, tuple[str, int, str | None]], dict[str, int]]:
    conn = sqlite3.connect(project / "mailcli.db")
    try:
        rows = {i: (s, a, r) for i, s, a, r in conn.execute("SELECT id, status, attempts, last_reply FROM deliveries")}
        counts = dict(conn.execute("SELECT status, n FROM delivery_counts WHERE n != 0").fetchall())
        return rows, counts
    finally:
        conn.close()


def test_marks_and_results_of_a_batch_are_written_together(project: Path, cli: Cli) -> None:
    a, b, c, d = _campaign_with_pending(project, cli, 4)
    outcomes = _write(project, [("sending", a), ("sending", b)],
                      [("result", a, "sent", "250 2.0.0 ok é"), ("result", b, "pending", "451 4.3.0 later"),
                       ("sending", c)])
    rows, counts = _rows(project)
    assert outcomes == {}
    assert rows[a] == ("sent", 1, "250 2.0.0 ok é")
    assert rows[b] == ("pending", 1, "451 4.3.0 later")
    assert rows[c][0] == "sending" and rows[d][0] == "pending"
    # The per-status counts the reports read moved with every row.
    assert counts == {"sent": 2, "pending": 2, "sending": 1}


def test_a_mark_that_cannot_take_leaves_the_batch_to_be_written_one_by_one(project: Path, cli: Cli) -> None:
    a, b, c, d = _campaign_with_pending(project, cli, 4)
    conn = sqlite3.connect(project / "mailcli.db")
    with conn:  # another run has marked c, and d was erased, since this run read them
        conn.execute("UPDATE deliveries SET status = 'sending' WHERE id = ?", (c,))
        conn.execute("DELETE FROM deliveries WHERE id = ?", (d,))
    conn.close()
    outcomes = _write(project, [("sending", a), ("sending", c), ("sending", d), ("sending", b)])
    rows, _ = _rows(project)
    # Each mark as if written alone: a and b marked, c another run's, d gone.
    assert outcomes == {c: "taken", d: "gone"}
    assert rows[a][0] == rows[b][0] == "sending"
    assert d not in rows


def test_a_result_whose_row_is_gone_is_counted_in_the_archived_totals(project: Path, cli: Cli) -> None:
    a, b, _, _ = _campaign_with_pending(project, cli, 4)
    _write(project, [("sending", a), ("sending", b)])
    conn = sqlite3.connect(project / "mailcli.db")
    (email,) = conn.execute("SELECT c.email FROM deliveries d JOIN contacts c ON c.id = d.contact_id WHERE d.id = ?",
                            (b,)).fetchone()
    conn.close()
    # b's person is erased while the message is in flight: the row is archived as uncertain.
    erased = cli("privacy", "erase", email, "--yes")
    assert erased.exit_code == 0, erased.stderr
    _write(project, [("result", a, "sent", "250 ok"), ("result", b, "sent", "250 ok")])
    rows, _ = _rows(project)
    assert rows[a] == ("sent", 1, "250 ok") and b not in rows
    report = json.loads(cli("report", "spring", "--json").stdout)
    # The one sent before, a, and b, whose reply says the relay took it.
    assert (report["sent"], report["uncertain"], report["pending"]) == (3, 0, 2), report
