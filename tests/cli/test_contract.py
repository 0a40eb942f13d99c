"""The user-facing contract: help everywhere, documented commands, clean stdout."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from mailcli.app import COMMANDS, app, hoist_global_options
from mailcli.errors import ExitCode

from ..conftest import REPO, Cli, run_mailcli


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if hasattr(command, "list_commands"):  # the root loads its command modules on demand
        for name in sorted(command.list_commands(typer.Context(command))):
            yield from _commands(command.get_command(typer.Context(command), name), (*path, name))


ALL_COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "mailcli")
def test_every_command_has_help(cli: Cli, path: tuple[str, ...]) -> None:
    result = cli(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


def test_command_table_names_what_each_module_registers() -> None:
    # A command module is imported only when one of its commands runs, found
    # through COMMANDS: a command missing there would vanish from the CLI.
    modules = sorted(p.stem for p in (REPO / "mailcli" / "commands").glob("*.py") if p.stem != "__init__")
    for module in modules:
        commands = typer.Typer()
        importlib.import_module(f"mailcli.commands.{module}").register(commands)
        registered = set(typer.main.get_group(commands).commands)
        assert registered == {name for name, owner in COMMANDS.items() if owner == module}, module


def test_a_command_imports_only_its_own_module(project: Path) -> None:
    probe = ("import sys; from mailcli.app import main; code = main(sys.argv[1:]); "
             "print(sorted(m for m in sys.modules if m.startswith('mailcli.commands.')),"
             " 'mailcli.send.engine' in sys.modules, code)")
    for args, expected in ((["--version"], "[] False 0"), (["lists"], "['mailcli.commands.lists'] False 0")):
        result = subprocess.run([sys.executable, "-c", probe, *args], cwd=project, capture_output=True, text=True,
                                check=False)
        assert result.stdout.splitlines()[-1] == expected, result.stderr


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


def test_usage_errors_read_like_every_other_error(tmp_path: Path) -> None:
    # One "Error:" line and a "Hint:", as for every other error; no box drawn around it.
    for args, message in ((["import", "leden.csv"], "Error: Missing option '--list' / '-l'."),
                          (["imprt"], "Error: No such command 'imprt'. Did you mean 'import'?"),
                          (["contacts", "--limit", "x"], "Error: Invalid value for '--limit': 'x' is not a valid int range.")):
        proc = run_mailcli(*args, cwd=tmp_path)
        assert proc.returncode == ExitCode.USAGE
        assert proc.stdout == ""
        command = " ".join(["mailcli", *(a for a in args[:1] if a != "imprt")])
        assert proc.stderr.splitlines() == [message, f"Hint: {command} --help shows the usage and examples"]


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


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "mailcli")
def test_help_reads_as_written(cli: Cli, path: tuple[str, ...]) -> None:
    # Every command has examples, indented under their heading; config
    # sections like [retention] survive the markup; a summary is one sentence.
    command = typer.main.get_command(app)
    for name in path:
        command = command.get_command(typer.Context(command), name)
    text = cli(*path, "--help", env={"COLUMNS": "200"}).stdout
    lines = text.splitlines()
    headings = [i for i, line in enumerate(lines) if line.strip() in ("Example:", "Examples:", "Example (crontab):")]
    if not hasattr(command, "list_commands") or not path:
        assert headings, f"no examples in `mailcli {' '.join(path)} --help`"
    for i in headings:
        example = next(line for line in lines[i + 1:] if line.strip())
        indent = len(lines[i]) - len(lines[i].lstrip())
        assert len(example) - len(example.lstrip()) > indent, (lines[i], example)
    written = [command.help or "", *(getattr(param, "help", None) or "" for param in command.params)]
    for section in re.findall(r"\\?\[([a-z_]+)\]", "\n".join(written)):
        assert f"[{section}]" in text, section
    summary = (command.help or "").strip().split("\n\n")[0]
    assert "\n" not in summary.strip(), summary
