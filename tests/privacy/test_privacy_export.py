"""``privacy export``: one person's data as a ZIP (art. 15/20)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import sqlite3
import stat
import zipfile
from pathlib import Path

import pytest

from mailcli.privacy.registry import (
    EXCLUDED_TABLES,
    PERSONAL_COLUMNS,
    PERSONAL_DATA_TABLES,
    unclassified_tables,
    uncovered_tables,
)
from mailcli.store import open_store
from tests.privacy_support import (
    ZEB,
    add_campaign,
    add_contact,
    add_delivery,
    add_event,
    add_list,
    add_membership,
    add_signup,
    add_suppression,
    freeze,
    settings_for,
)

TWIN = "zebedeus.quiggleworth2@bücher-quiggle.example"


@pytest.fixture
def world(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two people sharing name, domain and list, both mailed and bounced."""
    freeze(monkeypatch)
    store = open_store(settings_for(project).project.database)
    c = store.conn
    news, other = add_list(c, "news"), add_list(c, "offers")
    zeb = add_contact(c, ZEB, "Zebedeus", "Quiggleworth",
                      attributes={"city": '=HYPERLINK("http://x")', "team": "@SUM(1)", "note": "+31 6 1234"})
    twin = add_contact(c, TWIN, "Zebedeus", "Quiggleworth", attributes={"city": "Twinfield"}, source="twins.csv")
    add_membership(c, zeb, news, consent_source="signup-form")
    add_signup(c, zeb, news, "Yes, send me the Quiggle newsletter.")
    add_membership(c, zeb, other, "unsubscribed", unsubscribed_at="2026-02-01T00:00:00Z")
    add_membership(c, twin, news, consent_source="twins.csv", consent_ip="198.51.100.99")
    spring = add_campaign(c, "spring", news)
    add_delivery(c, spring, zeb, reply="250 2.0.0 Ok: queued as ZEBQUEUE")
    add_delivery(c, spring, twin, reply="250 2.0.0 Ok: queued as TWINQUEUE")
    add_event(c, zeb, "bounced", campaign_id=spring, channel="bounce", detail={"code": "4.2.2"})
    add_event(c, twin, "complained", campaign_id=spring, channel="complaint")
    add_suppression(c, project, ZEB, "offers", "unsubscribed")
    add_suppression(c, project, TWIN, "*", "complained")
    # Clicks kept per person ([tracking] per_contact): one of each.
    c.execute("INSERT INTO campaign_links (campaign_id, link_no, url, clicks, created_at)"
              " VALUES (?, 1, 'https://acme.example/agenda', 2, '2026-03-01T00:00:00Z')", (spring,))
    for who in (zeb, twin):
        c.execute("INSERT INTO clicks (campaign_id, link_no, contact_id, clicked_at, ip_network)"
                  " VALUES (?, 1, ?, '2026-03-02T10:00:00Z', '192.0.2.0/24')", (spring, who))
    c.commit()
    store.close()
    return project


