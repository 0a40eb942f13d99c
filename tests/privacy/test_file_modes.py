"""Who may read or change a project's files, whatever the umask; one secret per database."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_mailcli


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _under_umask(mask: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailcli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, preexec_fn=lambda: os.umask(mask))  # noqa: PLW1509 - one call, no threads


def test_init_and_render_are_private_whatever_the_umask(tmp_path: Path) -> None:
    made = _under_umask(0o000, "init", "proj", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    root = tmp_path / "proj"
    assert _mode(root) == 0o700 and _mode(root / ".mailcli") == 0o700
    assert _mode(root / "mailcli.toml") == 0o644 and _mode(root / ".mailcli" / "secret") == 0o600
    assert _mode(root / "mailcli.db") == 0o600
    assert not _mode(root / "templates") & 0o022
    assert all(not _mode(p) & 0o022 for p in (root / "templates").rglob("*"))
    for mask in (0o000, 0o022):
        out = _under_umask(mask, "render", "newsletter", "-o", f"preview-{mask}.html", cwd=root)
        assert out.returncode == 0, out.stderr
        assert _mode(root / f"preview-{mask}.html") == 0o600
    doctor = run_mailcli("--json", "doctor", cwd=root)
    assert '"file-modes"' in doctor.stdout and "not private" not in doctor.stdout


def test_a_secret_others_can_read_is_refused_with_the_fix(project: Path) -> None:
    secret = project / ".mailcli" / "secret"
    os.chmod(secret, 0o644)
    result = run_mailcli("contacts", cwd=project)
    assert result.returncode == 4
    assert result.stderr.startswith("Error: The secret") and f"chmod 600 {secret}" in result.stderr
    assert "Traceback" not in result.stderr and _mode(secret) == 0o644  # the user decides, not mailcli


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_configuration_others_can_change_is_refused(project: Path, what: str) -> None:
    target = project / "mailcli.toml" if what == "file" else project
    os.chmod(target, 0o666 if what == "file" else 0o777)
    result = run_mailcli("contacts", cwd=project)
    assert result.returncode == 4, result.stderr
    assert "writable by other users" in result.stderr and f"chmod go-w {target}" in result.stderr


def _private_gid() -> int | None:
    """This user's own group, if no one else is in it."""
    gid = os.getgid()
    if grp.getgrgid(gid).gr_mem or any(u.pw_gid == gid and u.pw_uid != os.getuid() for u in pwd.getpwall()):
        return None
    return gid


def _shared_gid() -> int | None:
    """A group another user has as their own (to hand a file to it, which only root may)."""
    if os.getuid() != 0:
        return None
    return next((u.pw_gid for u in pwd.getpwall() if u.pw_uid != 0 and u.pw_gid != os.getgid()), None)


def test_a_group_of_ones_own_is_not_other_users(project: Path) -> None:
    # Debian and Ubuntu: each user has a group of their own and umask 002, so a checkout is 0664.
    if _private_gid() is None:
        pytest.skip("this user's group has other members here")
    os.chmod(project / "mailcli.toml", 0o664)
    os.chmod(project, 0o775)
    os.chmod(project / ".mailcli" / "secret", 0o660)
    result = run_mailcli("contacts", cwd=project)
    assert result.returncode == 0, result.stderr
    shared = _shared_gid()
    if shared is None:
        pytest.skip("no other user's group to hand the file to (needs root)")
    os.chown(project / "mailcli.toml", -1, shared)  # now the group is someone else's
    refused = run_mailcli("contacts", cwd=project)
    assert refused.returncode == 4 and "writable by other users" in refused.stderr, refused.stderr


def test_doctor_reports_loose_modes_with_the_fix(project: Path) -> None:
    os.chmod(project / "mailcli.db", 0o644)
    (project / "backups").mkdir(mode=0o755)
    os.chmod(project / "backups", 0o755)
    result = run_mailcli("doctor", cwd=project)
    assert "backups (0755, readable by others)" in result.stdout + result.stderr
    assert f"chmod 700 {project / 'backups'}" in result.stdout + result.stderr


