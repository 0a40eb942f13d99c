"""``mailcli import`` of an Excel workbook and of a Mailchimp export ZIP, as
downloaded: the same database as the CSV import of the same data, and bad
files refused with one line."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import zipfile
from pathlib import Path

import openpyxl
import pytest

from tests.conftest import Cli

DATA = Path(__file__).parent.parent / "data"
MAILCHIMP = {"subscribed_members_export_1a2b3c.csv": "mailchimp_export.csv",
             "unsubscribed_members_export_1a2b3c.csv": "mailchimp_unsubscribed.csv",
             "cleaned_members_export_1a2b3c.csv": "mailchimp_cleaned.csv"}


def make_project(cli: Cli, root: Path, secret_from: Path | None = None) -> Path:
    if secret_from is not None:  # the same key (init keeps it): the suppression lists can be compared
        (root / ".mailcli").mkdir(mode=0o700, parents=True)
        shutil.copy(secret_from / ".mailcli" / "secret", root / ".mailcli" / "secret")
    result = cli("init", str(root))
    assert result.exit_code == 0, result.output
    return root


def run_import(cli: Cli, root: Path, *args: str, code: int = 0) -> dict[str, object]:
    result = cli("-C", str(root), "import", *args, "--json")
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if code == 0 else {"stderr": result.stderr}


def state(root: Path) -> dict[str, list[tuple[object, ...]]]:
    """What an import leaves, without the file names and times it records."""
    conn = sqlite3.connect(root / "mailcli.db")
    try:
        return {
            "contacts": conn.execute(
                "SELECT email, email_key, first_name, last_name, attributes, status FROM contacts"
                " ORDER BY email_key").fetchall(),
            "memberships": conn.execute(
                "SELECT c.email_key, l.name, m.status, m.consent_at, m.consent_ip, m.unsubscribed_at"
                " FROM memberships m JOIN contacts c ON c.id = m.contact_id JOIN lists l ON l.id = m.list_id"
                " ORDER BY 1, 2").fetchall(),
            "suppressions": conn.execute("SELECT hmac, scope, reason, channel FROM suppressions ORDER BY 1, 2")
            .fetchall(),
            "events": conn.execute("SELECT kind, channel, scope FROM events ORDER BY 1, 2, 3").fetchall(),
        }
    finally:
        conn.close()


def counts(data: dict[str, object]) -> dict[str, object]:
    return {k: data[k] for k in ("imported", "updated", "unchanged", "suppressed", "rejected", "duplicates",
                                 "opted_out")}


# ------------------------------------------------------------------ workbooks

CSV_TEXT = """E-mailadres;Voornaam;Tussenvoegsel;Achternaam;Telefoon;Postcode;Lid sinds;OPTIN_TIME;Actief
anna@example.nl;Anna;de;Jong;0612345678;1015;2019-04-01;2023-03-30 09:15:02;TRUE
Bram.Visser@Example.COM;Bram;;Visser;31201234567;2511;2020-01-15;2022-12-01 18:40:00;FALSE
;;;;;;;;
chloe@example.org;Chloé;;Müller;0201234567;0101;2021-06-30;2024-01-05 07:00:00;TRUE
not-an-address;Eva;;Bakker;;;;;
anna@example.nl;Anna;de;Jong-Smit;0612345678;1015;2019-04-01;2023-03-30 09:15:02;TRUE
"""


def write_workbook(path: Path, *, title: bool = True, second_sheet: bool = False) -> None:
    """The rows of CSV_TEXT as people keep them in Excel: a title merged over
    the columns and a blank row above the header, phone numbers and
    postcodes typed as numbers (leading zero kept by a 0000 format), real
    dates and times, booleans, blank rows, a stray formatted empty cell."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Leden"
    if title:
        sheet.append(["Ledenlijst Vereniging Utrecht, stand 1 december"])
        sheet.merge_cells("A1:I1")
        sheet.append([])
    sheet.append(["E-mailadres", "Voornaam", "Tussenvoegsel", "Achternaam", "Telefoon", "Postcode", "Lid sinds",
                  "OPTIN_TIME", "Actief"])
    rows = [
        ["anna@example.nl", "Anna", "de", "Jong", 612345678, 1015, dt.date(2019, 4, 1),
         dt.datetime(2023, 3, 30, 9, 15, 2), True],
        ["Bram.Visser@Example.COM", "Bram", None, "Visser", 31201234567, 2511, dt.date(2020, 1, 15),
         dt.datetime(2022, 12, 1, 18, 40), False],
        [],
        ["chloe@example.org", "Chloé", None, "Müller", 201234567, 101, dt.date(2021, 6, 30),
         dt.datetime(2024, 1, 5, 7, 0), True],
        ["not-an-address", "Eva", None, "Bakker"],
        ["anna@example.nl", "Anna", "de", "Jong-Smit", 612345678, 1015, dt.date(2019, 4, 1),
         dt.datetime(2023, 3, 30, 9, 15, 2), True],
    ]
    for row in rows:
        sheet.append(row)
        if row:
            number = sheet.max_row
            sheet.cell(number, 5).number_format = "0000000000" if row[0] != "Bram.Visser@Example.COM" else "0"
            sheet.cell(number, 6).number_format = "0000"
            sheet.cell(number, 7).number_format = "dd-mm-yyyy"
            sheet.cell(number, 8).number_format = "yyyy-mm-dd hh:mm:ss"
    sheet.cell(sheet.max_row + 3, 12).number_format = "0.00"  # formatted, empty: no row, no column
    if second_sheet:
        other = workbook.create_sheet("Oud-leden")
        other.append(["Email", "Naam"])
        other.append(["oud@example.org", "Otto Oud"])
    workbook.save(path)


