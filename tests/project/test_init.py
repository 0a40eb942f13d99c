"""`mailcli init`: a project a newcomer can use at once, with private files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from ..conftest import Cli


def test_init_creates_a_private_project(tmp_path: Path, cli: Cli) -> None:
    result = cli("init", "news")
    assert result.exit_code == 0, result.output
    root = tmp_path / "news"
    assert (root / "mailcli.toml").is_file()
    assert stat.S_IMODE((root / "mailcli.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / ".mailcli").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / ".mailcli" / "secret").stat().st_mode) == 0o600
    ignored = (root / ".gitignore").read_text()
    for pattern in ("*.db", "*.db-wal", "*.db-shm", ".mailcli/", "backups/", "exports/", ".env"):
        assert pattern in ignored
    assert "Next steps" in result.stderr
    assert result.stdout == ""


def test_git_ignores_the_personal_data_a_first_hour_leaves_behind(tmp_path: Path, cli: Cli) -> None:
    import subprocess

    assert cli("init", "news").exit_code == 0
    root = tmp_path / "news"
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    people = ["members_export.csv", "leden.csv", "rejected.csv", "Leden 2024.xlsx", "anna.eml", "preview.html",
              "mailcli.db", ".mailcli/secret", "backups/x.db", "exports/x.zip"]
    project = ["mailcli.toml", ".gitignore", "templates/newsletter/message.html"]
    for name in people:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *people, *project], cwd=root,
                             capture_output=True, text=True).stdout.split("\n")
    assert sorted(filter(None, ignored)) == sorted(people)


def test_init_twice_is_an_error(tmp_path: Path, cli: Cli) -> None:
    assert cli("init", "news").exit_code == 0
    secret = (tmp_path / "news" / ".mailcli" / "secret").read_bytes()
    result = cli("init", "news")
    assert result.exit_code == 1
    assert "already" in result.stderr
    assert (tmp_path / "news" / ".mailcli" / "secret").read_bytes() == secret


def test_init_json(tmp_path: Path, cli: Cli) -> None:
    result = cli("--json", "init", "news")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["config"].endswith("mailcli.toml")