def _open(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_export_holds_everything_about_the_person_and_nothing_else(world: Path, cli) -> None:
    result = cli("privacy", "export", ZEB, "-o", "zeb.zip", "--reason", "request 17")
    assert result.exit_code == 0, result.output
    files = _open(world / "zeb.zip")
    assert set(files) == {"subject.json", "profile.csv", "memberships.csv", "deliveries.csv", "events.csv", "clicks.csv",
                          "suppression.csv", "audit.csv", "requests.csv", "signups.csv", "letter.txt",
                          "manifest.sha256"}
    doc = json.loads(files["subject.json"])
    assert doc["schema"] == "mailcli.subject-export/1"
    provided = doc["profile"]["provided_by_subject"]
    assert provided["email"] == "Zebedeus.Quiggleworth@xn--bcher-quiggle-wob.example"
    assert provided["first_name"] == "Zebedeus" and provided["attributes"]["team"] == "@SUM(1)"
    assert doc["profile"]["recorded"]["status"] == "active"
    assert {m["list"]: m["status"] for m in doc["memberships"]} == {"news": "subscribed", "offers": "unsubscribed"}
    news = next(m for m in doc["memberships"] if m["list"] == "news")
    assert news["consent"]["source"] == "signup-form" and news["consent"]["ip"] == "192.0.2.7"
    assert news["consent"]["at"] and news["consent"]["text"]
    [delivery] = doc["deliveries"]
    assert delivery["campaign"] == "spring" and delivery["status"] == "sent" and delivery["message_id"].startswith("<")
    assert "ZEBQUEUE" in delivery["last_reply"]
    assert [(e["kind"], e["campaign"]) for e in doc["events"]] == [("bounced", "spring")]
    assert [(s["scope"], s["reason"]) for s in doc["suppression"]] == [("offers", "unsubscribed")]
    assert [(a["action"], a["reason"]) for a in doc["audit"]] == [("export", "request 17")]
    # the twin shares name, domain and list but none of their data is in any file.
    everything = b"".join(files.values())
    for foreign in (b"quiggleworth2", b"Twinfield", b"TWINQUEUE", b"twins.csv", b"198.51.100.99", b"complained"):
        assert foreign not in everything, foreign


def test_manifest_lists_every_other_file_with_its_sha256(world: Path, cli) -> None:
    assert cli("privacy", "export", ZEB, "-o", "zeb.zip").exit_code == 0
    files = _open(world / "zeb.zip")
    lines = files["manifest.sha256"].decode().splitlines()
    listed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}
    assert set(listed) == set(files) - {"manifest.sha256"}
    for name, digest in listed.items():
        assert hashlib.sha256(files[name]).hexdigest() == digest


def test_csv_cells_that_would_run_as_formulas_are_neutralised(world: Path, cli) -> None:
    assert cli("privacy", "export", ZEB, "-o", "zeb.zip").exit_code == 0
    text = _open(world / "zeb.zip")["profile.csv"].decode("utf-8")
    rows = {row["field"]: row for row in csv.DictReader(io.StringIO(text, newline=""))}
    assert rows["attributes.city"]["value"] == "'=HYPERLINK(\"http://x\")"
    assert rows["attributes.team"]["value"] == "'@SUM(1)"
    assert rows["attributes.note"]["value"] == "'+31 6 1234"
    assert rows["email"]["provided_by_subject"] == "yes" and rows["status"]["provided_by_subject"] == "no"
    assert "\r\n" in text  # RFC 4180 line ends


def test_letter_gives_the_article_15_information_from_the_config(world: Path, cli) -> None:
    config = world / "mailcli.toml"
    config.write_text(config.read_text().replace('host = "localhost"', 'host = "relay.mailhost.example"')
                      .replace('bounced = "90d"', 'bounced = "12w"'))
    assert cli("privacy", "export", ZEB, "-o", "zeb.zip").exit_code == 0
    letter = _open(world / "zeb.zip")["letter.txt"].decode()
    for expected in ("relay.mailhost.example", "autoriteitpersoonsgegevens.nl", "signup-form",
                     "30 days", "12 weeks", "2 years", "13 months", "article 16", "article 17", "article 18",
                     "article 20", "article 21", "withdraw", "no automated decisions",
                     "Autoriteit Persoonsgegevens", "Bewaartermijnen", "12 weken"):
        assert expected in letter, expected
    info = json.loads(_open(world / "zeb.zip")["subject.json"])["information"]
    assert info["retention"]["bounced"]["period"] == "12w"
    assert any("relay.mailhost.example" in r for r in info["recipients"])


def test_the_dutch_half_of_the_letter_says_everything_the_english_half_says(world: Path, cli) -> None:
    assert cli("privacy", "export", ZEB, "-o", "zeb.zip").exit_code == 0
    english, dutch = _open(world / "zeb.zip")["letter.txt"].decode().split("-" * 76)
    assert "Wat wij van u hebben" in dutch and "manifest.sha256" in dutch
    # Every count, list, source and attribute the English half names, the Dutch half names too.
    held = english.split("What we hold", 1)[1].split("Why (purposes)", 1)[0]
    facts = re.findall(r"\d+", held) + [w for w in ("news", "offers", "city", "team", "note") if w in held]
    assert len(facts) >= 8
    for fact in facts:
        assert fact in dutch.split("Wat wij van u hebben", 1)[1].split("Waarvoor", 1)[0], fact
    for line in ("wij verkopen uw gegevens niet", "aan niemand anders", "waar u woont of werkt"):
        assert line in dutch.lower(), line
    assert dutch.rstrip().endswith(english.rstrip().splitlines()[-1])  # signed with the postal address


