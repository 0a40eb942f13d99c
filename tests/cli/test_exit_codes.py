"""Every documented exit code, reached through the command line in one place.

Scripts and cron jobs branch on these numbers (README, "Exit codes"), so each
one is produced here by the situation the table describes.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mailcli.errors import ExitCode

from ..conftest import Cli, project_rows, set_smtp
from ..smtpserver import SmtpServer, free_port

CSV = "email,first_name\nann@example.org,Ann\nbob@example.org,Bob\nnot-an-address,Nobody\n"


def _import(cli: Cli, project: Path, *extra: str) -> int:
    (project / "c.csv").write_text(CSV, encoding="utf-8")
    return cli("import", "c.csv", "--list", "news", "--basis", "customer", *extra).exit_code


def test_ok_and_rejected_rows_without_strict(project: Path, cli: Cli) -> None:
    assert _import(cli, project) == ExitCode.OK


def test_error_for_an_unknown_contact(project: Path, cli: Cli) -> None:
    result = cli("contacts", "show", "nobody@example.org")
    assert result.exit_code == ExitCode.ERROR
    assert result.stderr.startswith("Error:")


def test_usage_for_a_missing_file_and_for_send_without_yes(project: Path, cli: Cli) -> None:
    assert cli("import", "missing.csv", "--list", "news").exit_code == ExitCode.USAGE
    _import(cli, project)
    result = cli("send", "c1", "--template", "newsletter", "--list", "news")
    assert result.exit_code == ExitCode.USAGE and "--yes" in result.stderr


def test_partial_for_rejected_rows_with_strict(project: Path, cli: Cli) -> None:
    assert _import(cli, project, "--strict") == ExitCode.PARTIAL


def test_config_for_an_invalid_key(project: Path, cli: Cli) -> None:
    path = project / "mailcli.toml"
    path.write_text(path.read_text().replace("concurrency = 4", "concurrency = -1"))
    assert cli("lists").exit_code == ExitCode.CONFIG


def test_config_for_an_sqlite_too_old_for_mailcli(project: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ubuntu 20.04's SQLite, say, with a Python built against it: one line
    # before any command touches the database, not a syntax error half-way.
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    before = (project / "mailcli.db").read_bytes()
    result = cli("unsubscribe", "someone@example.org")
    assert result.exit_code == ExitCode.CONFIG
    assert result.stderr.splitlines()[0] == (
        "Error: This Python's sqlite3 module uses SQLite 3.31.1; mailcli needs 3.35.0 or later")
    assert "Traceback" not in result.stderr
    assert (project / "mailcli.db").read_bytes() == before


def test_transport_when_the_relay_is_down(project: Path, cli: Cli) -> None:
    _import(cli, project)
    port = free_port()
    set_smtp(project, "127.0.0.1", port, extra=["connect_backoff = 0.1"])
    config = project / "mailcli.toml"  # connections are retried for retry_window first
    config.write_text(config.read_text().replace('retry_window = "2m"', 'retry_window = "1s"'))
    result = cli("send", "c1", "--template", "newsletter", "--list", "news", "--yes")
    assert result.exit_code == ExitCode.TRANSPORT
    assert f"127.0.0.1:{port}" in result.stderr


def test_interrupted_by_sigterm_mid_send(project: Path, cli: Cli) -> None:
    rows = "email\n" + "".join(f"p{i}@example.org\n" for i in range(60))
    (project / "many.csv").write_text(rows, encoding="utf-8")
    assert cli("import", "many.csv", "--list", "news", "--basis", "customer").exit_code == 0
    with SmtpServer() as server:
        server.delay = 0.1
        set_smtp(project, "127.0.0.1", server.port)
        config = project / "mailcli.toml"
        config.write_text(config.read_text().replace("concurrency = 4", "concurrency = 1"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailcli", "send", "c1", "--template", "newsletter", "--list", "news", "--yes"],
            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert server.wait_for(3)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert "Traceback" not in stderr
    assert 3 <= len(server.messages) < 60  # stopped part-way; test_send.py shows the rerun completes it


def test_a_reader_that_quits_early_leaves_the_exit_code_as_it_was(project: Path) -> None:
    # `mailcli import big.csv 2>&1 | head -1` exited 1 after the import had
    # committed: the closed pipe at the next line written was taken for a failure.
    (project / "c.csv").write_text(CSV, encoding="utf-8")
    for args, expected in ((["c.csv"], ExitCode.OK), (["missing.csv"], ExitCode.USAGE)):
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailcli", "import", *args, "--list", "news", "--basis", "customer", "--json"],
            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        proc.stdout.close()  # the reader is gone before the first line is written
        assert proc.wait(timeout=120) == expected
    assert project_rows(project, "SELECT count(*) FROM contacts") == [(2,)]  # committed


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_ctrl_c_while_python_loads_mailcli_is_interrupted_not_a_traceback(tmp_path: Path, signal_name: str) -> None:
    """A Ctrl-C (or a SIGTERM: a service manager, a CI timeout) in the first
    moments of a command, while Python still imports typer and mailcli's
    modules: one line and exit 130, as within a command."""
    # Python runs sitecustomize before the command; it sends the process the
    # signal the moment typer starts to load, as a Ctrl-C or kill at that instant does.
    (tmp_path / "sitecustomize.py").write_text(
        "import builtins, os, signal\n"
        "_real = builtins.__import__\n"
        "def _import(name, *args, **kwargs):\n"
        "    if name == 'typer':\n"
        "        builtins.__import__ = _real\n"
        f"        os.kill(os.getpid(), signal.{signal_name})\n"
        "    return _real(name, *args, **kwargs)\n"
        "builtins.__import__ = _import\n",
        encoding="utf-8",
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "mailcli", "--version"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, proc.stderr
    assert proc.stderr.splitlines()[0] == "Error: Interrupted"
    assert "Traceback" not in proc.stderr
    # The installed `mailcli` command starts at the same place as `python -m mailcli`.
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    assert 'mailcli = "mailcli.console:main"' in pyproject
