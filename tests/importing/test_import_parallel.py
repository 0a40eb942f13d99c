"""Big files are read by two worker processes; the result must be exactly that of one reader.

Each test imports the same file twice into fresh projects — once read in
this process, once by the workers (the size threshold lowered so small files
take that path) — and compares everything the user can see: the JSON
summary, contacts, memberships with their consent evidence, and the rejects
file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailcli.importer import feed as importfeed
from mailcli.importer import workers
from mailcli.importer.feed import find_split
from tests.conftest import Cli


def snapshot(root: Path) -> tuple[list[Any], list[Any]]:
    conn = sqlite3.connect(root / "mailcli.db")
    try:
        contacts = conn.execute(
            "SELECT email, email_key, first_name, last_name, attributes, status, source FROM contacts"
            " ORDER BY email_key").fetchall()
        memberships = conn.execute(
            "SELECT c.email_key, l.name, m.status, m.consent_source, m.consent_method, m.consent_at, m.consent_ip,"
            " m.confirmed_at IS NULL FROM memberships m JOIN contacts c ON c.id = m.contact_id"
            " JOIN lists l ON l.id = m.list_id ORDER BY 1, 2").fetchall()
    finally:
        conn.close()
    return contacts, memberships


def second_ends_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read the first worker's output only once the second worker has ended,
    as when the second half is quicker to read.

    No setting orders two processes, so this one test patches the worker
    class: it is the only way to reach that order every time.
    """
    real_worker = workers.ReaderProcess
    started: list[Any] = []

    class LateFirst(real_worker):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

        def read(self) -> Iterator[tuple[bytes, dict[str, Any], bytes]]:
            if self is started[-2] and not started[-1].eof:
                return iter(())
            return super().read()

    monkeypatch.setattr(workers, "ReaderProcess", LateFirst)


def import_both(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: Path, *args: str,
                before: tuple[str, ...] = (), first_late: bool = False) -> tuple[dict[str, Any], str]:
    """Import ``path`` read here and by workers; assert the same outcome; the
    workers' summary and how they read the file (what ``-v`` says)."""
    from datetime import datetime, timezone

    from mailcli import clock

    monkeypatch.setattr(clock, "now", lambda: datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc))
    if first_late:
        second_ends_first(monkeypatch)
    outcomes = []
    read = []
    for name, threshold in (("here", 1 << 62), ("workers", 0)):
        root = tmp_path / name
        assert cli("init", str(root)).exit_code == 0
        monkeypatch.chdir(root)
        for command in before:
            assert cli(*command.split()).exit_code == 0
        monkeypatch.setattr(importfeed, "PARALLEL_MIN_BYTES", threshold)
        result = cli("-v", "import", str(path), "--list", "news", "--basis", "customer", "--json", "--rejects",
                     str(root / "rejects.csv"),
                     *args)
        rejects = (root / "rejects.csv").read_bytes() if (root / "rejects.csv").exists() else b""
        summary = json.loads(result.stdout) if result.stdout.strip() else None
        stderr = result.stderr.replace(str(root), "ROOT").splitlines()
        read += [line.split(": ", 1)[1] for line in stderr if line.startswith(f"{path}: read by")]
        stderr = [line for line in stderr if not line.startswith(f"{path}: read by")]
        outcomes.append((result.exit_code, summary, stderr, snapshot(root), rejects))
    assert outcomes[0] == outcomes[1]
    if outcomes[1][0] == 0:
        assert read[0] == "read by this process"
        assert read[1].startswith("read by two processes")
    return outcomes[1][1] or {}, read[-1] if read else ""


WITHDRAWN = "the second half began inside a quoted field"


