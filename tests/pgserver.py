"""A real PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` in a temporary folder.

The server runs as an unprivileged user (``postgres`` when the suite runs as
root, since PostgreSQL refuses to run as root; else the user running the
suite), listens on a free loopback port only, and asks for a password over
TCP (scram-sha-256), so a wrong or missing password is refused as on a real
server. Each test gets a database of its own. ``.ci/system-packages``
installs the server; where it cannot be had, the tests that need it skip,
saying why.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "mailcli_test"
# The tests' server trades durability for speed; a benchmark passes the server's own defaults ("").
TEST_SETTINGS = "-c fsync=off -c full_page_writes=off -c max_connections=60 -c shared_buffers=32MB"


def find_bindir() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``: ``pg_config --bindir``, else the newest Debian install."""
    candidates: list[str] = []
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0, reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    bindir: Path
    base: Path
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    user: str = SUPERUSER
    settings: str = TEST_SETTINGS
    _as: list[str] = field(default_factory=list)
    _serial: int = 0

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "LC_ALL": "C.UTF-8", "TZ": "UTC"})

    def start(self) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            runuser = shutil.which("runuser")
            self._as = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c"]
            if not runuser:
                raise RuntimeError("runuser is missing: cannot start PostgreSQL as an unprivileged user")
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres")
        data = self.base / "data"
        done = self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", self.user, f"--pwfile={pwfile}",
                         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--locale=C.UTF-8")
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        last = ""
        for _ in range(5):  # another process may take the free port first
            self.port = free_port()
            options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 {self.settings}"
            done = self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.base / "log"),
                             "-o", options, "-w", "-t", "60", "start")
            if done.returncode == 0:
                return
            last = done.stderr.strip() or done.stdout.strip()
        log = (self.base / "log").read_text(errors="replace")[-2000:] if (self.base / "log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {last}\n{log}")

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate", "-w", "stop", timeout=60)

    def url(self, dbname: str, *, user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser on the ``postgres`` database."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # test setup, names made here

    def create_database(self, *, icu_locale: str | None = None) -> str:
        """A new, empty database; its name. ``icu_locale``: its text sorts and folds by
        that language's rules (ICU), as a server set up for it does, rather than by bytes."""
        self._serial += 1
        name = f"t{os.getpid()}_{self._serial}"
        locale = f" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}'" if icu_locale else ""
        self.admin(f'CREATE DATABASE "{name}"{locale}')
        return name


def start_server(settings: str = TEST_SETTINGS) -> tuple[PostgresServer | None, str]:
    """A running server (started with ``settings``), or None and why none could be started."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "psycopg is not installed (pip install -e '.[test]')"
    bindir = find_bindir()
    if bindir is None:
        return None, "PostgreSQL server binaries (initdb, pg_ctl) not found; .ci/system-packages installs them"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root and there is no postgres user to run the server as"
    base = Path(tempfile.mkdtemp(prefix="mailcli-pg-"))
    server = PostgresServer(bindir=bindir, base=base, settings=settings)
    try:
        server.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        shutil.rmtree(base, ignore_errors=True)
        return None, f"could not start PostgreSQL: {exc}"
    return server, ""
