"""Soak: one 20,000-recipient send while other processes opt people out.

What it does, all on 127.0.0.1, in a temporary folder, within ``--timeout``:

1. makes a project (``mailcli init``) and imports N contacts (default 20,000)
   into one list with ``mailcli import``;
2. starts an SMTP sink (aiosmtpd, in a process of its own) that logs, for
   every accepted message, when its MAIL FROM arrived, the recipient and the
   Message-ID, and ``mailcli serve`` for one-click unsubscribes;
3. runs ``mailcli send`` to the whole list and, while it runs, from other
   processes: ``mailcli privacy erase`` and ``mailcli unsubscribe`` of people
   picked at random (most of them still ahead of the send), one-click POSTs
   to ``serve`` at random moments, and ``mailcli backup create`` twice;
   each opt-out's moment is taken when its command (or HTTP request) returned;
   with ``--import N``, also ``mailcli import`` of N new contacts into another
   list half way through: while it holds the database, the send and the
   opt-out commands wait, and ``serve`` keeps one-click POSTs in its spool,
   which the send must honour as soon as it resumes;
4. checks the sink log against the database: no recipient and no Message-ID
   twice, nobody whose MAIL FROM arrived after their opt-out or erasure had
   returned, every opt-out recorded (the membership unsubscribed, or the
   contact erased and its address on the suppression list), the report's
   ``sent`` equal to what the sink accepted and the campaign complete.

It prints the figures and exits 1 if any check fails.

``--calm`` runs the same send with nothing alongside, for its rate.

    python benchmarks/soak.py [--count N] [--rate R] [--concurrency C] [--timeout S] [--seed S] [--calm]
                              [--import N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- the sink

def run_sink(port_file: Path, log_file: Path) -> None:
    """``soak.py --sink``: accept everything, log "mail_at accepted_at rcpt message-id" per message."""
    from aiosmtpd.controller import Controller

    log = log_file.open("a", encoding="utf-8", buffering=1)

    class Handler:
        async def handle_MAIL(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            envelope.mail_at = time.time()
            return "250 2.1.0 OK"

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            head = bytes(envelope.original_content).split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
            match = re.search(r"^Message-ID:\s*(\S+)", head, re.I | re.M)
            for rcpt in envelope.rcpt_tos:
                log.write(f"{envelope.mail_at:.6f} {time.time():.6f} {rcpt} {match.group(1) if match else '-'}\n")
            return "250 2.0.0 queued"

    import socket

    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, data_size_limit=2**25)
    controller.start()
    port_file.write_text(str(port))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    log.close()


@dataclass
class Accepted:
    mail_at: float
    accepted_at: float
    rcpt: str
    message_id: str


def read_sink(log_file: Path) -> list[Accepted]:
    out = []
    for line in log_file.read_text(encoding="utf-8").splitlines():
        mail_at, accepted_at, rcpt, message_id = line.split(" ", 3)
        out.append(Accepted(float(mail_at), float(accepted_at), rcpt, message_id))
    return out


# ----------------------------------------------------------------------------- the project

def mailcli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailcli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}


def make_project(base: Path, count: int, port: int, rate: str, concurrency: int) -> Path:
    init = mailcli("init", "soak", cwd=base)
    if init.returncode != 0:
        raise SystemExit(f"mailcli init failed: {init.stderr}")
    root = base / "soak"
    config = root / "mailcli.toml"
    text = config.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^host = .*$', 'host = "127.0.0.1"', text, count=1)
    text = re.sub(r'(?m)^port = .*$', f"port = {port}", text, count=1)
    text = re.sub(r'(?m)^security = .*$', 'security = "none"', text, count=1)
    text = re.sub(r'(?m)^rate = .*$', f'rate = "{rate}"', text, count=1)
    text = re.sub(r'(?m)^concurrency = .*$', f"concurrency = {concurrency}", text, count=1)
    config.write_text(text, encoding="utf-8")
    csv_path = base / "people.csv"
    with csv_path.open("w", encoding="utf-8") as handle:
        handle.write("Email Address,First Name,Last Name\n")
        for i in range(count):
            handle.write(f"person{i:05d}@example.net,First{i},Last{i}\n")
    imported = mailcli("import", str(csv_path), "--list", "news", cwd=root)
    if imported.returncode != 0:
        raise SystemExit(f"mailcli import failed: {imported.stderr}")
    return root


def start_serve(root: Path, log: list[str]) -> tuple[subprocess.Popen[str], str]:
    """``mailcli serve``; its log lines (one per request) are collected into ``log``."""
    proc = subprocess.Popen([sys.executable, "-m", "mailcli", "serve", "--host", "127.0.0.1", "--port", "0"],
                            cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+/\S*)", first)
    if not match:
        proc.kill()
        raise SystemExit(f"mailcli serve did not start: {first}")
    stderr = proc.stderr
    threading.Thread(target=lambda: log.extend(stderr), daemon=True).start()  # keep its pipe drained
    return proc, match.group(1)


# ----------------------------------------------------------------------------- the disturbances

@dataclass
class OptOut:
    email: str
    kind: str  # erase | unsubscribe | one-click
    returned_at: float
    ok: bool
    detail: str = ""
    took: float = 0.0  # seconds the command (or request) took


class Chaos:
    """Opt-outs and backups from other processes while the send runs."""

    def __init__(self, root: Path, url: str, emails: list[str], tokens: dict[str, str], sink_log: Path,
                 seed: int) -> None:
        self.root, self.url, self.emails, self.tokens, self.sink_log = root, url, emails, tokens, sink_log
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.used: set[str] = set()
        self.optouts: list[OptOut] = []
        self.backups: list[tuple[float, int]] = []  # (seconds, exit code)
        self.imports: list[tuple[float, int]] = []  # (seconds, exit code)
        self.stop = threading.Event()

    def progress(self) -> int:
        try:
            with self.sink_log.open("rb") as handle:
                return sum(1 for _ in handle)
        except OSError:
            return 0

    def pick(self) -> str | None:
        """Mostly someone up to a few hundred places ahead of the send; sometimes anyone."""
        with self.lock:
            for _ in range(50):
                if self.random.random() < 0.8:
                    index = min(len(self.emails) - 1, self.progress() + self.random.randint(5, 400))
                else:
                    index = self.random.randrange(len(self.emails))
                email = self.emails[index]
                if email not in self.used:
                    self.used.add(email)
                    return email
        return None

    def record(self, item: OptOut) -> None:
        with self.lock:
            self.optouts.append(item)

    def commands(self) -> None:
        while not self.stop.is_set():
            email = self.pick()
            if email is None:
                continue
            started = time.monotonic()
            if self.random.random() < 0.5:
                kind, result = "erase", mailcli("privacy", "erase", email, "--yes", cwd=self.root)
            else:
                kind, result = "unsubscribe", mailcli("unsubscribe", email, "--list", "news", cwd=self.root)
            self.record(OptOut(email, kind, time.time(), result.returncode == 0, result.stderr.strip(),
                               time.monotonic() - started))

    def one_clicks(self) -> None:
        import httpx

        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                self.stop.wait(self.random.uniform(0.02, 0.3))
                email = self.pick()
                if email is None or self.stop.is_set():
                    continue
                started = time.monotonic()
                try:
                    response = client.post(self.url, params={"t": self.tokens[email]},
                                           data={"List-Unsubscribe": "One-Click"})
                    ok, detail = response.status_code == 200, str(response.status_code)
                except httpx.HTTPError as exc:
                    ok, detail = False, str(exc)
                self.record(OptOut(email, "one-click", time.time(), ok, detail, time.monotonic() - started))

    def import_at(self, total: int, csv_path: Path) -> None:
        """Half way through the send, a large import into another list."""
        while not self.stop.is_set() and self.progress() < total / 2:
            self.stop.wait(0.1)
        if self.stop.is_set():
            return
        started = time.monotonic()
        result = mailcli("import", str(csv_path), "--list", "imported", cwd=self.root)
        self.imports.append((time.monotonic() - started, result.returncode))

    def backups_at(self, total: int) -> None:
        for share in (1 / 3, 2 / 3):
            while not self.stop.is_set() and self.progress() < total * share:
                self.stop.wait(0.1)
            if self.stop.is_set():
                return
            started = time.monotonic()
            result = mailcli("backup", "create", cwd=self.root)
            self.backups.append((time.monotonic() - started, result.returncode))


# ----------------------------------------------------------------------------- the checks

def tokens_of(root: Path, emails: list[str]) -> dict[str, str]:
    from mailcli.config import load_settings
    from mailcli.tokens import make_unsubscribe_token

    secret = load_settings(root / "mailcli.toml").secret()
    conn = sqlite3.connect(root / "mailcli.db")
    try:
        rows = conn.execute("SELECT c.email_key, c.uid, m.list_id FROM contacts c JOIN memberships m"
                            " ON m.contact_id = c.id").fetchall()
    finally:
        conn.close()
    return {key: make_unsubscribe_token(secret, uid, list_id) for key, uid, list_id in rows}


def recorded(root: Path, item: OptOut) -> bool:
    """The opt-out is in the database: unsubscribed, or erased and suppressed."""
    from mailcli.config import load_settings
    from mailcli.tokens import address_hmac

    digest = address_hmac(load_settings(root / "mailcli.toml").secret(), item.email)
    conn = sqlite3.connect(root / "mailcli.db")
    try:
        contact = conn.execute("SELECT id FROM contacts WHERE email_key = ?", (item.email,)).fetchone()
        suppressed = {r[0] for r in conn.execute("SELECT reason FROM suppressions WHERE hmac = ?", (digest,))}
        if item.kind == "erase":
            return contact is None and "erased" in suppressed
        status = conn.execute("SELECT m.status FROM memberships m WHERE m.contact_id = ?", (contact[0],)).fetchone() \
            if contact else None
        # A one-click for someone erased meanwhile is not theirs to record.
        return (status is not None and status[0] == "unsubscribed") or "erased" in suppressed
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rate", default="400/s", help='the send\'s [smtp] rate ("0" = unlimited)')
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=900, help="seconds before everything is stopped")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--calm", action="store_true", help="the same send with nothing alongside (for comparison)")
    parser.add_argument("--import", dest="import_rows", type=int, default=0, metavar="N",
                        help="also import N new contacts into another list half way through the send")
    parser.add_argument("--sink", nargs=2, metavar=("PORT_FILE", "LOG_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        run_sink(Path(args.sink[0]), Path(args.sink[1]))
        return 0

    base = Path(tempfile.mkdtemp(prefix="mailcli-soak-"))
    try:
        return soak(args, base)
    finally:
        if args.keep:
            print(f"kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def soak(args: argparse.Namespace, base: Path) -> int:
    """Run, disturb and check one send in ``base`` (see the module docstring)."""
    port_file, sink_log = base / "sink.port", base / "sink.log"
    sink = subprocess.Popen([sys.executable, __file__, "--sink", str(port_file), str(sink_log)])
    serve: subprocess.Popen[str] | None = None
    send: subprocess.Popen[str] | None = None
    threads: list[threading.Thread] = []
    chaos: Chaos | None = None
    serve_log: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or sink.poll() is not None:
                raise SystemExit("the sink did not start")
            time.sleep(0.05)
        port = int(port_file.read_text())
        print(f"importing {args.count:,} contacts ...", flush=True)
        root = make_project(base, args.count, port, args.rate, args.concurrency)
        emails = [f"person{i:05d}@example.net" for i in range(args.count)]
        tokens = tokens_of(root, emails)
        extra = base / "extra.csv"
        if args.import_rows:
            with extra.open("w", encoding="utf-8") as handle:
                handle.write("Email Address,First Name\n")
                handle.writelines(f"new{i:07d}@example.org,New{i}\n" for i in range(args.import_rows))
        serve, url = start_serve(root, serve_log)
        chaos = Chaos(root, url, emails, tokens, sink_log, args.seed)
        print(f"sending to {args.count:,} at {args.rate} over {args.concurrency} connections, with opt-outs,"
              " erasures, one-click POSTs and two backups alongside ...", flush=True)
        started = time.monotonic()
        send = subprocess.Popen([sys.executable, "-m", "mailcli", "send", "soak", "--template", "newsletter",
                                 "--list", "news", "--yes"], cwd=root, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        threads = [] if args.calm else [
            threading.Thread(target=chaos.commands, daemon=True),
            threading.Thread(target=chaos.one_clicks, daemon=True),
            threading.Thread(target=chaos.backups_at, args=(args.count,), daemon=True)]
        if args.import_rows and not args.calm:
            threads.append(threading.Thread(target=chaos.import_at, args=(args.count, extra), daemon=True))
        for thread in threads:
            thread.start()
        try:
            _, send_err = send.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            send.kill()
            raise SystemExit(f"the send did not finish within {args.timeout:.0f} s") from None
        elapsed = time.monotonic() - started
        chaos.stop.set()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        if chaos is not None:
            chaos.stop.set()
        for proc in (serve, sink):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if send is not None and send.poll() is None:
            send.kill()
    assert chaos is not None and send is not None

    accepted = read_sink(sink_log)
    report = json.loads(mailcli("report", "soak", "--json", cwd=root).stdout)
    per_rcpt = Counter(a.rcpt for a in accepted)
    per_id = Counter(a.message_id for a in accepted)
    duplicates = sum(n - 1 for n in per_rcpt.values() if n > 1) + sum(n - 1 for n in per_id.values() if n > 1)
    done = [o for o in chaos.optouts if o.ok]
    returned = {o.email: o.returned_at for o in done}
    late = [(a.rcpt, a.mail_at - returned[a.rcpt]) for a in accepted
            if a.rcpt in returned and a.mail_at > returned[a.rcpt]]
    before = sum(1 for a in accepted if a.rcpt in returned)
    unrecorded = [o for o in done if not recorded(root, o)]
    failed_optouts = [o for o in chaos.optouts if not o.ok]
    kinds = Counter(o.kind for o in done)
    checks = {
        "send exit code 0": send.returncode == 0,
        "0 duplicates (recipients and Message-IDs)": duplicates == 0,
        "0 messages to anyone after their opt-out or erasure returned": not late,
        "every opt-out recorded": not unrecorded,
        "every opt-out command and POST succeeded": not failed_optouts,
        "report sent == messages the sink accepted": report["sent"] == len(accepted),
        "campaign complete (nothing pending, deferred or uncertain)":
            report["status"] == "sent" and report["pending"] + report["deferred"] + report["uncertain"] == 0,
        "two backups made": args.calm or [code for _, code in chaos.backups] == [0, 0],
    }
    if args.import_rows and not args.calm:
        checks["the import during the send succeeded"] = [code for _, code in chaos.imports] == [0]
    spooled = sum("outcome=spooled" in line for line in serve_log)
    print()
    print(f"recipients            {args.count:,}")
    print(f"send                  {elapsed:.1f} s, exit {send.returncode}, {len(accepted) / elapsed:.0f} msg/s")
    print(f"accepted by the sink  {len(accepted):,} (report: sent {report['sent']:,}, skipped {report['skipped']:,},"
          f" audience {report['audience']:,}, status {report['status']})")
    print(f"opt-outs              {len(done)} ({kinds['erase']} erasures, {kinds['unsubscribe']} unsubscribes,"
          f" {kinds['one-click']} one-click POSTs); {len(failed_optouts)} failed")
    for kind in ("erase", "unsubscribe", "one-click"):
        took = sorted(o.took for o in done if o.kind == kind)
        if took:
            print(f"  {kind:<12} took {took[len(took) // 2]:.2f} s median, {took[-1]:.2f} s at most")
    print(f"mailed before their opt-out returned  {before}")
    print(f"mailed after their opt-out returned   {len(late)}")
    print(f"duplicates            {duplicates}")
    print(f"backups               {', '.join(f'{s:.1f} s (exit {c})' for s, c in chaos.backups) or 'none'}")
    if args.import_rows:
        print(f"import of {args.import_rows:,}    {', '.join(f'{s:.1f} s (exit {c})' for s, c in chaos.imports) or 'none'}"
              f"; one-click POSTs kept in the spool meanwhile: {spooled}")
    print(f"unrecorded opt-outs   {len(unrecorded)}")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if late:
        print("late:", late[:10])
    for item in (unrecorded + failed_optouts)[:10]:
        print("problem:", item)
    if send.returncode != 0:
        print(send_err.strip())
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
