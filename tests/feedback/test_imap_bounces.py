"""`mailcli bounces imaps://...` against a real Dovecot started by the test on loopback.

Dovecot (Debian's dovecot-imapd) runs in the foreground with a configuration
written here: IMAPS on a free 127.0.0.1 port, a self-signed certificate that
mailcli trusts through --ca-file, one passwd-file user and a Maildir in a
temporary folder. Run as root it drops privileges to Debian's dovecot users;
run as anyone else it runs every process as that user.
"""

from __future__ import annotations

import asyncio
import contextlib
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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.feedback.test_bounces import PEOPLE, build, scenario
from tests.feedback.test_feedback_support import add_campaign, seed
from tests.loopserver import LoopServer
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
    key_file: Path  # the private key of its certificate (for ImapProxy)

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

    def flags_by_uid(self) -> dict[int, set[str]]:
        """UID -> flags of every message in INBOX, read from Dovecot's index (no message file opened)."""
        imap = self.client()
        imap.select("INBOX")
        typ, data = imap.uid("FETCH", "1:*", "(FLAGS)")
        imap.logout()
        out: dict[int, set[str]] = {}
        for item in data:
            assert isinstance(item, bytes), item
            uid = int(item.decode().split("UID ", 1)[1].split()[0].rstrip(")"))
            out[uid] = set(item.decode().split("FLAGS (", 1)[1].split(")", 1)[0].split()) - {"\\Recent"}
        return out

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


class Relay:
    """A TCP relay on 127.0.0.1 in front of Dovecot: mailcli's connections go through it.

    ``before(n)`` runs as connection n comes in, before it is passed on; with
    ``accept`` set, the relay stops listening after that many connections, so
    one more is refused.
    """

    def __init__(self, target: int, before: Callable[[int], None] = lambda n: None,
                 accept: int | None = None) -> None:
        self.target = target
        self.before = before
        self.accept = accept
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.connections == self.accept:
                self.listener.close()
            self.before(self.connections)
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Pass bytes on until one side closes; then close both (the other side sees the connection closed)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


# What ImapProxy does with one command: pass it on (None), pass it on and close the
# connection once Dovecot has answered it ("close"), close the connection without passing
# it on ("drop"), or answer it in Dovecot's place (bytes).
Action = str | bytes | None


