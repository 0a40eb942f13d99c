"""``mailcli migrate-store --to TARGET``: a project copied between a SQLite file and a PostgreSQL server.

A CI pipeline that outgrows one machine moves its SQLite file to a server;
a team that stops sharing moves back. What must survive the move is what
makes mailcli's promises: the send ledger (a send resumes without sending
anyone twice), the suppression list, the opt-outs, the audit log (its chain
verifies on the target under the same secret) and the erasure and opt-out
ledgers a restore re-applies.

1. **The target is checked**: a URL never carries a password (libpq reads
   it from ``PGPASSWORD`` or ``.pgpass``), the target is not the source, and
   a target that already holds a project is refused unless ``replace``.
2. **Both databases are held** as a restore holds one: no send, import,
   purge or restore runs on either meanwhile (a running send refuses the
   move; an import is waited for).
3. **One transaction of the target** receives every row of one snapshot of
   the source (:mod:`mailcli.store.transfer`), is checked — rows and a
   checksum per table equal to the source's, and the audit chain verified
   — and only then commits. A failure leaves the target as it was.
4. **What arrived meanwhile**: ``serve``, ``bounces`` and ``privacy erase``
   may still write to the source during the copy; every erasure and opt-out
   they record is also in the ledgers, whose new lines are re-applied to
   the target after the commit. The ledgers are copied beside the target
   when it keeps them elsewhere, and a SQLite target gets its audit head.

The source is left as it was: the project keeps using it until ``[project]
database`` names the target (``switch`` rewrites that line).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import audit, audithead
from .config import Settings
from .config.settings import EnvVars
from .errors import ConfigError, MailcliError, UsageError
from .ledgers import append_durably, ledger_end, ledger_folder
from .locks import Holder, database_lock, refuse_while_sending
from .optouts import LEDGER_NAME as OPTOUTS_LEDGER
from .optouts import optout_ledger_path, read_optouts
from .privacy.auditlog import verify_log
from .privacy.ledger import LEDGER_NAME as ERASURES_LEDGER
from .privacy.ledger import ledger_path, read_entries
from .privacy.reapply import Counts, Later, reapply
from .store import Store, open_store, transfer
from .store.db import Connection, busy_timeout
from .store.url import DatabaseURL, DatabaseURLError, looks_like_url, parse_database_url
from .tokens import audit_key

Location = Path | DatabaseURL


@dataclass(frozen=True, slots=True)
class MoveResult:
    source: str
    target: str
    tables: dict[str, int]
    audit_entries: int
    reapplied: int
    setting: str  # the value [project] database takes to use the target
    switched: bool = False
    ledgers_copied: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {"source": self.source, "target": self.target, "tables": self.tables,
                "rows": sum(self.tables.values()), "audit_entries": self.audit_entries, "audit_verified": True,
                "reapplied": self.reapplied, "database": self.setting, "switched": self.switched,
                "ledgers_copied": self.ledgers_copied}


def shown(location: Location) -> str:
    return location.display if isinstance(location, DatabaseURL) else str(location)


def parse_target(text: str, settings: Settings) -> Location:
    """The ``--to`` value: a ``postgresql://`` URL without a password, or a SQLite file (relative to here)."""
    if looks_like_url(text):
        try:
            return parse_database_url(text, from_file=True)
        except DatabaseURLError as exc:
            raise UsageError(f"--to: the URL {exc}") from None
    if not text.strip():
        raise UsageError("--to needs a SQLite file or a postgresql:// URL")
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        raise UsageError(f"--to: {path} is a folder, not a database file")
    return path


def _same(a: Location, b: Location) -> bool:
    if isinstance(a, DatabaseURL) and isinstance(b, DatabaseURL):
        return (a.host, a.port or 5432, a.dbname) == (b.host, b.port or 5432, b.dbname)
    if isinstance(a, Path) and isinstance(b, Path):
        return os.path.realpath(a) == os.path.realpath(b)
    return False


