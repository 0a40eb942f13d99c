"""Regenerate docs/walkthrough.md: the first hour with mailcli, as a transcript.

Every step is what a new user does with the README open: real ``mailcli``
commands in a fresh folder, with a Mailchimp-style export and a Dutch Excel
CSV (semicolons, cp1252), a local SMTP sink and ``mailcli serve``. Each
command is written down with exactly what it printed (stdout and stderr
interleaved, as a terminal shows them), so the transcript never goes stale:
run this again whenever mailcli's output changes.

    python docs/walkthrough.py             # writes docs/walkthrough.md
    python docs/walkthrough.py -o FILE     # writes FILE ("-": stdout)
    python docs/walkthrough.py --check     # runs every step, writes nothing

It exits 1 if a step ends with another exit code than the transcript
expects. The temporary folder and the ports are shown as ~/first-hour,
2525 (the SMTP sink) and 8025 (serve); only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import email
import email.policy
import io
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
SINK_PORT, SERVE_PORT = 2525, 8025  # as shown in the transcript
REFUSED = "m.jansen@example.net"  # the sink answers 550 5.1.1 for this one


# ---------------------------------------------------------------------------
# The user's files


def mailchimp_export(path: Path) -> None:
    """A Mailchimp 'subscribed members' export: its columns, a few messy rows."""
    rng = random.Random(2026)
    first = ["Anna", "Bram", "Daan", "Eva", "Fenna", "Gijs", "Hanna", "Ilse", "Joost", "Lotte", "Milan", "Noor"]
    last = ["de Jong", "Jansen", "de Vries", "van den Berg", "Bakker", "Visser", "Smit", "Meijer", "Mulder"]
    header = ["Email Address", "First Name", "Last Name", "Address", "Phone Number", "MEMBER_RATING",
              "OPTIN_TIME", "OPTIN_IP", "CONFIRM_TIME", "CONFIRM_IP", "LATITUDE", "LONGITUDE", "GMTOFF",
              "DSTOFF", "TIMEZONE", "CC", "REGION", "LAST_CHANGED", "LEID", "EUID", "NOTES", "TAGS"]
    rows = []
    for i in range(36):
        f, la = rng.choice(first), rng.choice(last)
        address = f"{f.lower()}.{la.split()[-1].lower()}{i}@example.{rng.choice(['org', 'net', 'com'])}"
        rows.append([address, f, la, "", "", str(rng.randint(1, 5)), f"2024-0{rng.randint(1, 9)}-1{i % 10} 10:0{i % 6}:00",
                     f"192.0.2.{i + 10}", "", "", "", "", "1", "2", "Europe/Amsterdam", "NL", "NH",
                     "2025-01-05 09:00:00", str(1000 + i), f"eu{i:04x}", "", '"klant"' if i % 7 == 0 else ""])
    rows.append([REFUSED, "Marieke", "Jansen", "", "", "2", "2023-11-02 08:15:00", *[""] * 15])
    rows.append(["  Anna.deJong@Example.ORG ", "Anna", "de Jong", *[""] * 19])
    rows.append(["ANNA.DEJONG@example.org", "Anna", "de Jong", *[""] * 19])  # the same person, other case
    rows.append([rows[3][0].upper(), rows[3][1], rows[3][2], *[""] * 19])
    rows.append(["anna.dejong@example", "Anna", "", *[""] * 19])  # no top-level domain
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)


def excel_csv(path: Path) -> None:
    """What Dutch Excel saves as 'CSV (puntkomma-gescheiden)': semicolons, cp1252, CRLF."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter=";", lineterminator="\r\n")
    writer.writerow(["E-mailadres", "Voornaam", "Tussenvoegsel", "Achternaam", "Woonplaats", "Lid sinds", "Contributie"])
    writer.writerows([
        ["renee@bakkerij.example", "Renée", "", "Dubois", "Utrecht", "12-3-2021", "€ 12,50"],
        ["jan@bakkerij.example", "Jan", "van der", "Berg", "Amsterdam", "1-1-2020", "€ 10,00"],
        ["zoe@bakkerij.example", "Zoë", "", "Çelik", "Den Haag", "3-4-2022", ""],
        ["piet @ bakkerij.example", "Piet", "", "Klaassen", "Gouda", "", "€ 5,00"],
        ["anna.dejong@example.org", "Anna", "de", "Jong", "Haarlem", "5-5-2019", "€ 12,50"],
        ["", "", "", "", "", "", ""],
    ])
    path.write_bytes(text.getvalue().encode("cp1252"))