class ImapProxy:
    """IMAPS on 127.0.0.1 in front of Dovecot that reads mailcli's commands.

    It ends mailcli's TLS with the certificate Dovecot has (so --ca-file
    trusts it) and opens a TLS connection of its own to Dovecot for each of
    mailcli's. ``act(connection, command)`` runs for each command line mailcli
    sends (``connection`` counts from 1; ``command`` without its tag, as
    ``b"UID STORE 3 +FLAGS (\\Seen $MailcliProcessed)"``) and says what to do:
    None passes it on; ``"close"`` passes it on and, as soon as Dovecot has
    answered it, closes mailcli's connection without passing the answer on
    (what Dovecot did stays done; mailcli sees the connection closed during
    the command); ``"drop"`` closes it at once, the command never reaching
    Dovecot; bytes are sent back as the answer in Dovecot's place (after
    the tag: ``b"NO [SERVERBUG] ..."``), the command never reaching Dovecot.
    With ``accept`` set, it stops listening after that many connections, so
    the next one is refused. ``commands`` lists (connection, command) of every
    command mailcli sent. ``reply(connection, line)``, when given, sees each
    line Dovecot sends and returns what mailcli gets instead (None: nothing).
    """

    def __init__(self, dovecot: Dovecot, act: Callable[[int, bytes], Action], accept: int | None = None,
                 reply: Callable[[int, bytes], bytes | None] = lambda n, line: line) -> None:
        self.dovecot = dovecot
        self.act = act
        self.reply = reply
        self.accept = accept
        self.connections = 0
        self.commands: list[tuple[int, bytes]] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.dovecot.ca_file, self.dovecot.key_file)
        self._listener = LoopServer(self._session, context=context, limit=1 << 22)
        self._listener.start()

    def url(self) -> str:
        return self.dovecot.url.replace(f":{self.dovecot.port}/", f":{self._listener.port}/")

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        if connection == self.accept and self._listener.server is not None:
            self._listener.server.close()
        context = ssl.create_default_context(cafile=str(self.dovecot.ca_file))
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.dovecot.port, ssl=context, server_hostname="127.0.0.1", limit=1 << 22)
        closing: list[bytes] = []  # the tag whose answer ends the connection

        async def from_dovecot() -> None:
            while line := await up_reader.readline():
                if closing and line.startswith(closing[0] + b" "):
                    return
                passed = self.reply(connection, line)
                if passed is not None:
                    writer.write(passed)
                    await writer.drain()

        async def from_mailcli() -> None:
            while line := await reader.readline():
                tag, _, command = line.rstrip(b"\r\n").partition(b" ")
                self.commands.append((connection, command))
                action = self.act(connection, command)
                if action == "drop":
                    return
                if isinstance(action, bytes):
                    writer.write(tag + b" " + action + b"\r\n")
                    await writer.drain()
                    continue
                if action == "close":
                    closing.append(tag)
                up_writer.write(line)
                await up_writer.drain()

        tasks = [asyncio.ensure_future(from_dovecot()), asyncio.ensure_future(from_mailcli())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            up_writer.transport.abort()
            writer.close()  # mailcli reads the end of the connection (TLS close_notify, then FIN)

    def close(self) -> None:
        self._listener.stop()


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
def dovecot(request: pytest.FixtureRequest) -> Iterator[Dovecot]:
    """Dovecot answering the FETCH of a message it cannot open with NO.

    ``@pytest.mark.parametrize("dovecot", [VALUE], indirect=True)`` sets
    ``imap_fetch_failure`` to VALUE instead; None leaves it out, so Dovecot's
    default applies: it closes the connection.
    """
    fetch_failure: str | None = getattr(request, "param", "no-after")
    fetch_failure_line = "" if fetch_failure is None else f"imap_fetch_failure = {fetch_failure}"
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
# What Dovecot does with a FETCH of a message it cannot open (its default closes the connection).
{fetch_failure_line}
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
        yield Dovecot(port=port, ca_file=cert, maildir=base / "home" / "bounces" / "Maildir", key_file=key)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def _seeded(project: Path, dovecot: Dovecot) -> Any:
    """The usual people and the scenario's messages in the mailbox (UID 3 is cy's complaint)."""
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    dovecot.append(messages)
    return s


def _through(cli: Cli, dovecot: Dovecot, proxy: ImapProxy, *args: str) -> Any:
    """``bounces`` on the mailbox through ``proxy``, closed after."""
    try:
        return cli("bounces", proxy.url(), "--ca-file", str(dovecot.ca_file), *args,
                   env={"MAILCLI_IMAP_PASSWORD": PASSWORD})
    finally:
        proxy.close()


def _read_again(cli: Cli, dovecot: Dovecot, s: Any, *args: str) -> dict[str, Any]:
    """``bounces --json`` on the mailbox once more, straight to Dovecot: it
    must succeed and change no count in the database; its JSON."""
    before = s.counts()
    again = cli("bounces", dovecot.url, "--ca-file", str(dovecot.ca_file), "--json", *args,
                env={"MAILCLI_IMAP_PASSWORD": PASSWORD})
    assert again.exit_code == 0, again.output
    assert s.counts() == before
    result: dict[str, Any] = json.loads(again.stdout)
    return result

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


@pytest.mark.parametrize("dovecot", [pytest.param(None, id="dovecot-default")], indirect=True)
def test_a_message_the_server_closes_the_connection_on_is_named_and_the_rest_is_processed(
        project: Path, cli: Cli, dovecot: Dovecot) -> None:
    # With Dovecot's default settings a message it cannot open closes the
    # connection during its FETCH. The run ended with "connection lost", exit
    # 5, and as the message was never flagged every later run stopped at it:
    # nothing after it was ever read again.
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    dovecot.append(messages)  # UIDs 1 to 7 in this order: UID 3 is cy's complaint
    broken = dovecot.file_of("Yahoo! Mail AntiSpam Feedback")
    mode = broken.stat().st_mode
    broken.chmod(0)  # Dovecot cannot open the file: it drops the connection on each FETCH of UID 3
    env = {"MAILCLI_IMAP_PASSWORD": PASSWORD}
    args = ["bounces", dovecot.url, "--ca-file", str(dovecot.ca_file)]

    result = cli(*args, "--json", env=env)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert result.stderr.count("UID 3") == 1, result.stderr  # named once, though fetched twice
    assert f"Warning: Cannot read {dovecot.url} UID 3: the server closed the connection each time it was" \
        " fetched" in result.stderr
    assert f"Error: 1 message of {dovecot.url} could not be read and was skipped; every other message was" \
        " processed" in result.stderr
    data = json.loads(result.stdout)
    assert [u["entry"] for u in data["unreadable"]] == [f"{dovecot.url} UID 3"]
    # the two messages read before the connection closed are not read again after it is opened anew
    assert {k: data[k] for k in ("messages", "already_processed", "hard_bounces", "delays", "complaints",
                                 "unsubscribes", "policy_rejections", "ignored", "unmatched")} == {
        "messages": 6, "already_processed": 0, "hard_bounces": 1, "delays": 1, "complaints": 0,
        "unsubscribes": 1, "policy_rejections": 1, "ignored": 1, "unmatched": 1}
    assert s.suppressions("ann@example.org") == {"*": "bounced"}
    assert s.membership("dee@example.org")[::2] == ("unsubscribed", "mailto")  # read after it
    assert s.suppressions("cy@example.org") == {}  # not read, so not applied

    flags = dovecot.flags_by_uid()  # (fetching the subjects would close the connection on UID 3)
    assert flags.pop(3) == set()  # left for the next run
    assert flags.pop(7) == set()  # the question, left unread for a person
    assert flags == {uid: {"\\Seen", "$MailcliProcessed"} for uid in (1, 2, 4, 5, 6)}, flags

    # repaired (Dovecot may have moved it to cur/, adding flags to its name after the ':')
    next(dovecot.maildir.glob(f"*/{broken.name.partition(':')[0]}*")).chmod(mode)
    fixed = cli(*args, "--json", env=env)
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["complaints"] == 1
    assert s.suppressions("cy@example.org") == {"*": "complained"}
    assert dovecot.flags()["Yahoo! Mail AntiSpam Feedback"] == {"\\Seen", "$MailcliProcessed"}


@pytest.mark.parametrize("dovecot", [pytest.param(None, id="dovecot-default")], indirect=True)
def test_a_connection_closed_once_is_opened_again_and_the_message_read(
        project: Path, cli: Cli, dovecot: Dovecot) -> None:
    # The server closes the connection on a message that it gives on the next
    # connection: the message is read as any other, and the messages read
    # before are not read again.
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    dovecot.append(messages)  # UID 3 is cy's complaint
    broken = dovecot.file_of("Yahoo! Mail AntiSpam Feedback")
    mode = broken.stat().st_mode
    broken.chmod(0)

    def repair(connection: int) -> None:
        if connection == 2:  # Dovecot may have moved it to cur/ meanwhile
            next(dovecot.maildir.glob(f"*/{broken.name.partition(':')[0]}*")).chmod(mode)

    relay = Relay(dovecot.port, before=repair)
    url = dovecot.url.replace(f":{dovecot.port}/", f":{relay.port}/")
    try:
        result = cli("bounces", url, "--ca-file", str(dovecot.ca_file), "--json",
                     env={"MAILCLI_IMAP_PASSWORD": PASSWORD})
    finally:
        relay.close()
    assert result.exit_code == 0, result.output
    assert relay.connections == 2
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("messages", "already_processed", "hard_bounces", "complaints", "unsubscribes",
                                 "unreadable")} == {
        "messages": 7, "already_processed": 0, "hard_bounces": 1, "complaints": 1, "unsubscribes": 1,
        "unreadable": []}
    assert s.suppressions("cy@example.org") == {"*": "complained"}
    assert dovecot.flags()["Yahoo! Mail AntiSpam Feedback"] == {"\\Seen", "$MailcliProcessed"}


