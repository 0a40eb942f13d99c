"""The user-facing contract: help everywhere, documented commands, clean stdout."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from mailcli.app import app, hoist_global_options
from mailcli.errors import ExitCode

from .conftest import REPO, Cli, run_mailcli


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


ALL_COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "mailcli")
def test_every_command_has_help(cli: Cli, path: tuple[str, ...]) -> None:
    result = cli(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


def test_every_command_is_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [" ".join(path) for path in ALL_COMMANDS if path and f"mailcli {' '.join(path)}" not in readme]
    assert not missing, f"not documented in README.md: {missing}"


def test_exit_codes_are_the_documented_enum() -> None:
    assert {code.name: code.value for code in ExitCode} == {
        "OK": 0, "ERROR": 1, "USAGE": 2, "PARTIAL": 3, "CONFIG": 4, "TRANSPORT": 5, "INTERRUPTED": 130,
    }
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for code in ExitCode:
        assert re.search(rf"\|\s*{code.value}\s*\|", readme), f"exit code {code.value} not in README"


def test_unknown_option_is_usage_error(cli: Cli) -> None:
    result = cli("init", "--frobnicate")
    assert result.exit_code == ExitCode.USAGE


def test_global_options_anywhere() -> None:
    assert hoist_global_options(["report", "spring", "--json", "-C", "x"]) == ["--json", "-C", "x", "report", "spring"]
    assert hoist_global_options(["render", "t", "--", "--json"]) == ["render", "t", "--", "--json"]


def test_no_traceback_and_no_ansi_when_piped(tmp_path: Path) -> None:
    proc = run_mailcli("config", "show", cwd=tmp_path)
    assert proc.returncode == ExitCode.CONFIG
    assert "Traceback" not in proc.stderr
    assert "\x1b[" not in proc.stderr + proc.stdout
    assert proc.stdout == ""
    assert proc.stderr.count("\n") <= 2
