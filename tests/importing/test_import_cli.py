"""``mailcli import`` end to end: real files, a real SQLite database, the real CLI."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Cli, project_rows, run_mailcli
from tests.terminal import Terminal

DATA = Path(__file__).parent.parent / "data"


def db(project: Path) -> sqlite3.Connection:
    return sqlite3.connect(project / "mailcli.db")


def dump(project: Path) -> list[str]:
    """Every row of every table except the audit log (which records each run)."""
    conn = db(project)
    try:
        return [line for line in conn.iterdump() if not line.startswith('INSERT INTO "audit_log"')]
    finally:
        conn.close()


def audit_rows(project: Path) -> int:
    conn = db(project)
    try:
        return int(conn.execute("SELECT count(*) FROM audit_log").fetchone()[0])
    finally:
        conn.close()


def contact(project: Path, key: str) -> dict[str, object]:
    conn = db(project)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM contacts WHERE email_key = ?", (key,)).fetchone()
        assert row is not None, key
        result = dict(row)
        result["attributes"] = json.loads(row["attributes"])
        result["memberships"] = [dict(m) for m in conn.execute(
            "SELECT l.name AS list, m.* FROM memberships m JOIN lists l ON l.id = m.list_id WHERE contact_id = ?",
            (row["id"],))]
        return result
    finally:
        conn.close()


def shows_consent(path: Path) -> bool:
    """Whether a test file has an opt-in time column (the others are imported
    as the customers' list they stand in for)."""
    try:
        with path.open("rb") as handle:
            return b"optin_time" in handle.readline().lower()
    except OSError:
        return False


def imported(cli: Cli, *args: str) -> dict[str, object]:
    stated = [] if shows_consent(Path(args[0])) or "--status" in args else ["--basis", "customer"]
    result = cli("import", *args, *stated, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


# ----------------------------------------------------------- real export shapes


def test_dutch_signup_and_signoff_dates_are_read_as_consent_and_opt_out(project: Path, cli: Cli) -> None:
    # "Aangemeld op" (signed up on) is the consent time of a Dutch export, "Afgemeld op" its opt-out.
    leden = project / "leden.csv"
    leden.write_bytes("E-mailadres;Voornaam;Aangemeld op;Afgemeld op\r\n"
                      "jan@voorbeeld.nl;Jan;01-02-2024 10:00;\r\n"
                      "marié@voorbeeld.nl;Marié;03-02-2024 09:30;05-03-2024\r\n".encode("cp1252"))
    data = imported(cli, str(leden), "--list", "nieuws")
    assert (data["imported"], data["opted_out"], data["no_basis"]) == (1, 1, 0), data
    (membership,) = contact(project, "jan@voorbeeld.nl")["memberships"]  # type: ignore[misc]
    assert membership["status"] == "subscribed" and membership["consent_at"] == "2024-02-01T10:00:00Z"


def test_mailchimp_export_as_downloaded(project: Path, cli: Cli) -> None:
    data = imported(cli, str(DATA / "mailchimp_export.csv"), "--list", "news")
    assert {k: data[k] for k in ("imported", "updated", "unchanged", "suppressed", "rejected")} == {
        "imported": 4, "updated": 0, "unchanged": 0, "suppressed": 0, "rejected": 1}
    assert data["rejects"] == [{"line": 7, "reason": "invalid email address: An email address must have an @-sign"}]
    anna = contact(project, "anna.dejong@example.nl")
    assert (anna["first_name"], anna["last_name"]) == ("Anna", "de Jong")
    assert anna["attributes"]["member_rating"] == "4"  # type: ignore[index]
    assert anna["attributes"]["leid"] == "512345678"  # type: ignore[index]
    (membership,) = anna["memberships"]  # type: ignore[misc]
    assert membership["status"] == "subscribed"
    assert membership["consent_at"] == "2023-03-30T09:16:40Z"  # CONFIRM_TIME
    assert membership["consent_ip"] == "81.204.17.0/24"  # truncated, never the full IP
    assert membership["consent_method"] == "import"
    assert membership["consent_source"] == "mailchimp_export.csv line 2"
    assert len(str(anna["uid"])) == 18
    idn = contact(project, "chloé@xn--bcher-kva.example")  # IDNA2008 A-label domain
    assert idn["email"] == "chloé@xn--bcher-kva.example"
    bram = contact(project, "bram.visser@example.com")
    assert bram["email"] == "Bram.Visser@example.com"  # local part kept as given


def test_dutch_excel_semicolon_cp1252(project: Path, cli: Cli) -> None:
    data = imported(cli, str(DATA / "dutch_excel.csv"), "--list", "nieuwsbrief")
    assert (data["imported"], data["rejected"]) == (3, 1)
    jose = contact(project, "jose@example.nl")
    assert (jose["first_name"], jose["last_name"]) == ("José", "Peña")
    assert jose["attributes"] == {"woonplaats": "Utrecht", "opmerking": "Betaalde € 25,00"}
    assert contact(project, "zoe.janssen@example.nl")["first_name"] == "Zoë"


def test_bom_crlf_quoted_newlines_and_utf16(project: Path, cli: Cli) -> None:
    imported(cli, str(DATA / "bom_crlf_quoted.csv"), "--list", "news")
    assert contact(project, "ada@example.org")["attributes"] == {"address": "12 St James's Square\r\nLondon"}
    assert contact(project, "grace@example.org")["memberships"][0]["consent_source"] == (  # type: ignore[index]
        "bom_crlf_quoted.csv line 4")
    imported(cli, str(DATA / "utf16_excel.txt"), "--list", "news")
    assert contact(project, "lars@example.dk")["last_name"] == "Østergaard"


def test_map_and_consent_source(project: Path, cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("Werk mail,Roepnaam,Aangemeld,Intern\nw@example.nl,Wim,01-04-2023 10:12,x\n", encoding="utf-8")
    imported(cli, str(path), "--list", "news", "--map", "Werk mail=email", "--map", "Roepnaam=first_name",
             "--map", "Aangemeld=consent_time", "--map", "Intern=ignore", "--consent-source", "beurs 2023")
    wim = contact(project, "w@example.nl")
    assert wim["first_name"] == "Wim" and wim["attributes"] == {}
    (m,) = wim["memberships"]  # type: ignore[misc]
    assert m["consent_at"] == "2023-04-01T10:12:00Z"
    assert m["consent_source"] == "beurs 2023 (crm.csv line 2)"


def test_a_name_column_fills_first_and_last_name_and_is_no_attribute(project: Path, cli: Cli, tmp_path: Path) -> None:
    # It was kept as an attribute {"name": "Lies de Vries"} as well.
    path = tmp_path / "n.tsv"
    path.write_text("mail\tname\toptin_time\nlies@example.org\tLies de Vries\t2024-01-01\n", encoding="utf-8")
    imported(cli, str(path), "--list", "news")
    result = cli("--json", "contacts")
    assert result.exit_code == 0, result.output
    (lies,) = json.loads(result.stdout)
    assert (lies["first_name"], lies["last_name"], lies["attributes"]) == ("Lies", "de Vries", {})


def test_a_name_written_last_name_first_is_split_at_the_comma(project: Path, cli: Cli, tmp_path: Path) -> None:
    # "Berg, Jan" used to become first name "Berg," and last name "Jan".
    path = tmp_path / "leden.csv"
    path.write_text('e-mail;naam\njan@example.nl;Berg, Jan\nlies@example.nl;Vries, Lies de\n'
                    'piet@example.nl;"Dijk, Piet van"\nann@example.nl;Ann van der Berg\n'
                    'bv@example.nl;"Bakker, Jansen, Co"\n', encoding="utf-8")
    imported(cli, str(path), "--list", "leden")
    names = {row[0]: row[1:] for row in db(project).execute("SELECT email, first_name, last_name FROM contacts")}
    assert names == {"jan@example.nl": ("Jan", "Berg"), "lies@example.nl": ("Lies", "de Vries"),
                     "piet@example.nl": ("Piet", "van Dijk"), "ann@example.nl": ("Ann", "van der Berg"),
                     "bv@example.nl": ("Bakker,", "Jansen, Co")}  # two commas: split at the first space


# ------------------------------------------------------------------ bad rows


def test_every_kind_of_bad_row_goes_to_the_rejects_file(project: Path, cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    source.write_bytes((DATA / "bad_rows.csv").read_bytes()
                       + b'"=HYPERLINK(""http://x"")",Formula,Cell,,\n@SUM(1),At,Sign,,\n')
    rejects = tmp_path / "rejected.csv"
    data = imported(cli, str(source), "--list", "news", "--rejects", str(rejects))
    assert (data["imported"], data["rejected"]) == (1, 14)
    assert oct(rejects.stat().st_mode & 0o777) == "0o600"  # personal data
    with rejects.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["email", "first_name", "last_name", "optin_time", "optin_ip", "line", "reason"]
    by_line = {row[5]: row for row in rows[1:]}
    assert by_line["3"][6].startswith("invalid email address")
    assert by_line["4"][6] == "missing email address"
    assert by_line["5"][0] == "alice@example.org)<bob@example.org>"
    assert by_line["7"][0] == "evil@example.org\nBcc: x@example.org"
    assert by_line["9"][6] == "bad consent time 'yesterday'"
    assert by_line["11"][6] == "bad consent IP address '999.1.1.1'"
    assert by_line["12"][6:] == ["6 fields but the header has 5", "extra"]
    assert by_line["13"][6] == "NUL byte in row"
    # Cells that a spreadsheet would run are neutralised.
    assert by_line["16"][0] == "'=HYPERLINK(\"http://x\")"
    assert by_line["17"][0] == "'@SUM(1)"
    assert sorted(int(line) for line in by_line) == [r["line"] for r in data["rejects"]]  # type: ignore[index]


def test_a_row_with_a_10_mb_field_is_in_the_rejects_file_with_its_cells(
        project: Path, cli: Cli, tmp_path: Path) -> None:
    # It used to come out as ",,,2,...": every cell blank but the line number.
    source = tmp_path / "huge.csv"
    huge = "A" * (10 * 1024 * 1024)
    source.write_text(f"email,first_name,city\nbig@example.org,{huge},Utrecht\n"
                      f'"quoted@example.org","{huge[:70_000]}","De ""Bilt"""\nok@example.org,Ann,Delft\n',
                      encoding="utf-8")
    rejects = tmp_path / "rejected.csv"
    data = imported(cli, str(source), "--list", "news", "--rejects", str(rejects))
    assert (data["imported"], data["rejected"]) == (1, 2)
    with rejects.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1] == ["big@example.org", "A" * 1000 + f"…[cut: {len(huge)} characters]", "Utrecht", "2",
                       "field longer than 64 KiB"]
    assert rows[2] == ["quoted@example.org", "A" * 1000 + "…[cut: 70000 characters]", 'De "Bilt"', "3",
                       "field longer than 64 KiB"]


@pytest.mark.parametrize("quoted", [False, True])
def test_a_line_or_a_quoted_field_over_16_mib_refuses_the_file(
        project: Path, cli: Cli, tmp_path: Path, quoted: bool) -> None:
    imported(cli, str(DATA / "dutch_excel.csv"), "--list", "news")
    before = dump(project)
    source = tmp_path / "endless.csv"
    with source.open("wb") as handle:
        handle.write(b"email,notes\nann@example.org,fine\nbob@example.org," + (b'"' if quoted else b""))
        line = (b"x" * 1023 + b"\n") if quoted else b"x" * 1024
        handle.write(line * (17 * 1024))
    result = cli("import", str(source), "--list", "news", "--basis", "customer")
    assert result.exit_code == 2, result.output
    reason = "a quoted field runs on for more than 16 MiB" if quoted else "longer than 16 MiB"
    assert result.stderr.splitlines()[0].startswith(f"Error: {source}: line 3: {reason}")
    assert dump(project) == before


def test_encoding_utf16_for_a_file_without_a_bom_is_refused_with_the_reason(
        project: Path, cli: Cli, tmp_path: Path) -> None:
    # Python's UTF-16 codec raises a UnicodeError that is not a decoding
    # error when the BOM is missing: it ended the import as "unexpected".
    path = tmp_path / "u16.csv"
    path.write_bytes(b"\x00\xfe;\x00e\x00m\x00a\x00i\x00l\x00\n\x00")
    result = cli("import", str(path), "--list", "news", "--basis", "customer", "--encoding", "utf-16")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0] == (
        f"Error: {path}: line 1: cannot be decoded as utf-16 (UTF-16 stream does not start with BOM)")


def test_strict_exits_3_but_keeps_the_good_rows(project: Path, cli: Cli) -> None:
    result = cli("import", str(DATA / "bad_rows.csv"), "--list", "news", "--strict")
    assert result.exit_code == 3
    assert "12 row(s) rejected (--strict)" in result.stderr
    assert contact(project, "good@example.org")["memberships"]


# ------------------------------------------------------------ the rejects file

_OWN_FILES = ["in.csv", "mailcli.toml", ".mailcli/secret", "mailcli.db-ledgers/audit-head"]


@pytest.mark.parametrize(("target", "what"), [
    ("in.csv", "the file being read"),
    ("same-as-in.csv", "the file being read"),  # a hard link
    ("mailcli.db", "the project's database"),
    ("mailcli.db-wal", "a file of the project's database"),
    ("db-link.csv", "the project's database"),  # a symlink
    ("db-copy.csv", "the project's database"),  # a hard link
    ("mailcli.toml", "the configuration file"),
    (".mailcli/secret", "in mailcli's private folder"),
    ("mailcli.db-ledgers/audit-head", "in the ledgers of the database"),
    ("templates/rejects.csv", "in the templates folder"),
    (".gitignore", "the project's .gitignore, which keeps the secret out of git"),
])
def test_rejects_never_writes_over_the_input_or_a_file_of_mailcli(
        project: Path, cli: Cli, target: str, what: str) -> None:
    # It used to: --rejects mailcli.db replaced the database with a CSV file,
    # and --rejects in.csv the file imported, both reported as a success.
    imported(cli, str(DATA / "dutch_excel.csv"), "--list", "news")
    source = project / "in.csv"
    source.write_bytes((DATA / "bad_rows.csv").read_bytes())
    source.chmod(0o644)
    os.link(source, project / "same-as-in.csv")
    (project / "db-link.csv").symlink_to("mailcli.db")
    os.link(project / "mailcli.db", project / "db-copy.csv")
    files = {name: ((project / name).read_bytes(), (project / name).stat().st_mode) for name in _OWN_FILES}
    before = dump(project)
    result = cli("import", "in.csv", "--list", "news", "--rejects", target)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: --rejects {target}: that is {what}; "), result.stderr
    assert "Traceback" not in result.output
    assert dump(project) == before  # nothing imported, the database whole
    assert {name: ((project / name).read_bytes(), (project / name).stat().st_mode) for name in _OWN_FILES} == files
    assert not list(project.rglob(".rejects-*"))


def test_rejects_replaces_an_earlier_rejects_file_and_writes_through_a_symlink(
        project: Path, cli: Cli, tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "rejected.csv").write_text("an earlier run\n", encoding="utf-8")
    (project / "rejected.csv").symlink_to(kept / "rejected.csv")
    for _ in range(2):
        data = imported(cli, str(DATA / "bad_rows.csv"), "--list", "news", "--rejects", "rejected.csv")
        assert data["rejected"] == 12
    assert (project / "rejected.csv").is_symlink()
    with (kept / "rejected.csv").open(encoding="utf-8-sig", newline="") as handle:
        assert len(list(csv.reader(handle))) == 13  # the header and the 12 rejected rows
    assert not list(tmp_path.rglob(".rejects-*"))


@pytest.mark.parametrize("target", ["sub", ".", "fifo"])
def test_rejects_naming_a_folder_or_a_pipe_is_refused_before_the_import(
        project: Path, cli: Cli, target: str) -> None:
    # It used to import the rows, then fail with "unexpected IsADirectoryError"
    # (exit 1) and leave a .rejects-XXXX.csv with the rejected rows behind.
    imported(cli, str(DATA / "dutch_excel.csv"), "--list", "news")
    (project / "sub").mkdir()
    os.mkfifo(project / "fifo")
    before = dump(project)
    result = cli("import", str(DATA / "bad_rows.csv"), "--list", "news", "--rejects", target)
    assert result.exit_code == 2, result.output
    what = "is not a regular file" if target == "fifo" else "is a folder, not a file"
    assert result.stderr.splitlines()[0] == f"Error: --rejects {target}: {what}"
    assert dump(project) == before
    assert not list(project.rglob(".rejects-*"))


# ------------------------------------------------------------ merge semantics


def test_new_contacts_get_distinct_uids_increasing_in_address_order(project: Path, cli: Cli, tmp_path: Path) -> None:
    # The uids are random-looking but handed out in key order so the uid index
    # is appended to, not written at random; a second import continues elsewhere.
    path = tmp_path / "many.csv"
    path.write_text("email\n" + "".join(f"p{(i * 7919) % 500}@example.org\n" for i in range(500)), encoding="utf-8")
    assert imported(cli, str(path), "--list", "news")["imported"] == 500
    conn = db(project)
    uids = [uid for (uid,) in conn.execute("SELECT uid FROM contacts ORDER BY email_key")]
    assert all(len(uid) == 18 and int(uid, 16) >= 0 for uid in uids)
    assert uids == sorted(uids) and len(set(uids)) == 500
    path.write_text("email\nq1@example.org\nq2@example.org\n", encoding="utf-8")
    imported(cli, str(path), "--list", "news")
    assert conn.execute("SELECT count(DISTINCT uid) FROM contacts").fetchone()[0] == 502


def test_reimport_changes_nothing(project: Path, cli: Cli) -> None:
    imported(cli, str(DATA / "mailchimp_export.csv"), "--list", "news")
    imported(cli, str(DATA / "dutch_excel.csv"), "--list", "news")
    before, audits = dump(project), audit_rows(project)
    again = imported(cli, str(DATA / "mailchimp_export.csv"), "--list", "news")
    assert {k: again[k] for k in ("imported", "updated", "unchanged", "suppressed", "rejected")} == {
        "imported": 0, "updated": 0, "unchanged": 4, "suppressed": 0, "rejected": 1}
    assert dump(project) == before
    assert audit_rows(project) == audits + 1  # the import itself is logged


def test_duplicates_merge_inside_the_file_and_against_the_database(project: Path, cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "dups.csv"
    path.write_text(
        "email,first_name,last_name,city,phone\n"
        "Ann@Example.org,Ann,,Delft,\n"
        "bob@example.org,Bob,Bakker,,\n"
        "ANN@example.org,,Smit,Leiden,0612\n",
        encoding="utf-8")
    data = imported(cli, str(path), "--list", "news")
    assert (data["imported"], data["duplicates"]) == (2, 1)  # three rows, two people: one merged
    ann = contact(project, "ann@example.org")
    assert (ann["email"], ann["first_name"], ann["last_name"]) == ("Ann@example.org", "Ann", "Smit")
    assert ann["attributes"] == {"city": "Leiden", "phone": "0612"}
    assert ann["memberships"][0]["consent_source"] == "dups.csv line 2"  # type: ignore[index]
    before = dump(project)
    assert imported(cli, str(path), "--list", "news")["unchanged"] == 2  # addresses; the repeat is merged again
    assert dump(project) == before

    update = tmp_path / "update.csv"
    update.write_text("email,city\nann@example.org,Utrecht\nnew@example.org,Gouda\n", encoding="utf-8")
    skipped = imported(cli, str(update), "--list", "news", "--on-conflict", "skip")
    assert (skipped["imported"], skipped["unchanged"]) == (1, 1)
    assert contact(project, "ann@example.org")["attributes"]["city"] == "Leiden"  # type: ignore[index]
    updated = imported(cli, str(update), "--list", "news")
    assert (updated["updated"], updated["unchanged"]) == (1, 1)
    assert contact(project, "ann@example.org")["attributes"] == {"city": "Utrecht", "phone": "0612"}

    other = imported(cli, str(update), "--list", "members")  # same people, another list
    assert other["imported"] == 2
    assert {m["list"] for m in contact(project, "ann@example.org")["memberships"]} == {"news", "members"}  # type: ignore[union-attr]


def test_a_new_spelling_of_an_address_is_an_update(project: Path, cli: Cli, tmp_path: Path) -> None:
    # Rows carry the address as written only where it differs from the
    # lower-case key; both ways must reach the contact and the comparison.
    path = tmp_path / "spelling.csv"
    for written, outcome in [("Ann@Example.org", "imported"), ("Ann@example.org", "unchanged"),
                             ("ann@example.org", "updated"), ("ann@EXAMPLE.org", "unchanged"),
                             ("ANN@example.org", "updated"), ("ann@example.org", "updated")]:
        path.write_text(f"email,city\n{written},Delft\n", encoding="utf-8")
        assert imported(cli, str(path), "--list", "news")[outcome] == 1, (written, outcome)
        assert contact(project, "ann@example.org")["email"] == written.partition("@")[0] + "@example.org"
    path.write_text("email,city\nANN@example.org,Delft\n", encoding="utf-8")
    assert imported(cli, str(path), "--list", "news", "--on-conflict", "skip")["unchanged"] == 1
    assert contact(project, "ann@example.org")["email"] == "ann@example.org"


def test_suppressed_and_unsubscribed_are_never_resubscribed(project: Path, cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("email\nann@example.org\nbob@example.org\ncarl@example.org\n", encoding="utf-8")
    imported(cli, str(path), "--list", "news")
    assert cli("unsubscribe", "BOB@example.org", "--list", "news").exit_code == 0  # opt-out of one list
    assert cli("unsubscribe", "dora@example.org").exit_code == 0  # never imported, suppressed everywhere
    assert cli("unsubscribe", "carl@example.org").exit_code == 0  # all marketing
    path.write_text("email\nann@example.org\nbob@example.org\ncarl@example.org\n Dora@Example.ORG \n",
                    encoding="utf-8")
    data = imported(cli, str(path), "--list", "news")
    assert (data["unchanged"], data["suppressed"], data["imported"]) == (1, 3, 0)
    bob = contact(project, "bob@example.org")
    assert bob["memberships"][0]["status"] == "unsubscribed"  # type: ignore[index]
    conn = db(project)
    assert conn.execute("SELECT count(*) FROM contacts WHERE email_key = 'dora@example.org'").fetchone()[0] == 0
    # Another list: Bob only left "news", so he may join "events"; Carl and Dora objected to everything.
    data = imported(cli, str(path), "--list", "events")
    assert (data["imported"], data["suppressed"]) == (2, 2)


def test_a_list_name_that_differs_only_in_case_is_refused_and_spaces_around_a_name_are_none_of_it(
        project: Path, cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("email\nann@example.org\nbob@example.org\n", encoding="utf-8")
    imported(cli, str(path), "--list", "news")
    assert cli("unsubscribe", "bob@example.org", "--list", " news ").exit_code == 0
    before = dump(project)
    for name in ("News", " NEWS "):
        result = cli("import", str(path), "--list", name, "--basis", "customer")
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines()[0] == (
            "Error: a list named 'news' exists (list names differ only in case); use --list news")
    assert dump(project) == before  # no second list, nobody subscribed to it

    again = imported(cli, str(path), "--list", " news ")
    assert (again["list"], again["unchanged"], again["suppressed"]) == ("news", 1, 1)  # Bob stays unsubscribed
    listed = cli("contacts", "--list", " news ", "--json")
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)) == 2
    missing = cli("contacts", "--list", "NEWS")
    assert missing.exit_code == 1 and missing.stderr.splitlines()[0] == "Error: No list named 'NEWS' (did you mean news?)"
    for command in (["send", "c", "--template", "newsletter", "--list", "News", "--dry-run"],
                    ["reconfirm", "--list", "News"], ["unsubscribe", "ann@example.org", "--list", "News"]):
        result = cli(*command)
        assert result.exit_code == 1 and "No list named 'News' (did you mean news?)" in result.stderr, command
    conn = db(project)
    assert conn.execute("SELECT name FROM lists").fetchall() == [("news",)]
    assert conn.execute("SELECT scope FROM suppressions").fetchall() == [("news",)]


def test_a_mailchimp_download_carries_its_unsubscribes_and_bounces_over(project: Path, cli: Cli) -> None:
    # Mailchimp's export is a ZIP of three CSVs: subscribed, unsubscribed and
    # cleaned members. Importing all three must keep the unsubscribed and
    # cleaned people off the list, now and in every later import.
    imported(cli, str(DATA / "mailchimp_export.csv"), "--list", "news")
    result = cli("import", str(DATA / "mailchimp_unsubscribed.csv"), "--list", "news", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # Frank's OPTIN_TIME "gisteren" would reject a subscription; his opt-out counts all the same.
    assert {k: data[k] for k in ("imported", "updated", "unchanged", "suppressed", "rejected", "opted_out")} == {
        "imported": 0, "updated": 0, "unchanged": 0, "suppressed": 2, "rejected": 0, "opted_out": 2}
    assert "2 row(s) marked unsubscribed or cleaned in the file" in result.stderr
    (m,) = contact(project, "bram.visser@example.com")["memberships"]  # type: ignore[misc]
    assert (m["status"], m["unsubscribed_at"], m["unsubscribe_channel"]) == (
        "unsubscribed", "2024-03-02T20:11:09Z", "import")
    assert m["consent_source"] == "mailchimp_export.csv line 3"  # the consent evidence stays
    conn = db(project)
    assert conn.execute("SELECT count(*) FROM contacts WHERE email_key = 'frank@example.net'").fetchone()[0] == 0
    data = imported(cli, str(DATA / "mailchimp_cleaned.csv"), "--list", "news")
    assert (data["suppressed"], data["opted_out"]) == (1, 1)
    assert contact(project, "daan@example.org")["status"] == "bounced"
    assert conn.execute("SELECT kind, channel, scope, source_ref FROM events ORDER BY id").fetchall() == [
        ("unsubscribed", "import", "news", "mailchimp_unsubscribed.csv line 2"),
        ("unsubscribed", "import", "news", "mailchimp_unsubscribed.csv line 3"),
        ("bounced", "import", "*", "mailchimp_cleaned.csv line 2")]
    assert conn.execute("SELECT scope, reason, channel FROM suppressions ORDER BY reason, scope").fetchall() == [
        ("*", "bounced", "import"), ("news", "unsubscribed", "import"), ("news", "unsubscribed", "import")]
    # All three again: nobody comes back and nothing new is recorded.
    before = dump(project)
    again = imported(cli, str(DATA / "mailchimp_export.csv"), "--list", "news")
    assert (again["unchanged"], again["suppressed"], again["imported"]) == (2, 2, 0)
    for name in ("mailchimp_unsubscribed.csv", "mailchimp_cleaned.csv"):
        imported(cli, str(DATA / name), "--list", "news")
    assert dump(project) == before
    # Frank was never a contact here, but he stays off this list too.
    path = project / "later.csv"
    path.write_text("email\nFrank@Example.net\n", encoding="utf-8")
    assert imported(cli, str(path), "--list", "news")["suppressed"] == 1


def test_a_row_marked_unsubscribed_wins_over_every_row_with_its_address(
        project: Path, cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("email,name,opted out on\nann@example.org,Ann,\nbob@example.org,Bob,\n"
                    "ANN@example.org,,2024-01-01\n", encoding="utf-8")
    data = imported(cli, str(path), "--list", "news", "--map", "opted out on=unsubscribed_at")
    assert (data["imported"], data["suppressed"], data["opted_out"], data["rejected"]) == (1, 2, 1, 0)
    conn = db(project)
    assert [row[0] for row in conn.execute("SELECT email_key FROM contacts")] == ["bob@example.org"]
    bob = contact(project, "bob@example.org")
    assert (bob["first_name"], bob["attributes"]) == ("Bob", {})
    (at,) = conn.execute("SELECT detail FROM events WHERE kind = 'unsubscribed'").fetchone()
    assert json.loads(at) == {"at": "2024-01-01T00:00:00Z"}


def test_unconfirmed_then_confirmed(project: Path, cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "signups.csv"
    path.write_text("email,optin_time\nann@example.org,2024-05-01 08:00:00\n", encoding="utf-8")
    imported(cli, str(path), "--list", "news", "--status", "unconfirmed")
    (m,) = contact(project, "ann@example.org")["memberships"]  # type: ignore[misc]
    assert (m["status"], m["confirmed_at"]) == ("unconfirmed", None)
    lists = json.loads(cli("lists", "--json").stdout)
    assert lists == [{"name": "news", "subscribed": 0, "unconfirmed": 1, "unsubscribed": 0, "held_back": 0,
                      "held_back_by": {"bounced": 0, "complained": 0, "restricted": 0, "objected": 0, "no_basis": 0},
                      "created_at": lists[0]["created_at"]}]
    path.write_text("email,optin_time\nann@example.org,2024-05-02 09:00:00\n", encoding="utf-8")
    assert imported(cli, str(path), "--list", "news")["updated"] == 1
    (m,) = contact(project, "ann@example.org")["memberships"]  # type: ignore[misc]
    assert (m["status"], m["confirmed_at"]) == ("subscribed", "2024-05-02T09:00:00Z")


def test_check_mx_warns_about_dead_domains(project: Path, cli: Cli, tmp_path: Path) -> None:
    from tests.dnsserver import DnsServer

    path = tmp_path / "typos.csv"
    path.write_text("email\nann@gmail.example\nbob@gmial.example\ncarl@nullmx.example\n", encoding="utf-8")
    zones = {"gmail.example": "@ MX 5 mx1\nmx1 A 192.0.2.1\n", "nullmx.example": "@ MX 0 .\n",
             "example": "gmail A 192.0.2.4\n"}
    with DnsServer(zones) as server:
        result = cli("import", str(path), "--list", "news", "--basis", "customer", "--check-mx", "--nameserver", server.address, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["imported"] == 3  # warnings, not rejects
    assert [d["domain"] for d in data["undeliverable"]] == ["gmial.example", "nullmx.example"]
    assert "1 address(es) at gmial.example" in result.stderr


# -------------------------------------------------------------- bad input files


@pytest.mark.parametrize("case", ["missing", "binary", "no-email", "undecodable", "directory", "zip"])
def test_bad_input_files_exit_2_and_change_nothing(project: Path, cli: Cli, tmp_path: Path, case: str) -> None:
    imported(cli, str(DATA / "dutch_excel.csv"), "--list", "news")
    path = tmp_path / f"{case}.csv"
    expected = {"missing": "no such file", "binary": "binary file", "no-email": "no email column",
                "undecodable": "line 3: cannot be decoded as utf-8", "directory": "is a directory",
                "zip": "a ZIP archive with no CSV file in it (members_export/members.pdf)"}[case]
    if case == "binary":
        path.write_bytes(bytes(range(256)) * 40)
    elif case == "no-email":
        path.write_bytes((DATA / "no_email.csv").read_bytes())
    elif case == "undecodable":
        # Detection would read this as cp1252; told it is UTF-8, line 3 cannot be.
        path.write_bytes(b"email,city\na@example.org,Delft\nb@example.org,M\xfcnchen\n")
    elif case == "directory":
        path.mkdir()
    elif case == "zip":  # an archive, read by its content whatever its name, with no contact file in it
        import zipfile

        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("members_export/members.pdf", "%PDF-1.7")
    before = dump(project)
    extra = ["--encoding", "utf-8"] if case == "undecodable" else []
    result = cli("import", str(path), "--list", "news", "--basis", "customer", *extra)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"Error: {path}: ")
    assert expected in lines[0]
    assert "Traceback" not in result.output
    assert dump(project) == before


@pytest.mark.parametrize("encoding", ["hex", "base64", "zlib", "bz2", "uu", "quopri", "rot13", "bogus"])
def test_an_encoding_that_is_no_text_encoding_is_a_usage_error(project: Path, cli: Cli, encoding: str) -> None:
    # hex and the other bytes-to-bytes codecs ended in "unexpected AssertionError"
    # (exit 1), rot13 in "unexpected TypeError".
    result = cli("import", str(DATA / "bad_rows.csv"), "--list", "news", "--encoding", encoding)
    assert result.exit_code == 2, result.output
    what = "unknown encoding 'bogus'" if encoding == "bogus" else f"{encoding!r} is not a text encoding"
    assert result.stderr.splitlines() == [f"Error: --encoding: {what}", "Hint: try utf-8, cp1252, latin-1 or utf-16"]
    assert project_rows(project, "SELECT count(*) FROM contacts") == [(0,)]


# ------------------------------------------------------------------ from a pipe


@pytest.mark.parametrize("file", ["-", "/dev/stdin"])
def test_a_file_from_a_pipe_is_imported(project: Path, tmp_path: Path, file: str) -> None:
    # It used to say "the file is empty" (exit 2): the file was opened twice,
    # and a pipe gives its bytes only once. Big enough to be read by two processes.
    body = "email,optin_time,notes\n" + "".join(f"u{i}@example.org,2024-01-01,{'x' * 60}\n"
                                                for i in range(120_000)) + "not-an-address,2024-01-01,\n"
    temp = tmp_path / "temp"
    temp.mkdir()
    proc = run_mailcli("-v", "import", file, "--list", "news", "--json", input=body, env={"TMPDIR": str(temp)})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["file"], data["imported"], data["rejected"]) == (
        "stdin" if file == "-" else file, 120_000, 1)
    assert "read by two processes" in proc.stderr
    assert contact(project, "u7@example.org")["memberships"][0]["consent_source"] == (  # type: ignore[index]
        "stdin line 9")
    assert not list(temp.iterdir())  # the copy of what the pipe gave is gone


def test_rejects_to_standard_input_is_the_file_being_imported(project: Path, tmp_path: Path) -> None:
    # `import - --rejects /dev/stdin < in.csv` wrote the rejects over in.csv.
    source = tmp_path / "in.csv"
    source.write_text("email\nx1@example.org\nbad\n", encoding="utf-8")
    with source.open("rb") as stdin:
        proc = subprocess.run([sys.executable, "-m", "mailcli", "import", "-", "--list", "news", "--basis", "customer",
                               "--rejects", "/dev/stdin"], cwd=project, stdin=stdin, capture_output=True, text=True,
                              check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "the file being read" in proc.stderr.splitlines()[0]
    assert source.read_text(encoding="utf-8") == "email\nx1@example.org\nbad\n"


def test_a_copy_a_killed_import_left_is_removed_by_the_next(project: Path, tmp_path: Path) -> None:
    # kill -9 leaves the private copy of what a pipe gave; its process is gone.
    temp = tmp_path / "temp"
    dead = subprocess.Popen(["true"])  # a process that has ended: its pid names no one
    dead.wait()
    stale = temp / f"mailcli-import-{dead.pid}-abcd1234"
    stale.mkdir(parents=True)
    (stale / "stdin").write_text("email\nleft@example.org\n", encoding="utf-8")
    alive = temp / f"mailcli-import-{os.getpid()}-efgh5678"  # a running import's: kept
    alive.mkdir()
    proc = run_mailcli("import", "-", "--list", "news", "--basis", "customer", input="email\nnew@example.org\n",
                       env={"TMPDIR": str(temp)})
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists() and alive.exists()
    stale.mkdir()
    assert run_mailcli("privacy", "purge", env={"TMPDIR": str(temp)}).returncode == 0
    assert not stale.exists() and alive.exists()


def test_a_fifo_is_read_once_and_never_waited_on_again(project: Path, tmp_path: Path) -> None:
    # It used to hang: the second open of the FIFO waited for a writer that never came.
    fifo = tmp_path / "contacts.csv"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat {DATA / 'bad_rows.csv'} > {fifo}"])
    try:
        proc = run_mailcli("import", str(fifo), "--list", "news", timeout=60)
    finally:
        writer.kill()
        writer.wait()
    assert proc.returncode == 0, proc.stderr
    assert "imported 1," in proc.stderr and "rejected 12" in proc.stderr
    assert contact(project, "good@example.org")["memberships"][0]["consent_source"] == (  # type: ignore[index]
        "contacts.csv line 2")


@pytest.mark.parametrize(("file", "expected"), [
    ("-", "Error: stdin: the file is empty"),
    ("/dev/zero", "Error: /dev/zero: a device, not a contact file"),
])
def test_an_empty_pipe_or_a_device_is_refused(project: Path, file: str, expected: str) -> None:
    proc = run_mailcli("import", file, "--list", "news", "--basis", "customer", input="", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[0] == expected
    assert project_rows(project, "SELECT count(*) FROM contacts") == [(0,)]


def test_undecodable_byte_names_the_line_through_the_real_binary(project: Path, tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    body = "email,city\n" + "".join(f"u{i}@example.org,Delft\n" for i in range(3000))
    path.write_bytes(body.encode("utf-8") + "z@example.org,Düsseldorf\n".encode("cp1252"))
    proc = run_mailcli("import", str(path), "--list", "news", "--basis", "customer", "--encoding", "utf-8")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == f"Error: {path}: line 3002: cannot be decoded as utf-8"
    assert "--encoding" in proc.stderr
    conn = db(project)
    assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0


def test_utf8_file_with_cp1252_lines_reads_jose_as_jose_and_names_the_lines(
        project: Path, cli: Cli, tmp_path: Path) -> None:
    # What an editor makes of a UTF-8 export with a few lines pasted from a
    # cp1252 one: read whole as cp1252, "José" became "JosÃ©" without a word.
    path = tmp_path / "mixed.csv"
    lines = [b"email,first_name,city"]
    for i in range(6):
        lines.append(f"u{i}@example.org,José,Zürich".encode())
    lines.insert(3, "p1@example.org,José,Köln".encode("cp1252"))
    lines.append("p2@example.org,Renée,€ 5".encode("cp1252"))
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = cli("import", str(path), "--list", "news", "--basis", "customer", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["imported"], data["reencoded"], data["reencoded_lines"]) == (8, 2, [4, 9])
    assert "2 line(s) were not UTF-8 like the rest of the file and were read as Windows-1252 (cp1252):" \
           " line 4, 9" in result.stderr
    conn = db(project)
    names = dict(conn.execute("SELECT email, first_name FROM contacts").fetchall())
    assert set(names.values()) == {"José", "Renée"}
    assert contact(project, "p2@example.org")["attributes"] == {"city": "€ 5"}
    assert contact(project, "u0@example.org")["attributes"] == {"city": "Zürich"}


def test_cp1252_file_with_a_utf8_line_reads_it_as_utf8(project: Path, cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    lines = [b"email;voornaam"] + [f"u{i}@example.nl;Zoë".encode("cp1252") for i in range(5)]
    lines.append("x@example.nl;Zoë".encode())
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    data = imported(cli, str(path), "--list", "news")
    assert (data["imported"], data["reencoded"], data["reencoded_lines"]) == (6, 1, [7])
    assert {r[0] for r in db(project).execute("SELECT first_name FROM contacts")} == {"Zoë"}


# ------------------------------------------------------------------ big files


def write_big(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name", "last_name", "city", "optin_time"])
        for i in range(rows):
            writer.writerow([f"user{i}@example{i % 97}.nl", "Anna", "de Vries", "Delft", "2024-01-02 03:04:05"])


def big_import(project: Path, tmp_path: Path) -> tuple[list[str], Path]:
    """A project with some contacts (its dump) and a 400,000-row file to import into it."""
    run_mailcli("import", str(DATA / "dutch_excel.csv"), "--list", "news", "--basis", "customer", cwd=project)
    before = dump(project)
    big = tmp_path / "big.csv"
    write_big(big, 400_000)
    return before, big


def start_big_import(project: Path, tmp_path: Path) -> tuple[list[str], subprocess.Popen[str]]:
    """A project with some contacts (its dump) and a 400,000-row import of it running."""
    before, big = big_import(project, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "mailcli", "import", str(big), "--list", "news", "--basis", "customer"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return before, proc


def test_ctrl_c_during_import_exits_130_and_changes_nothing(project: Path, tmp_path: Path) -> None:
    before, big = big_import(project, tmp_path)
    term = Terminal("import", str(big), "--list", "news", "--basis", "customer", cwd=project)
    term.read_until(re.compile(r"Importing big\.csv[^\d]*(?!0\.0/)[\d.]+/"))  # the bar shows rows read
    assert term.proc.poll() is None, "the import finished before it could be interrupted; make the file bigger"
    term.type("\x03")  # Ctrl-C at the terminal: SIGINT to the import and its readers
    assert term.wait() == 130, term.text[-2000:]
    assert "Interrupted" in term.text and "Traceback" not in term.text
    assert dump(project) == before


# Ctrl-C typed in the instant after the import committed, before the audit
# head moved on: the process sends itself SIGINT where that instant is.
_CTRL_C_AFTER_COMMIT = """
import os, signal, sys
from mailcli import audithead
from mailcli.app import main
advance = audithead.advance
def ctrl_c_then_advance(store):
    os.kill(os.getpid(), signal.SIGINT)
    advance(store)
audithead.advance = ctrl_c_then_advance
sys.exit(main(sys.argv[1:]))
"""


def test_a_ctrl_c_while_the_import_is_saved_keeps_it_whole_and_says_so(project: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _CTRL_C_AFTER_COMMIT, "import", str(DATA / "mailchimp_export.csv"),
                           "--list", "news"], cwd=project, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.splitlines()[0] == "Error: Interrupted once the changes were saved: they are kept", proc.stderr
    assert "Traceback" not in proc.stderr
    conn = db(project)
    try:
        assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] > 0
    finally:
        conn.close()
    verify = run_mailcli("privacy", "audit", "--verify", cwd=project)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"Head: {audit_rows(project)} entries" in verify.stdout  # the head moved on with the commit


def journal_mode(project: Path) -> str:
    conn = sqlite3.connect(project / "mailcli.db")
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def test_an_import_stays_in_wal_mode(project: Path, cli: Cli) -> None:
    # Never a rollback journal: other processes must go on reading during an import.
    imported(cli, str(DATA / "mailchimp_export.csv"), "--list", "news")
    assert journal_mode(project) == "wal"
    assert not (project / "mailcli.db-journal").exists()
    assert imported(cli, str(DATA / "mailchimp_export.csv"), "--list", "news")["unchanged"] == 4


def test_an_import_next_to_an_open_connection_stays_in_wal_mode(project: Path, cli: Cli) -> None:
    reader = sqlite3.connect(project / "mailcli.db")
    try:
        assert reader.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0
        result = imported(cli, str(DATA / "mailchimp_export.csv"), "--list", "news")
        assert result["imported"] == 4
        # The open connection reads the import as soon as it is committed.
        assert reader.execute("SELECT count(*) FROM contacts").fetchone()[0] == 4
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        reader.close()


def test_kill_9_during_import_changes_nothing(project: Path, tmp_path: Path) -> None:
    before, proc = start_big_import(project, tmp_path)
    wal = project / "mailcli.db-wal"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and (not wal.exists() or wal.stat().st_size < 1 << 20):
        time.sleep(0.01)  # kill it while it writes its pages to the WAL
    assert proc.poll() is None, "the import ended before it wrote a megabyte; make the file bigger"
    assert not (project / "mailcli.db-journal").exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    # The uncommitted frames in the WAL are never read.
    assert run_mailcli("lists", cwd=project).returncode == 0
    assert dump(project) == before
    assert journal_mode(project) == "wal"


def _write_people(path: Path, people: list[tuple[str, str, str]]) -> dict[int, tuple[str, str]]:
    """A CSV of (email, first name, opt-in time) rows; line number -> (address key, time)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Email Address", "First Name", "OPTIN_TIME"])
        writer.writerows(people)
    return {line: (email.lower(), at) for line, (email, _, at) in enumerate(people, start=2)}


def _check_consent_rows(project: Path, list_name: str, files: dict[str, dict[int, tuple[str, str]]]) -> int:
    """Every membership of the list carries the consent of the very row of its address."""
    conn = db(project)
    try:
        rows = conn.execute(
            "SELECT c.email_key, m.consent_source, m.consent_at FROM memberships m JOIN contacts c ON c.id = m.contact_id"
            " JOIN lists l ON l.id = m.list_id WHERE l.name = ?", (list_name,)).fetchall()
    finally:
        conn.close()
    for key, source, consent_at in rows:
        name, _, line = source.rpartition(" line ")
        expected_key, expected_at = files[name][int(line)]
        assert (key, consent_at) == (expected_key, expected_at.replace(" ", "T") + "Z"), source
    return len(rows)


def test_each_new_membership_gets_its_own_rows_consent(project: Path, cli: Cli, tmp_path: Path) -> None:
    # New memberships are numbered in bulk rather than looked up one by one;
    # three imports take the three ways (all new; new next to changed members;
    # new next to unchanged members) and each row's consent must land on the
    # membership of that row's address.
    import random

    rng = random.Random(5)

    def person(i: int, name: str = "Ann") -> tuple[str, str, str]:
        return (f"P{i:04d}.{rng.randrange(10**6)}@Example.org", name,
                f"2024-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00")

    first = [person(i) for i in rng.sample(range(400), 300)]
    files = {"a.csv": _write_people(tmp_path / "a.csv", first)}
    assert imported(cli, str(tmp_path / "a.csv"), "--list", "news")["imported"] == 300
    assert _check_consent_rows(project, "news", files) == 300

    changed = [(email, "Bea", at) for email, _, at in first[:60]]  # existing members, new first name
    second = changed + [person(i) for i in range(400, 480)]
    rng.shuffle(second)
    files["b.csv"] = _write_people(tmp_path / "b.csv", second)
    result = imported(cli, str(tmp_path / "b.csv"), "--list", "news")
    assert (result["imported"], result["updated"]) == (80, 60)
    assert _check_consent_rows(project, "news", files) == 380

    third = first[100:150] + [person(i) for i in range(500, 540)]  # unchanged members and new people
    rng.shuffle(third)
    files["c.csv"] = _write_people(tmp_path / "c.csv", third)
    result = imported(cli, str(tmp_path / "c.csv"), "--list", "news")
    assert (result["imported"], result["unchanged"]) == (40, 50)
    assert _check_consent_rows(project, "news", files) == 420
