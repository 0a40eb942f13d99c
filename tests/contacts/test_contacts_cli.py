"""``mailcli lists`` and ``contacts`` (list, show, set) against a real database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Cli, Engine, Meanwhile, project_store

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture
def loaded(project: Path, cli: Cli) -> Path:
    for name, list_name in (("mailchimp_export.csv", "news"), ("dutch_excel.csv", "nieuwsbrief")):
        result = cli("import", str(DATA / name), "--list", list_name, "--basis", "customer")
        assert result.exit_code == 0, result.output
    assert cli("unsubscribe", "daan@example.org", "--list", "news").exit_code == 0
    return project


def audit_actions(project: Path) -> list[tuple[str, str | None]]:
    conn = sqlite3.connect(project / "mailcli.db")
    try:
        return [(a, s) for a, s in conn.execute("SELECT action, subject_hmac FROM audit_log ORDER BY id")]
    finally:
        conn.close()


def test_lists_counts_by_status(loaded: Path, cli: Cli) -> None:
    data = json.loads(cli("lists", "--json").stdout)
    counts = {d["name"]: (d["subscribed"], d["unconfirmed"], d["unsubscribed"]) for d in data}
    assert counts == {"news": (3, 0, 1), "nieuwsbrief": (3, 0, 0)}
    table = cli("lists").stdout
    assert table.splitlines()[0].split() == ["list", "subscribed", "unconfirmed", "unsubscribed", "held", "back"]
    assert "nieuwsbrief" in table


def test_lists_when_empty(project: Path, cli: Cli) -> None:
    assert json.loads(cli("lists", "--json").stdout) == []
    assert "No lists yet" in cli("lists").stderr


def test_contacts_json_shape_filters_and_paging(loaded: Path, cli: Cli) -> None:
    everyone = json.loads(cli("contacts", "--json").stdout)
    assert len(everyone) == 7
    assert set(everyone[0]) == {"email", "first_name", "last_name", "status", "lists", "attributes"}
    anna = next(c for c in everyone if c["email"] == "anna.dejong@example.nl")
    assert anna["lists"] == ["news"] and anna["attributes"]["member_rating"] == "4"
    daan = next(c for c in everyone if c["email"] == "daan@example.org")
    assert daan["lists"] == []  # unsubscribed memberships are not listed as lists

    news = json.loads(cli("contacts", "--list", "news", "--status", "subscribed", "--json").stdout)
    assert sorted(c["email"] for c in news) == [
        "Bram.Visser@example.com", "anna.dejong@example.nl", "chloé@xn--bcher-kva.example"]
    assert {c["status"] for c in news} == {"subscribed"}
    gone = json.loads(cli("contacts", "--list", "news", "--status", "unsubscribed", "--json").stdout)
    assert [c["email"] for c in gone] == ["daan@example.org"]

    page = json.loads(cli("contacts", "--json", "--limit", "2", "--offset", "1").stdout)
    assert [c["email"] for c in page] == [c["email"] for c in everyone[1:3]]
    table = cli("contacts", "--limit", "3")
    assert table.exit_code == 0
    assert "Showing 1-3 of 7; next page: mailcli contacts --limit 3 --offset 3" in table.stderr
    # the suggested next page is the same listing, one page on
    members = cli("contacts", "--list", "news", "--status", "subscribed", "--limit", "2")
    hint = members.stderr.split("next page: ", 1)[1].strip()
    assert hint == "mailcli contacts --list news --status subscribed --limit 2 --offset 2"
    last = cli(*hint.split()[1:])
    assert last.exit_code == 0 and len(last.stdout.strip().splitlines()) == 2 and "next page" not in last.stderr
    assert len(table.stdout.strip().splitlines()) == 4  # header + 3

    missing = cli("contacts", "--list", "nope")
    assert missing.exit_code == 1 and "No list named 'nope'" in missing.stderr


@pytest.mark.parametrize("option", ["--offset", "--limit"])
def test_a_page_beyond_what_the_database_counts_is_refused_as_the_options_range(
        loaded: Path, cli: Cli, option: str) -> None:
    result = cli("contacts", option, "99999999999999999999999")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0] == (
        f"Error: Invalid value for '{option}': 99999999999999999999999 is not in the range 0<=x<=9223372036854775807.")
    assert cli("contacts", option, "9223372036854775807").exit_code == 0


def test_show_prints_fields_consent_and_history_and_is_audited(loaded: Path, cli: Cli) -> None:
    before = len(audit_actions(loaded))
    result = cli("contacts", "show", "  DAAN@Example.org ")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "email:       daan@example.org" in text
    assert "news: unsubscribed" in text and "(cli)" in text
    assert "source mailchimp_export.csv line 5" in text
    assert "unsubscribed" in text.split("history:")[1]
    data = json.loads(cli("contacts", "show", "anna.dejong@example.nl", "--json").stdout)
    assert data["memberships"][0]["consent_ip"] == "81.204.17.0/24"
    assert data["lists"] == ["news"]
    actions = audit_actions(loaded)[before:]
    assert [a for a, _ in actions] == ["contact_show", "contact_show"]
    assert all(s and "@" not in s for _, s in actions)  # a keyed hash, never the address


def test_show_unknown_and_invalid(loaded: Path, cli: Cli) -> None:
    unknown = cli("contacts", "show", "nobody@example.org")
    assert unknown.exit_code == 1
    assert unknown.stderr.splitlines()[0] == "Error: No contact nobody@example.org"
    invalid = cli("contacts", "show", "not-an-address")
    assert invalid.exit_code == 2


def test_set_rectifies_and_is_audited(loaded: Path, cli: Cli) -> None:
    result = cli("contacts", "set", "ANNA.DEJONG@example.nl", "last_name= de\tVries\n", "city=Utrecht", "tags=")
    assert result.exit_code == 0, result.output
    assert "Updated anna.dejong@example.nl: last_name, city, tags" in result.stderr
    data = json.loads(cli("contacts", "show", "anna.dejong@example.nl", "--json").stdout)
    assert data["last_name"] == "de Vries"
    assert data["attributes"]["city"] == "Utrecht" and "tags" not in data["attributes"]

    moved = cli("contacts", "set", "anna.dejong@example.nl", "email=Anna.deVries@Bücher.Example", "--json")
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.stdout)["email"] == "Anna.deVries@xn--bcher-kva.example"
    assert cli("contacts", "show", "anna.dejong@example.nl").exit_code == 1
    assert cli("contacts", "show", "anna.devries@bücher.example").exit_code == 0

    same = cli("contacts", "set", "anna.devries@xn--bcher-kva.example", "city=Utrecht")
    assert "Nothing changed" in same.stderr
    assert [a for a, _ in audit_actions(loaded)].count("contact_set") == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["first_name"], "expected FIELD=VALUE"),
        (["Bad Field=x"], "a field is email"),
        (["status=active"], "cannot be set here"),
        (["email=not valid"], "is not a valid address"),
        (["email=bram.visser@example.com"], "Another contact already has that address"),
    ],
)
def test_set_refuses_bad_changes(loaded: Path, cli: Cli, args: list[str], message: str) -> None:
    result = cli("contacts", "set", "anna.dejong@example.nl", *args)
    assert result.exit_code == 2
    assert message.lower() in result.stderr.lower()


def test_set_cleans_and_limits_a_value_as_an_import_does(loaded: Path, cli: Cli) -> None:
    (loaded / "names.csv").write_text("email,first_name,last_name\nanna.dejong@example.nl,Anna,a\x07b\x1b[31mRED\n",
                                      encoding="utf-8")
    assert cli("import", "names.csv", "--list", "news", "--basis", "customer").exit_code == 0
    imported = json.loads(cli("contacts", "show", "anna.dejong@example.nl", "--json").stdout)["last_name"]
    corrected = cli("contacts", "set", "anna.dejong@example.nl", "last_name=x\x07b\x1b[31mRED")
    assert corrected.exit_code == 0, corrected.output
    assert json.loads(cli("contacts", "show", "anna.dejong@example.nl", "--json").stdout)["last_name"] \
        == imported.replace("a", "x", 1) == "x b [31mRED"

    for value in ("x" * (64 * 1024 + 1), "a\x00b"):
        refused = cli("contacts", "set", "anna.dejong@example.nl", "last_name=ok", f"first_name={value}")
        assert refused.exit_code == 2, refused.output
        assert refused.stderr.startswith("Error: first_name: ") and "nothing was changed" in refused.stderr
    assert cli("contacts", "set", "anna.dejong@example.nl", f"notes={'x' * (64 * 1024)}").exit_code == 0
    after = json.loads(cli("contacts", "show", "anna.dejong@example.nl", "--json").stdout)
    assert (after["first_name"], after["last_name"]) == ("Anna", "x b [31mRED")


def test_output_for_people_never_writes_a_control_character_from_the_data(loaded: Path, cli: Cli) -> None:
    # Written by an earlier version or another tool: the database holds them raw.
    conn = sqlite3.connect(loaded / "mailcli.db")
    with conn:
        conn.execute("UPDATE contacts SET last_name = ?, attributes = json_set(attributes, '$.city', ?)"
                     " WHERE email_key = 'anna.dejong@example.nl'", ("a\x07b\x1b[31mRED\x9b\r", "Ut\x1b]0;x\x07"))
    conn.close()
    controls = {chr(c) for c in [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]}
    for args in (["contacts"], ["contacts", "show", "anna.dejong@example.nl"], ["contacts", "--json"],
                 ["contacts", "show", "anna.dejong@example.nl", "--json"]):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert not controls & set(result.output), args
    shown = cli("contacts", "show", "anna.dejong@example.nl").stdout
    assert "last_name:   a\ufffdb\ufffd[31mRED\ufffd\ufffd\n" in shown and "city: Ut\ufffd]0;x\ufffd\n" in shown
    data = json.loads(cli("contacts", "show", "anna.dejong@example.nl", "--json").stdout)
    assert (data["last_name"], data["attributes"]["city"]) == ("a\x07b\x1b[31mRED\x9b\r", "Ut\x1b]0;x\x07")


def test_brackets_in_the_data_are_text_not_markup(loaded: Path, cli: Cli) -> None:
    # "[/]" in a name ended `contacts` with "unexpected MarkupError"; "[bold]" was eaten.
    assert cli("contacts", "set", "anna.dejong@example.nl", "last_name=[/] [bold red]de Jong").exit_code == 0
    listed = cli("contacts")
    assert listed.exit_code == 0, listed.output
    assert "[/] [bold red]de Jong" in listed.stdout


def test_set_refuses_a_suppressed_new_address(loaded: Path, cli: Cli) -> None:
    assert cli("unsubscribe", "gone@example.org").exit_code == 0
    result = cli("contacts", "set", "anna.dejong@example.nl", "email=gone@example.org")
    assert result.exit_code == 2 and "suppression list" in result.stderr


def test_set_unknown_contact(loaded: Path, cli: Cli) -> None:
    result = cli("contacts", "set", "nobody@example.org", "first_name=X")
    assert result.exit_code == 1 and "No contact nobody@example.org" in result.stderr


def test_a_page_its_count_and_the_list_counts_each_come_from_one_moment(project: Path, cli: Cli,
                                                                       engine: Engine) -> None:
    # An import (here: a plain write) commits between the reads of one listing.
    from mailcli.config import resolve
    from mailcli.contacts import list_contacts, list_counts

    engine.use(project)
    assert cli("import", str(DATA / "mailchimp_export.csv"), "--list", "news", "--basis", "customer").exit_code == 0
    engine.execute(project, "UPDATE contacts SET status = 'bounced' WHERE email_key = 'anna.dejong@example.nl'")
    settings = resolve(directory=str(project))
    with project_store(project) as store:
        page = list_contacts(store, settings, status="active", limit=1)
        assert page.total == 3 and len(page.rows) == 1
        conn = store.conn
        store.conn = Meanwhile(conn, "ORDER BY c.email_key LIMIT", lambda: engine.execute(
            project, "UPDATE contacts SET status = 'bounced'"))
        during = list_contacts(store, settings, status="active", limit=1)
        assert store.conn.written and (during.total, len(during.rows)) == (3, 1)

        store.conn = conn
        lists = list_counts(store)
        assert (lists[0].subscribed, lists[0].held_back["bounced"], lists[0].unsubscribed) == (0, 4, 0)
        # The members counted by their membership first, then those their contact holds back.
        store.conn = Meanwhile(conn, "LEFT JOIN memberships m ON m.list_id = l.id", lambda: engine.execute(
            project, "UPDATE memberships SET status = 'unsubscribed'"))
        assert list_counts(store) == lists and store.conn.written
        store.conn = conn
        after = list_counts(store)[0]
    assert (after.subscribed, after.held, after.unsubscribed) == (0, 0, 4)
    assert json.loads(cli("contacts", "--status", "active", "--json").stdout) == []
