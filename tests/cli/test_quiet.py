"""Every command with -q as cron runs it: no terminal, no stdin, a bare environment.

On a healthy project the commands the README puts in cron (bounces, backup
create, privacy purge) and every other action print nothing at all; commands
whose point is data (lists, report, contacts ...) print only that data, on
stdout, and nothing on stderr.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Cli, set_smtp
from tests.smtpserver import SmtpServer, free_port

CONTACTS = """E-mailadres;Voornaam;Tussenvoegsel;Achternaam;Woonplaats
renee@bakkerij.example;Renée;;Dubois;Utrecht
jan@bakkerij.example;Jan;van der;Berg;Amsterdam
JAN@bakkerij.example;Jan;van der;Berg;Amsterdam
zoe@bakkerij.example;Zoë;;Çelik;Den Haag
piet@bakkerij.example;Piet;;Klaassen;Gouda
"""


def project_secret(project: Path) -> str:
    """The secret the project was made with, as cron passes it (kept elsewhere too): a
    database refuses any other."""
    return (project / ".mailcli" / "secret").read_text(encoding="utf-8").strip()


def cron(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One command as a crontab line runs it."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(project.parent / "home"), "SHELL": "/bin/sh", "LOGNAME": "news",
           "MAILCLI_SECRET": project_secret(project)}
    return subprocess.run([sys.executable, "-m", "mailcli", "-q", *args], cwd=project, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def healthy(project: Path, port: int) -> None:
    """A project whose configuration doctor has nothing against."""
    config = project / "mailcli.toml"
    text = config.read_text(encoding="utf-8").replace("example.org", "bakkerij-dejong.nl")
    config.write_text(text.replace("Keizersgracht 1, 1015 AA Amsterdam", "Oudegracht 12, 3511 AP Utrecht"),
                      encoding="utf-8")
    set_smtp(project, "127.0.0.1", port)
    (project / "leden.csv").write_bytes(CONTACTS.encode("cp1252"))


def dsn_for(project: Path, email: str) -> bytes:
    with sqlite3.connect(project / "mailcli.db") as conn:
        (message_id,) = conn.execute(
            "SELECT d.message_id FROM deliveries d JOIN contacts c ON c.id = d.contact_id WHERE c.email = ?",
            (email,)).fetchone()
    return (f"From: MAILER-DAEMON@mx.bakkerij.example\r\nTo: news@bakkerij-dejong.nl\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-1@mx.bakkerij.example>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
            f"--B\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n"
            f"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.bakkerij.example\r\n\r\n"
            f"Final-Recipient: rfc822; {email}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
            f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {message_id}\r\n\r\n--B--\r\n").encode()


def test_every_command_under_q_in_cron(project: Path, cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "home").mkdir(exist_ok=True)
    silent: list[tuple[str, ...]] = []  # actions: nothing on stdout or stderr
    data: list[tuple[str, ...]] = []  # data the command is for: stdout only
    with SmtpServer() as server:
        healthy(project, server.port)

        def run(*args: str, prints_data: bool = False) -> subprocess.CompletedProcess[str]:
            proc = cron(project, *args)
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
            (data if prints_data else silent).append(args)
            assert "Traceback" not in proc.stderr
            if prints_data:
                assert proc.stdout and proc.stderr == "", (args, proc.stderr)
            else:
                assert (proc.stdout, proc.stderr) == ("", ""), args
            return proc

        run("import", "leden.csv", "--list", "news", "--basis", "customer")
        run("lists", prints_data=True)
        run("contacts", prints_data=True)
        run("contacts", "show", "renee@bakkerij.example", prints_data=True)
        run("contacts", "set", "renee@bakkerij.example", "woonplaats=Gouda")
        run("config", "show", prints_data=True)
        run("doctor")
        run("lint", "newsletter")
        run("render", "newsletter", "--format", "text", prints_data=True)
        run("render", "newsletter", "-o", "preview.html")
        run("send", "2026-12", "--template", "newsletter", "--list", "news", "--dry-run")
        run("send", "2026-12", "--template", "newsletter", "--list", "news", "--yes")
        run("send", "2026-12", "--yes")
        run("reconfirm", "--list", "news", "--yes")  # everyone has a basis: nobody to ask
        assert len(server.messages) == 4
        run("send", "2026-12", "--test-to", "me@example.net")
        run("send", "later", "--template", "newsletter", "--list", "news", "--not-before", "2099-01-01 00:00",
            "--tz", "UTC", "--yes")  # the scheduling cron line, before its time
        assert len(server.messages) == 5
        run("campaigns", prints_data=True)
        run("completion", "bash", prints_data=True)
        run("report", prints_data=True)
        run("report", "2026-12", "--failed", prints_data=True)
        run("unsubscribe", "zoe@bakkerij.example")
        maildir = tmp_path / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir(parents=True)
        (maildir / "new" / "1.dsn").write_bytes(dsn_for(project, "piet@bakkerij.example"))
        run("bounces", str(maildir))  # the README's cron line, every ten minutes
        run("bounces", str(maildir))
        run("privacy", "requests", "add", "renee@bakkerij.example", "--type", "portability")
        run("privacy", "requests", "extend", "1", "--reason", "two systems to search")
        run("privacy", "requests", prints_data=True)
        run("privacy", "requests", "close", "1")
        run("privacy", "export", "renee@bakkerij.example", "-o", "renee.zip")
        run("privacy", "restrict", "renee@bakkerij.example")
        run("privacy", "unrestrict", "renee@bakkerij.example")
        run("privacy", "object", "renee@bakkerij.example")
        run("privacy", "erase", "jan@bakkerij.example", "--yes")
        run("privacy", "audit", prints_data=True)
        run("privacy", "audit", "--verify")
        run("backup", "create")  # the README's nightly cron line ...
        run("privacy", "purge")  # ... and its second half
        run("privacy", "purge", "--dry-run")
        run("backup", "list", prints_data=True)
        run("backup", "prune")
        run("backup", "prune", "--dry-run")

        # serve: quiet from start to SIGTERM, requests included
        port = free_port()
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "MAILCLI_SECRET": project_secret(project)}
        proc = subprocess.Popen([sys.executable, "-m", "mailcli", "-q", "serve", "--port", str(port)], cwd=project,
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"GET /unsubscribe?t=nonsense HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    assert sock.recv(100).startswith(b"HTTP/1.1 400")
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert (proc.returncode, out, err) == (0, "", "")
        silent.append(("serve",))

        backup = sorted((project / "backups").glob("*.db"))[0]
        restore = cron(project, "backup", "restore", str(backup), "--yes")
        # Not a cron job: it says, even under -q, that later sends are not in the backup.
        assert restore.returncode == 0 and restore.stdout == ""
        assert [line.split(":")[0] for line in restore.stderr.splitlines()] == ["Warning"]
        silent.append(("backup", "restore"))
        # Not a cron job either: under -q only the reminder that the old database still holds everyone.
        moved = cron(project, "migrate-store", "--to", "moved.db")
        assert moved.returncode == 0 and moved.stdout == "", moved.stderr
        assert [line.split(":")[0] for line in moved.stderr.splitlines()] == ["Warning"]
        silent.append(("migrate-store",))

        # Litestream as a service runs it (found beside mailcli, PATH bare): quiet until stopped.
        with (project / "mailcli.toml").open("a", encoding="utf-8") as handle:
            handle.write('\n[replicate]\nreplica = "standby"\n')
        env = {"PATH": "/usr/bin:/bin", "HOME": str(project.parent / "home"),
               "MAILCLI_SECRET": project_secret(project)}
        service = subprocess.Popen([sys.executable, "-m", "mailcli", "-q", "replicate"], cwd=project, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (project / "standby" / "ltx").is_dir() and service.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        service.send_signal(signal.SIGTERM)
        out, err = service.communicate(timeout=60)
        assert (project / "standby" / "ltx").is_dir() and service.returncode == 0, (service.returncode, err)
        assert (out, err) == ("", "")
        silent.append(("replicate",))

    # Every command of the CLI ran (init made the project; demo makes a project of its own).
    from tests.cli.test_contract import ALL_COMMANDS

    def name(args: tuple[str, ...]) -> str:
        for length in (3, 2):
            words = " ".join(args[:length])
            if any(words == " ".join(p) for p in ALL_COMMANDS):
                return words
        return args[0]

    ran = {name(args) for args in silent + data}
    groups = {p[0] for p in ALL_COMMANDS if len(p) == 2}
    expected = {" ".join(p) for p in ALL_COMMANDS if p and " ".join(p) not in groups} | {"contacts"}
    assert expected - {"init", "demo"} <= ran, expected - ran