def edit_config(path: Path, sink_port: int) -> str:
    """What the user changes in mailcli.toml; returns the diff to show."""
    before = path.read_text(encoding="utf-8")
    after = before
    for old, new in [
        ('from = "Newsletter <news@example.org>"', 'from = "Bakkerij de Jong <nieuws@bakkerij-dejong.nl>"'),
        ('# reply_to = "hello@example.org"', 'reply_to = "info@bakkerij-dejong.nl"'),
        ('list_id = "news.example.org"', 'list_id = "nieuwsbrief.bakkerij-dejong.nl"'),
        ("Keizersgracht 1, 1015 AA Amsterdam", "Oudegracht 12, 3511 AP Utrecht"),
        ('host = "localhost"', 'host = "127.0.0.1"'),
        ("port = 587", f"port = {sink_port}"),
        ('security = "starttls"            # "starttls"', 'security = "none"                # "starttls"'),
        ('rate = "20/s"  ', 'rate = "100/s" '),
        ('url = "https://news.example.org/unsubscribe"', 'url = "https://nieuwsbrief.bakkerij-dejong.nl/afmelden"'),
        ('mailto = "unsubscribe@example.org"', 'mailto = "afmelden@bakkerij-dejong.nl"'),
    ]:
        if old not in after:
            raise SystemExit(f"walkthrough: the scaffolded mailcli.toml has no {old!r}; update edit_config()")
        after = after.replace(old, new, 1)
    path.write_text(after, encoding="utf-8")
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), "mailcli.toml", "mailcli.toml", n=0, lineterm="")
    return "\n".join(line for line in diff if not line.startswith("@@"))


# ---------------------------------------------------------------------------
# The local SMTP sink (refuses one address, as a real relay would)


