"""The register of data-subject requests: due dates, one extension, closed by the command that answers."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import Engine
from tests.privacy_support import connect, freeze

ANNA = "anna@example.nl"


def _add_anna(cli, root: Path) -> None:
    source = root / "people.csv"
    source.write_text(f"email,first_name,last_name\n{ANNA},Anna,Verbeek\n", encoding="utf-8")
    assert cli("import", str(source), "--list", "news", "--basis", "customer").exit_code == 0


def _add(cli, kind: str, *extra: str) -> dict:
    result = cli("--json", "privacy", "requests", "add", ANNA, "--type", kind, *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_request_is_due_one_calendar_month_after_it_was_received(project: Path, cli, monkeypatch) -> None:
    freeze(monkeypatch, "2026-03-02T12:00:00Z")
    _add_anna(cli, project)
    view = _add(cli, "access", "--received", "2026-01-31")
    assert (view["type"], view["status"], view["due_at"]) == ("access", "overdue", "2026-02-28T00:00:00Z")
    assert ANNA not in json.dumps(view)
    assert _add(cli, "erasure")["due_at"] == "2026-04-02T12:00:00Z"
    bad = cli("privacy", "requests", "add", ANNA, "--type", "deletion")
    assert bad.exit_code == 2 and "not a request type" in bad.stderr
    future = cli("privacy", "requests", "add", ANNA, "--type", "access", "--received", "2026-04-01")
    assert future.exit_code == 2 and "in the future" in future.stderr


def test_listing_exits_3_while_one_is_overdue_and_0_once_it_is_answered(project: Path, cli, monkeypatch) -> None:
    clock = freeze(monkeypatch, "2026-03-02T12:00:00Z")
    _add_anna(cli, project)
    request = _add(cli, "access")
    listed = cli("--json", "privacy", "requests")
    assert listed.exit_code == 0 and [r["id"] for r in json.loads(listed.stdout)] == [request["id"]]
    clock.advance(days=32)
    overdue = cli("--json", "privacy", "requests")
    assert overdue.exit_code == 3, overdue.output
    assert json.loads(overdue.stdout)[0]["status"] == "overdue" and "overdue" in overdue.stderr
    # The export answers an access request: it is closed, and the listing is quiet again.
    assert cli("privacy", "export", ANNA, "-o", "anna.zip").exit_code == 0
    after = cli("--json", "privacy", "requests")
    assert after.exit_code == 0 and json.loads(after.stdout) == []
    [closed] = json.loads(cli("--json", "privacy", "requests", "--all").stdout)
    assert (closed["status"], closed["closed_by"]) == ("closed", "privacy export")


def test_an_extension_is_given_once_within_the_first_month(project: Path, cli, monkeypatch) -> None:
    clock = freeze(monkeypatch, "2026-03-02T12:00:00Z")
    _add_anna(cli, project)
    first, second = _add(cli, "access"), _add(cli, "portability")
    no_reason = cli("privacy", "requests", "extend", str(first["id"]), "--reason", " ")
    assert no_reason.exit_code == 2
    extended = cli("--json", "privacy", "requests", "extend", str(first["id"]), "--reason", "three lists to search")
    assert extended.exit_code == 0, extended.output
    view = json.loads(extended.stdout)
    assert (view["due_at"], view["extended_months"]) == ("2026-06-02T12:00:00Z", 2)
    again = cli("privacy", "requests", "extend", str(first["id"]), "--reason", "more")
    assert again.exit_code == 1 and "only once" in again.stderr
    clock.advance(days=40)
    late = cli("privacy", "requests", "extend", str(second["id"]), "--reason", "too late")
    assert late.exit_code == 1 and "within the first month" in late.stderr
    # The extended one is not overdue; the other is.
    listed = json.loads(cli("--json", "privacy", "requests").stdout)
    assert {r["id"]: r["status"] for r in listed} == {first["id"]: "open", second["id"]: "overdue"}


@pytest.mark.parametrize("args", [["privacy", "requests", "extend", "99999999999999999999999", "--reason", "x"],
                                  ["privacy", "requests", "close", "99999999999999999999999"],
                                  ["privacy", "audit", "--limit", "99999999999999999999999"]])
def test_a_number_beyond_what_the_database_stores_is_refused_as_the_range(project: Path, cli, args) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert "99999999999999999999999 is not in the range" in result.stderr.splitlines()[0]
    assert "x<=9223372036854775807" in result.stderr.splitlines()[0]


def test_each_command_closes_the_requests_it_answers(project: Path, cli, monkeypatch) -> None:
    freeze(monkeypatch)
    _add_anna(cli, project)
    ids = {kind: _add(cli, kind)["id"] for kind in ("rectification", "restriction", "objection", "erasure")}
    assert cli("contacts", "set", ANNA, "last_name=Verbeek-Smit").exit_code == 0
    assert cli("privacy", "restrict", ANNA).exit_code == 0
    assert cli("privacy", "object", ANNA).exit_code == 0
    closed = {r["id"]: r["closed_by"] for r in json.loads(cli("--json", "privacy", "requests", "--all").stdout)}
    assert closed == {ids["rectification"]: "contacts set", ids["restriction"]: "privacy restrict",
                      ids["objection"]: "privacy object", ids["erasure"]: None}
    assert cli("privacy", "erase", ANNA, "--yes").exit_code == 0
    closed = {r["id"]: r["closed_by"] for r in json.loads(cli("--json", "privacy", "requests", "--all").stdout)}
    assert closed[ids["erasure"]] == "privacy erase"


def test_requests_are_exported_audited_and_erased_to_a_keyed_record(project: Path, cli, monkeypatch) -> None:
    freeze(monkeypatch)
    _add_anna(cli, project)
    request = _add(cli, "rectification")
    assert cli("privacy", "requests", "extend", str(request["id"]), "--reason", "Anna Verbeek asked by phone"
               ).exit_code == 0
    assert cli("privacy", "export", ANNA, "-o", "anna.zip").exit_code == 0
    with zipfile.ZipFile(project / "anna.zip") as archive:
        doc = json.loads(archive.read("subject.json"))
        assert "requests.csv" in archive.namelist()
    assert [(r["kind"], r["extension_reason"]) for r in doc["requests"]] == [
        ("rectification", "Anna Verbeek asked by phone")]
    actions = [e["action"] for e in json.loads(cli("--json", "privacy", "audit").stdout)]
    assert "request_add" in actions and "request_extend" in actions
    assert cli("privacy", "erase", ANNA, "--yes").exit_code == 0
    with connect(project) as conn:
        rows = conn.execute("SELECT kind, received_at, closed_at, closed_by, extension_reason FROM requests").fetchall()
    # What stays: that a request was received and handled, and when; not the free text.
    assert [(kind, closed_by, reason) for kind, _, _, closed_by, reason in rows] == [
        ("rectification", "privacy erase", None)]
    assert b"Verbeek" not in (project / "mailcli.db").read_bytes()


# -- rectification that lasts ------------------------------------------------------------

ORIGINAL = "email,first_name,last_name,woonplaats\nanna@example.nl,Anna,de Bruijn,Zoetermeer\n" \
           "bob@example.nl,Bob,Jansen,Delft\n"


def _contact(cli, email: str) -> dict:
    return json.loads(cli("--json", "contacts", "show", email).stdout)


def test_a_correction_outlasts_a_reimport_of_the_original_file(project: Path, cli, engine: Engine) -> None:
    engine.use(project)
    (project / "leden.csv").write_text(ORIGINAL, encoding="utf-8")
    assert cli("import", "leden.csv", "--list", "news", "--basis", "customer").exit_code == 0
    assert cli("contacts", "set", ANNA, "last_name=de Bruijn-Smit", "woonplaats=Utrecht").exit_code == 0
    again = cli("--json", "import", "leden.csv", "--list", "news", "--basis", "customer")
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["kept_rectified"] == 1 and summary["updated"] == 0
    anna = _contact(cli, ANNA)
    assert (anna["last_name"], anna["attributes"]["woonplaats"]) == ("de Bruijn-Smit", "Utrecht")
    text = cli("import", "leden.csv", "--list", "news", "--basis", "customer")
    assert "the correction was kept" in text.stderr
    # A field never corrected still follows the file; a changed row for someone else updates as before.
    (project / "leden.csv").write_text(ORIGINAL.replace("Anna,", "Anna-Maria,").replace("Delft", "Leiden"),
                                       encoding="utf-8")
    changed = json.loads(cli("--json", "import", "leden.csv", "--list", "news", "--basis", "customer").stdout)
    assert changed["updated"] == 2 and changed["kept_rectified"] == 1
    anna = _contact(cli, ANNA)
    assert (anna["first_name"], anna["last_name"], anna["attributes"]["woonplaats"]) == (
        "Anna-Maria", "de Bruijn-Smit", "Utrecht")
    assert _contact(cli, "bob@example.nl")["attributes"]["woonplaats"] == "Leiden"
    # Told to, the file wins.
    forced = json.loads(cli("--json", "import", "leden.csv", "--list", "news", "--basis", "customer", "--overwrite-rectified").stdout)
    assert forced["kept_rectified"] == 0 and forced["updated"] == 1
    anna = _contact(cli, ANNA)
    assert (anna["last_name"], anna["attributes"]["woonplaats"]) == ("de Bruijn", "Zoetermeer")
