"""``privacy restrict`` / ``unrestrict`` (art. 18) and ``privacy object`` (art. 21)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailcli import tokens
from mailcli.addresses import normalise_address
from mailcli.store import open_store
from tests.privacy_support import (
    NOW,
    ZEB,
    add_contact,
    add_list,
    add_membership,
    count,
    freeze,
    settings_for,
)


@pytest.fixture
def world(project: Path, monkeypatch: pytest.MonkeyPatch):
    clock = freeze(monkeypatch)
    store = open_store(settings_for(project).project.database)
    c = store.conn
    zeb = add_contact(c, ZEB, "Zebedeus", "Quiggleworth")
    add_membership(c, zeb, add_list(c, "news"))
    add_membership(c, zeb, add_list(c, "offers"), "unconfirmed")
    yield project, store, zeb, clock
    store.close()


def _hmac(root: Path) -> str:
    return tokens.address_hmac(settings_for(root).secret(), normalise_address(ZEB).key)


def test_restrict_keeps_the_data_and_flags_the_contact(world, cli) -> None:
    root, store, zeb, _ = world
    result = cli("--json", "privacy", "restrict", ZEB, "--reason", "disputes accuracy")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"reference": _hmac(root)[:12], "restricted": True, "changed": True,
                                         "since": NOW, "requests_closed": []}
    c = store.conn
    assert c.execute("SELECT restricted_at FROM contacts WHERE id = ?", (zeb,)).fetchone() == (NOW,)
    assert count(c, "memberships", "contact_id = ?", (zeb,)) == 2  # kept
    assert c.execute("SELECT kind, channel FROM events").fetchall() == [("restricted", "cli")]
    assert c.execute("SELECT action, reason FROM audit_log WHERE subject_hmac = ?", (_hmac(root),)).fetchall() \
        == [("restrict", "disputes accuracy")]
    again = cli("privacy", "restrict", ZEB)
    assert again.exit_code == 0 and "already restricted" in again.stdout


def test_unrestrict_lifts_it_and_is_logged(world, cli) -> None:
    root, store, zeb, clock = world
    assert cli("privacy", "restrict", ZEB).exit_code == 0
    clock.advance(days=3)
    result = cli("privacy", "unrestrict", ZEB, "--reason", "corrected")
    assert result.exit_code == 0 and "Lifted" in result.stdout
    c = store.conn
    assert c.execute("SELECT restricted_at FROM contacts WHERE id = ?", (zeb,)).fetchone() == (None,)
    assert [r[0] for r in c.execute("SELECT kind FROM events ORDER BY id")] == ["restricted", "unrestricted"]
    assert [r[0] for r in c.execute("SELECT action FROM audit_log WHERE subject_hmac = ? ORDER BY id",
                                    (_hmac(root),))] == ["restrict", "unrestrict"]
    assert "was not restricted" in cli("privacy", "unrestrict", ZEB).stdout


def test_objection_ends_every_membership_and_suppresses_every_list(world, cli) -> None:
    root, store, zeb, _ = world
    result = cli("privacy", "object", ZEB, "--reason", "phone call")
    assert result.exit_code == 0, result.output
    assert "2 memberships ended" in result.stdout
    c = store.conn
    assert c.execute("SELECT no_marketing_at, status FROM contacts WHERE id = ?", (zeb,)).fetchone() \
        == (NOW, "unsubscribed")
    assert {r[0] for r in c.execute("SELECT status FROM memberships WHERE contact_id = ?", (zeb,))} == {"unsubscribed"}
    assert c.execute("SELECT scope, reason FROM suppressions WHERE hmac = ?", (_hmac(root),)).fetchall() \
        == [("*", "objected")]
    assert ("objected",) in c.execute("SELECT kind FROM events").fetchall()
    assert c.execute("SELECT reason FROM audit_log WHERE action = 'object'").fetchall() == [("phone call",)]
    assert "already objected" in cli("privacy", "object", ZEB).stdout


def test_objection_from_someone_we_do_not_hold_is_still_suppressed(world, cli) -> None:
    root, store, _, _ = world
    result = cli("privacy", "object", "stranger@example.org")
    assert result.exit_code == 1 and "suppression" in result.stderr
    hmac = tokens.address_hmac(settings_for(root).secret(), "stranger@example.org")
    assert store.conn.execute("SELECT reason FROM suppressions WHERE hmac = ?", (hmac,)).fetchone() == ("objected",)


@pytest.mark.parametrize("command", ["restrict", "unrestrict"])
def test_restricting_an_unknown_person_is_exit_1(world, cli, command: str) -> None:
    result = cli("privacy", command, "nobody@example.org")
    assert result.exit_code == 1 and "No contact" in result.stderr
