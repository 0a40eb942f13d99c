"""``privacy purge``: the [retention] policy, cron-safe and idempotent."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mailcli import audit, tokens
from mailcli.addresses import normalise_address
from mailcli.locks import maintenance_lock
from mailcli.store import backups, open_store
from tests.privacy_support import (
    NOW,
    ZEB,
    ZEB_FORMS,
    add_campaign,
    add_contact,
    add_delivery,
    add_event,
    add_list,
    add_membership,
    ago,
    count,
    db_files,
    freeze,
    remnants,
    settings_for,
)

RULES = ["unconfirmed", "unsubscribed", "bounced", "inactive", "send_log", "audit_log", "backups", "exports", "clicks"]


def _hmac(root: Path, email: str) -> str:
    return tokens.address_hmac(settings_for(root).secret(), normalise_address(email).key)


@pytest.fixture
def world(project: Path, monkeypatch: pytest.MonkeyPatch):
    """One person per rule, on both sides of each period (defaults: 30d/30d/90d/2y/13mo/2y/30d)."""
    clock = freeze(monkeypatch)
    settings = settings_for(project)
    store = open_store(settings.project.database)
    c = store.conn
    news, offers = add_list(c, "news", ago(1200)), add_list(c, "offers", ago(1200))
    ids: dict[str, int] = {}

    def person(key: str, **kw: object) -> int:
        ids[key] = add_contact(c, f"{key}@example.org", key.title(), "Tester", **kw)  # type: ignore[arg-type]
        return ids[key]

    add_membership(c, person("fresh", at=ago(10)), news, at=ago(10))
    add_membership(c, person("unconf-old", at=ago(31)), news, "unconfirmed", at=ago(31))
    mixed = person("unconf-mixed", at=ago(100))
    add_membership(c, mixed, news, at=ago(100))
    add_membership(c, mixed, offers, "unconfirmed", at=ago(31))
    add_membership(c, person("unconf-new", at=ago(10)), news, "unconfirmed", at=ago(10))
    ids["zeb"] = add_contact(c, ZEB, "Zebedeus", "Quiggleworth", status="unsubscribed", at=ago(400))
    add_membership(c, ids["zeb"], news, "unsubscribed", at=ago(400), unsubscribed_at=ago(31))
    add_membership(c, ids["zeb"], offers, "unsubscribed", at=ago(400), unsubscribed_at=ago(45))
    add_membership(c, person("unsub-recent", status="unsubscribed", at=ago(400)), news, "unsubscribed",
                   at=ago(400), unsubscribed_at=ago(10))
    partial = person("unsub-partial", at=ago(400))
    add_membership(c, partial, news, "unsubscribed", at=ago(400), unsubscribed_at=ago(60))
    add_membership(c, partial, offers, at=ago(400))
    add_membership(c, person("objected", status="unsubscribed", at=ago(400), no_marketing_at=ago(31)), news,
                   "unsubscribed", at=ago(400), unsubscribed_at=ago(31))
    add_membership(c, person("restricted", status="unsubscribed", at=ago(400), restricted_at=ago(50)), news,
                   "unsubscribed", at=ago(400), unsubscribed_at=ago(60))
    add_event(c, person("bounced-old", status="bounced", at=ago(400)), "bounced", at=ago(91), channel="bounce")
    add_event(c, person("bounced-new", status="bounced", at=ago(400)), "bounced", at=ago(30), channel="bounce")
    person("inactive", at=ago(800))  # on no list (it was deleted), and quiet since
    add_membership(c, person("quiet", at=ago(800)), news, at=ago(800))  # subscribed: never inactive
    veteran = person("veteran", at=ago(1100))
    add_membership(c, veteran, news, at=ago(1100))
    old = add_campaign(c, "old", news, at=ago(420))
    recent = add_campaign(c, "recent", news, at=ago(60))
    add_delivery(c, old, veteran, at=ago(420))
    add_delivery(c, old, ids["fresh"], "failed", at=ago(420))
    add_event(c, veteran, "soft_bounced", campaign_id=old, at=ago(420), channel="bounce")
    add_event(c, veteran, "complained", campaign_id=old, at=ago(419), channel="complaint")
    add_delivery(c, recent, veteran, at=ago(60))
    # Per-person clicks ([tracking] per_contact): one older than 13 months goes, one recent stays, and so
    # does a restricted person's.
    c.execute("INSERT INTO campaign_links (campaign_id, link_no, url, clicks, created_at)"
              " VALUES (?, 1, 'https://acme.example/', 3, ?)", (old, ago(420)))
    for who, days in ((veteran, 410), (veteran, 20), (ids["restricted"], 410)):
        c.execute("INSERT INTO clicks (campaign_id, link_no, contact_id, clicked_at) VALUES (?, 1, ?, ?)",
                  (old, who, ago(days)))
    c.commit()
    # Three audit entries from three years ago, then one from last week.
    for days in (1100, 1099, 1098, 7):
        clock.at = clock.at.__class__.fromisoformat(ago(days).replace("Z", "+00:00"))
        audit.record_access(store, settings, "export", subject_email="veteran@example.org")
    clock.at = clock.at.__class__.fromisoformat(NOW.replace("Z", "+00:00"))
    # Backups: one 31 days old, one from yesterday.
    backups = project / "backups"
    backups.mkdir(mode=0o700)
    for name in ("mailcli-20260130T000000Z.db", "mailcli-20260301T000000Z.db"):
        (backups / name).write_bytes(b"x")
    yield project, store, ids, clock
    store.close()


EXPECTED = {"unconfirmed": 2, "unsubscribed": 2, "bounced": 1, "inactive": 1, "send_log": 4, "audit_log": 3,
            "backups": 1, "exports": 0, "clicks": 1}
ERASED = {"unconf-old", "zeb", "objected", "bounced-old", "inactive"}


def _snapshot(root: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in db_files(root)}
    files.update({f"backups/{p.name}": p.read_bytes() for p in (root / "backups").iterdir()})
    ledger = root / "mailcli.db-ledgers" / "erasures.jsonl"
    files["ledger"] = ledger.read_bytes() if ledger.exists() else b""
    return files


def _as_it_is(root: Path, store: Any) -> tuple[dict[str, bytes], dict[str, int]]:
    """The project's files (checkpointed first) and the row counts a purge could change."""
    backups.checkpoint(store.conn)
    tables = ("contacts", "memberships", "deliveries", "events", "audit_log")
    return _snapshot(root), {t: count(store.conn, t) for t in tables}