def test_default_file_is_private_and_named_without_the_address(world: Path, cli) -> None:
    result = cli("--json", "privacy", "export", ZEB.upper().replace("Ü", "ü"))
    assert result.exit_code == 0, result.output
    path = Path(json.loads(result.stdout)["path"])
    assert path.parent == world / "exports"
    assert "quiggle" not in path.name.lower() and path.suffix == ".zip"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".export-")]  # no temp file left


def test_unknown_person_is_exit_1_with_one_clear_line(world: Path, cli) -> None:
    result = cli("privacy", "export", "nobody@example.org")
    assert result.exit_code == 1
    assert "No contact with the address n***@example.org" in result.stderr
    assert "Traceback" not in result.output
    assert not (world / "exports").exists()


def test_invalid_address_is_a_usage_error(world: Path, cli) -> None:
    result = cli("privacy", "export", "not an address")
    assert result.exit_code == 2 and "Error:" in result.stderr


# -- completeness: every table holding personal data is exported ---------------------

def test_every_table_with_personal_data_is_in_the_registry(project: Path) -> None:
    """Fails when a migration adds a table with personal data that export/erase don't know."""
    store = open_store(settings_for(project).project.database)
    try:
        assert uncovered_tables(store.conn) == [], (
            "add these tables to mailcli/privacy/registry.py PERSONAL_DATA_TABLES (and an export section),"
            " or to EXCLUDED_TABLES with the reason they hold no personal data"
        )
        assert unclassified_tables(store.conn) == [], (
            "every table must be classified: PERSONAL_DATA_TABLES (exported and erased) or EXCLUDED_TABLES"
            " (with the reason it holds no personal data) in mailcli/privacy/registry.py"
        )
        live = {row[0] for row in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in PERSONAL_DATA_TABLES:
            assert table in live, f"registry names a table that does not exist: {table}"
        for table, reason in EXCLUDED_TABLES.items():
            assert reason.strip()
            if table in live:
                cols = {r[1] for r in store.conn.execute(f"PRAGMA table_info({table})")}
                assert not cols & PERSONAL_COLUMNS, f"{table} is excluded but has {cols & PERSONAL_COLUMNS}"
    finally:
        store.close()


def test_the_completeness_check_catches_a_new_table(project: Path) -> None:
    store = open_store(settings_for(project).project.database)
    try:
        store.conn.execute("CREATE TABLE page_views (id INTEGER PRIMARY KEY, contact_id INTEGER, url TEXT)")
        store.conn.execute("CREATE TABLE imports_log (id INTEGER PRIMARY KEY, file TEXT)")
        assert uncovered_tables(store.conn) == ["page_views"]
    finally:
        store.close()


def test_export_has_a_section_with_rows_from_every_registered_table(world: Path, cli) -> None:
    from mailcli.privacy.export import SECTIONS

    assert set(SECTIONS) == set(PERSONAL_DATA_TABLES)
    assert cli("privacy", "export", ZEB, "-o", "earlier.zip").exit_code == 0  # a file written about them
    assert cli("privacy", "requests", "add", ZEB, "--type", "access").exit_code == 0
    assert cli("privacy", "export", ZEB, "-o", "zeb.zip").exit_code == 0
    doc = json.loads(_open(world / "zeb.zip")["subject.json"])
    for table, (section, _) in SECTIONS.items():
        assert doc[section], f"{table} rows missing from the export"
    # The consent evidence comes with the wording the person was shown.
    assert doc["signups"][0]["consent_wording"] == "Yes, send me the Quiggle newsletter."
    assert doc["signups"][0]["ip"] == "192.0.2.0/24" and doc["signups"][0]["confirmed_at"]


def test_export_of_a_restricted_person_still_works(world: Path, cli) -> None:
    assert cli("privacy", "restrict", ZEB).exit_code == 0
    assert cli("privacy", "export", ZEB, "-o", "zeb.zip").exit_code == 0
    doc = json.loads(_open(world / "zeb.zip")["subject.json"])
    assert doc["profile"]["recorded"]["restricted_at"]


def test_unregistered_table_makes_export_warn(world: Path, cli) -> None:
    db = settings_for(world).project.database
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE page_views (id INTEGER PRIMARY KEY, contact_id INTEGER)")
    result = cli("privacy", "export", ZEB, "-o", "zeb.zip")
    assert result.exit_code == 0
    assert "page_views" in result.stderr and "not exported" in result.stderr


@pytest.mark.parametrize("target", ["folder", "under-a-file", "missing-folder"])
def test_an_export_that_cannot_be_written_is_refused_before_anything_is_read(world: Path, cli, target: str) -> None:
    (world / "taken").mkdir()
    (world / "notes.txt").write_text("x", encoding="utf-8")
    output = {"folder": world / "taken", "under-a-file": world / "notes.txt" / "x.zip",
              "missing-folder": world / "nowhere" / "deeper" / "x.zip"}[target]
    audited = len(json.loads(cli("--json", "privacy", "audit").stdout))
    result = cli("privacy", "export", ZEB, "-o", str(output))
    assert result.exit_code == 2, result.output
    reason = {"folder": "is a folder, not a file", "under-a-file": f"the folder {output.parent} is not a folder",
              "missing-folder": f"the folder {output.parent} does not exist"}[target]
    # The same line as `render -o` gives.
    assert result.stderr.splitlines()[0] == f"Error: -o {output}: {reason}"
    assert "Traceback" not in result.output
    assert list((world / "taken").iterdir()) == []  # no temporary file left
    assert not (world / "nowhere").exists()  # a typo in a path makes no folders for personal data
    assert len(json.loads(cli("--json", "privacy", "audit").stdout)) == audited  # the person's data was not read
    rendered = cli("render", "newsletter", "-o", str(output))
    assert (rendered.exit_code, rendered.stderr.splitlines()[0]) == (2, f"Error: -o {output}: {reason}")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux) to name a pipe by a path")