def test_a_workbook_imports_as_the_csv_of_the_same_data(cli: Cli, tmp_path: Path) -> None:
    csv_path = tmp_path / "leden.csv"
    csv_path.write_text(CSV_TEXT, encoding="utf-8")
    xlsx_path = tmp_path / "Leden 2026.xlsx"
    write_workbook(xlsx_path)
    from_csv = make_project(cli, tmp_path / "a")
    from_xlsx = make_project(cli, tmp_path / "b", secret_from=from_csv)
    by_csv = run_import(cli, from_csv, str(csv_path), "--list", "leden")
    by_xlsx = run_import(cli, from_xlsx, str(xlsx_path), "--list", "leden")
    assert counts(by_xlsx) == counts(by_csv) == {
        "imported": 3, "updated": 0, "unchanged": 0, "suppressed": 0, "rejected": 1, "duplicates": 1,
        "opted_out": 0}
    assert by_xlsx["sheet"] == "Leden"
    # Rejected rows carry their row in the sheet (the title and blank row above count).
    assert by_xlsx["rejects"] == [{"line": 8, "reason": "invalid email address: An email address must have an @-sign"}]
    assert state(from_xlsx) == state(from_csv)
    anna = dict(zip(("email", "key", "first", "last", "attributes", "status"), state(from_xlsx)["contacts"][0],
                    strict=True))
    assert (anna["first"], anna["last"]) == ("Anna", "de Jong-Smit")
    assert json.loads(str(anna["attributes"])) == {
        "telefoon": "0612345678", "postcode": "1015", "lid_sinds": "2019-04-01", "actief": "TRUE"}
    assert state(from_xlsx)["memberships"][0][3] == "2023-03-30T09:15:02Z"  # a real datetime: the consent time
    # The same workbook again changes nothing.
    again = run_import(cli, from_xlsx, str(xlsx_path), "--list", "leden")
    assert (again["imported"], again["updated"], again["unchanged"]) == (0, 0, 3)