@contextlib.contextmanager
def holding(location: Location, command: str, *, on_wait: Callable[[Holder | None], None] | None) -> Iterator[None]:
    """The locks of a run that reads or replaces a whole database: no send, import, purge or restore meanwhile."""
    hint = "wait for it to finish; the lock is released when that process ends"
    with database_lock(location, "restore", command=command, busy="A restore or a move of the database is running",
                       hint=hint), \
            database_lock(location, "maintenance", command=command,
                          busy="Another purge, restore or move of the database is running", hint=hint):
        refuse_while_sending(location, f"A send is running on {shown(location)}, and the move would leave it"
                                       " behind", "move the project when the send has finished (Ctrl-C stops a"
                                                  " send; a rerun resumes it, on the new database too)")
        with database_lock(location, "import", command=command, wait=busy_timeout(), on_wait=on_wait,
                           busy="Another import or a restore is running", hint=hint):
            yield


def migrate_store(settings: Settings, source: Store, target: Location, *, replace: bool = False,
                  switch: bool = False,
                  on_lock_wait: Callable[[Holder | None], None] | None = None) -> MoveResult:
    """Copy the project in ``source`` to ``target`` (see the module docstring)."""
    here = settings.project.store_location
    if _same(here, target):
        raise UsageError(f"--to names the project's own database ({shown(target)})",
                         hint="name another SQLite file or PostgreSQL database")
    created = isinstance(target, Path) and not target.exists()
    with holding(here, "migrate-store", on_wait=on_lock_wait), holding(target, "migrate-store", on_wait=on_lock_wait):
        try:
            dest = open_store(target)
        except BaseException:
            _remove_new_file(target, created)
            raise
        try:
            marks = (ledger_end(ledger_path(settings)), ledger_end(optout_ledger_path(settings)))
            found = transfer.holds_data(dest.conn)
            if found and not replace:
                raise MailcliError(f"{shown(target)} already holds data ({', '.join(found[:4])}); nothing was copied",
                                   hint="add --replace to overwrite it with this project")
            audit.record_access(source, settings, "migrate-store", command="migrate-store",
                                detail={"to": shown(target)})
            tables, entries = _copy(settings, source, dest)
            late = Later(erasures=list(read_entries(settings, marks[0])),
                         optouts=list(read_optouts(settings, marks[1])))
            counts = Counts()
            reapply(dest, settings, late, counts)
            copied = _copy_ledgers(settings, target)
            if dest.url is None:
                audithead.reset(dest)
        except BaseException:
            dest.close()
            _remove_new_file(target, created)
            raise
        dest.close()
    setting = _setting(settings, target)
    switched = switch_database(settings, setting) if switch else False
    return MoveResult(source=shown(here), target=shown(target), tables=tables, audit_entries=entries,
                      reapplied=counts.reerased + counts.optouts, setting=setting, switched=switched,
                      ledgers_copied=copied)


def _remove_new_file(target: Location, created: bool) -> None:
    """A SQLite file this run created is removed when the copy into it failed."""
    if not created or not isinstance(target, Path):
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(OSError):
            os.unlink(f"{target}{suffix}")


def _copy(settings: Settings, source: Store, dest: Store) -> tuple[dict[str, int], int]:
    """Step 3: every row in one transaction of the target, checked before it commits."""
    dest.audit_key = audit_key(settings.secret())
    names = transfer.user_tables(source.conn)
    missing = sorted(set(names) - set(transfer.user_tables(dest.conn)))
    if missing:
        raise MailcliError(f"{dest.where} has no table {missing[0]!r}; nothing was copied")
    order = transfer.dependency_order(dest.conn if dest.url is None else source.conn, names)
    with transfer.snapshot(source):
        expected = {table: transfer.checksum(source.conn, table) for table in order}
        with dest.transaction() as conn:
            _fill(source, conn, order)
            entries = _check(dest, conn, expected)
    return {table: expected[table][0] for table in order}, entries


