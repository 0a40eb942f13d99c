"""Fuzzing feedback parsing: ``mailcli bounces`` on mbox files and Maildir folders.

A mailbox of one to six messages, each one of: an RFC 3464 delivery report
(actions, status codes and diagnostics valid and not, several recipients,
the returned original as message/rfc822, text/rfc822-headers or missing,
headers only), an ARF complaint, a mailto unsubscribe with a token valid or
not, an auto-reply, a person's mail, a random MIME tree (nested multiparts up
to thousands deep, broken boundaries and transfer encodings, unknown
charsets, giant headers, 8-bit bytes in headers), or random bytes — and any
of them mutated byte by byte, or the mbox file itself.

The reports quote the Message-IDs and tokens of a real campaign in the
project. Besides the shared invariants: the same mailbox as mbox and as
Maildir gives the same counts and the same database; reading it a second
time changes nothing; a well-formed report does what it says (a 5.1.1 is a
hard bounce of that contact, an abuse report a complaint, a valid mailto
token an unsubscribe, a vacation notice is ignored); contacts are never
created or deleted.
"""

from __future__ import annotations

import json
import mailbox
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fuzz.engine import Draw, Invariants, Violation, chance, choice, dump, mutate

PEOPLE = ["ann@example.org", "bob@example.org", "cy@example.org", "dee@example.org"]
COUNTS = ("messages", "hard_bounces", "soft_bounces", "policy_rejections", "complaints", "unsubscribes",
          "unmatched", "ignored", "delays", "relayed", "expanded", "already_processed", "suppressed")
ACTIONS = ["failed", "delayed", "delivered", "relayed", "expanded", "FAILED ", "", "x" * 200, "failed; extra"]
STATUSES = ["5.1.1", "5.1.10", "4.2.2", "5.7.1", "5.7.26", "2.0.0", "5.0.0", "4.0.0", "5.2.2", "9.9.9",
            "5.999.999", "5." + "1" * 300 + ".1", "", "5.1", "abc", "5.1.1 (extra)", "٥.١.١"]
DIAGNOSTICS = ["smtp; 550 5.1.1 User unknown", "smtp; 421 4.7.0 try later", "smtp; 554 spam detected",
               "smtp; 550 blocked by policy", "x-unix; 127", "", "smtp;550", "smtp; " + "5" * 500,
               "smtp; 550 5.7.1 DMARC", "=?utf-8?b?w6k=?= encoded"]
CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "x-unknown", "utf-16", "", "utf-8\"; x=\"", "gb2312"]
ENCODINGS = ["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", "binary", "bogus"]


@dataclass
class Mail:
    data: bytes
    expect: str | None = None  # the count this message must add to, when it is well-formed
    contact: str | None = None  # whom it is about


@dataclass
class Case:
    mails: list[Mail]
    mbox_mutation: bool = False
    mbox_bytes: bytes | None = None
    description: str = ""
    kinds: list[str] = field(default_factory=list)