def test_dry_run_changes_nothing_and_counts_what_a_real_run_removes(world, cli) -> None:
    root, store, _, _ = world
    before, rows_before = _as_it_is(root, store)
    dry = cli("--json", "privacy", "purge", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout) == EXPECTED
    assert _snapshot(root) == before
    assert {t: count(store.conn, t) for t in rows_before} == rows_before
    real = cli("--json", "privacy", "purge")
    assert real.exit_code == 0, real.output
    assert json.loads(real.stdout) == EXPECTED


def test_each_rule_removes_exactly_what_is_past_its_period(world, cli) -> None:
    root, store, ids, _ = world
    result = cli("privacy", "purge")
    assert result.exit_code == 0, result.output
    for rule in RULES:
        assert rule in result.stdout
    c = store.conn
    left = {row[0].split("@")[0] for row in c.execute("SELECT email FROM contacts")}
    assert left == {"fresh", "unconf-mixed", "unconf-new", "unsub-recent", "unsub-partial", "restricted",
                    "bounced-new", "veteran", "quiet"}
    assert c.execute("SELECT status FROM memberships WHERE contact_id = ?", (ids["unconf-mixed"],)).fetchall() \
        == [("subscribed",)]
    # Opt-outs outlive the people they belonged to.
    sup = {(h, s, r) for h, s, r in c.execute("SELECT hmac, scope, reason FROM suppressions")}
    assert (_hmac(root, ZEB), "news", "unsubscribed") in sup and (_hmac(root, ZEB), "offers", "unsubscribed") in sup
    assert (_hmac(root, "objected@example.org"), "*", "objected") in sup
    assert (_hmac(root, "bounced-old@example.org"), "*", "bounced") in sup
    assert not any(h == _hmac(root, "unconf-old@example.org") for h, _, _ in sup)  # may subscribe again
    assert not any(h == _hmac(root, "inactive@example.org") for h, _, _ in sup)
    # send_log: the old campaign's rows went, the recent one's stayed.
    assert count(c, "deliveries") == 1 and count(c, "events", "kind = 'bounced'") == 1
    assert sorted(p.name for p in (root / "backups").iterdir()) == ["mailcli-20260301T000000Z.db"]
    ledger = [json.loads(x) for x in (root / "mailcli.db-ledgers" / "erasures.jsonl").read_text().splitlines()]
    assert sorted(e["reason"] for e in ledger) == ["retention:bounced", "retention:inactive",
                                                   "retention:unconfirmed", "retention:unsubscribed",
                                                   "retention:unsubscribed"]


