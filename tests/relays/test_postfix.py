"""`mailcli send` and `mailcli bounces` against a real Postfix.

The test starts Debian's Postfix with a configuration of its own in a
temporary folder (``config_directory``, ``queue_directory`` and
``data_directory`` all there), listening on a free 127.0.0.1 port, and stops
it afterwards. It accepts mail for example.net and example.org into virtual
Maildirs, keeps at most two connections per client
(``smtpd_client_connection_count_limit = 2``, loopback included), hands
bounces+TOKEN addresses to the bounces mailbox (``recipient_delimiter = +``,
as the README tells relay admins to set for VERP) and sends everything for
slow.example.net to a transport that always defers, with
``delay_warning_time`` short enough for a real delay notice within seconds.

Postfix's master runs as root only; the test skips, saying why, where
Postfix is not installed, the suite does not run as root, or Postfix does not
start (CI installs it, see .ci/system-packages, and runs as root).
"""

from __future__ import annotations

import json
import mailbox
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Cli, set_smtp
from tests.sendhelpers import add_contacts
from tests.smtpserver import free_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
KNOWN = ["ann@example.net", "bob@example.net", "cy@example.net"]
UNKNOWN = ["nobody1@example.net", "nobody2@example.net"]
# More recipients (delivered to one mailbox through the "+" delimiter), so the
# four connections are still wanted after the first ones have sent a few.
FILLERS = [f"dan+{i}@example.net" for i in range(15)]
SLOW = "dee@slow.example.net"

pytestmark = pytest.mark.skipif(
    not os.path.exists(POSTFIX),
    reason="postfix is not installed (Debian: apt-get install postfix, \"No configuration\"; see .ci/system-packages)",
)


@dataclass
class Postfix:
    port: int
    base: Path

    def maildir(self, user: str) -> Path:
        return self.base / "mail" / user

    def wait_for_mail(self, user: str, count: int, what: str, timeout: float = 60.0) -> list[bytes]:
        """The messages in a user's Maildir once there are ``count`` (polled, with a deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            folder = self.maildir(user) / "new"
            found = sorted(folder.iterdir()) if folder.is_dir() else []
            if len(found) >= count:
                return [path.read_bytes() for path in found]
            if time.monotonic() > deadline:
                log = (self.base / "maillog").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{what}: {len(found)} of {count} in {timeout:g} s; Postfix log:\n{log}")
            time.sleep(0.1)


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def postfix() -> Iterator[Postfix]:
    if os.geteuid() != 0:
        pytest.skip("Postfix's master process runs as root only; run the suite as root (CI does) to include this test")
    try:
        pwd.getpwnam("postfix")
        mail_user = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("the postfix or nobody user of Debian's postfix package is missing")
    # Not under pytest's tmp_path: Postfix's unprivileged processes must
    # reach their queue, and it insists on root-owned parent folders.
    base = Path(tempfile.mkdtemp(prefix="mailcli-postfix-"))
    os.chmod(base, 0o755)
    etc = base / "etc"
    for sub in ("etc", "spool", "data", "mail"):
        (base / sub).mkdir()
    shutil.chown(base / "data", "postfix")
    os.chown(base / "mail", mail_user.pw_uid, mail_user.pw_gid)
    port = free_port()
    mailboxes = [*KNOWN, "dan@example.net", "bounces@example.org"]
    (etc / "mailboxes").write_text("".join(f"{a} {a.split('@')[0]}/\n" for a in mailboxes))
    (etc / "transport").write_text("slow.example.net retry:4.4.1 mailbox server busy\n")
    (etc / "main.cf").write_text(f"""