def _fill(source: Store, conn: Connection, order: list[str]) -> None:
    """Empty the target's tables, then copy the source's rows, parents first."""
    transfer.empty_tables(conn, order)
    derived = [t for t in order if t in transfer.DERIVED]
    for table in order:
        if table not in derived:
            transfer.copy_table(source.conn, conn, table)
    # The triggers counted the rows just copied; the source's own counts replace theirs.
    transfer.empty_tables(conn, derived)
    for table in derived:
        transfer.copy_table(source.conn, conn, table)
    transfer.continue_identities(conn, order)


def _check(dest: Store, conn: Connection, expected: dict[str, tuple[int, str]]) -> int:
    """Rows and checksum per table as the source's, and the audit chain whole; the number of entries."""
    for table, want in expected.items():
        got = transfer.checksum(conn, table)
        if got != want:
            raise MailcliError(f"The copy of {table} on {dest.where} differs from the source ({got[0]} rows,"
                               f" expected {want[0]}, or other content); nothing was copied")
    assert dest.audit_key is not None
    result = verify_log(conn, dest.audit_key, None, head_missing=None)
    if result.problems:
        first = result.problems[0]
        raise MailcliError(f"The audit log copied to {dest.where} does not verify (entry #{first.id}:"
                           f" {first.problem}); nothing was copied")
    return result.entries


def _target_ledgers(settings: Settings, target: Location) -> Path:
    """The ledger folder a project whose database is ``target`` uses."""
    if isinstance(target, DatabaseURL):
        return ledger_folder(settings.project.root / "mailcli.db")  # where a server's project keeps them
    return ledger_folder(target)


def _copy_ledgers(settings: Settings, target: Location) -> list[str]:
    """Append the source's ledger lines the target's ledgers lack (a restore there re-applies them)."""
    folder = _target_ledgers(settings, target)
    copied = []
    for path in (ledger_path(settings), optout_ledger_path(settings)):
        dest = folder / path.name
        if dest == path or not path.is_file():
            continue
        have = set(dest.read_text(encoding="utf-8").splitlines(keepends=True)) if dest.is_file() else set()
        lines = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
                 if line.endswith("\n") and line not in have]
        try:
            append_durably(dest, "".join(lines))
        except OSError as exc:
            raise MailcliError(f"Cannot write the ledger {dest}: {exc.strerror}",
                               hint=f"copy {path} there by hand: a restore re-applies it") from None
        copied.append(str(dest))
    return copied


def _setting(settings: Settings, target: Location) -> str:
    """What ``[project] database`` says to use ``target``: the URL, or the file relative to the configuration."""
    if isinstance(target, DatabaseURL):
        return target.display
    try:
        return str(target.relative_to(settings.project.root.resolve()))
    except ValueError:
        return str(target)


_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*(#.*)?$")
_DATABASE = re.compile(r"^\s*database\s*=")


# Complexity: a line-by-line edit of one key in one section (replaced, added to the section, or the section added).
def switch_database(settings: Settings, value: str) -> bool:
    """Make ``[project] database`` in mailcli.toml name ``value``, keeping every other line as it is."""
    path = settings.path
    if path is None:
        raise ConfigError("There is no mailcli.toml to change", hint=f'set [project] database = "{value}" yourself')
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    line = f"database = {json.dumps(value, ensure_ascii=False)}\n"
    section = None
    out: list[str] = []
    placed = False
    for text in lines:
        match = _SECTION.match(text)
        if match:
            if section == "project" and not placed:
                out.append(line)
                placed = True
            section = match.group(1).strip()
        if section == "project" and _DATABASE.match(text):
            if not placed:
                out.append(line)
                placed = True
            continue
        out.append(text)
    if not placed:
        if section != "project":
            out.append("\n[project]\n")
        out.append(line)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(out), encoding="utf-8")
    os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)
    return True


def overridden() -> bool:
    """Whether MAILCLI_DATABASE_URL names the database whatever mailcli.toml says."""
    return bool(os.environ.get(EnvVars.DATABASE_URL, "").strip())


__all__ = ["OPTOUTS_LEDGER", "ERASURES_LEDGER", "MoveResult", "migrate_store", "parse_target", "switch_database"]