def test_after_purge_no_byte_of_an_erased_person_remains(world, cli) -> None:
    root, _, _, _ = world
    assert remnants(root, *ZEB_FORMS)
    assert cli("privacy", "purge").exit_code == 0
    assert remnants(root, *ZEB_FORMS, "unconf-old@example.org", "bounced-old@example.org", "inactive@example.org",
                    "objected@example.org") == []
    assert remnants(root, "veteran@example.org")


def test_report_totals_of_an_old_campaign_survive_the_purge_of_its_send_log(world, cli) -> None:
    before = json.loads(cli("--json", "report", "old").stdout)
    assert (before["audience"], before["sent"], before["failed"], before["complained"]) == (2, 1, 1, 1)
    assert cli("privacy", "purge").exit_code == 0
    root, store, _, _ = world
    assert count(store.conn, "deliveries", "campaign_id = (SELECT id FROM campaigns WHERE name = 'old')") == 0
    after = json.loads(cli("--json", "report", "old").stdout)
    keys = ("audience", "sent", "failed", "deferred", "pending", "uncertain", "bounced", "unsubscribed", "complained")
    assert {k: after[k] for k in keys} == {k: before[k] for k in keys}


def test_purge_is_idempotent(world, cli) -> None:
    assert cli("privacy", "purge").exit_code == 0
    again = cli("--json", "privacy", "purge")
    assert again.exit_code == 0
    assert json.loads(again.stdout) == {rule: 0 for rule in RULES}


def test_the_audit_chain_verifies_after_its_oldest_entries_are_cut(world, cli) -> None:
    root, store, _, _ = world
    assert cli("privacy", "purge").exit_code == 0
    assert count(store.conn, "audit_log") == 2  # last week's export and the purge itself
    verify = cli("privacy", "audit", "--verify")
    assert verify.exit_code == 0, verify.output
    [entry] = [e for e in json.loads(cli("--json", "privacy", "audit").stdout) if e["action"] == "purge"]
    assert entry["detail"]["counts"] == EXPECTED and entry["subject"] is None


def test_a_future_as_of_is_refused_without_dry_run_and_changes_nothing(world, cli) -> None:
    root, store, _, _ = world
    before, rows_before = _as_it_is(root, store)
    result = cli("privacy", "purge", "--as-of", "2030-01-01")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: --as-of 2030-01-01 is in the future: a purge removes only what is due"
                                    " now; nothing was changed\n")
    assert "--dry-run --as-of 2030-01-01" in result.stderr
    assert _snapshot(root) == before
    assert {t: count(store.conn, t) for t in rows_before} == rows_before
    # A moment later the same day counts too, and a past day is applied: it removes no more than now.
    assert cli("privacy", "purge", "--as-of", "2026-03-02T12:00:01Z").exit_code == 2
    past = cli("--json", "privacy", "purge", "--as-of", "2026-02-01")
    assert past.exit_code == 0, past.output
    assert all(json.loads(past.stdout)[rule] <= EXPECTED[rule] for rule in RULES)


def test_as_of_forty_days_ahead_erases_those_unsubscribed_today_and_keeps_everyone_else(
        project: Path, monkeypatch: pytest.MonkeyPatch, cli) -> None:
    clock = freeze(monkeypatch)
    store = open_store(settings_for(project).project.database)
    c = store.conn
    news = add_list(c, "news")
    for key in ("stays1", "stays2", "stays3"):
        add_membership(c, add_contact(c, f"{key}@example.org", key, "X", at=ago(5)), news, at=ago(5))
    add_event(c, add_contact(c, "bounced@example.org", status="bounced", at=ago(5)), "bounced", at=NOW)
    for key in ("leaves1", "leaves2"):
        cid = add_contact(c, f"{key}@example.org", key, "X", status="unsubscribed", at=ago(5))
        add_membership(c, cid, news, "unsubscribed", at=ago(5), unsubscribed_at=NOW)
    store.close()
    today = json.loads(cli("--json", "privacy", "purge", "--dry-run").stdout)
    assert today == {rule: 0 for rule in RULES}
    ahead = cli("--json", "privacy", "purge", "--dry-run", "--as-of", "2026-04-11")
    assert json.loads(ahead.stdout)["unsubscribed"] == 2
    clock.advance(days=40)  # 2026-04-11: the dry run's day has come
    result = cli("--json", "privacy", "purge")
    assert result.exit_code == 0 and json.loads(result.stdout)["unsubscribed"] == 2
    store = open_store(settings_for(project).project.database)
    left = sorted(r[0] for r in store.conn.execute("SELECT email FROM contacts"))
    store.close()
    assert left == ["bounced@example.org", "stays1@example.org", "stays2@example.org", "stays3@example.org"]