compatibility_level = 3.6
queue_directory = {base}/spool
data_directory = {base}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mail.example.org
mydomain = example.org
myorigin = example.org
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
smtp_dns_support_level = disabled
biff = no
append_dot_mydomain = no
# Connection limits apply to loopback too, as they do to a relay's clients.
smtpd_client_event_limit_exceptions =
smtpd_client_connection_count_limit = 2
virtual_mailbox_domains = example.org example.net
virtual_mailbox_base = {base}/mail
virtual_mailbox_maps = texthash:{etc}/mailboxes
virtual_uid_maps = static:{mail_user.pw_uid}
virtual_gid_maps = static:{mail_user.pw_gid}
# Accept unknown users and bounce them afterwards, so Postfix writes DSNs.
smtpd_reject_unlisted_recipient = no
recipient_delimiter = +
relay_domains = slow.example.net
transport_maps = texthash:{etc}/transport
delay_warning_time = 1s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
""")
    (etc / "master.cf").write_text(f"""
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
""")
    started = _run([POSTFIX, "-c", str(etc), "start"])
    try:
        if started.returncode != 0:
            log = (base / "maillog").read_text(errors="replace")[-2000:] if (base / "maillog").exists() else ""
            pytest.skip(f"Postfix did not start (exit {started.returncode}): {started.stderr.strip()} {log}".strip())
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 1.0):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.skip(f"Postfix started but does not listen on 127.0.0.1:{port}")
                time.sleep(0.1)
        yield Postfix(port=port, base=base)
    finally:
        _run([POSTFIX, "-c", str(etc), "stop"])
        shutil.rmtree(base, ignore_errors=True)


def _project(project: Path, postfix: Postfix) -> None:
    set_smtp(project, "127.0.0.1", postfix.port, extra=["connect_backoff = 0.2"])
    config = project / "mailcli.toml"
    config.write_text(config.read_text().replace(
        "[sender]\n", '[sender]\nbounce_address = "bounces@example.org"\nverp = true\n', 1))


def _statuses(project: Path) -> dict[str, str]:
    conn = sqlite3.connect(project / "mailcli.db")
    try:
        return dict(conn.execute("SELECT email, status FROM contacts").fetchall())
    finally:
        conn.close()


def test_postfix_bounces_unknown_users_and_exactly_they_are_suppressed(
        project: Path, cli: Cli, postfix: Postfix) -> None:
    _project(project, postfix)
    add_contacts(project / "mailcli.db", "news", [{"email": a, "first_name": "X"} for a in KNOWN + UNKNOWN + FILLERS])
    result = cli("--json", "send", "spring", "--template", "newsletter", "--list", "news", "--yes")  # 4 connections
    assert result.exit_code == 0, result.output
    sent = json.loads(result.stdout)
    assert sent["sent"] == 20
    # Postfix took two connections at once and refused the others with 421:
    # the send went on over two, and says so.
    assert sent["connections_limit"] == 2 and "too many connections" in result.stderr
    for address in KNOWN:
        [delivered] = postfix.wait_for_mail(address.split("@")[0], 1, f"the message to {address}")
        assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in delivered
    assert len(postfix.wait_for_mail("dan", len(FILLERS), "the messages to dan+N")) == len(FILLERS)

    dsns = postfix.wait_for_mail("bounces", 2, "Postfix's DSNs for the unknown users")
    for dsn in dsns:
        assert b"Action: failed" in dsn and b"Status: 5.1.1" in dsn
        # VERP: each came back to its own bounces+TOKEN address.
        assert b"X-Original-To: bounces+" in dsn
    data = json.loads(cli("bounces", str(postfix.maildir("bounces")), "--json").stdout)
    assert (data["hard_bounces"], data["unmatched"], data["suppressed"]) == (2, 0, 2)
    statuses = _statuses(project)
    assert {a for a, status in statuses.items() if status == "bounced"} == set(UNKNOWN)
    assert all(statuses[a] == "active" for a in KNOWN + FILLERS)
    # The Maildir was read: the DSNs are marked seen.
    assert all("S" in m.get_flags() for m in mailbox.Maildir(str(postfix.maildir("bounces"))))


def test_postfix_delay_notice_suppresses_nobody(project: Path, cli: Cli, postfix: Postfix) -> None:
    _project(project, postfix)
    add_contacts(project / "mailcli.db", "news", [{"email": SLOW, "first_name": "Dee"}])
    already = len(list((postfix.maildir("bounces") / "new").glob("*"))) if postfix.maildir("bounces").exists() else 0
    result = cli("send", "summer", "--template", "newsletter", "--list", "news", "--yes")
    assert result.exit_code == 0, result.output
    notices = postfix.wait_for_mail("bounces", already + 1, "Postfix's delay notice")
    assert any(b"Action: delayed" in m and b"Delayed Mail (still being retried)" in m for m in notices)
    data = json.loads(cli("bounces", str(postfix.maildir("bounces")), "--json").stdout)
    assert data["delays"] >= 1 and data["soft_bounces"] == 0 and data["hard_bounces"] == 0
    assert data["suppressed"] == 0
    assert _statuses(project)[SLOW] == "active"
    report = json.loads(cli("report", "summer", "--failed", "--json").stdout)
    assert {(n["email"], n["kind"], n["status"]) for n in report["notices"]} == {(SLOW, "delayed", "4.4.1")}
    assert report["bounced"] == 0 and report["failures"] == []