def messy_rows(count: int) -> list[str]:
    """Records with quoted line breaks, rejects, blank lines and repeats across the whole file."""
    lines = []
    for i in range(count):
        if i % 97 == 13:
            lines.append(f"broken{i}@@example.org,X,Y,Delft,2023-01-01 10:00:00,\"two\nlines\"")
        elif i % 89 == 7:
            lines.append(f"p{i}@example.org,A,B,Delft,yesterday,")
        elif i % 83 == 5:
            lines.append("")
        elif i % 50 == 1 and i > count // 2:
            # A repeat, late in the file, of an address from the first half.
            lines.append(f"P{i - count // 2}@EXAMPLE.org,,Later{i},Gouda,,\"note {i}\"")
        else:
            notes = f"\"line one\nline two of {i}\"" if i % 3 == 0 else f"note {i}"
            lines.append(f"p{i}@example.org,Anna{i},de Vries,Delft,2023-02-{1 + i % 28:02d} 08:00:00,{notes}")
    return lines


HEADER = "email,first_name,last_name,city,optin_time,notes"


def plain_rows(count: int) -> list[str]:
    return [f"p{i}@example.org,Anna,de Vries,Delft,2023-02-01 08:00:00,n" for i in range(count)]


def write_csv(tmp_path: Path, rows: list[str]) -> Path:
    """``contacts.csv`` with HEADER and ``rows``, LF line ends, UTF-8."""
    path = tmp_path / "contacts.csv"
    path.write_text("\n".join([HEADER, *rows, ""]), encoding="utf-8")
    return path