def test_an_export_to_a_pipe_named_by_a_path_is_refused(world: Path, cli) -> None:
    # /dev/stdout piped into another program is such a path: the ZIP is renamed into place, which a pipe is not.
    read, write = os.pipe()
    try:
        result = cli("privacy", "export", ZEB, "-o", f"/proc/self/fd/{write}")
    finally:
        os.close(read)
        os.close(write)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0] == f"Error: -o /proc/self/fd/{write}: is not a regular file"


@pytest.mark.parametrize(("target", "said"), [
    ("mailcli.db", "that is the project's database; mailcli never writes over its own files"),
    (".mailcli/secret", "that is in mailcli's private folder; mailcli never writes over its own files"),
    ("people.csv", None), ("/dev/full", "is not a regular file"),
])
def test_an_export_never_replaces_the_database_the_secret_or_a_device(world: Path, cli, target: str,
                                                                      said: str | None) -> None:
    # An export is written aside and renamed into place: named with -o, the
    # database, the secret or a device would have been replaced by the ZIP.
    (world / "people.csv").write_text("email\nx@example.org\n", encoding="utf-8")
    kept = {p: p.read_bytes() for p in (world / "mailcli.db", world / ".mailcli" / "secret", world / "people.csv")}
    result = cli("privacy", "export", ZEB, "-o", target)
    if said is None:  # any other file of the user's may be replaced, as -o says
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0] == f"Error: -o {target}: {said}"
    assert {p: p.read_bytes() for p in kept} == kept and Path("/dev/full").is_char_device()
    assert cli("privacy", "export", ZEB, "-o", "exports/zeb.zip").exit_code == 0  # its own folder is fine
