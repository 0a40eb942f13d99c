"""Whole-database copies of a PostgreSQL project: ``pg_dump``, ``pg_restore`` and loading a dump.

A backup of a project on a server is a ``pg_dump`` archive in the custom
format (``-Fc``) of the one schema mailcli's tables live in: compressed,
consistent (``pg_dump`` reads everything in one snapshot, while sends and
``serve`` go on writing) and readable by PostgreSQL's own tools without
mailcli.

The client programs are found on ``PATH``, then in Debian's
``/usr/lib/postgresql/<major>/bin`` (newest first), or only in the folder
``MAILCLI_PG_BINDIR`` names. A client older than the server cannot read its
catalogue (``pg_dump`` refuses) or its archives, so the first one whose
major version is at least the server's is taken; none is a one-line error
naming what is missing. The password is never put on a command line, where
other users of the machine could read it: the child gets it in
``PGPASSWORD``, or libpq reads the ``.pgpass`` file as it always does.

Restoring loads the archive into the project's database in *one*
transaction of mailcli's own connection, so that the later erasures and
opt-outs are re-applied before anyone sees the restored rows and a failure
at any point leaves the database as it was: ``pg_restore`` turns the archive
into SQL (it needs no server for that), and :func:`load_script` runs that
SQL, statement blocks as they are and each table's ``COPY`` data through
psycopg's copy protocol. The live schema is renamed out of the way first
(:func:`set_schema_aside`) and dropped once the restored one stands in its
place, all in the same transaction; other sessions see the old schema until
the commit, then the restored one.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, MailcliError
from .backups import begins_with
from .url import DatabaseURL

if TYPE_CHECKING:
    from .postgres import PgConnection

BINDIR_ENV = "MAILCLI_PG_BINDIR"
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
MAGIC = b"PGDMP"  # the first bytes of a custom-format archive
SUFFIX = ".dump"


class ClientToolError(ConfigError):
    """pg_dump or pg_restore is missing, or older than the server (exit 4)."""


def _candidates(name: str, environ: Mapping[str, str]) -> list[Path]:
    named = environ.get(BINDIR_ENV, "").strip()
    if named:
        return [Path(named) / name]
    found: list[Path] = []
    on_path = shutil.which(name, path=environ.get("PATH"))
    if on_path:
        found.append(Path(on_path))

    def major(folder: str) -> int:
        part = Path(folder).parent.name
        return int(part) if part.isdigit() else 0

    for folder in sorted(glob.glob(DEBIAN_BINDIRS), key=major, reverse=True):
        found.append(Path(folder) / name)
    return [p for p in found if p.is_file() and os.access(p, os.X_OK)]


def client_major(binary: Path) -> int | None:
    """The major version ``binary --version`` reports (``pg_dump (PostgreSQL) 15.18`` → 15)."""
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", done.stdout)
    return int(match.group(1)) if match and done.returncode == 0 else None


def find_client(name: str, server_major: int, environ: Mapping[str, str] | None = None) -> Path:
    """The ``name`` program (pg_dump, pg_restore) of the server's major version or newer."""
    env = os.environ if environ is None else environ
    where = f"in {env[BINDIR_ENV]} ({BINDIR_ENV})" if env.get(BINDIR_ENV, "").strip() else \
        f"on PATH or in {DEBIAN_BINDIRS}"
    seen: list[str] = []
    for candidate in _candidates(name, env):
        major = client_major(candidate)
        if major is not None and major >= server_major:
            return candidate
        if major is not None:
            seen.append(f"{candidate} is version {major}")
    if seen:
        raise ClientToolError(
            f"{name} is older than the PostgreSQL {server_major} server ({'; '.join(seen)}), and it cannot read a"
            " newer server's database", hint=f"install the client of version {server_major} or newer"
                                             f" (Debian: apt-get install postgresql-client-{server_major})")
    raise ClientToolError(f"{name} is not installed (looked {where})",
                          hint=f"install PostgreSQL's client programs, version {server_major} or newer"
                               f" (Debian: apt-get install postgresql-client-{server_major})")


def server_major(conn: PgConnection) -> int:
    """The server's major version (150018 → 15)."""
    return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000


def current_schema(conn: PgConnection) -> str:
    """The schema mailcli's tables live in (the first of the session's search path)."""
    return str(conn.execute("SELECT current_schema()").fetchone()[0])


def connection_string(url: DatabaseURL) -> str:
    """libpq's connection string for ``url``, without the password."""
    from psycopg.conninfo import make_conninfo

    kwargs = url.connect_kwargs()
    kwargs.pop("password", None)
    return make_conninfo("", **kwargs)


def child_environment(url: DatabaseURL) -> dict[str, str]:
    """The environment of a client program: this one's, with the password in ``PGPASSWORD`` when
    mailcli knows it (else libpq finds it in ``PGPASSWORD`` or ``.pgpass`` as usual)."""
    env = dict(os.environ)
    password = url.connect_kwargs().get("password")
    if password:
        env["PGPASSWORD"] = password
    return env