@pytest.fixture(params=["sqlite", "marshal"])
def frames(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How rows cross from the workers: serialized SQLite databases (Python
    3.11+) or marshalled tuples (what 3.10 has), as ``-v`` says it."""
    if request.param == "sqlite" and not workers.SQLITE_FRAMES:
        pytest.skip("serialized SQLite frames need sqlite3.Connection.serialize (Python 3.11+)")
    if request.param == "marshal":
        monkeypatch.setattr(workers, "SQLITE_FRAMES", False)
    return "rows handed over as SQLite databases" if request.param == "sqlite" else "rows handed over as marshalled tuples"


@pytest.mark.parametrize("shape", ["utf-8 crlf bom", "cp1252 semicolon", "sep line", "lf", "tussenvoegsel"])
def test_workers_give_the_result_of_one_reader(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               shape: str, frames: str) -> None:
    rows = messy_rows(3000)
    path = tmp_path / "contacts.csv"
    if shape == "utf-8 crlf bom":
        path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join([HEADER, *rows, ""]).replace("\n\"", "\n\"").encode())
    elif shape == "cp1252 semicolon":
        text = "\r\n".join([HEADER.replace(",", ";"), *(r.replace(",", ";") + ";Zoë" * 0 for r in rows), ""])
        path.write_bytes(text.replace("Delft", "Düsseldorf").encode("cp1252"))
    elif shape == "sep line":
        path.write_text("sep=|\n" + "\n".join([HEADER.replace(",", "|"), *(r.replace(",", "|") for r in rows), ""]),
                        encoding="utf-8")
    elif shape == "tussenvoegsel":  # the notes column read as Dutch name prefixes
        path.write_text("\n".join([HEADER.replace("notes", "Tussenvoegsel"), *rows, ""]), encoding="utf-8")
    else:
        path.write_text("\n".join([HEADER, *rows, ""]), encoding="utf-8")
    summary, read = import_both(cli, tmp_path, monkeypatch, path)
    assert summary["imported"] > 2500 and summary["duplicates"] > 10 and summary["rejected"] > 50
    assert frames in read and WITHDRAWN not in read


@pytest.mark.parametrize("first_late", [False, True], ids=["as-they-come", "second-ends-first"])
def test_a_record_across_the_middle_is_read_by_the_first_worker(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_late: bool, frames: str) -> None:
    # A stray quote inside an unquoted field (the reader keeps it as a
    # character) makes every later quoted line break look unquoted to the
    # split, so the second worker starts inside a record: its rows must be
    # withdrawn and the first worker must read on to the end.
    rows = [f"p{i}@example.org,Anna,de Vries,Delft,2023-02-01 08:00:00,\"a\nb {i}\"" for i in range(2000)]
    rows[3] = 'p3@example.org,Anna,de Vries,Delft,2023-02-01 08:00:00,5" floppy'
    path = write_csv(tmp_path, rows)
    summary, read = import_both(cli, tmp_path, monkeypatch, path, first_late=first_late)
    assert WITHDRAWN in read and frames in read
    assert summary["imported"] == 2000


def test_opt_outs_in_both_halves(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frames: str) -> None:
    # An UNSUB_TIME column: opt-out rows in both halves, and two addresses
    # subscribed by one row and opted out by another in the other half, the
    # opt-out first (p102) or last (p1900).
    rows = []
    for i in range(2000):
        unsub = "2024-01-01 10:00:00" if i % 97 == 5 or i == 1900 else ""
        rows.append(f"p{i}@example.org,Anna,de Vries,Delft,2023-02-01 08:00:00,{unsub}")
    rows[10] = "p1900@example.org,Anna,de Vries,Delft,2023-02-01 08:00:00,"
    rows[1600] = "P102@EXAMPLE.org,Anna,de Vries,Delft,2023-02-01 08:00:00,"
    path = tmp_path / "contacts.csv"
    path.write_text("\n".join([HEADER.replace("notes", "unsub_time"), *rows, ""]), encoding="utf-8")
    summary, read = import_both(cli, tmp_path, monkeypatch, path)
    opted = len(range(5, 2000, 97)) + 1
    assert (summary["opted_out"], summary["suppressed"], summary["imported"]) == (opted, opted + 2, 2000 - opted - 2)
    assert frames in read


def test_suppressed_addresses_in_both_halves(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_csv(tmp_path, plain_rows(2000))
    earlier = tmp_path / "earlier.csv"
    earlier.write_text("email\np1500@example.org\n", encoding="utf-8")
    summary, _ = import_both(cli, tmp_path, monkeypatch, path, before=(
        f"import {earlier} --list news --basis customer", "unsubscribe p1500@example.org --list news",  # left this list
        "unsubscribe p10@example.org", "unsubscribe P1990@example.org"))  # on the suppression list
    assert (summary["suppressed"], summary["imported"]) == (3, 1997)


def test_an_undecodable_byte_in_the_second_half_names_the_first_bad_line(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes("\n".join([HEADER, *plain_rows(2000), ""]).encode() + "z@example.org,Zoë,,Delft,,n\n".encode("cp1252"))
    import_both(cli, tmp_path, monkeypatch, path, "--encoding", "utf-8")
    conn = sqlite3.connect(tmp_path / "workers" / "mailcli.db")
    assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0


def test_cp1252_lines_in_both_halves_are_read_as_cp1252_and_named_once(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [row.replace("Anna", "Zoë").encode() for row in plain_rows(2000)]  # a UTF-8 file
    for at in (5, 1500):
        rows[at] = f"c{at}@example.org,José,Peña,Köln,,n".encode("cp1252")
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"\n".join([HEADER.encode(), *rows, b""]))
    summary, _ = import_both(cli, tmp_path, monkeypatch, path)
    assert (summary["reencoded"], summary["reencoded_lines"]) == (2, [7, 1502])
    conn = sqlite3.connect(tmp_path / "workers" / "mailcli.db")
    assert conn.execute("SELECT first_name, last_name FROM contacts WHERE email = 'c1500@example.org'"
                        ).fetchone() == ("José", "Peña")


def test_cp1252_lines_just_after_the_split_are_named_once_not_by_both_workers(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first worker's decoder reads ahead of its records, past the line
    # where the second worker starts: it logged those lines too.
    rows = [row.replace("Anna", "Zoë").encode() for row in plain_rows(4000)]
    cp1252 = list(range(1995, 2030, 5))
    for at in cp1252:
        rows[at] = f"c{at}@example.org,José,,Köln,,n".encode("cp1252")
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"\n".join([HEADER.encode(), *rows, b""]))
    summary, _ = import_both(cli, tmp_path, monkeypatch, path)
    assert (summary["reencoded"], summary["reencoded_lines"]) == (len(cp1252), [at + 2 for at in cp1252])


def test_domains_counted_by_the_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailcli.importer import open_csv
    from mailcli.store import open_store
    from mailcli.store.imports import import_batches

    rows = [f"p{i}@example{i % 7}.org,Anna,de Vries,Delft,2023-02-01 08:00:00,n" for i in range(1500)]
    path = write_csv(tmp_path, rows)
    counted = []
    for threshold in (1 << 62, 0):
        monkeypatch.setattr(importfeed, "PARALLEL_MIN_BYTES", threshold)
        store = open_store(tmp_path / f"{threshold}.db")
        with open_csv(path) as source:
            feed = importfeed.ImportFeed(source, count_domains=True)
            import_batches(store, feed.batches, list_name="news", secret=b"s" * 32, source="contacts.csv")
            assert feed.workers_used == (threshold == 0)
        store.close()
        counted.append(feed.domains)
    assert counted[0] == counted[1] == {f"example{d}.org": 1500 // 7 + (d < 1500 % 7) for d in range(7)}


def physical_lines(text: str) -> int:
    """Line ends as the csv reader counts them: LF, CRLF or a lone CR."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_split_points_start_a_line_outside_quotes_and_know_its_number(tmp_path: Path, ending: bytes) -> None:
    records = [b'a%d,"x%sy"' % (i, ending) if i % 4 == 0 else b"a%d,b\rc" % i if i % 9 == 0 else b"a%d,b" % i
               for i in range(400)]
    data = ending.join([b"h1,h2", *records, b""])
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    split = find_split(path, len(data))
    assert split is not None
    offset, line = split
    assert data[offset - 1:offset] == b"\n" and data[:offset].count(b'"') % 2 == 0
    before = data[:offset].decode()
    assert line == physical_lines(before) + 1


def test_split_counts_a_crlf_that_falls_between_two_read_chunks(tmp_path: Path) -> None:
    # find_split reads the first half in 4 MiB chunks and counts CRs (and
    # quotes) only in chunks that have any: the one CRLF of this otherwise
    # LF-only, quote-free file has its CR at the end of the first chunk.
    chunk = 1 << 22
    data = bytearray(b"email,name\n")
    while len(data) < chunk - 200:
        data += b"someone%d@example.org,Anna\n" % len(data)
    data += b"crlf@example.org," + b"x" * (chunk - 1 - len(data) - len(b"crlf@example.org,")) + b"\r\n"
    assert data[chunk - 1:chunk + 1] == b"\r\n"
    while len(data) < 3 * chunk:
        data += b"someone%d@example.org,Anna\n" % len(data)
    path = tmp_path / "t.csv"
    path.write_bytes(bytes(data))
    split = find_split(path, len(data))
    assert split is not None
    offset, line = split
    before = bytes(data[:offset]).decode()
    assert before.endswith("\n") and line == physical_lines(before) + 1


def test_a_failed_worker_is_one_line_and_changes_nothing(
        cli: Cli, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    path = write_csv(tmp_path, plain_rows(500))
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 3\n", encoding="utf-8")
    broken.chmod(0o755)
    monkeypatch.setattr(importfeed, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(sys, "executable", str(broken))
    result = cli("import", str(path), "--list", "news", "--basis", "customer")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.splitlines()[0] == "Error: import worker stopped unexpectedly (exit status 3)"
    assert "Traceback" not in result.output
    assert snapshot(project) == ([], [])


def test_workers_do_not_import_a_mailcli_folder_in_the_current_directory(
        cli: Cli, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_csv(tmp_path, plain_rows(500))
    (project / "mailcli").mkdir()
    (project / "mailcli" / "__init__.py").write_text("raise SystemExit('imported from the current folder')\n")
    monkeypatch.setattr(importfeed, "PARALLEL_MIN_BYTES", 0)
    result = cli("import", str(path), "--list", "news", "--basis", "customer", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["imported"] == 500