class FeedbackSurface:
    name = "feedback"

    def __init__(self, workdir: Path, invariants: Invariants | None = None) -> None:
        from tests.feedback.test_feedback_support import add_campaign, seed

        self.workdir = workdir
        self.invariants = invariants or Invariants(seconds=60, megabytes=600)
        self.base = workdir / "base"
        self.invariants.run(["init", str(self.base)], workdir, {0})
        seeded = seed(self.base, PEOPLE, lists=("news", "events"))
        _, self.message_ids = add_campaign(seeded, "may")
        self.tokens = {email: seeded.token(email) for email in PEOPLE}
        self.mailto = seeded.settings.unsubscribe.mailto or "unsubscribe@example.org"
        seeded.store.close()
        self.counter = 0
        self.stats = {"mailboxes": 0, "messages": 0, "well-formed checked": 0, "mbox refused": 0}

    def summary(self) -> str:
        return ", ".join(f"{key} {value}" for key, value in self.stats.items())

    # ------------------------------------------------------------ generate

    def generate(self, draw: Draw) -> Case:
        mails = []
        kinds = []
        for _ in range(draw.integer(1, 6)):
            kind = choice(draw, ["dsn", "dsn", "dsn", "arf", "mailto", "auto", "human", "tree", "tree", "bytes"])
            mail = getattr(self, f"_{kind}")(draw)
            if chance(draw, 25):
                mail = Mail(mutate(draw, mail.data, times=6))
                kind += "~"
            mails.append(mail)
            kinds.append(kind)
        case = Case(mails, kinds=kinds, description=" ".join(kinds))
        if chance(draw, 8):
            case.mbox_mutation = True
            case.mbox_bytes = mutate(draw, _mbox_bytes([m.data for m in mails]), times=4)
        return case

    def _id(self) -> str:
        self.counter += 1
        return f"<fuzz.{self.counter}@mx.example.net>"

    def _person(self, draw: Draw) -> str:
        return choice(draw, PEOPLE)

    def _original(self, draw: Draw, email: str) -> tuple[str, bool]:
        """A returned original's part, and whether it names the delivery."""
        real = chance(draw, 80)
        mid = self.message_ids[email] if real else choice(draw, ["<unknown@example.org>", "", "<>", "garbage",
                                                                  "<" + "a" * 2000 + "@x>"])
        unsub = f"<https://news.example.org/unsubscribe?t={self.tokens[email]}>" if chance(draw, 50) else ""
        kind = choice(draw, ["message/rfc822", "text/rfc822-headers", "message/global-headers", "text/plain"])
        headers = f"From: news@example.org\nTo: {email}\nSubject: May\nMessage-ID: {mid}\n"
        if unsub:
            headers += f"List-Unsubscribe: {unsub}\n"
        body = f"Content-Type: {kind}\n\n{headers}\n" + ("Hello\n" if kind == "message/rfc822" else "")
        return body, real and kind != "text/plain" and bool(mid)

    def _dsn(self, draw: Draw) -> Mail:
        email = self._person(draw)
        blocks = []
        well_formed = True
        expect = None
        for index in range(draw.integer(1, 3) if chance(draw, 20) else 1):
            action = choice(draw, ACTIONS) if chance(draw, 30) else choice(draw, ["failed", "delayed"])
            status = choice(draw, STATUSES) if chance(draw, 40) else choice(draw, ["5.1.1", "4.2.2", "5.7.1"])
            diagnostic = choice(draw, DIAGNOSTICS)
            rcpt = email if index == 0 else choice(draw, [*PEOPLE, "nobody@example.org", "", "<>"])
            blocks.append(f"Final-Recipient: rfc822; {rcpt}\nAction: {action}\nStatus: {status}\n"
                          f"Diagnostic-Code: {diagnostic}\n")
            if index == 0 and action == "delayed":
                expect = "delays"  # news about a delivery, whatever its code
            elif index == 0 and action == "failed":
                expect = {"5.1.1": "hard_bounces", "4.2.2": "soft_bounces", "5.7.1": "policy_rejections"}.get(status)
            if index > 0:
                well_formed = False
        original, names = self._original(draw, email)
        boundary = choice(draw, ["B1", "=_x", "a" * 70, "weird boundary", ""])
        parts = [f"Content-Type: text/plain; charset={choice(draw, CHARSETS)}\n\nYour message could not be"
                 f" delivered.\n",
                 "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
                 + "\n".join(blocks)]
        if chance(draw, 85):
            parts.append(original)
        else:
            well_formed = False
        if chance(draw, 10):  # headers only: the report with nothing in it
            parts, well_formed = [], False
        head = (f"From: MAILER-DAEMON@mx.example.net\nTo: bounces@example.org\nSubject: Undelivered Mail\n"
                f"Message-ID: {self._id()}\nMIME-Version: 1.0\n"
                f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\n")
        if chance(draw, 5):
            head += "X-Giant: " + "g" * draw.integer(1000, 300_000) + "\n"
        body = "".join(f"--{boundary}\n{part}\n" for part in parts) + f"--{boundary}--\n"
        ok = well_formed and names and boundary in ("B1", "=_x")
        return Mail(f"{head}\n{body}".encode(), expect if ok else None, email)

    def _arf(self, draw: Draw) -> Mail:
        email = self._person(draw)
        feedback = choice(draw, ["abuse", "abuse", "fraud", "not-spam", "", "ABUSE", "x" * 100])
        original, names = self._original(draw, email)
        data = ("From: fbl@isp.example\nTo: fbl@example.org\nSubject: complaint\n"
                f"Message-ID: {self._id()}\nMIME-Version: 1.0\n"
                "Content-Type: multipart/report; report-type=feedback-report; boundary=\"F\"\n\n"
                "--F\nContent-Type: text/plain\n\nA complaint.\n"
                f"--F\nContent-Type: message/feedback-report\n\nFeedback-Type: {feedback}\n"
                f"User-Agent: fuzz/1\nVersion: 1\nOriginal-Rcpt-To: {email}\n"
                f"--F\n{original}\n--F--\n")
        expect = "complaints" if feedback == "abuse" and names else None
        return Mail(data.encode(), expect, email)

    def _mailto(self, draw: Draw) -> Mail:
        email = self._person(draw)
        token = self.tokens[email] if chance(draw, 70) else choice(draw, ["x" * 30, self.tokens[email][:-1] + "A",
                                                                          "", "é" * 30])
        local, _, domain = self.mailto.partition("@")
        if draw.boolean():
            to, subject = f"{local}+{token}@{domain}", "unsubscribe"
        else:
            to, subject = self.mailto, f"unsubscribe {token}"
        data = (f"From: {email}\nTo: {to}\nSubject: {subject}\nMessage-ID: {self._id()}\n"
                "Content-Type: text/plain\n\nPlease unsubscribe me.\n")
        valid = token == self.tokens[email]
        return Mail(data.encode("utf-8"), "unsubscribes" if valid else None, email)

    def _auto(self, draw: Draw) -> Mail:
        data = (f"From: {self._person(draw)}\nTo: news@example.org\nSubject: Out of office\n"
                f"Auto-Submitted: auto-replied\nMessage-ID: {self._id()}\n\nI am away.\n")
        return Mail(data.encode(), "ignored")

    def _human(self, draw: Draw) -> Mail:
        data = (f"From: Someone <{self._person(draw)}>\nTo: news@example.org\nSubject: {draw.text(30)}\n"
                f"Message-ID: {self._id()}\nContent-Type: text/plain; charset=utf-8\n\n{draw.text(200)}\n")
        return Mail(data.encode("utf-8", "surrogatepass"), None)

    def _tree(self, draw: Draw) -> Mail:
        depth = draw.integer(1, 3000) if chance(draw, 10) else draw.integer(1, 6)
        return Mail(f"From: x@example.net\nMessage-ID: {self._id()}\nMIME-Version: 1.0\n".encode()
                    + self._part(draw, depth))

    def _part(self, draw: Draw, depth: int) -> bytes:
        if depth <= 0 or chance(draw, 20):
            ctype = choice(draw, ["text/plain", "text/html", "message/delivery-status", "message/rfc822",
                                  "text/rfc822-headers", "message/feedback-report", "application/octet-stream",
                                  "message/global-delivery-status", "garbage"])
            encoding = choice(draw, ENCODINGS)
            body = choice(draw, [b"Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n",
                                 b"Message-ID: " + self.message_ids[PEOPLE[0]].encode() + b"\n",
                                 b"=C3=A9=\n", b"w6k=\n", b"!!!not base64!!!", draw.bytes(200), b"\xff\xfe\x00"])
            return (f"Content-Type: {ctype}; charset={choice(draw, CHARSETS)}\nContent-Transfer-Encoding:"
                    f" {encoding}\n\n").encode() + body + b"\n"
        boundary = f"b{depth}"
        kind = choice(draw, ["mixed", "report; report-type=delivery-status", "report; report-type=feedback-report",
                             "alternative", "related"])
        children = [self._part(draw, depth - 1) for _ in range(1 if depth > 6 else draw.integer(0, 3))]
        closing = b"" if chance(draw, 10) else f"--{boundary}--\n".encode()
        return (f"Content-Type: multipart/{kind}; boundary=\"{boundary}\"\n\n".encode()
                + b"".join(f"--{boundary}\n".encode() + child for child in children) + closing)

    def _bytes(self, draw: Draw) -> Mail:
        return Mail(draw.bytes(500))

    # ------------------------------------------------------------ check

    def check(self, case: Case) -> None:
        self.stats["mailboxes"] += 1
        self.stats["messages"] += len(case.mails)
        if case.mbox_mutation:
            self._mutated_mbox(case)
            return
        mbox_dir, maildir_dir = self.workdir / "as-mbox", self.workdir / "as-maildir"
        results = []
        for folder, kind in ((mbox_dir, "mbox"), (maildir_dir, "maildir")):
            if folder.exists():
                shutil.rmtree(folder)
            shutil.copytree(self.base, folder)
            source = folder / ("bounces.mbox" if kind == "mbox" else "Maildir")
            if kind == "mbox":
                source.write_bytes(_mbox_bytes([m.data for m in case.mails]))
            else:
                box = mailbox.Maildir(str(source), create=True)
                for mail in case.mails:
                    box.add(mail.data)
                box.close()
            results.append(self._bounces(case, folder, source))
        (mbox_counts, mbox_state), (dir_counts, dir_state) = results
        if {k: mbox_counts[k] for k in COUNTS} != {k: dir_counts[k] for k in COUNTS} or mbox_state != dir_state:
            raise Violation(f"{case.description}: mbox and Maildir differ: {mbox_counts} != {dir_counts}")
        self._expected(case, mbox_counts)

    def _bounces(self, case: Case, folder: Path, source: Path) -> tuple[dict[str, Any], Any]:
        run = self.invariants.run
        before = _state(folder / "mailcli.db")
        first = run(["--json", "bounces", source.name], folder, {0})
        counts = json.loads(first.stdout)
        if counts["messages"] != len(case.mails):
            raise Violation(f"{case.description}: {len(case.mails)} messages read as {counts['messages']}")
        after = _state(folder / "mailcli.db")
        if after["contacts"] != before["contacts"]:
            raise Violation(f"{case.description}: contacts were created or deleted")
        database = dump(folder / "mailcli.db")
        again = run(["--json", "bounces", source.name], folder, {0})
        second = json.loads(again.stdout)
        # Unmatched messages are listed again until a person acknowledges them; the rest are done.
        if second["already_processed"] + second["unmatched"] != second["messages"] \
                or second["unmatched"] != counts["unmatched"] or dump(folder / "mailcli.db") != database:
            raise Violation(f"{case.description}: a second run changed something: {second}")
        return counts, after["people"]

    def _expected(self, case: Case, counts: dict[str, Any]) -> None:
        """Each well-formed report does what it says: the count of its kind
        is at least the number of them (the other messages may add to it)."""
        kinds = [m.expect for m in case.mails if m.expect]
        self.stats["well-formed checked"] += len(kinds)
        for name in set(kinds):
            if counts[name] < kinds.count(name):
                raise Violation(f"{case.description}: {name} {counts[name]}, expected at least"
                                f" {kinds.count(name)}: {counts}")

    def _mutated_mbox(self, case: Case) -> None:
        folder = self.workdir / "as-mbox"
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(self.base, folder)
        assert case.mbox_bytes is not None
        (folder / "bounces.mbox").write_bytes(case.mbox_bytes)
        before = dump(folder / "mailcli.db")
        outcome = self.invariants.run(["--json", "bounces", "bounces.mbox"], folder, {0, 2})
        if outcome.code == 2:
            self.stats["mbox refused"] += 1
            if dump(folder / "mailcli.db") != before:
                raise Violation(f"{case.description}: the mbox was refused but the database changed")


def _mbox_bytes(messages: list[bytes]) -> bytes:
    """An mbox file as an MTA writes one (From_ lines, >From quoting)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.mbox"
        box = mailbox.mbox(str(path), create=True)
        for data in messages:
            box.add(data)
        box.close()
        return path.read_bytes()


def _state(database: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        contacts = conn.execute("SELECT count(*) FROM contacts").fetchone()[0]
        people = conn.execute(
            "SELECT c.email_key, c.status, m.status, l.name FROM contacts c JOIN memberships m"
            " ON m.contact_id = c.id JOIN lists l ON l.id = m.list_id ORDER BY 1, 4").fetchall()
        suppressions = conn.execute("SELECT hmac, scope, reason FROM suppressions ORDER BY 1, 2").fetchall()
    finally:
        conn.close()
    return {"contacts": contacts, "people": (people, suppressions)}
