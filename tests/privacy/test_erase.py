"""``privacy erase``: art. 17 without a trace."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from mailcli import tokens
from mailcli.addresses import normalise_address
from mailcli.store import open_store
from tests.privacy_support import (
    ZEB,
    ZEB_FORMS,
    add_campaign,
    add_contact,
    add_delivery,
    add_event,
    add_list,
    add_membership,
    count,
    freeze,
    remnants,
    report_totals,
    settings_for,
)
from tests.terminal import Terminal

ANNA = "anna.devries@example.nl"


@pytest.fixture
def world(project: Path, monkeypatch: pytest.MonkeyPatch):
    """Zebedeus and Anna on one list, both mailed; the seeding connection stays open.

    Keeping it open means nothing has been checkpointed: the address sits in the
    -wal file, which is exactly the case a naive DELETE leaves behind.
    """
    freeze(monkeypatch)
    store = open_store(settings_for(project).project.database)
    c = store.conn
    news = add_list(c, "news")
    zeb = add_contact(c, ZEB, "Zebedeus", "Quiggleworth", attributes={"city": "Quiggleton"})
    anna = add_contact(c, ANNA, "Anna", "de Vries")
    add_membership(c, zeb, news)
    add_membership(c, anna, news)
    spring = add_campaign(c, "spring", news)
    add_delivery(c, spring, zeb, reply="550 5.1.1 <zebedeus.quiggleworth@xn--bcher-quiggle-wob.example> unknown")
    add_delivery(c, spring, anna)
    add_event(c, zeb, "bounced", campaign_id=spring, channel="bounce")
    add_event(c, zeb, "unsubscribed", campaign_id=spring)
    yield project, store, spring
    store.close()


def test_erase_leaves_no_byte_of_the_address_or_name_in_any_database_file(world, cli) -> None:
    root, store, _ = world
    assert remnants(root, *ZEB_FORMS), "the test must start with the address in the files"
    result = cli("privacy", "erase", ZEB, "--yes", "--reason", "request 18")
    assert result.exit_code == 0, result.output
    assert "Erased Z***@" in result.stdout and "1 contact" in result.stdout
    assert remnants(root, *ZEB_FORMS, ZEB.upper(), "quiggleton") == []
    assert remnants(root, ANNA), "the other person must still be there"
    assert count(store.conn, "contacts") == 1


def test_erase_deletes_every_row_and_keeps_only_a_keyed_hash(world, cli) -> None:
    root, store, _ = world
    assert cli("privacy", "erase", ZEB, "--yes").exit_code == 0
    c = store.conn
    assert count(c, "memberships") == 1 and count(c, "deliveries") == 1 and count(c, "events") == 0
    hmac = tokens.address_hmac(settings_for(root).secret(), normalise_address(ZEB).key)
    assert c.execute("SELECT scope, reason FROM suppressions WHERE hmac = ?", (hmac,)).fetchall() == [("*", "erased")]


def test_campaign_totals_do_not_change(world, cli) -> None:
    root, store, spring = world
    before = report_totals(store.conn, spring)
    assert before["sent"] == 2 and before["bounced"] == 1 and before["unsubscribed"] == 1
    assert cli("privacy", "erase", ZEB, "--yes").exit_code == 0
    assert report_totals(store.conn, spring) == before


def test_erasure_is_written_to_a_private_ledger_outside_the_database(world, cli) -> None:
    root, _, _ = world
    assert cli("privacy", "erase", ZEB, "--yes").exit_code == 0
    ledger = root / "mailcli.db-ledgers" / "erasures.jsonl"
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    [line] = ledger.read_text().splitlines()
    entry = json.loads(line)
    assert entry["hmac"] == tokens.address_hmac(settings_for(root).secret(), normalise_address(ZEB).key)
    assert entry["erased_at"] == "2026-03-02T12:00:00Z" and entry["reason"] == "request"
    assert "quiggle" not in ledger.read_text().lower()


def test_without_a_terminal_erase_needs_yes_and_changes_nothing(world, cli) -> None:
    root, store, _ = world
    result = cli("privacy", "erase", ZEB)
    assert result.exit_code == 2 and "--yes" in result.stderr
    assert count(store.conn, "contacts") == 2
    assert not (root / "mailcli.db-ledgers" / "erasures.jsonl").exists()


@pytest.mark.parametrize(("answer", "code", "left"), [("y\n", 0, 1), ("n\n", 2, 2)])
def test_on_a_terminal_erase_asks(world, answer: str, code: int, left: int) -> None:
    root, store, _ = world
    term = Terminal("privacy", "erase", ZEB, cwd=root)
    question = term.read_until("[y/N]:")
    assert "Erase everything held about Z***@" in question
    term.type(answer)
    assert term.wait() == code, term.text
    assert count(store.conn, "contacts") == left


def test_unknown_address_exits_1_but_is_suppressed_anyway(world, cli) -> None:
    root, store, _ = world
    result = cli("privacy", "erase", "Ghost@Example.org", "--yes")
    assert result.exit_code == 1
    assert "No contact with the address G***@example.org" in result.stderr and "suppression" in result.stderr
    hmac = tokens.address_hmac(settings_for(root).secret(), "ghost@example.org")
    assert store.conn.execute("SELECT reason FROM suppressions WHERE hmac = ?", (hmac,)).fetchone() == ("erased",)
    assert hmac in (root / "mailcli.db-ledgers" / "erasures.jsonl").read_text()


def test_erasing_twice_is_idempotent(world, cli) -> None:
    _, store, _ = world
    assert cli("privacy", "erase", ZEB, "--yes").exit_code == 0
    again = cli("--json", "privacy", "erase", ZEB.lower(), "--yes")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["already_erased"] is True
    assert count(store.conn, "suppressions") == 1


def test_erasing_again_removes_what_a_stopped_erasure_left_in_the_file(world, cli) -> None:
    # An erasure stopped after its commit, before it searched the files, can
    # leave the address in their free space; asking again finds and removes it.
    root, _, _ = world
    assert cli("privacy", "erase", ZEB, "--yes").exit_code == 0
    raw = sqlite3.connect(root / "mailcli.db", isolation_level=None)
    raw.execute("PRAGMA secure_delete=OFF")
    raw.execute("CREATE TABLE leftover (value TEXT)")
    raw.execute("INSERT INTO leftover VALUES (?)", (ZEB,))
    raw.execute("DROP TABLE leftover")
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    assert remnants(root, ZEB)
    again = cli("--json", "privacy", "erase", ZEB, "--yes")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["already_erased"] is True and json.loads(again.stdout)["vacuumed"] is True
    assert remnants(root, ZEB) == []


def test_erase_is_audited_with_the_hash_and_reason_only(world, cli) -> None:
    root, store, _ = world
    assert cli("privacy", "erase", ZEB, "--yes", "--reason", "ticket 42").exit_code == 0
    hmac = tokens.address_hmac(settings_for(root).secret(), normalise_address(ZEB).key)
    rows = store.conn.execute("SELECT command, action, reason, detail FROM audit_log WHERE subject_hmac = ?",
                              (hmac,)).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [("privacy erase", "erase", "ticket 42")]
    assert json.loads(rows[0][3])["rows"]["contacts"] == 1


def test_an_erased_person_is_not_brought_back_by_importing_the_same_file(project: Path, cli) -> None:
    (project / "people.csv").write_text(
        "email,first_name,last_name\nZebedeus.Quiggleworth@example.net,Zebedeus,Quiggleworth\n"
        "anna@example.nl,Anna,de Vries\n", encoding="utf-8")
    assert cli("import", "people.csv", "--list", "news", "--basis", "customer").exit_code == 0
    assert cli("privacy", "erase", "ZEBEDEUS.QUIGGLEWORTH@example.net", "--yes").exit_code == 0
    again = cli("--json", "import", "people.csv", "--list", "news", "--basis", "customer")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["suppressed"] == 1
    assert remnants(project, "zebedeus.quiggleworth@example.net", "Quiggleworth") == []


def test_a_name_left_behind_by_a_tool_without_secure_delete_is_found_and_compacted_away(project: Path, cli) -> None:
    (project / "people.csv").write_text(
        "email,first_name,last_name\nzeb@example.net,Zebedeus,Quiggleworth\nanna@example.nl,Anna,Jansen\n"
        "piet@example.nl,Piet,Jansen\n", encoding="utf-8")
    assert cli("import", "people.csv", "--list", "news", "--basis", "customer").exit_code == 0
    # Someone's own sqlite3 session, without secure_delete, leaves the bytes of a
    # deleted row in the page next to Zebedeus's row: his name, without his address.
    raw = sqlite3.connect(project / "mailcli.db", isolation_level=None)
    raw.execute("PRAGMA secure_delete=OFF")
    raw.execute("INSERT INTO contacts (uid, email, email_key, first_name, status, created_at, updated_at,"
                " last_activity_at)"
                " VALUES ('u-tmp', 'tmp@example.org', 'tmp@example.org', 'Quiggleworth-Zebedeus', 'active', 'x', 'x', 'x')")
    raw.execute("DELETE FROM contacts WHERE uid = 'u-tmp'")
    raw.close()
    assert remnants(project, "quiggleworth-zebedeus"), "the test must start with the dead bytes in the files"
    result = cli("--json", "privacy", "erase", "zeb@example.net", "--yes")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["vacuumed"] is True
    assert remnants(project, "zeb@example.net", "zebedeus", "quiggleworth") == []
    # A surname others have too is no trace of him, and no reason to look through every table.
    assert remnants(project, "jansen")


def test_an_address_secure_delete_leaves_in_the_file_is_found_and_compacted_away(project: Path, cli,
                                                                              tmp_path: Path) -> None:
    # secure_delete zeroes a deleted row where it lies, but a B-tree keeps
    # copies of some keys in its interior pages and moves rows between pages as
    # it grows, and a deletion does not reach those copies: when this was
    # written, about one address in 500 deleted that way stayed in the file.
    # Only a read of every byte of the file finds them.
    rng = random.Random(7)
    store = open_store(settings_for(project).project.database)  # mailcli's own connection: secure_delete on
    numbers = rng.sample(range(1, 1_000_000), 20_000)
    ids: list[int] = []
    for start in range(0, len(numbers), 100):
        with store.transaction() as c:
            ids += [add_contact(c, f"person{n}@example.net", "Q" * rng.randint(5, 80), "Lastname")
                    for n in numbers[start:start + 100]]
    with store.transaction() as c:
        for contact_id in rng.sample(ids, 3_000):
            c.execute("UPDATE contacts SET first_name = ? WHERE id = ?", ("R" * rng.randint(50, 300), contact_id))
    store.close()
    # Which addresses would a plain DELETE with secure_delete leave behind? Tried on a copy.
    probe = tmp_path / "probe.db"
    shutil.copyfile(project / "mailcli.db", probe)
    raw = sqlite3.connect(probe, isolation_level=None)
    raw.execute("PRAGMA secure_delete=ON")
    tried = [f"person{n}@example.net" for n in rng.sample(numbers, 1_000)]
    for address in tried:
        raw.execute("DELETE FROM contacts WHERE email = ?", (address,))
    raw.close()
    data = probe.read_bytes()
    left = [address for address in tried if address.encode() in data]
    if not left:
        pytest.skip(f"this SQLite ({sqlite3.sqlite_version}) deleted every address without a trace")
    result = cli("--json", "privacy", "erase", left[0], "--yes")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["vacuumed"] is True
    assert remnants(project, left[0]) == []