@pytest.mark.parametrize("dovecot", [pytest.param(None, id="dovecot-default")], indirect=True)
def test_a_connection_that_cannot_be_opened_again_is_lost(project: Path, cli: Cli, dovecot: Dovecot) -> None:
    s = _seeded(project, dovecot)
    dovecot.file_of("Yahoo! Mail AntiSpam Feedback").chmod(0)  # UID 3
    relay = Relay(dovecot.port, accept=1)
    url = dovecot.url.replace(f":{dovecot.port}/", f":{relay.port}/")
    try:
        result = cli("bounces", url, "--ca-file", str(dovecot.ca_file), env={"MAILCLI_IMAP_PASSWORD": PASSWORD})
    finally:
        relay.close()
    assert result.exit_code == 5, result.output
    assert f"Error: {url}: connection lost (FETCH failed: " in result.stderr
    assert "and connecting again failed: cannot connect: Connection refused" in result.stderr
    assert "Hint: run the same command again" in result.stderr
    assert "Traceback" not in result.output
    assert s.suppressions("ann@example.org") == {"*": "bounced"}  # read before, and kept
    assert s.membership("dee@example.org")[0] == "subscribed"  # after it: the next run reads it


@pytest.mark.parametrize("how", ["close", "drop"], ids=["after-dovecot-answered", "before-dovecot-saw-it"])
def test_a_connection_closed_during_the_search_is_opened_again_and_the_mailbox_read(
        project: Path, cli: Cli, dovecot: Dovecot, how: str) -> None:
    # The server closed the connection while it searched for the messages to
    # read (a restart, a dropped link): the run ended "connection lost", exit
    # 5, though asking again on a new connection reads everything.
    s = _seeded(project, dovecot)
    proxy = ImapProxy(dovecot, lambda n, command: how if n == 1 and command.startswith(b"UID SEARCH") else None)
    result = _through(cli, dovecot, proxy, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert proxy.connections == 2
    assert [n for n, command in proxy.commands if command.startswith(b"UID SEARCH")] == [1, 2]
    data = json.loads(result.stdout)
    assert (data["messages"], data["complaints"], data["unmatched"]) == (7, 1, 1)
    assert s.suppressions("cy@example.org") == {"*": "complained"}
    flags = dovecot.flags()
    assert flags.pop("Question about your newsletter") == set()
    assert all(f == {"\\Seen", "$MailcliProcessed"} for f in flags.values()), flags

    # A server that closes the connection on the search again: lost (exit 5), nothing read.
    again = ImapProxy(dovecot, lambda n, command: "drop" if command.startswith(b"UID SEARCH") else None)
    dovecot.append([b"From: x@example.org\nSubject: hello\n\nhi\n"])
    lost = _through(cli, dovecot, again)
    assert lost.exit_code == 5, lost.output
    assert lost.stderr.splitlines() == [
        f"Error: {again.url()}: connection lost while searching the mailbox, on a new connection too (socket"
        " error: EOF)", "Hint: run the same command again"]
    assert "Traceback" not in lost.output


def _flagging(uid: int) -> Callable[[bytes], bool]:
    """Whether a command is mailcli's STORE of the flags of this UID."""
    return lambda command: command.startswith(f"UID STORE {uid} ".encode())


@pytest.mark.parametrize("how", ["close", "drop"], ids=["after-dovecot-stored", "before-dovecot-saw-it"])
def test_a_connection_closed_while_a_message_is_flagged_is_opened_again_and_the_message_flagged(
        project: Path, cli: Cli, dovecot: Dovecot, how: str) -> None:
    # The connection closed during the STORE that flags a message already
    # processed: the run ended with "connection lost", exit 5, and the messages
    # after it waited for the next run (cron reported a failure for a moment's
    # drop). Now mailcli connects again, flags that message and reads the rest.
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    dovecot.append(messages)  # UID 3 is cy's complaint
    proxy = ImapProxy(dovecot, lambda n, command: how if n == 1 and _flagging(3)(command) else None)
    result = _through(cli, dovecot, proxy, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert proxy.connections == 2
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("messages", "already_processed", "hard_bounces", "delays", "complaints",
                                 "unsubscribes", "policy_rejections", "ignored", "unmatched", "unreadable",
                                 "not_marked")} == {
        "messages": 7, "already_processed": 0, "hard_bounces": 1, "delays": 1, "complaints": 1, "unsubscribes": 1,
        "policy_rejections": 1, "ignored": 1, "unmatched": 1, "unreadable": [], "not_marked": []}
    # fetched once, flagged on each connection: nothing was read or applied twice
    assert [n for n, command in proxy.commands if command.startswith(b"UID FETCH 3 ")] == [1]
    assert [n for n, command in proxy.commands if _flagging(3)(command)] == [1, 2]
    assert s.suppressions("cy@example.org") == {"*": "complained"}
    assert len(s.events("complained")) == 1
    assert s.membership("dee@example.org")[::2] == ("unsubscribed", "mailto")  # read after it

    flags = dovecot.flags()
    assert flags.pop("Question about your newsletter") == set()  # left unread for a person
    assert all(f == {"\\Seen", "$MailcliProcessed"} for f in flags.values()), flags
    again = _read_again(cli, dovecot, s)
    assert (again["messages"], again["already_processed"]) == (1, 0)


def test_a_connection_closed_while_flagging_that_cannot_be_opened_again_is_lost(
        project: Path, cli: Cli, dovecot: Dovecot) -> None:
    s = _seeded(project, dovecot)
    proxy = ImapProxy(dovecot, lambda n, command: "drop" if _flagging(3)(command) else None, accept=1)
    env = {"MAILCLI_IMAP_PASSWORD": PASSWORD}
    result = _through(cli, dovecot, proxy)
    assert result.exit_code == 5, result.output
    assert f"Error: {proxy.url()}: connection lost (socket error: EOF), and connecting again failed: cannot" \
        " connect: Connection refused" in result.stderr
    assert "Hint: run the same command again" in result.stderr
    assert "Traceback" not in result.output
    assert s.suppressions("cy@example.org") == {"*": "complained"}  # processed before the STORE, and kept
    assert s.membership("dee@example.org")[0] == "subscribed"  # after it: the next run reads it
    assert dovecot.flags()["Yahoo! Mail AntiSpam Feedback"] == set()

    # the next run finds the complaint processed, flags it, and reads the rest
    again = cli("bounces", dovecot.url, "--ca-file", str(dovecot.ca_file), "--json", env=env)
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert {k: data[k] for k in ("messages", "already_processed", "complaints", "unsubscribes")} == {
        "messages": 5, "already_processed": 1, "complaints": 0, "unsubscribes": 1}
    assert len(s.events("complained")) == 1  # applied once
    assert s.membership("dee@example.org")[::2] == ("unsubscribed", "mailto")
    assert dovecot.flags()["Yahoo! Mail AntiSpam Feedback"] == {"\\Seen", "$MailcliProcessed"}


def test_a_message_the_server_closes_the_connection_on_each_time_it_is_flagged_is_named(
        project: Path, cli: Cli, dovecot: Dovecot) -> None:
    s = _seeded(project, dovecot)
    proxy = ImapProxy(dovecot, lambda n, command: "drop" if n <= 2 and _flagging(3)(command) else None)
    result = _through(cli, dovecot, proxy, "--json")
    assert result.exit_code == 3, result.output
    assert proxy.connections == 3  # the first, the second try, and one for the rest
    assert f"Warning: Cannot mark {proxy.url()} UID 3 as processed: the server closed the connection each time" \
        " it was flagged (twice): socket error: EOF; it was processed, and the next run marks it" in result.stderr
    assert f"Error: 1 message of {proxy.url()} was processed but could not be marked as processed in the" \
        " mailbox; every other message was processed" in result.stderr
    assert "Hint: the next run finds it processed and marks it" in result.stderr
    data = json.loads(result.stdout)
    assert data["not_marked"] == [{"entry": f"{proxy.url()} UID 3", "reason": "the server closed the connection"
                                   " each time it was flagged (twice): socket error: EOF"}]
    assert (data["messages"], data["complaints"], data["unsubscribes"], data["unreadable"]) == (7, 1, 1, [])
    assert s.suppressions("cy@example.org") == {"*": "complained"}
    assert s.membership("dee@example.org")[::2] == ("unsubscribed", "mailto")
    flags = dovecot.flags()
    assert flags.pop("Yahoo! Mail AntiSpam Feedback") == set()
    assert flags.pop("Question about your newsletter") == set()
    assert all(f == {"\\Seen", "$MailcliProcessed"} for f in flags.values()), flags

    again = _read_again(cli, dovecot, s)
    assert (again["already_processed"], again["complaints"]) == (1, 0)
    assert dovecot.flags()["Yahoo! Mail AntiSpam Feedback"] == {"\\Seen", "$MailcliProcessed"}


def test_a_mailbox_replaced_while_the_connection_was_closed_during_flagging_is_lost(
        project: Path, cli: Cli, dovecot: Dovecot) -> None:
    # The UIDs mailcli was working through name other messages in a mailbox
    # created anew: it must not flag (or go on reading) by them.
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    imap = dovecot.client()
    assert imap.create("Bounces")[0] == "OK"
    for data in messages:
        assert imap.append("Bounces", None, None, data.replace(b"\n", b"\r\n"))[0] == "OK"

    def act(n: int, command: bytes) -> Action:
        if n == 1 and _flagging(3)(command):
            return "drop"
        if n == 2 and command.startswith(b"LOGIN "):  # meanwhile: the mailbox deleted and made again
            assert imap.delete("Bounces")[0] == "OK"
            assert imap.create("Bounces")[0] == "OK"
            assert imap.append("Bounces", None, None, messages[-1].replace(b"\n", b"\r\n"))[0] == "OK"
        return None

    proxy = ImapProxy(dovecot, act)
    url = proxy.url().replace("/INBOX", "/Bounces")
    try:
        result = cli("bounces", url, "--ca-file", str(dovecot.ca_file), env={"MAILCLI_IMAP_PASSWORD": PASSWORD})
    finally:
        proxy.close()
        imap.logout()
    assert result.exit_code == 5, result.output
    assert f"Error: {url}: connection lost (socket error: EOF), and the mailbox was replaced meanwhile (its" \
        " UIDVALIDITY changed)" in result.stderr
    assert [command for n, command in proxy.commands if n == 2 and command.startswith(b"UID ")] == []
    assert s.suppressions("cy@example.org") == {"*": "complained"}  # processed before, and kept


def test_an_acknowledged_message_the_connection_was_lost_on_is_flagged_by_the_next_run(
        project: Path, cli: Cli, dovecot: Dovecot) -> None:
    # `bounces --ack` recorded the question as handled, then lost the connection
    # while flagging it. Every later run found it "already processed" and left
    # it unflagged: it stayed unread in the mailbox and was fetched on every run.
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    dovecot.append(messages)  # UID 7 is the question, for a person
    env = {"MAILCLI_IMAP_PASSWORD": PASSWORD}
    args = ["--ca-file", str(dovecot.ca_file), "--json"]
    first = json.loads(cli("bounces", dovecot.url, *args, env=env).stdout)
    assert (first["messages"], first["unmatched"]) == (7, 1)

    proxy = ImapProxy(dovecot, lambda n, command: "drop" if _flagging(7)(command) else None, accept=1)
    try:
        acked = cli("bounces", proxy.url(), *args, "--ack", env=env)
    finally:
        proxy.close()
    assert acked.exit_code == 5, acked.output
    assert "connecting again failed: cannot connect: Connection refused" in acked.stderr
    assert dovecot.flags()["Question about your newsletter"] == set()

    again = cli("bounces", dovecot.url, *args, env=env)
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert (data["messages"], data["already_processed"], data["unmatched"], data["not_marked"]) == (1, 1, 0, [])
    assert dovecot.flags()["Question about your newsletter"] == {"\\Seen", "$MailcliProcessed"}
    assert json.loads(cli("bounces", dovecot.url, *args, env=env).stdout)["messages"] == 0


@pytest.mark.parametrize(("answer", "reason"), [
    (b"NO [SERVERBUG] Internal error occurred. Refer to server log for more information.",
     "the server answered NO: [SERVERBUG] Internal error occurred. Refer to server log for more information"),
    (b"BAD Error in IMAP command UID STORE: Invalid arguments.",
     "the server refused to flag it (UID command error: BAD [b'Error in IMAP command UID STORE: Invalid"
     " arguments.'])"),
], ids=["NO", "BAD"])
def test_a_message_the_server_will_not_flag_is_named_and_the_rest_is_processed(
        project: Path, cli: Cli, dovecot: Dovecot, answer: bytes, reason: str) -> None:
    # A STORE answered NO was passed over without a word: the run ended with
    # exit 0, and the message stayed unread in the mailbox and was fetched
    # again on every run (with --delete: never deleted). One answered BAD
    # ended the run with "connection lost", exit 5, though nothing was lost.
    s = _seeded(project, dovecot)
    proxy = ImapProxy(dovecot, lambda n, command: answer if _flagging(3)(command) else None)
    env = {"MAILCLI_IMAP_PASSWORD": PASSWORD}
    try:
        result = cli("bounces", proxy.url(), "--ca-file", str(dovecot.ca_file), env=env)
        data = json.loads(cli("bounces", proxy.url(), "--ca-file", str(dovecot.ca_file), "--json", env=env).stdout)
    finally:
        proxy.close()
    assert result.exit_code == 3, result.output
    assert proxy.connections == 2  # one for each run: the connection was kept
    assert f"Warning: Cannot mark {proxy.url()} UID 3 as processed: {reason}; it was processed, and the next run" \
        " marks it" in result.stderr
    assert f"Error: 1 message of {proxy.url()} was processed but could not be marked as processed in the" \
        " mailbox; every other message was processed" in result.stderr
    assert "7 messages from" in result.stdout
    assert s.suppressions("cy@example.org") == {"*": "complained"}
    assert s.membership("dee@example.org")[::2] == ("unsubscribed", "mailto")  # after it
    assert data["not_marked"] == [{"entry": f"{proxy.url()} UID 3", "reason": reason}]
    assert (data["messages"], data["already_processed"], data["complaints"]) == (2, 1, 0)  # and the question
    flags = dovecot.flags()
    assert flags.pop("Yahoo! Mail AntiSpam Feedback") == set()
    assert flags.pop("Question about your newsletter") == set()
    assert all(f == {"\\Seen", "$MailcliProcessed"} for f in flags.values()), flags

    assert _read_again(cli, dovecot, s)["not_marked"] == []
    assert dovecot.flags()["Yahoo! Mail AntiSpam Feedback"] == {"\\Seen", "$MailcliProcessed"}


def test_a_mailbox_the_user_may_only_read_is_refused_before_anything_is_read(
        project: Path, cli: Cli, dovecot: Dovecot) -> None:
    # The server opened the mailbox read-only: mailcli said "connection lost
    # while opening the mailbox", exit 5, which a rerun never mends.
    s = _seeded(project, dovecot)
    for sub in ("cur", "new"):  # Dovecot may not write: it opens the mailbox READ-ONLY
        (dovecot.maildir / sub).chmod(0o555)
    try:
        result = cli("bounces", dovecot.url, "--ca-file", str(dovecot.ca_file),
                     env={"MAILCLI_IMAP_PASSWORD": PASSWORD})
    finally:
        for sub in ("cur", "new"):
            (dovecot.maildir / sub).chmod(0o755)
    assert result.exit_code == 5, result.output
    assert result.stderr.splitlines() == [
        f"Error: {dovecot.url}: the server opens the mailbox 'INBOX' read-only for bounces, and mailcli marks"
        " (or deletes) each message it has processed",
        "Hint: give bounces the right to change flags (and, for --delete, to delete) in INBOX",
    ]
    assert result.stdout == ""
    assert s.counts()["events"] == 0


def test_without_delete_no_message_leaves_the_mailbox(project: Path, cli: Cli, dovecot: Dovecot) -> None:
    # mailcli closed the mailbox with CLOSE, which expunges every message
    # flagged \Deleted: one a person had marked for deletion in their mail
    # program (and might still have unmarked) was gone after a run without
    # --delete.
    _seeded(project, dovecot)
    imap = dovecot.client()
    imap.select("INBOX")
    assert imap.uid("STORE", "7", "+FLAGS", "(\\Deleted)")[0] == "OK"  # the question, marked by a person
    imap.logout()
    result = cli("bounces", dovecot.url, "--ca-file", str(dovecot.ca_file), "--json",
                 env={"MAILCLI_IMAP_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["messages"] == 7
    flags = dovecot.flags()
    assert len(flags) == 7
    assert flags["Question about your newsletter"] == {"\\Deleted"}


@pytest.mark.parametrize("how", ["close", "drop"], ids=["after-dovecot-expunged", "before-dovecot-saw-it"])
def test_a_connection_closed_while_deleting_is_opened_again_and_the_messages_deleted(
        project: Path, cli: Cli, dovecot: Dovecot, how: str) -> None:
    # `bounces --delete` expunged on its way out and said nothing when the
    # connection was lost then: the run ended with exit 0 and the messages it
    # had processed were still in the mailbox.
    _seeded(project, dovecot)
    proxy = ImapProxy(dovecot, lambda n, command: how if n == 1 and _expunging(command) else None)
    result = _through(cli, dovecot, proxy, "--json", "--delete")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert proxy.connections == 2
    assert [(n, c) for n, c in proxy.commands if _expunging(c)] == [(1, b"UID EXPUNGE 1:6"), (2, b"UID EXPUNGE 1:6")]
    data = json.loads(result.stdout)
    assert (data["messages"], data["not_deleted"], data["not_marked"]) == (7, None, [])
    assert dovecot.flags() == {"Question about your newsletter": set()}  # only what a person has to read is left


def test_a_server_that_will_not_delete_is_named_and_the_next_run_deletes(
        project: Path, cli: Cli, dovecot: Dovecot) -> None:
    # An EXPUNGE answered NO was passed over: exit 0, and nothing said why the
    # processed messages stayed in the mailbox.
    s = _seeded(project, dovecot)
    proxy = ImapProxy(dovecot, lambda n, command: b"NO [NOPERM] Permission denied" if _expunging(command) else None)
    result = _through(cli, dovecot, proxy, "--delete")
    assert result.exit_code == 3, result.output
    assert f"Error: {proxy.url()}: the server answered NO to UID EXPUNGE: [NOPERM] Permission denied; nothing was" \
        " deleted" in result.stderr
    assert "Hint: run the same command again to delete what was read" in result.stderr
    assert s.suppressions("cy@example.org") == {"*": "complained"}
    flags = dovecot.flags()
    assert flags.pop("Question about your newsletter") == set()
    assert flags and all(f == {"\\Deleted"} for f in flags.values()), flags

    again = _read_again(cli, dovecot, s, "--delete")
    assert (again["already_processed"], again["not_deleted"]) == (6, None)
    assert dovecot.flags() == {"Question about your newsletter": set()}


def _expunging(command: bytes) -> bool:
    """Whether a command is mailcli's EXPUNGE (of the messages it flagged, by UID, or of every one)."""
    return command == b"EXPUNGE" or command.startswith(b"UID EXPUNGE ")


def test_delete_leaves_a_message_a_person_flagged_deleted(project: Path, cli: Cli, dovecot: Dovecot) -> None:
    # --delete sent EXPUNGE, which removes every message flagged \Deleted in
    # the folder: one a person had marked for deletion in a mail program (and
    # meant to undelete) was gone too. Dovecot offers UIDPLUS: only the UIDs
    # mailcli flagged are expunged.
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    dovecot.append([*messages, build("human.eml")])  # UID 7 is the question, UID 8 a person's message
    imap = dovecot.client()
    imap.select("INBOX")
    assert imap.uid("STORE", "8", "+FLAGS", "(\\Deleted)")[0] == "OK"  # marked by a person
    imap.logout()
    result = cli("bounces", dovecot.url, "--ca-file", str(dovecot.ca_file), "--json", "--delete",
                 env={"MAILCLI_IMAP_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["messages"], data["unmatched"], data["not_deleted"]) == (8, 2, None)
    assert s.suppressions("cy@example.org") == {"*": "complained"}
    assert dovecot.flags_by_uid() == {7: set(), 8: {"\\Deleted"}}  # the six processed are gone


def test_without_uidplus_delete_expunges_every_message_flagged_deleted(
        project: Path, cli: Cli, dovecot: Dovecot) -> None:
    # A server without UIDPLUS has only EXPUNGE, as the README says.
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    dovecot.append([*messages, build("human.eml")])
    imap = dovecot.client()
    imap.select("INBOX")
    assert imap.uid("STORE", "8", "+FLAGS", "(\\Deleted)")[0] == "OK"
    imap.logout()
    listed = b"OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT LITERAL+ MOVE] Capability completed."
    proxy = ImapProxy(dovecot, lambda n, command: listed if command == b"CAPABILITY" else None)
    result = _through(cli, dovecot, proxy, "--json", "--delete")
    assert result.exit_code == 0, result.output
    assert [c for _, c in proxy.commands if _expunging(c)] == [b"EXPUNGE"]
    assert json.loads(result.stdout)["not_deleted"] is None
    assert dovecot.flags_by_uid() == {7: set()}


def test_a_uid_expunge_refused_after_others_says_how_many_were_deleted(
        project: Path, cli: Cli, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailcli.feedback import imap

    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    dovecot.append(messages + messages)  # the second copies are found processed: UIDs 1-6 and 8-13 go
    monkeypatch.setattr(imap, "EXPUNGE_SET", 4)  # "1:6" fits, "1:6,8:13" does not: two commands
    refused = b"NO [SERVERBUG] Internal error occurred."
    proxy = ImapProxy(dovecot, lambda n, command: refused if command == b"UID EXPUNGE 8:13" else None)
    env = {"MAILCLI_IMAP_PASSWORD": PASSWORD}
    result = _through(cli, dovecot, proxy, "--delete")
    assert result.exit_code == 3, result.output
    assert [c for _, c in proxy.commands if _expunging(c)] == [b"UID EXPUNGE 1:6", b"UID EXPUNGE 8:13"]
    assert f"Error: {proxy.url()}: the server answered NO to UID EXPUNGE: [SERVERBUG] Internal error occurred;" \
        " only 6 messages of those processed were deleted" in result.stderr
    assert "Hint: run the same command again to delete what was read" in result.stderr
    assert dovecot.flags_by_uid() == {7: set(), **{uid: {"\\Deleted"} for uid in range(8, 14)}, 14: set()}

    again = cli("bounces", dovecot.url, "--ca-file", str(dovecot.ca_file), "--delete", "--json", env=env)
    assert again.exit_code == 0, again.output
    assert (json.loads(again.stdout)["already_processed"], json.loads(again.stdout)["not_deleted"]) == (6, None)
    assert dovecot.flags_by_uid() == {7: set(), 14: set()}


def _replies(project: Path, count: int) -> list[bytes]:
    """``count`` out-of-office replies to one campaign, each a message of its own."""
    s = seed(project, PEOPLE)
    _, mids = add_campaign(s, "may")
    return [build("vacation.eml", rcpt="eve@example.org", message_id=mids["eve@example.org"]) for _ in range(count)]


def _uids(commands: list[tuple[int, bytes]], verb: bytes) -> list[int]:
    """The UIDs of mailcli's UID FETCH (or UID STORE) commands, in the order sent."""
    return [int(command.split()[2]) for _, command in commands if command.startswith(b"UID " + verb + b" ")]


def test_a_mailbox_too_big_for_one_search_answer_is_read_in_windows(
        project: Path, cli: Cli, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    # The UIDs of every unprocessed message came back in one SEARCH answer, one
    # line; above about 140,000 of them it passed imaplib's line limit of
    # 1,000,000 bytes, and every run ended "connection lost" (exit 5) and never
    # got further. Here both are scaled down: a limit of 1,000 bytes (Dovecot's
    # longest line otherwise, its capabilities, is under 500), 400 messages.
    from mailcli.feedback import imap

    dovecot.append(_replies(project, 400))
    client = dovecot.client()
    client.select("INBOX")
    assert client.uid("STORE", "151:200", "+FLAGS", "(\\Seen $MailcliProcessed)")[0] == "OK"  # read before
    client.logout()
    monkeypatch.setattr(imaplib, "_MAXLINE", 1000)  # 350 UIDs in one line take 1,300 bytes
    monkeypatch.setattr(imap, "SEARCH_WINDOW", 100)
    proxy = ImapProxy(dovecot, lambda n, command: None)
    try:
        result = _through(cli, dovecot, proxy, "--json")
    finally:
        monkeypatch.undo()
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["messages"], data["ignored"], data["unreadable"], data["not_marked"]) == (350, 350, [], [])
    assert [command for _, command in proxy.commands if command.startswith(b"UID SEARCH ")] == [
        b"UID SEARCH 1:100 UNKEYWORD $MailcliProcessed", b"UID SEARCH 101:200 UNKEYWORD $MailcliProcessed",
        b"UID SEARCH 201:300 UNKEYWORD $MailcliProcessed", b"UID SEARCH 301:400 UNKEYWORD $MailcliProcessed"]
    assert _uids(proxy.commands, b"FETCH") == [*range(1, 151), *range(201, 401)]  # in UID order
    assert all(f == {"\\Seen", "$MailcliProcessed"} for f in dovecot.flags_by_uid().values())


def test_messages_another_client_expunges_meanwhile_move_the_next_window(
        project: Path, cli: Cli, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    # A person deletes five messages mailcli has read while it reads the first
    # window: the messages after them move five places down, and the next
    # window starts five places earlier, so none of them is passed over.
    from mailcli.feedback import imap

    dovecot.append(_replies(project, 250))
    person = dovecot.client()
    person.select("INBOX")

    def act(n: int, command: bytes) -> Action:
        if command.startswith(b"UID FETCH 50 "):
            assert person.uid("STORE", "1:5", "+FLAGS", "(\\Deleted)")[0] == "OK"
            assert person.uid("EXPUNGE", "1:5")[0] == "OK"
        return None

    monkeypatch.setattr(imap, "SEARCH_WINDOW", 100)
    proxy = ImapProxy(dovecot, act)
    try:
        result = _through(cli, dovecot, proxy, "--json")
    finally:
        person.logout()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["messages"] == 250
    assert [command.split()[2] for _, command in proxy.commands if command.startswith(b"UID SEARCH ")] == [
        b"1:100", b"96:195", b"196:245"]
    assert _uids(proxy.commands, b"FETCH") == list(range(1, 251))
    flags = dovecot.flags_by_uid()
    assert sorted(flags) == list(range(6, 251))
    assert all(f == {"\\Seen", "$MailcliProcessed"} for f in flags.values())


@pytest.mark.parametrize(("permanent", "keyword"), [
    (None, True),
    (b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $MailcliProcessed)] Flags permitted.\r\n",
     True),
    (b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)] Flags permitted.\r\n", False),
], ids=["absent", "the-keyword-listed", "no-keyword"])
def test_a_server_that_sends_no_permanentflags_keeps_the_keyword(
        project: Path, cli: Cli, dovecot: Dovecot, permanent: bytes | None, keyword: bool) -> None:
    # Without PERMANENTFLAGS in the answer to SELECT mailcli took the keyword
    # for one the server would not keep: it read only unseen messages and
    # marked them \Seen, so a complaint a person had already read was never
    # processed. RFC 3501 says every flag can then be changed permanently.
    # Only a list without the keyword and without \* makes mailcli do so.
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    dovecot.append(messages)  # UID 3 is cy's complaint
    imap = dovecot.client()
    imap.select("INBOX")
    assert imap.uid("STORE", "3", "+FLAGS", "(\\Seen)")[0] == "OK"  # a person has read it
    imap.logout()

    def reply(n: int, line: bytes) -> bytes | None:
        return permanent if line.startswith(b"* OK [PERMANENTFLAGS ") else line

    proxy = ImapProxy(dovecot, lambda n, command: None, reply=reply)
    result = _through(cli, dovecot, proxy, "--json")
    assert result.exit_code == 0, result.output
    searches = [command for _, command in proxy.commands if command.startswith(b"UID SEARCH ")]
    flags = dovecot.flags()
    assert flags.pop("Question about your newsletter") == set()
    if keyword:
        assert searches == [b"UID SEARCH 1:7 UNKEYWORD $MailcliProcessed"]
        assert json.loads(result.stdout)["complaints"] == 1
        assert s.suppressions("cy@example.org") == {"*": "complained"}
        assert all(f == {"\\Seen", "$MailcliProcessed"} for f in flags.values()), flags
    else:
        assert searches == [b"UID SEARCH 1:7 UNSEEN"]
        assert json.loads(result.stdout)["complaints"] == 0  # read by a person: theirs to handle
        assert all(f == {"\\Seen"} for f in flags.values()), flags


def test_a_mailbox_named_in_other_than_ascii_letters_is_read(project: Path, cli: Cli, dovecot: Dovecot) -> None:
    # mailcli sent the name as it was given, and imaplib cannot: a folder
    # named "Rückläufer" ended every run with "unexpected UnicodeEncodeError".
    s = seed(project, PEOPLE)
    _, messages = scenario(s)
    imap = dovecot.client()
    assert imap.create("R&APw-ckl&AOQ-ufer")[0] == "OK"  # IMAP's own spelling of the name (RFC 3501 5.1.3)
    for data in messages:
        assert imap.append("R&APw-ckl&AOQ-ufer", None, None, data.replace(b"\n", b"\r\n"))[0] == "OK"
    imap.logout()
    url = dovecot.url.replace("/INBOX", "/Rückläufer")
    env = {"MAILCLI_IMAP_PASSWORD": PASSWORD}
    result = cli("bounces", url, "--ca-file", str(dovecot.ca_file), "--json", env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["source"], data["messages"], data["complaints"]) == (url, 7, 1)
    assert s.suppressions("cy@example.org") == {"*": "complained"}
    missing = cli("bounces", url.replace("ckl", "ck"), "--ca-file", str(dovecot.ca_file), env=env)
    assert missing.exit_code == 2 and "no such mailbox 'Rückäufer'" in missing.stderr