def test_inactive_never_takes_a_subscribed_member_however_far_ahead(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    cli) -> None:
    """Receiving mail is no activity: two years on, every subscriber is still there."""
    rows = "\n".join(f"member{i}@example.org,Member,{i}" for i in range(40))
    (project.parent / "members.csv").write_text("email,first_name,last_name\n" + rows + "\n")
    assert cli("import", str(project.parent / "members.csv"), "--list", "news", "--basis", "customer").exit_code == 0
    store = open_store(settings_for(project).project.database)
    c = store.conn
    news = add_list(c, "news")
    spring = add_campaign(c, "spring", news)
    for (cid,) in c.execute("SELECT id FROM contacts").fetchall():
        add_delivery(c, spring, cid)
    add_contact(c, "nolist@example.org", "No", "List", at=ago(10))  # on no list, quiet from now on
    store.close()
    ahead = cli("--json", "privacy", "purge", "--dry-run", "--as-of", "2028-06-01")
    assert ahead.exit_code == 0, ahead.output
    assert json.loads(ahead.stdout)["inactive"] == 1
    table = cli("privacy", "purge", "--dry-run", "--as-of", "2028-06-01")
    assert "inactive" in table.stdout and "1 contact would go" in table.stderr
    freeze(monkeypatch, "2028-06-01T00:00:00Z")
    assert cli("privacy", "purge").exit_code == 0
    store = open_store(settings_for(project).project.database)
    left = {r[0] for r in store.conn.execute("SELECT email FROM contacts")}
    store.close()
    assert left == {f"member{i}@example.org" for i in range(40)}


def test_a_second_purge_refuses_while_one_runs(world, cli) -> None:
    root, _, _, _ = world
    with maintenance_lock(settings_for(root)):
        result = cli("privacy", "purge")
    assert result.exit_code == 1 and "Another purge or restore is running" in result.stderr
    assert cli("privacy", "purge").exit_code == 0  # the lock is released


def test_quiet_purge_prints_nothing_for_cron(world, cli) -> None:
    result = cli("-q", "privacy", "purge")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""


def test_bad_as_of_is_a_usage_error(world, cli) -> None:
    result = cli("privacy", "purge", "--as-of", "next month")
    assert result.exit_code == 2 and "--as-of" in result.stderr


def test_database_files_stay_private(world, cli) -> None:
    root, _, _, _ = world
    assert cli("privacy", "purge").exit_code == 0
    for path in db_files(root):
        assert os.stat(path).st_mode & 0o077 == 0, path


def test_as_of_0999_06_01_purges_nothing_younger_than_its_cuts(project: Path, cli) -> None:
    # The cut-off of "2y" before 0999-06-01 was written "997-06-01T...", which
    # sorts after "2026-..." as text: everything looked older than the cut.
    (project / "c.csv").write_text("email\nann@example.org\n", encoding="utf-8")
    assert cli("import", "c.csv", "--list", "news", "--basis", "customer").exit_code == 0
    result = cli("--json", "privacy", "purge", "--as-of", "0999-06-01")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {rule: 0 for rule in RULES}
    store = open_store(settings_for(project).project.database)
    assert [r[0] for r in store.conn.execute("SELECT email FROM contacts")] == ["ann@example.org"]
    store.close()


def test_as_of_with_an_offset_past_the_year_1_is_a_usage_error(world, cli) -> None:
    result = cli("privacy", "purge", "--as-of", "0001-01-01T00:00:00+05:00")
    assert result.exit_code == 2 and "--as-of: '0001-01-01T00:00:00+05:00' is out of range" in result.stderr