def test_sheet_option_and_a_missing_sheet(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "leden.xlsx"
    write_workbook(path, second_sheet=True)
    root = make_project(cli, tmp_path / "p")
    # The former members' sheet has no opt-in column: they are asked to confirm first.
    data = run_import(cli, root, str(path), "--list", "oud", "--sheet", "Oud-leden", "--status", "unconfirmed")
    assert (data["imported"], data["sheet"]) == (1, "Oud-leden")
    assert state(root)["contacts"][0][:4] == ("oud@example.org", "oud@example.org", "Otto", "Oud")
    before = state(root)
    result = cli("-C", str(root), "import", str(path), "--list", "oud", "--sheet", "Leden 2025")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == f"Error: {path}: no sheet named 'Leden 2025'"
    assert "'Leden', 'Oud-leden'" in result.stderr
    assert "Traceback" not in result.stderr
    # --sheet on a CSV file is a mistake, said as such.
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("email\nx@example.org\n", encoding="utf-8")
    result = cli("-C", str(root), "import", str(csv_path), "--list", "oud", "--sheet", "Leden")
    assert result.exit_code == 2
    assert "--sheet" in result.stderr and "not an Excel workbook" in result.stderr
    assert state(root) == before


def test_rejects_of_a_workbook_are_written_as_csv(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "leden.xlsx"
    write_workbook(path, title=False)
    root = make_project(cli, tmp_path / "p")
    rejects = tmp_path / "rejected.csv"
    run_import(cli, root, str(path), "--list", "leden", "--rejects", str(rejects))
    lines = rejects.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith("E-mailadres,Voornaam,Tussenvoegsel,Achternaam")
    assert lines[1].startswith("not-an-address,Eva,,Bakker,")
    assert ",6,invalid email address" in lines[1]


# ------------------------------------------------------------ Mailchimp ZIPs

def write_mailchimp_zip(path: Path, files: dict[str, str] | None = None) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data_file in (files or MAILCHIMP).items():
            archive.write(DATA / data_file, f"members_export_1a2b3c/{name}")


def test_a_mailchimp_zip_imports_as_its_three_csv_files(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "members_export_1a2b3c.zip"
    write_mailchimp_zip(path)
    by_files = make_project(cli, tmp_path / "a")
    by_zip = make_project(cli, tmp_path / "b", secret_from=by_files)
    # The files one by one, opt-outs first, as the archive is read.
    parts = [run_import(cli, by_files, str(DATA / name), "--list", "news")
             for name in ("mailchimp_cleaned.csv", "mailchimp_unsubscribed.csv", "mailchimp_export.csv")]
    result = cli("-C", str(by_zip), "import", str(path), "--list", "news")
    assert result.exit_code == 0, result.output
    # One summary for the archive.
    assert result.stderr.count("row(s) for list news") == 1
    assert "3 CSV file(s), opt-outs first: members_export_1a2b3c/cleaned_members_export_1a2b3c.csv" in result.stderr
    assert state(by_zip) == state(by_files)
    rows = state(by_zip)
    # Bram (unsubscribed) and Daan (cleaned) are in the subscribed file too: never subscribed, kept only as hashes.
    assert [c[1] for c in rows["contacts"]] == ["anna.dejong@example.nl", "chloé@xn--bcher-kva.example"]
    assert sorted((s[1], s[2]) for s in rows["suppressions"]) == [
        ("*", "bounced"), ("news", "unsubscribed"), ("news", "unsubscribed")]
    # --json counts are the sums of the three files, with the reject naming its file.
    again = make_project(cli, tmp_path / "c")
    data = run_import(cli, again, str(path), "--list", "news")
    for key in ("imported", "updated", "unchanged", "suppressed", "rejected", "duplicates", "opted_out"):
        assert data[key] == sum(int(p[key]) for p in parts), key  # type: ignore[call-overload]
    assert (data["imported"], data["opted_out"], data["rejected"]) == (2, 3, 1)
    assert data["rejects"] == [{"line": 7, "reason": "invalid email address: An email address must have an @-sign"
                                " (in members_export_1a2b3c/subscribed_members_export_1a2b3c.csv)"}]
    assert data["files"] == [f"members_export_1a2b3c/{n}" for n in (
        "cleaned_members_export_1a2b3c.csv", "unsubscribed_members_export_1a2b3c.csv",
        "subscribed_members_export_1a2b3c.csv")]
    # The consent of who stayed names the archive and the file.
    conn = sqlite3.connect(again / "mailcli.db")
    (source,) = conn.execute("SELECT consent_source FROM memberships m JOIN contacts c ON c.id = m.contact_id"
                             " WHERE c.email_key = 'anna.dejong@example.nl'").fetchone()
    assert source == "members_export_1a2b3c.zip:members_export_1a2b3c/subscribed_members_export_1a2b3c.csv line 2"
    # Again: nothing changes.
    data = run_import(cli, again, str(path), "--list", "news")
    assert (data["imported"], data["updated"]) == (0, 0)


def test_a_zip_is_one_transaction_and_its_rejects_one_file(cli: Cli, tmp_path: Path) -> None:
    root = make_project(cli, tmp_path / "p")
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.write(DATA / "mailchimp_unsubscribed.csv", "unsubscribed_members.csv")
        archive.writestr("subscribed_members.csv", "Naam,Telefoon\nAnna,0612345678\n")
    before = state(root)
    result = cli("-C", str(root), "import", str(broken), "--list", "news")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith(
        f"Error: {broken}: subscribed_members.csv: no email column (columns found: Naam, Telefoon)")
    assert state(root) == before  # the unsubscribed file's opt-outs were not kept either
    path = tmp_path / "export.zip"
    write_mailchimp_zip(path)
    rejects = tmp_path / "rejected.csv"
    run_import(cli, root, str(path), "--list", "news", "--rejects", str(rejects))
    lines = rejects.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith("file,Email Address,First Name,")
    assert lines[1].startswith("members_export_1a2b3c/subscribed_members_export_1a2b3c.csv,not-an-address,Eva,")


# ------------------------------------------------------------------ bad files

def _cfb(path: Path, encrypted: bool) -> None:
    """The head of an OLE compound file, as an encrypted .xlsx or an old .xls starts."""
    name = ("EncryptionInfo" if encrypted else "Workbook").encode("utf-16-le")
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504) + name + bytes(4096))


@pytest.mark.parametrize("case", ["not-a-workbook", "encrypted", "xls", "bomb", "no-csv", "damaged", "chart-only",
                                  "encrypted-zip"])
def test_bad_spreadsheets_and_archives_exit_2_with_one_line(cli: Cli, tmp_path: Path, case: str) -> None:
    root = make_project(cli, tmp_path / "p")
    run_import(cli, root, str(DATA / "dutch_excel.csv"), "--list", "news", "--basis", "customer")
    suffix = {"no-csv": ".zip", "bomb": ".zip", "damaged": ".zip", "encrypted-zip": ".zip"}.get(case, ".xlsx")
    path = tmp_path / f"{case}{suffix}"
    expected = {
        "not-a-workbook": "not an Excel workbook (.xlsx)",
        "encrypted": "the workbook is encrypted (protected with a password)",
        "xls": "an Excel 97-2003 workbook (.xls)",
        "bomb": "refused as a ZIP bomb",
        "no-csv": "a ZIP archive with no CSV file in it (notes.txt)",
        "damaged": "a damaged ZIP archive",
        "chart-only": "not a readable Excel workbook",
        "encrypted-zip": "is encrypted (the archive has a password)",
    }[case]
    if case == "not-a-workbook":
        path.write_text("email\nann@example.org\n", encoding="utf-8")
    elif case in ("encrypted", "xls"):
        _cfb(path, case == "encrypted")
    elif case == "bomb":  # 64 MiB of zeros deflate to about 64 KiB
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            with archive.open("subscribed_members.csv", "w") as member:
                member.write(b"Email Address\n")
                for _ in range(64):
                    member.write(bytes(1 << 20))
    elif case == "no-csv":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "hallo")
    elif case == "damaged":
        write_mailchimp_zip(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "chart-only":  # a ZIP that names a workbook but holds none that parses
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("[Content_Types].xml", "<Types/>")
            archive.writestr("xl/workbook.xml", "<workbook><sheets>")
    elif case == "encrypted-zip":
        write_mailchimp_zip(path)
        data = bytearray(path.read_bytes())
        # Set the "encrypted" flag of every header (local and central).
        for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            start = 0
            while (found := data.find(signature, start)) >= 0:
                data[found + flag_at] |= 1
                start = found + 4
        path.write_bytes(bytes(data))
    before = state(root)
    result = cli("-C", str(root), "import", str(path), "--list", "news")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"Error: {path}: "), lines
    assert expected in lines[0], lines
    assert "Traceback" not in result.stderr
    assert len([line for line in lines if line.startswith("Error")]) == 1
    assert state(root) == before