def _failed(what: str, done: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return f"{what} failed: {lines[-1] if lines else f'exit status {done.returncode}'}"


def dump(conn: PgConnection, dest: Path) -> None:
    """Write the project's schema, with its rows, as a custom-format archive to the new file ``dest``."""
    from .db import StoreError

    url = conn.url
    binary = find_client("pg_dump", server_major(conn))
    argv = [str(binary), "--format=custom", f"--schema={current_schema(conn)}", f"--file={dest}",
            f"--dbname={connection_string(url)}"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=child_environment(url))
    except OSError as exc:
        raise StoreError(f"Cannot run {binary}: {exc.strerror}") from None
    if done.returncode != 0:
        raise StoreError(_failed(f"pg_dump of {url.display}", done))


def is_archive(path: Path) -> bool:
    """Does the file start like a custom-format pg_dump archive?"""
    return begins_with(path, MAGIC)


def archive_to_sql(conn: PgConnection, archive: Path, dest: Path, *, shown: Path) -> None:
    """The SQL that rebuilds ``archive`` (without owners or grants), written to ``dest``."""
    binary = find_client("pg_restore", server_major(conn))
    argv = [str(binary), "--no-owner", "--no-privileges", f"--file={dest}", str(archive)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True)
    except OSError as exc:
        raise MailcliError(f"Cannot run {binary}: {exc.strerror}") from None
    if done.returncode != 0:
        raise MailcliError(f"{shown} cannot be read: {_failed('pg_restore', done)}; nothing was changed",
                           hint="pick another backup with `mailcli backup list`")


# -- loading the SQL --------------------------------------------------------------

_COPY = re.compile(rb"^COPY [^\n]* FROM stdin;$")
_CHUNK = 1 << 20  # bytes of COPY data sent at once


def load_script(conn: PgConnection, path: Path) -> None:
    """Run the SQL ``pg_restore`` wrote into the open transaction of ``conn``.

    Statements between two tables' data run as they are (several at once,
    as psql would send them); each ``COPY ... FROM stdin`` streams its rows
    through psycopg's copy protocol, so a large table is never held in
    memory. psql's ``\\restrict`` and ``\\unrestrict`` lines (which guard a
    script psql runs) are left out; any other psql command means the file is
    not what ``pg_restore`` writes for mailcli's archives, and is refused.
    The script changes session settings (an empty search path above all);
    they are set back afterwards, so the rest of the transaction runs as the
    connection did before.
    """
    raw = conn.raw
    path_before = str(conn.execute("SELECT current_setting('search_path')").fetchone()[0])
    lock_timeout = str(conn.execute("SELECT current_setting('lock_timeout')").fetchone()[0])
    statements: list[bytes] = []
    with path.open("rb") as handle:
        lines = iter(handle)
        for line in lines:
            bare = line.rstrip(b"\n")
            if bare.startswith((b"\\restrict ", b"\\unrestrict ")):
                continue
            if bare.startswith(b"\\"):
                raise MailcliError(f"{path.name}: an unexpected psql command in the archive ({bare[:40]!r})")
            if not _COPY.match(bare):
                statements.append(line)
                continue
            if b"".join(statements).strip():
                raw.execute(b"".join(statements))
            statements = []
            _copy_rows(raw, bare[:-1], lines, path)
    if b"".join(statements).strip():
        raw.execute(b"".join(statements))
    conn.execute("RESET ALL")
    conn.execute("SELECT set_config('search_path', ?, false)", (path_before,))
    conn.execute("SELECT set_config('lock_timeout', ?, false)", (lock_timeout,))
    conn.execute("SET TIME ZONE 'UTC'")


def _copy_rows(raw: Any, statement: bytes, lines: Iterator[bytes], path: Path) -> None:
    """Stream one table's rows, up to the ``\\.`` line that ends them, into ``statement``."""
    buffer: list[bytes] = []
    size = 0
    with raw.cursor() as cur, cur.copy(statement) as copy:
        for row in lines:
            if row in (b"\\.\n", b"\\."):
                break
            buffer.append(row)
            size += len(row)
            if size >= _CHUNK:
                copy.write(b"".join(buffer))
                buffer, size = [], 0
        else:
            raise MailcliError(f"{path.name}: the data of {statement.decode('utf-8', 'replace')!r} is cut short")
        if buffer:
            copy.write(b"".join(buffer))


def set_schema_aside(conn: PgConnection, schema: str, aside: str) -> None:
    """Rename the live schema (its tables, functions and triggers with it) to ``aside``."""
    from psycopg import sql

    conn.raw.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(schema), sql.Identifier(aside)))


def drop_schema(conn: PgConnection, schema: str) -> None:
    from psycopg import sql

    conn.raw.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def schema_exists(conn: PgConnection, schema: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = ?", (schema,)).fetchone() is not None


# What a schema holds, as comparable text: tables and their columns,
# constraints, indexes, triggers, functions and views. Two schemas that give
# the same rows here were made by the same migrations.
_SIGNATURE = """
SELECT 'column', c.table_name || '.' || c.column_name,
       c.data_type || ' ' || c.is_nullable || ' ' || c.is_identity || ' ' || coalesce(c.column_default, '')
  FROM information_schema.columns c WHERE c.table_schema = current_schema()
UNION ALL
SELECT 'constraint', t.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
  FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
 WHERE t.relnamespace = current_schema()::regnamespace
UNION ALL
SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()
UNION ALL
SELECT 'trigger', g.tgname, pg_get_triggerdef(g.oid)
  FROM pg_trigger g JOIN pg_class t ON t.oid = g.tgrelid
 WHERE t.relnamespace = current_schema()::regnamespace AND NOT g.tgisinternal
UNION ALL
SELECT 'function', p.proname, md5(p.prosrc) FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace
UNION ALL
SELECT 'view', viewname, definition FROM pg_views WHERE schemaname = current_schema()
"""


def schema_signature(conn: Any) -> dict[tuple[str, str], str]:
    """(kind, name) -> definition of everything in the current schema (see ``_SIGNATURE``)."""
    return {(str(kind), str(name)): str(definition) for kind, name, definition in conn.execute(_SIGNATURE)}

