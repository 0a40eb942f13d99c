"""Shared fixtures: isolation from the user's machine, a CLI runner, projects.

Every test runs in its own temporary folder with a temporary HOME, no colour,
a fixed terminal width and no MAILCLI_* variables from the outside.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mailcli.app import app

from .pgserver import PostgresServer, start_server

REPO = Path(__file__).resolve().parent.parent

# A shell starts background jobs (`make test &`, a CI step run with `&`) with
# Ctrl-C ignored, and the mailcli processes the tests start would inherit
# that: the tests that press Ctrl-C would then see it do nothing. A handler
# (unlike "ignore") is reset to the default in every program this one starts.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def isolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    for name in list(os.environ):
        if name.startswith(("MAILCLI_", "PG")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Cli:
    """Runs mailcli in-process (CliRunner) with exceptions not swallowed."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
                 catch_exceptions: bool = False) -> Result:
        result = self.runner.invoke(app, list(args), input=input, env=env, catch_exceptions=catch_exceptions)
        return Result(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def cli() -> Cli:
    return Cli()


def run_mailcli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a subprocess."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "mailcli", *args], cwd=cwd, env=full_env, capture_output=True,
        text=True, timeout=timeout, input=input,
    )


@pytest.fixture
def project(tmp_path: Path, cli: Cli) -> Path:
    """A fresh project made by `mailcli init` (cwd is the project folder)."""
    root = tmp_path / "proj"
    result = cli("init", str(root))
    assert result.exit_code == 0, result.output
    os.chdir(root)
    return root


def migrate_until(conn: Any, before: str) -> None:
    """Bring an empty database to where an earlier mailcli left it: every
    migration before ``before``, applied and recorded."""
    from mailcli.store.migrations import MIGRATIONS

    conn.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for name, step in MIGRATIONS:
        if name == before:
            return
        conn.executescript(step) if isinstance(step, str) else step(conn)
        conn.execute("INSERT INTO migrations VALUES (?, 'then')", (name,))
    raise AssertionError(f"no migration {before!r}")


def write_config(root: Path, text: str) -> Path:
    path = root / "mailcli.toml"
    path.write_text(text, encoding="utf-8")
    return path


def set_smtp(root: Path, host: str, port: int, *, security: str = "none", extra: Sequence[str] = (), **_: Any) -> None:
    """Point a project's [smtp] section at a local test server."""
    path = root / "mailcli.toml"
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[str] = []
    section = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        if section == "[smtp]" and stripped.split("=")[0].strip() in {"host", "port", "security", "rate"}:
            continue
        out.append(line)
        if stripped == "[smtp]":
            out += [f'host = "{host}"', f"port = {port}", f'security = "{security}"', 'rate = "0"', *extra]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run, started on first use (skips, saying why, where none can be)."""
    server, why = start_server()
    if server is None:
        pytest.skip(why)
    try:
        yield server
    finally:
        server.stop()
        import shutil

        shutil.rmtree(server.base, ignore_errors=True)


@dataclass
class PostgresDatabase:
    """A fresh database on the test server; ``env`` carries its password as libpq reads it."""

    server: PostgresServer
    name: str

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    @property
    def env(self) -> dict[str, str]:
        return {"PGPASSWORD": self.server.password}


@pytest.fixture
def pg_database(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> PostgresDatabase:
    """A new database of its own on the test server; PGPASSWORD is set for this test."""
    db = PostgresDatabase(postgres_server, postgres_server.create_database())
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    return db


def use_database(root: Path, url: str) -> None:
    """Point a project's ``[project] database`` at ``url``."""
    path = root / "mailcli.toml"
    lines = path.read_text(encoding="utf-8").splitlines()
    out = [line for line in lines if not line.strip().startswith("database =")]
    at = out.index("[project]") + 1
    out.insert(at, f'database = "{url}"')
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


@contextlib.contextmanager
def project_store(project: Path) -> Iterator[Any]:
    """The database the project names (a SQLite file or a server), open for the block."""
    from mailcli.config import resolve
    from mailcli.store import open_store

    store = open_store(resolve(directory=str(project)).project.store_location)
    try:
        yield store
    finally:
        store.close()


class Meanwhile:
    """A store's connection on which another program writes between two
    reads: right after the first statement whose SQL holds ``after``,
    ``write`` runs (on a connection of its own, committed) before the
    statement's rows are handed back. Everything else is the connection's."""

    def __init__(self, conn: Any, after: str, write: Any) -> None:
        self._conn = conn
        self._after = after
        self._write = write
        self.written = False

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        cursor = self._conn.execute(sql, parameters)
        if not self.written and self._after in sql:
            self.written = True
            self._write()
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def project_rows(project: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on the database the project names."""
    with project_store(project) as store:
        return [tuple(row) for row in store.conn.execute(sql, params).fetchall()]


@dataclass
class Engine:
    """One engine under test: how to point a project at it and read its database back."""

    name: str
    pg: PostgresDatabase | None = None
    env: dict[str, str] = field(default_factory=dict)

    def use(self, project: Path) -> None:
        if self.pg is not None:
            use_database(project, self.pg.url)

    def mailcli(self, project: Path, *args: str) -> Any:
        return run_mailcli(*args, cwd=project, env=self.env)

    def rows(self, project: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query on the project's database (the same SQL on both engines)."""
        return project_rows(project, sql, params)

    def location(self, project: Path) -> Any:
        """The project's database: its SQLite file, or the server's ``DatabaseURL``."""
        from mailcli.store.url import parse_database_url

        if self.pg is None:
            return project / "mailcli.db"
        return parse_database_url(self.pg.url, from_file=True)

    def execute(self, project: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Change the project's database as another program would (the same SQL on both engines)."""
        with project_store(project) as store:
            store.conn.execute(sql, params)

    def open_store(self, path: Path) -> Any:
        """A store on this engine: the SQLite file ``path``, or the test database on the server."""
        from mailcli.store import open_store
        from mailcli.store.url import parse_database_url

        if self.pg is None:
            return open_store(path)
        return open_store(parse_database_url(self.pg.url, from_file=True))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Each engine in turn: a test that takes it runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield Engine("sqlite")
        return
    pg: PostgresDatabase = request.getfixturevalue("pg_database")
    yield Engine("postgresql", pg, env=dict(pg.env))