@dataclass
class Sink:
    port: int = 0
    messages: list[tuple[list[str], bytes]] = field(default_factory=list)
    _controller: Any = None

    def start(self) -> Sink:
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
                if address.lower() == REFUSED:
                    return "550 5.1.1 <m.jansen@example.net>: Recipient address rejected: User unknown"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.messages.append((list(envelope.rcpt_tos), bytes(envelope.original_content)))
                return "250 2.0.0 Ok: queued"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, ident="sink")
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def message_to(self, address: str) -> email.message.EmailMessage:
        for rcpts, data in self.messages:
            if address in rcpts:
                return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]
        raise SystemExit(f"walkthrough: the sink got no message for {address}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------
# Running commands and writing them down


class Transcript:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.cwd = base
        self.parts: list[str] = []
        self.problems: list[str] = []
        self.ports: dict[int, int] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_") and k not in
                    ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE")}
        self.env.update({"NO_COLOR": "1", "COLUMNS": "110", "PYTHONUNBUFFERED": "1", "HOME": str(base)})

    def shown(self, text: str) -> str:
        """Output as the transcript shows it: stable folder and ports."""
        text = text.replace(str(self.base), "~/first-hour").replace(tempfile.gettempdir() + "/", "/tmp/")
        for real, shown in self.ports.items():
            text = re.sub(rf"\b{real}\b", str(shown), text)
        return text

    def say(self, text: str) -> None:
        self.parts.append(textwrap.dedent(text).strip() + "\n")

    def block(self, command: str, output: str, code: int = 0) -> None:
        lines = [f"$ {command}"] + ([output.rstrip("\n")] if output.strip() else [])
        if code:
            lines.append(f"[exit {code}]")
        self.parts.append("```console\n" + self.shown("\n".join(lines)) + "\n```\n")

    def run(self, command: str, *, expect: int = 0, shown: str | None = None) -> str:
        """Run ``mailcli ...`` as typed; record it with its output and exit code."""
        args = command.split(" ", 1)[1] if " " in command else ""
        words = _split(args)
        proc = subprocess.run([sys.executable, "-m", "mailcli", *words], cwd=self.cwd, env=self.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=300)
        if proc.returncode != expect:
            self.problems.append(f"`{command}` exited {proc.returncode}, expected {expect}:\n{proc.stdout}")
        self.block(shown or command, proc.stdout, proc.returncode)
        return proc.stdout


def _split(text: str) -> list[str]:
    import shlex

    return shlex.split(text)


def one_click(url: str, serve_port: int) -> tuple[int, str]:
    """What a mail client's unsubscribe button sends (RFC 8058), to serve on this machine."""
    local = re.sub(r"^https://[^/]+", f"http://127.0.0.1:{serve_port}", url)
    request = urllib.request.Request(local, data=b"List-Unsubscribe=One-Click", method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback only
        return response.status, response.read().decode("utf-8", "replace")


def dsn(original: email.message.EmailMessage, recipient: str) -> bytes:
    """A bounce that comes back hours later, quoting the message it is about."""
    return textwrap.dedent(f"""\
        From: MAILER-DAEMON@mx.example.net
        To: nieuws@bakkerij-dejong.nl
        Subject: Undelivered Mail Returned to Sender
        Message-ID: <20261214.bounce.1@mx.example.net>
        MIME-Version: 1.0
        Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

        --b1
        Content-Type: text/plain

        Your message could not be delivered: the mailbox does not exist.
        --b1
        Content-Type: message/delivery-status

        Reporting-MTA: dns; mx.example.net

        Final-Recipient: rfc822; {recipient}
        Action: failed
        Status: 5.1.1
        Diagnostic-Code: smtp; 550 5.1.1 mailbox unavailable

        --b1
        Content-Type: text/rfc822-headers

        Message-ID: {original["Message-ID"]}
        Subject: {original["Subject"]}

        --b1--
        """).replace("\n", "\r\n").encode("utf-8")


REPLY = (b"From: Renee Dubois <renee@bakkerij.example>\r\nTo: nieuws@bakkerij-dejong.nl\r\n"
         b"Subject: Re: Kerstbrood\r\nMessage-ID: <a1b2c3@bakkerij.example>\r\n\r\n"
         b"Leuk! Kan ik het kerstbrood ook op 23 december ophalen?\r\n")


# ---------------------------------------------------------------------------
# The hour


def first_hour(t: Transcript) -> None:
    sink = Sink().start()
    t.ports[sink.port] = SINK_PORT
    try:
        _first_hour(t, sink)
    finally:
        sink.stop()


def _first_hour(t: Transcript, sink: Sink) -> None:
    mailchimp_export(t.base / "members_export.csv")
    excel_csv(t.base / "leden.csv")
    t.say("""
        # The first hour with mailcli

        A transcript, regenerated by `python docs/walkthrough.py` (or `make walkthrough`) from real runs
        of every command: what a new user types with the README open, and everything mailcli prints
        (stdout and stderr as a terminal interleaves them). The user has a Mailchimp export
        (`members_export.csv`) and the member list of a Dutch association saved from Excel
        (`leden.csv`: semicolons, Windows-1252). Mail goes to an SMTP sink on 127.0.0.1, shown as
        port 2525; it refuses one address, as a real relay would.
        """)
    t.run("mailcli --version")
    t.run("mailcli init newsletter")
    t.cwd = t.base / "newsletter"
    t.say("`cd newsletter`. Before editing anything, ask what is missing:")
    t.run("mailcli doctor", expect=1)
    t.say("Edit `mailcli.toml` as the output says (here the relay is the local sink):")
    t.block("$EDITOR mailcli.toml", edit_config(t.cwd / "mailcli.toml", sink.port))
    t.run("mailcli doctor")
    t.run("mailcli config show")
    t.say("## Importing the files as they are")
    t.run("mailcli import ../members_export.csv --list nieuwsbrief")
    t.say("The members' list from Excel has no opt-in time column, so nothing in it shows consent:")
    t.run("mailcli import ../leden.csv --list nieuwsbrief", expect=2)
    t.say("The members ticked the newsletter box on the association's paper membership form:")
    t.run('mailcli import ../leden.csv --list nieuwsbrief --basis consent'
          ' --consent-source "inschrijfformulier vereniging (papier)"')
    t.run("mailcli lists")
    t.run("mailcli contacts --list nieuwsbrief --limit 4")
    t.run("mailcli contacts show renee@bakkerij.example")
    t.say("A typo while correcting someone's data:")
    t.run("mailcli contacts set renee@bakkerij.example frist_name=Renée", expect=2)
    t.run("mailcli contacts set renee@bakkerij.example woonplaats=Gouda")
    t.say("## The newsletter")
    t.run("mailcli lint newsletter")
    t.say("The sample articles link to `acme.example`; this month's links go in `issue.jinja`:")
    issue = t.cwd / "templates" / "newsletter" / "issue.jinja"
    before = issue.read_text(encoding="utf-8")
    issue.write_text(before.replace("https://acme.example/", "https://bakkerij-dejong.nl/"), encoding="utf-8")
    t.block("$EDITOR templates/newsletter/issue.jinja", "\n".join(
        line for line in difflib.unified_diff(before.splitlines(), issue.read_text(encoding="utf-8").splitlines(),
                                              "issue.jinja", "issue.jinja", n=0, lineterm="")
        if not line.startswith("@@")))
    t.run("mailcli lint newsletter")
    t.run("mailcli render newsletter --to renee@bakkerij.example --format text")
    t.say("""
        `mailcli render newsletter --serve` keeps a preview page open on 127.0.0.1 that reloads on
        every save. Now a rehearsal, first with the template's name misspelt:
        """)
    t.run("mailcli send 2026-12 --template nieuwsbrief --list nieuwsbrief --dry-run", expect=1)
    t.run("mailcli send 2026-12 --template newsletter --list nieuwsbrief --dry-run --limit 5 --rate 5/s")
    t.say("""
        ## Sending

        On a terminal `send` asks `Send 41 message(s) of campaign 2026-12 (template newsletter) via
        127.0.0.1:2525? [y/N]` and draws its progress bar only after the answer; here, as in cron,
        `--yes` answers it.
        """)
    t.run("mailcli send 2026-12 --template newsletter --list nieuwsbrief --yes", expect=3)
    t.run("mailcli report 2026-12 --failed")
    t.run("mailcli send 2026-12 --yes")
    t.say("## Unsubscribes, bounces and replies")
    # Two people from the Mailchimp export: one leaves with one click, the other's mailbox is gone.
    others = sorted(r[0] for r, _ in sink.messages if not r[0].endswith("@bakkerij.example"))
    leaving, bounced = others[0], others[-1]
    header = str(sink.message_to(leaving)["List-Unsubscribe"])
    url = re.search(r"<(https://[^>]+)>", header)
    if url is None:
        raise SystemExit("walkthrough: no https List-Unsubscribe in the message")
    serve_port = free_port()
    t.ports[serve_port] = SERVE_PORT
    serve = subprocess.Popen([sys.executable, "-m", "mailcli", "serve", "--port", str(serve_port)], cwd=t.cwd,
                             env=t.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(iter(serve.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + 30
    while not log:
        if time.monotonic() > deadline or serve.poll() is not None:
            raise SystemExit("walkthrough: mailcli serve did not start")
        time.sleep(0.05)
    status, page = one_click(url.group(1), serve_port)
    serve.send_signal(signal.SIGTERM)
    serve.wait(timeout=30)
    reader.join(timeout=10)
    t.say(f"""
        `mailcli serve` answers one-click unsubscribes behind the HTTPS proxy. A recipient presses
        "Unsubscribe" in their mail client, which POSTs `List-Unsubscribe=One-Click` to the URL in
        the message (`{t.shown(url.group(1).split('?')[0])}?t=…`); the answer is HTTP {status}
        ({re.sub(r'<[^>]+>', ' ', page).split('  ')[0].strip()[:60] or 'empty'}). What serve printed, until SIGTERM:
        """)
    t.block("mailcli serve", "".join(log))
    maildir = t.cwd / "bounces"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.dsn").write_bytes(dsn(sink.message_to(bounced), bounced))
    (maildir / "new" / "2.reply").write_bytes(REPLY)
    t.say("A day later the bounce mailbox holds a bounce and a customer's reply:")
    t.run("mailcli bounces bounces")
    t.run("mailcli bounces bounces")
    t.say("The reply is answered by hand; then:")
    t.run("mailcli bounces bounces --ack")
    t.run("mailcli lists")
    t.run("mailcli report")
    t.say("## Privacy and the nightly jobs")
    t.run("mailcli privacy export renee@bakkerij.example -o renee.zip --reason 'request by e-mail'")
    t.run("mailcli privacy erase jan@bakkerij.example --yes --reason 'asked to be forgotten'")
    t.say("What cron runs each night prints nothing unless something fails:")
    quiet = [t.run(f"mailcli -q {job}", shown=f"mailcli -q {job}") for job in ("backup create", "privacy purge")]
    if any(quiet):
        t.problems.append("the nightly cron jobs printed something under -q")
    t.run("mailcli backup list")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default=str(DOCS / "walkthrough.md"), help="where to write (- for stdout)")
    parser.add_argument("--check", action="store_true", help="run every step, write nothing")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mailcli-walkthrough-") as folder:
        transcript = Transcript(Path(folder))
        first_hour(transcript)
    for problem in transcript.problems:
        print(f"walkthrough: {problem}", file=sys.stderr)
    text = "\n".join(transcript.parts)
    if not options.check:
        if options.output == "-":
            sys.stdout.write(text)
        else:
            Path(options.output).write_text(text, encoding="utf-8")
    return 1 if transcript.problems else 0


if __name__ == "__main__":
    sys.exit(main())
