"""Erase and purge reach every copy mailcli made: exports, rejects files, previews, the whole folder."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from tests.privacy_support import ago, freeze

KARIN = "k.muller@ziggo.nl"
HENK = "henk.muller@ziggo.nl"
ANNA = "anna.devries@example.nl"
PEOPLE = f"email,first_name,last_name\n{KARIN},Karin,Muller\n{HENK},Henk,Muller\n{ANNA},Anna,de Vries\n"


@pytest.fixture
def world(project: Path, cli, monkeypatch: pytest.MonkeyPatch):
    clock = freeze(monkeypatch)
    (project / "people.csv").write_text(PEOPLE, encoding="utf-8")
    assert cli("import", "people.csv", "--list", "news", "--basis", "customer").exit_code == 0
    return project, clock


def _scan(root: Path, *needles: str, skip: tuple[Path, ...] = ()) -> list[str]:
    """Every file in the project folder that holds one of ``needles`` as a whole word or
    address (ASCII case ignored: ``k.muller@...`` is not in ``henk.muller@...``)."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(path == s or s in path.parents for s in skip):
            continue
        data = path.read_bytes()
        found += [f"{path.relative_to(root)}: {n}" for n in needles
                  if re.search(rb"(?<![\w.%+-])" + re.escape(n.encode()) + rb"(?![\w-])", data, re.I)]
    return found


def test_erase_removes_the_persons_exports_and_rejects_and_names_what_lies_elsewhere(world, cli,
                                                                                     tmp_path: Path) -> None:
    root, _ = world
    assert cli("privacy", "export", KARIN).exit_code == 0
    outside = tmp_path / "elsewhere" / "karin.zip"
    outside.parent.mkdir()
    assert cli("privacy", "export", KARIN, "-o", str(outside)).exit_code == 0
    assert cli("privacy", "export", HENK).exit_code == 0
    bad = root / "bad.csv"
    bad.write_text(f"email,first_name,consent_at\n{KARIN},Karin,yesterday-ish\n", encoding="utf-8")
    (root / "henk-bad.csv").write_text(f"email,first_name,consent_at\n{HENK},Henk,last week\n", encoding="utf-8")
    assert cli("import", "bad.csv", "--list", "news", "--basis", "customer", "--rejects", "rejects-karin.csv").exit_code in (0, 3)
    assert cli("import", "henk-bad.csv", "--list", "news", "--basis", "customer", "--rejects", "rejects-henk.csv").exit_code in (0, 3)
    assert KARIN in (root / "rejects-karin.csv").read_text(encoding="utf-8-sig")
    exports = {p.name for p in (root / "exports").iterdir()}

    result = cli("--json", "privacy", "erase", KARIN, "--yes")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    [karins] = [p for p in data["files_removed"] if p.startswith("exports/")]
    assert sorted(data["files_removed"]) == sorted([karins, "rejects-karin.csv"]) and karins[8:] in exports
    assert data["also_delete"] == [str(outside)]
    assert outside.exists()  # outside the project: named, never deleted by mailcli
    assert "also delete" in result.stderr and str(outside) in result.stderr
    # Henk's export and his rejects file (which holds henk.muller@..., not k.muller@...) stay.
    assert len(list((root / "exports").iterdir())) == 1 and (root / "rejects-henk.csv").exists()
    assert not (root / "rejects-karin.csv").exists()
    # Another contact's address that contains hers is no trace: no false alarm, no wrong advice.
    assert "trace" not in result.stderr and "purge" not in result.stderr
    assert not data["remnants"]
    assert _scan(root, KARIN, "Karin", skip=(root / "bad.csv", root / "people.csv")) == []


def test_exports_written_after_a_backup_are_still_reached_by_erasure_after_restoring_it(world, cli,
                                                                                       tmp_path: Path) -> None:
    # A restore brings back the database as it was, but not the files written
    # since: the register of written files is carried over, or an erasure
    # would no longer find them.
    root, clock = world
    assert cli("backup", "create").exit_code == 0
    backup = next((root / "backups").glob("*.db"))
    clock.advance(minutes=1)
    assert cli("privacy", "export", KARIN).exit_code == 0
    outside = tmp_path / "henk.zip"
    assert cli("privacy", "export", HENK, "-o", str(outside)).exit_code == 0
    assert cli("backup", "restore", str(backup), "--yes").exit_code == 0

    karin = json.loads(cli("--json", "privacy", "erase", KARIN, "--yes").stdout)
    assert [p for p in karin["files_removed"] if p.startswith("exports/")] and not list((root / "exports").iterdir())
    henk = json.loads(cli("--json", "privacy", "erase", HENK, "--yes").stdout)
    assert henk["also_delete"] == [str(outside)]


def test_rendered_previews_are_private_and_reached_by_erasure(world, cli) -> None:
    root, _ = world
    old = os.umask(0o022)
    try:
        assert cli("render", "newsletter", "--to", KARIN, "-o", "karin.html").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((root / "karin.html").stat().st_mode) == 0o600
    result = cli("--json", "privacy", "erase", KARIN, "--yes")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files_removed"] == ["karin.html"]
    assert not (root / "karin.html").exists()


def test_purge_removes_exports_past_their_retention_and_counts_them(world, cli) -> None:
    root, clock = world
    assert cli("privacy", "export", ANNA).exit_code == 0
    clock.advance(days=20)
    assert cli("privacy", "export", HENK).exit_code == 0
    clock.advance(days=15)  # Anna's export is 35 days old, Henk's 15: [retention] exports is 30d
    dry = cli("--json", "privacy", "purge", "--dry-run")
    assert dry.exit_code == 0 and json.loads(dry.stdout)["exports"] == 1
    assert len(list((root / "exports").iterdir())) == 2
    assert cli("privacy", "purge").exit_code == 0
    [left] = list((root / "exports").iterdir())
    assert b"henk" in left.read_bytes().lower() or left.stat().st_size > 0


def test_after_erase_and_after_purge_the_project_folder_holds_no_byte_of_the_person(world, cli) -> None:
    """A byte scan of the whole folder; only backups from before the erasure (which the
    erasure ledger covers when one is restored) may still hold them."""
    root, clock = world
    assert cli("backup", "create").exit_code == 0
    before = list((root / "backups").iterdir())
    assert cli("privacy", "export", KARIN).exit_code == 0
    assert cli("render", "newsletter", "--to", KARIN, "-o", "preview-karin.html").exit_code == 0
    clock.advance(days=1)
    assert cli("privacy", "erase", KARIN, "--yes").exit_code == 0
    needles = (KARIN, "Karin")
    skip = (root / "people.csv", *before)
    assert _scan(root, *needles, skip=skip) == []
    # The purge that removes someone else (an unsubscribe long ago) leaves no trace of either.
    assert cli("unsubscribe", ANNA).exit_code == 0
    clock.advance(days=40)
    assert cli("privacy", "purge").exit_code == 0
    assert _scan(root, *needles, ANNA, "de Vries", skip=skip) == []
    assert ago(0)  # the clock is the frozen one throughout