@pytest.mark.parametrize("kind", ["text", "fifo", "other program"])
def test_a_database_setting_that_names_something_else_is_refused_and_left_alone(project: Path, kind: str) -> None:
    target = project / "notes.db"
    if kind == "fifo":
        os.mkfifo(target, 0o644)
    elif kind == "text":
        target.write_text("my notes\n", encoding="utf-8")
    else:
        import sqlite3

        conn = sqlite3.connect(target)
        conn.execute("CREATE TABLE recipes (name TEXT)")
        conn.commit()
        conn.close()
    os.chmod(target, 0o644)
    before = None if kind == "fifo" else target.read_bytes()
    config = project / "mailcli.toml"
    config.write_text(config.read_text(encoding="utf-8").replace('database = "mailcli.db"', 'database = "notes.db"'),
                      encoding="utf-8")
    result = run_mailcli("contacts", cwd=project)
    assert result.returncode == 4, result.stderr
    assert "left as it is" in result.stderr and "Traceback" not in result.stderr
    assert _mode(target) == 0o644
    if before is not None:
        assert target.read_bytes() == before
    assert not Path(f"{target}-wal").exists()


def test_two_configurations_on_one_database_share_its_secret_and_ledgers(project: Path, tmp_path: Path) -> None:
    (project / "people.csv").write_text("email\nanna@example.nl\nbob@example.nl\n", encoding="utf-8")
    assert run_mailcli("import", "people.csv", "--list", "news", "--basis", "customer", cwd=project).returncode == 0
    other = tmp_path / "office"
    other.mkdir(mode=0o700)
    text = (project / "mailcli.toml").read_text(encoding="utf-8")
    (other / "mailcli.toml").write_text(text.replace('database = "mailcli.db"',
                                                     f'database = "{project / "mailcli.db"}"'), encoding="utf-8")
    # A secret of its own: refused before anything is read or written with it.
    (other / ".mailcli").mkdir(mode=0o700)
    (other / ".mailcli" / "secret").write_text("a-different-secret-of-some-length\n", encoding="utf-8")
    os.chmod(other / ".mailcli" / "secret", 0o600)
    refused = run_mailcli("privacy", "erase", "anna@example.nl", "--yes", cwd=other)
    assert refused.returncode == 4
    errors = [line for line in refused.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "not the one the database" in errors[0]
    assert run_mailcli("--json", "contacts", cwd=project).stdout.count("@") == 2
    # The same secret: it works, and its erasure lands in the ledger beside the database.
    shutil.copy(project / ".mailcli" / "secret", other / ".mailcli" / "secret")
    done = run_mailcli("privacy", "erase", "anna@example.nl", "--yes", cwd=other)
    assert done.returncode == 0, done.stderr
    assert (project / "mailcli.db-ledgers" / "erasures.jsonl").read_text(encoding="utf-8").count("\n") == 1
    assert not (other / ".mailcli" / "erasures.jsonl").exists() and not (other / "mailcli.db-ledgers").exists()


def test_doctor_warns_about_plain_backups_on_another_filesystem(project: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(project).st_dev:
        pytest.skip("needs a second filesystem (/dev/shm)")
    elsewhere = Path(os.path.realpath(shm)) / f"mailcli-test-{os.getpid()}-{project.parent.name}"
    elsewhere.mkdir(mode=0o700)
    try:
        same = run_mailcli("doctor", cwd=project)
        assert "on another filesystem" not in same.stdout
        (project / "backups").symlink_to(elsewhere)
        other = run_mailcli("doctor", cwd=project)
        assert "on another filesystem than the database" in other.stdout and "encrypt = true" in other.stdout
        config = project / "mailcli.toml"
        config.write_text(config.read_text(encoding="utf-8").replace("encrypt = false", "encrypt = true"),
                          encoding="utf-8")
        keyed = run_mailcli("doctor", cwd=project, env={"MAILCLI_BACKUP_KEY": "a passphrase long enough"})
        assert "backups are encrypted (age)" in keyed.stdout
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
