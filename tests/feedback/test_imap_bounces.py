"""`mailcli bounces imaps://...` against a real Dovecot started by the test on loopback.

Dovecot (Debian's dovecot-imapd) runs in the foreground with a configuration
written here: IMAPS on a free 127.0.0.1 port, a self-signed certificate that
mailcli trusts through --ca-file, one passwd-file user and a Maildir in a
temporary folder. Run as root it drops privileges to Debian's dovecot users;
run as anyone else it runs every process as that user.
"""

from __future__ import annotations

import getpass
import imaplib
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.feedback.test_bounces import PEOPLE, build, scenario
from tests.feedback.test_feedback_support import seed
from tests.smtpserver import free_port, make_certificate

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
PASSWORD = "imap-test-password"

pytestmark = pytest.mark.skipif(
    not os.path.exists(DOVECOT), reason="dovecot is not installed (Debian: apt-get install dovecot-imapd)"
)


@dataclass
class Dovecot:
    port: int
    ca_file: Path
    maildir: Path  # the user's mail, as Dovecot keeps it on disk

    @property
    def url(self) -> str:
        return f"imaps://bounces@127.0.0.1:{self.port}/INBOX"

    def client(self, password: str = PASSWORD) -> imaplib.IMAP4_SSL:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        imap = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=context, timeout=30)
        imap.login("bounces", password)
        return imap

    def append(self, messages: list[bytes]) -> None:
        imap = self.client()
        for data in messages:
            typ, _ = imap.append("INBOX", None, None, data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
            assert typ == "OK"
        imap.logout()

    def file_of(self, subject: str) -> Path:
        """The file Dovecot keeps the message with this subject in."""
        found = [f for f in self.maildir.glob("*/*") if f.parent.name in ("new", "cur")
                 and f"\nSubject: {subject}\n".encode() in f.read_bytes().replace(b"\r\n", b"\n")]
        assert len(found) == 1, found
        return found[0]

    def flags(self) -> dict[str, set[str]]:
        """Subject -> flags of every message in INBOX."""
        imap = self.client()
        imap.select("INBOX")
        typ, data = imap.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        imap.logout()
        out: dict[str, set[str]] = {}
        for item in data:
            if isinstance(item, tuple):
                meta, header = item
                flags = meta.decode().split("FLAGS (", 1)[1].split(")", 1)[0].split()
                subject = header.decode().partition(":")[2].strip()
                out[subject] = set(flags) - {"\\Recent"}
        return out


def _users() -> tuple[str, str, str, int, int]:
    """(login user, internal user, internal group, mail uid, mail gid)."""
    if os.geteuid() != 0:
        me = getpass.getuser()
        group = pwd.getpwuid(os.getuid()).pw_name
        return me, me, group, os.getuid(), os.getgid()
    try:
        internal = pwd.getpwnam("dovecot")
        pwd.getpwnam("dovenull")
    except KeyError:
        pytest.skip("running as root, but the dovecot/dovenull users of Debian's package are missing")
    import grp

    return "dovenull", "dovecot", grp.getgrgid(internal.pw_gid).gr_name, internal.pw_uid, internal.pw_gid


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    # Not under pytest's tmp_path: dovecot's unprivileged processes must be
    # able to reach their sockets, and root's pytest folder is private.
    base = Path(tempfile.mkdtemp(prefix="mailcli-dovecot-"))
    os.chmod(base, 0o755)
    proc: subprocess.Popen[bytes] | None = None
    try:
        login_user, internal_user, internal_group, uid, gid = _users()
        for sub in ("run", "state", "home"):
            (base / sub).mkdir()
        if os.geteuid() == 0:
            os.chown(base / "home", uid, gid)
        cert, key = make_certificate(base)
        (base / "passwd").write_text(f"bounces:{{PLAIN}}{PASSWORD}::::::\n")
        port = free_port()
        (base / "dovecot.conf").write_text(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = {uid}
first_valid_gid = {gid}
auth_mechanisms = plain
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/home/%u
}}
mail_location = maildir:~/Maildir
# A message it cannot open is answered NO and the session goes on (the default closes the connection).
imap_fetch_failure = no-after
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
""")
        proc = subprocess.Popen([DOVECOT, "-F", "-c", str(base / "dovecot.conf")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                output = proc.stdout.read().decode() if proc.stdout else ""
                log = (base / "dovecot.log").read_text() if (base / "dovecot.log").exists() else ""
                pytest.skip(f"dovecot did not start unprivileged here: {(output + log).strip()[-300:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.skip("dovecot did not open its IMAPS port within 20 s")
                time.sleep(0.05)
        yield Dovecot(port=port, ca_file=cert, maildir=base / "home" / "bounces" / "Maildir")
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def test_imaps_bounces_are_applied_once_and_flagged(project: Path, cli: Cli, dovecot: Dovecot) -> None:
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    dovecot.append(messages)
    env = {"MAILCLI_IMAP_PASSWORD": PASSWORD}

    result = cli("bounces", dovecot.url, "--ca-file", str(dovecot.ca_file), "--json", env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("messages", "hard_bounces", "soft_bounces", "complaints", "unsubscribes",
                                 "policy_rejections", "ignored", "unmatched")} == {
        "messages": 7, "hard_bounces": 1, "soft_bounces": 0, "complaints": 1, "unsubscribes": 1,
        "policy_rejections": 1, "ignored": 1, "unmatched": 1}
    assert s.suppressions("ann@example.org") == {"*": "bounced"}
    assert s.suppressions("cy@example.org") == {"*": "complained"}
    assert s.membership("dee@example.org")[::2] == ("unsubscribed", "mailto")

    flags = dovecot.flags()
    assert flags.pop("Question about your newsletter") == set()  # left unread for a person
    assert all(f == {"\\Seen", "$MailcliProcessed"} for f in flags.values()), flags

    before = s.counts()
    again = json.loads(cli("bounces", dovecot.url, "--ca-file", str(dovecot.ca_file), "--json", env=env).stdout)
    # flagged mail is not even fetched again; the unmatched question is, to be listed until acknowledged
    assert (again["messages"], again["unmatched"]) == (1, 1)
    acked = json.loads(cli("bounces", dovecot.url, "--ca-file", str(dovecot.ca_file), "--json", "--ack",
                           env=env).stdout)
    assert acked["acknowledged"] == 1
    assert dovecot.flags()["Question about your newsletter"] == {"\\Seen", "$MailcliProcessed"}
    assert json.loads(cli("bounces", dovecot.url, "--ca-file", str(dovecot.ca_file), "--json",
                          env=env).stdout)["messages"] == 0
    assert s.counts() == before

    # the same report delivered twice (a new copy, unflagged) still changes nothing
    dovecot.append([messages[0]])
    third = json.loads(cli("bounces", dovecot.url, "--ca-file", str(dovecot.ca_file), "--json", env=env).stdout)
    assert (third["messages"], third["already_processed"], third["hard_bounces"]) == (1, 1, 0)
    assert s.counts() == before


def test_imaps_refusals(project: Path, cli: Cli, dovecot: Dovecot) -> None:
    seed(project, [])
    dovecot.append([build("human.eml")])
    missing = cli("bounces", dovecot.url.replace("INBOX", "Nope"), "--ca-file", str(dovecot.ca_file),
                  env={"MAILCLI_IMAP_PASSWORD": PASSWORD})
    assert missing.exit_code == 2 and "no such mailbox 'Nope'" in missing.stderr
    untrusted = cli("bounces", dovecot.url, env={"MAILCLI_IMAP_PASSWORD": PASSWORD})
    assert untrusted.exit_code == 5 and "TLS failed" in untrusted.stderr
    # last: after a failed login dovecot slows further logins from the address down
    wrong = cli("bounces", dovecot.url, "--ca-file", str(dovecot.ca_file), env={"MAILCLI_IMAP_PASSWORD": "wrong"})
    assert wrong.exit_code == 5 and "login refused" in wrong.stderr and "wrong" not in wrong.stderr


def test_a_message_the_server_cannot_fetch_is_named_left_unflagged_and_the_rest_is_processed(
        project: Path, cli: Cli, dovecot: Dovecot) -> None:
    # A message whose FETCH the server answered with NO was passed over without
    # a word and the run ended with exit 0: the bounce in it was not applied,
    # and nothing told the user that a message had not been read.
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    dovecot.append(messages)  # UIDs 1 to 7 in this order: UID 1 is ann's hard bounce
    broken = dovecot.file_of("Undelivered Mail Returned to Sender")
    mode = broken.stat().st_mode
    broken.chmod(0)  # Dovecot cannot open the file: it answers the FETCH of UID 1 with NO
    env = {"MAILCLI_IMAP_PASSWORD": PASSWORD}
    args = ["bounces", dovecot.url, "--ca-file", str(dovecot.ca_file)]

    result = cli(*args, env=env)
    assert result.exit_code == 3, result.output
    assert f"Warning: Cannot read {dovecot.url} UID 1: the server answered NO: " in result.stderr
    assert "skipped, left where it is" in result.stderr
    assert f"Error: 1 message of {dovecot.url} could not be read and was skipped; every other message was" \
        " processed" in result.stderr
    assert "Traceback" not in result.output
    assert "6 messages from" in result.stdout  # the other six, the unsubscribe after it included
    assert s.membership("dee@example.org")[::2] == ("unsubscribed", "mailto")
    assert s.suppressions("cy@example.org") == {"*": "complained"}
    assert s.suppressions("ann@example.org") == {}  # not read, so not applied

    again = cli(*args, "--json", "--delete", env=env)
    assert again.exit_code == 3
    data = json.loads(again.stdout)
    assert [u["entry"] for u in data["unreadable"]] == [f"{dovecot.url} UID 1"]
    assert data["unreadable"][0]["reason"].startswith("the server answered NO: ")
    assert (data["messages"], data["unmatched"]) == (1, 1)  # flagged mail is not fetched again

    # Dovecot has moved it to cur/, adding flags to its name after the ':'
    next(dovecot.maildir.glob(f"cur/{broken.name.partition(':')[0]}*")).chmod(mode)
    # neither flagged nor deleted: the next run fetches it and applies the bounce
    assert dovecot.flags()["Undelivered Mail Returned to Sender"] == set()
    fixed = cli(*args, "--json", env=env)
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["hard_bounces"] == 1
    assert s.suppressions("ann@example.org") == {"*": "bounced"}
    assert dovecot.flags()["Undelivered Mail Returned to Sender"] == {"\\Seen", "$MailcliProcessed"}
