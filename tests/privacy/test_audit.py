"""``privacy audit``: every access to personal data is logged and tamper-evident."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from mailcli import tokens
from mailcli.addresses import normalise_address
from mailcli.store import open_store
from tests.privacy_support import ZEB, add_contact, add_list, add_membership, freeze, settings_for

ANNA = "anna@example.nl"


@pytest.fixture
def world(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    freeze(monkeypatch)
    store = open_store(settings_for(project).project.database)
    news = add_list(store.conn, "news")
    for email, first in ((ZEB, "Zebedeus"), (ANNA, "Anna")):
        add_membership(store.conn, add_contact(store.conn, email, first, "Q"), news)
    store.close()
    return project


def _hmac(root: Path, email: str) -> str:
    return tokens.address_hmac(settings_for(root).secret(), normalise_address(email).key)


def _db(root: Path) -> Path:
    return settings_for(root).project.database


def test_export_and_erase_are_listed_with_who_what_when_whose_why(world: Path, cli) -> None:
    assert cli("privacy", "export", ZEB, "-o", "z.zip", "--reason", "request 7").exit_code == 0
    assert cli("privacy", "erase", ZEB, "--yes", "--reason", "request 8").exit_code == 0
    result = cli("--json", "privacy", "audit", "--subject", ZEB)
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [(e["command"], e["action"], e["reason"]) for e in entries] == [
        ("privacy export", "export", "request 7"), ("privacy erase", "erase", "request 8")]
    from mailcli.audit import current_actor

    assert {e["actor"] for e in entries} == {current_actor()}
    assert all(e["at"] == "2026-03-02T12:00:00Z" and e["subject"] == _hmac(world, ZEB) for e in entries)
    table = cli("privacy", "audit")
    assert table.exit_code == 0 and _hmac(world, ZEB)[:12] in table.stdout and "request 8" in table.stdout
    assert "zebedeus" not in table.output.lower()  # the log never names the person


def test_subject_filter_and_limit(world: Path, cli) -> None:
    for email in (ZEB, ANNA, ZEB):
        assert cli("privacy", "export", email, "-o", "x.zip").exit_code == 0
    assert len(json.loads(cli("--json", "privacy", "audit", "--subject", ANNA).stdout)) == 1
    newest = json.loads(cli("--json", "privacy", "audit", "--limit", "2").stdout)
    assert [e["subject"] for e in newest] == [_hmac(world, ANNA), _hmac(world, ZEB)]


def test_actor_names_the_ci_job_when_the_environment_says_so(world: Path, cli, monkeypatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/news")
    monkeypatch.setenv("GITHUB_WORKFLOW", "purge")
    monkeypatch.setenv("GITHUB_RUN_ID", "99")
    assert cli("privacy", "export", ZEB, "-o", "z.zip").exit_code == 0
    [entry] = json.loads(cli("--json", "privacy", "audit").stdout)
    assert entry["actor"] == "ci:github:acme/news/purge#99"


def test_verify_passes_on_an_untouched_log(world: Path, cli) -> None:
    for email in (ZEB, ANNA):
        assert cli("privacy", "export", email, "-o", "x.zip").exit_code == 0
    result = cli("privacy", "audit", "--verify")
    assert result.exit_code == 0 and "intact: 2 entries" in result.stdout


def test_verify_detects_an_entry_edited_with_plain_sqlite(world: Path, cli) -> None:
    for email in (ZEB, ANNA, ZEB):
        assert cli("privacy", "export", email, "-o", "x.zip", "--reason", "r").exit_code == 0
    conn = sqlite3.connect(_db(world))
    conn.execute("UPDATE audit_log SET reason = 'nothing to see' WHERE id = 2")
    conn.commit()
    conn.close()
    result = cli("privacy", "audit", "--verify")
    assert result.exit_code == 1
    assert "entry #2" in result.stderr and "edited" in result.stderr
    as_json = cli("--json", "privacy", "audit", "--verify")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["problems"][0]["id"] == 2


def test_verify_detects_a_removed_entry(world: Path, cli) -> None:
    for email in (ZEB, ANNA, ZEB):
        assert cli("privacy", "export", email, "-o", "x.zip").exit_code == 0
    conn = sqlite3.connect(_db(world))
    conn.execute("DELETE FROM audit_log WHERE id = 2")
    conn.commit()
    conn.close()
    result = cli("privacy", "audit", "--verify")
    assert result.exit_code == 1 and "entry #3" in result.stderr


def test_backup_and_purge_are_audited_with_counts_only(world: Path, cli) -> None:
    assert cli("backup", "create").exit_code == 0
    assert cli("privacy", "purge").exit_code == 0
    entries = json.loads(cli("--json", "privacy", "audit").stdout)
    assert [e["action"] for e in entries] == ["backup", "purge"]
    purge = entries[1]
    assert purge["subject"] is None and set(purge["detail"]["counts"]) >= {"unsubscribed", "send_log"}


# -- through the contacts commands (reads and rectification are logged too) ----------

CSV = "email,first_name,last_name,city\nZebedeus.Quiggleworth@example.net,Zebedeus,Quiggleworth,Quiggleton\n" \
      "anna@example.nl,Anna,de Vries,Utrecht\n"
ZEB_ASCII = "zebedeus.quiggleworth@example.net"


@pytest.fixture
def imported(project: Path, cli) -> Path:
    (project / "people.csv").write_text(CSV, encoding="utf-8")
    result = cli("import", "people.csv", "--list", "news", "--basis", "customer")
    assert result.exit_code == 0, result.output
    return project


def test_contacts_show_json_listing_and_export_and_erase_are_all_audited(imported: Path, cli) -> None:
    assert cli("contacts", "show", ZEB_ASCII).exit_code == 0
    assert cli("--json", "contacts").exit_code == 0
    assert cli("privacy", "export", ZEB_ASCII, "-o", "z.zip").exit_code == 0
    assert cli("privacy", "erase", ZEB_ASCII, "--yes").exit_code == 0
    entries = json.loads(cli("--json", "privacy", "audit").stdout)
    about_zeb = [e["command"] for e in entries if e["subject"] == _hmac(imported, ZEB_ASCII)]
    assert about_zeb == ["contacts show", "privacy export", "privacy erase"]
    listing = [e for e in entries if e["command"] == "contacts"]
    assert listing and listing[0]["detail"]["records"] == 2
    assert cli("privacy", "audit", "--verify").exit_code == 0


def test_rectification_records_which_fields_changed_but_not_the_old_values(imported: Path, cli) -> None:
    assert cli("contacts", "set", ZEB_ASCII, "city=Zebtown", "last_name=Quiggle-Worth").exit_code == 0
    [entry] = json.loads(cli("--json", "privacy", "audit", "--subject", ZEB_ASCII).stdout)
    assert entry["command"] == "contacts set"
    assert sorted(entry["detail"]["fields"]) == ["city", "last_name"]
    text = json.dumps(entry)
    assert "Quiggleton" not in text and "Quiggleworth" not in text and "Zebtown" not in text


# -- a chain that cannot be trimmed or recomputed quietly -----------------------------

def _three_exports(cli) -> None:
    for email in (ZEB, ANNA, ZEB):
        assert cli("privacy", "export", email, "-o", "x.zip").exit_code == 0


def _edit(root: Path, *statements: str) -> None:
    conn = sqlite3.connect(_db(root))
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def test_verify_detects_a_chain_recomputed_after_an_edit(world: Path, cli) -> None:
    """Whoever edits an entry and computes every hash again, as the old plain chain allowed,
    still fails: without the project secret nobody can compute the MACs."""
    import hashlib

    _three_exports(cli)
    conn = sqlite3.connect(_db(world))
    rows = conn.execute("SELECT id, at, actor, command, action, subject_hmac, detail, reason FROM audit_log"
                        " ORDER BY id").fetchall()
    prev = "0" * 64
    for row_id, at, actor, command, action, subject, detail, reason in rows:
        if row_id == 2:
            reason = "nothing happened"
        canonical = json.dumps([prev, at, actor, command, action, subject, detail, reason], ensure_ascii=False,
                               separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        conn.execute("UPDATE audit_log SET reason = ?, prev_hash = ?, hash = ? WHERE id = ?",
                     (reason, prev, digest, row_id))
        prev = digest
    conn.commit()
    conn.close()
    result = cli("privacy", "audit", "--verify")
    assert result.exit_code == 1 and "entry #1 " in result.stderr and "MAC" in result.stderr


@pytest.mark.parametrize("cut", ["first", "last", "every"])
def test_verify_detects_entries_removed_from_either_end_or_all(world: Path, cli, cut: str) -> None:
    _three_exports(cli)
    where = {"first": "id = (SELECT min(id) FROM audit_log)", "last": "id = (SELECT max(id) FROM audit_log)",
             "every": "1 = 1"}[cut]
    _edit(world, f"DELETE FROM audit_log WHERE {where}")  # noqa: S608 - the test's own fragments
    result = cli("privacy", "audit", "--verify")
    assert result.exit_code == 1, result.output
    expected = {"first": "removed from the start", "last": "removed from the end", "every": "the log is empty"}[cut]
    assert expected in result.stderr and "Traceback" not in result.output


def test_verify_prints_the_head_and_fails_when_it_is_deleted(world: Path, cli) -> None:
    from mailcli.audithead import head_path

    _three_exports(cli)
    result = cli("privacy", "audit", "--verify")
    assert result.exit_code == 0, result.output
    assert "3 entries" in result.stdout and "Head: 3 entries, the newest #3, MAC " in result.stdout
    data = json.loads(cli("--json", "privacy", "audit", "--verify").stdout)
    assert data["ok"] and data["head"]["entries"] == 3 and len(data["head"]["last"]) == 64
    head_path(_db(world)).unlink()
    missing = cli("privacy", "audit", "--verify")
    assert missing.exit_code == 1 and "audit head" in missing.stderr and "missing" in missing.stderr
