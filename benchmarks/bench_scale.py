"""Benchmark: the commands a user runs every day, on a database that has grown.

Builds two projects (``mailcli init``) and fills their databases directly with
SQL, not through the CLI, so that building takes a minute, not hours:

* large: 1,000,000 contacts in 3 lists (every contact in "news", half also in
  "events", a fifth in "partners"; 1% unsubscribed and 0.5% bounced, with
  their suppressions and events) and 10 sent campaigns to "news" with
  1,000,000 deliveries each (10,000,000 rows; 1% failed, 0.5% deferred);
* small: the same shape with 10,000 contacts (100,000 deliveries).

Then it times each command as a user runs it (a new ``python -m mailcli``
process each time, start-up included, wall clock), on both databases in the
same interleaved rounds, and prints the median of each next to the other:

* per person: ``contacts show``, ``contacts set``, ``unsubscribe``, a
  one-click POST to a running ``mailcli serve`` (the request alone),
  ``privacy export``, ``privacy erase``: each should stay flat, within 2× of
  the small database and under 0.3 s;
* per campaign and per database: ``report CAMPAIGN`` (≤ 0.5 s), ``report``,
  ``lists``, ``send --dry-run --limit 10`` of an eleventh campaign (which
  freezes and rolls back its audience of 1,000,000), ``privacy purge
  --dry-run`` and ``backup create``.

A per-person command touches a different person in every round. Needs ~6 GB
of free disk for the large database and its backup (``--keep`` leaves both in
``benchmarks/out``; otherwise they are deleted), and takes 6-10 minutes on two
cores with the default three rounds.

    python benchmarks/bench_scale.py [--contacts 1000000] [--small 10000] [--campaigns 10] [--rounds 3] [--keep]
                                     [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PER_PERSON_LIMIT = 0.3  # seconds
PER_PERSON_GROWTH = 2.0  # large / small
REPORT_LIMIT = 0.5
LISTS = ("news", "events", "partners")
CITIES = ("Amsterdam", "Utrecht", "Groningen", "Maastricht", "Zwolle", "Delft", "Leiden", "Arnhem")


def person(i: int) -> str:
    return f"person{i}@example{i % 97}.org"


def build(root: Path, contacts: int, campaigns: int) -> None:
    """Fill the new project's database with contacts, lists, campaigns and deliveries."""
    from mailcli.config import load_settings
    from mailcli.tokens import address_hmac

    secret = load_settings(root / "mailcli.toml").secret()
    db = sqlite3.connect(root / "mailcli.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")  # built in one go; no other connection is open
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-262144")
    db.execute("BEGIN")
    # Secondary indexes are dropped while the rows go in and built afterwards
    # in one sorted pass each, with the definitions the migrations made.
    indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").fetchall()
    for name, _ in indexes:
        db.execute(f'DROP INDEX "{name}"')
    db.executemany("INSERT INTO lists (id, name, created_at) VALUES (?, ?, '2024-01-01T00:00:00Z')",
                   list(enumerate(LISTS, 1)))
    db.execute(
        """
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
        INSERT INTO contacts (id, uid, email, email_key, first_name, last_name, attributes, status,
                              created_at, updated_at, last_activity_at)
        SELECT i + 1, lower(hex(randomblob(9))), 'person' || i || '@example' || (i % 97) || '.org',
               'person' || i || '@example' || (i % 97) || '.org', 'First' || i, 'Family' || (i % 997),
               json_object('city', json_extract(?, '$[' || (i % 8) || ']'), 'member', 100000 + i),
               CASE WHEN i % 200 = 7 THEN 'bounced' WHEN i % 100 = 3 THEN 'unsubscribed' ELSE 'active' END,
               strftime('%Y-%m-%dT%H:%M:%SZ', '2024-01-01', '+' || (i % 600) || ' days'),
               strftime('%Y-%m-%dT%H:%M:%SZ', '2024-01-01', '+' || (i % 600) || ' days'),
               strftime('%Y-%m-%dT%H:%M:%SZ', '2025-06-01', '+' || (i % 300) || ' days')
        FROM n
        """,
        (contacts, json.dumps(CITIES)),
    )
    for list_id, share in ((1, 1), (2, 2), (3, 5)):
        db.execute(
            """
            INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_at, unsubscribed_at,
                                     unsubscribe_channel, created_at, updated_at, basis)
            SELECT id, ?, CASE WHEN status = 'unsubscribed' THEN 'unsubscribed' ELSE 'subscribed' END, 'import.csv',
                   created_at, CASE WHEN status = 'unsubscribed' THEN last_activity_at END,
                   CASE WHEN status = 'unsubscribed' THEN 'one-click' END, created_at, updated_at, 'consent'
            FROM contacts WHERE id % ? = 0 OR ? = 1
            """,
            (list_id, share, share),
        )
    opted_out = db.execute("SELECT email_key, status, last_activity_at FROM contacts WHERE status != 'active'").fetchall()
    db.executemany(
        "INSERT OR IGNORE INTO suppressions (hmac, scope, reason, channel, created_at) VALUES (?, '*', ?, ?, ?)",
        [(address_hmac(secret, key), status, "one-click" if status == "unsubscribed" else "dsn", at)
         for key, status, at in opted_out],
    )
    for number in range(1, campaigns + 1):
        sent = f"2025-{1 + (number - 1) % 12:02d}-15T09:00:00Z"
        uid = os.urandom(9).hex()
        db.execute(
            "INSERT INTO campaigns (id, uid, name, template, list_id, list_name, subject, status, created_at,"
            " frozen_at, finished_at) VALUES (?, ?, ?, 'newsletter', 1, 'news', 'News', 'sent', ?, ?, ?)",
            (number, uid, f"c{number}", sent, sent, sent),
        )
        db.execute(
            """
            INSERT INTO deliveries (campaign_id, contact_id, status, message_id, attempts, last_reply,
                                    created_at, updated_at, sent_at)
            SELECT ?, id,
                   CASE WHEN id % 100 = 11 THEN 'failed' WHEN id % 200 = 13 THEN 'deferred' ELSE 'sent' END,
                   '<' || ? || '.' || uid || '@example.org>', 1,
                   CASE WHEN id % 100 = 11 THEN '550 5.1.1 no such user' WHEN id % 200 = 13 THEN '451 4.3.0 later'
                        ELSE '250 2.0.0 Ok' END,
                   ?, ?, CASE WHEN id % 100 = 11 OR id % 200 = 13 THEN NULL ELSE ? END
            FROM contacts
            """,
            (number, uid, sent, sent, sent),
        )
        db.execute(
            """
            INSERT INTO events (contact_id, campaign_id, kind, channel, scope, created_at)
            SELECT id, ?, CASE WHEN status = 'bounced' THEN 'bounced' ELSE 'unsubscribed' END,
                   CASE WHEN status = 'bounced' THEN 'dsn' ELSE 'one-click' END, '*', ?
            FROM contacts WHERE status != 'active' AND id % ? = 0
            """,
            (number, sent, campaigns),
        )
    for _, sql in indexes:
        db.execute(sql)
    db.execute("COMMIT")
    db.execute("PRAGMA journal_mode=WAL")
    db.close()


def run(root: Path, *args: str) -> tuple[float, float]:
    """Wall time and peak RSS (MB) of one ``mailcli`` command run in the project."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mailcli", *args], cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=ENV)
    assert proc.stderr is not None
    err = proc.stderr.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"mailcli {' '.join(args)} exited {code}:\n{err}")
    return elapsed, usage.ru_maxrss / 1024


ENV = {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}


class Server:
    """``mailcli serve`` on a free port of 127.0.0.1, for one-click POSTs."""

    def __init__(self, root: Path) -> None:
        from mailcli.config import load_settings

        self.settings = load_settings(root / "mailcli.toml")
        self.proc = subprocess.Popen([sys.executable, "-m", "mailcli", "serve", "--port", "0"], cwd=root,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline().decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)(\S*)", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"mailcli serve did not start: {line}")
        self.url = f"http://127.0.0.1:{match.group(1)}{match.group(2)}"
        self.db = root / "mailcli.db"

    def post(self, i: int) -> float:
        from mailcli.tokens import make_unsubscribe_token

        with sqlite3.connect(self.db) as conn:
            uid = conn.execute("SELECT uid FROM contacts WHERE email_key = ?", (person(i),)).fetchone()[0]
        token = make_unsubscribe_token(self.settings.secret(), uid, 1)
        request = urllib.request.Request(f"{self.url}?t={token}", data=b"List-Unsubscribe=One-Click", method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback only
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"one-click POST answered {answer.status}")
        return time.perf_counter() - started

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def commands(root: Path, server: Server, round_: int, export_dir: Path) -> list[tuple[str, str, object]]:
    """(group, label, how) for one round; ``how`` is mailcli's arguments or a callable."""
    # A different person for every round and command: none of them is touched twice.
    who = [person(1000 + 10 * round_ + k) for k in range(6)]
    return [
        ("person", "contacts show", ("contacts", "show", who[0])),
        ("person", "contacts set", ("contacts", "set", who[1], "city=Utrecht")),
        ("person", "unsubscribe", ("unsubscribe", who[2])),
        ("person", "one-click POST", lambda: server.post(1000 + 10 * round_ + 3)),
        ("person", "privacy export", ("privacy", "export", who[4], "-o", str(export_dir / f"r{round_}.zip"))),
        ("person", "privacy erase", ("privacy", "erase", who[5], "--yes")),
        ("campaign", "report c5", ("report", "c5")),
        ("campaign", "report", ("report",)),
        ("campaign", "lists", ("lists",)),
        ("campaign", "send --dry-run --limit 10", ("send", f"c11r{round_}", "--template", "newsletter", "--list",
                                                    "news", "--dry-run", "--limit", "10")),
        ("database", "privacy purge --dry-run", ("privacy", "purge", "--dry-run")),
        ("database", "backup create", ("backup", "create")),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--campaigns", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the projects in benchmarks/out")
    parser.add_argument("--quick", action="store_true", help="100,000 contacts, one round (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.contacts, args.rounds = 100_000, 1
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=OUT))
    sizes = {"small": args.small, "large": args.contacts}
    roots: dict[str, Path] = {}
    servers: dict[str, Server] = {}
    times: dict[tuple[str, str], list[float]] = {}
    groups: dict[str, str] = {}
    try:
        for key, count in sizes.items():
            root = work / key
            subprocess.run([sys.executable, "-m", "mailcli", "init", str(root)], check=True, capture_output=True, env=ENV)
            started = time.perf_counter()
            build(root, count, args.campaigns)
            size = (root / "mailcli.db").stat().st_size
            print(f"{key}: {count:,} contacts, {count * args.campaigns:,} deliveries, {size / 2**30:.2f} GiB,"
                  f" built in {time.perf_counter() - started:.0f} s", flush=True)
            roots[key] = root
            servers[key] = Server(root)
        for round_ in range(args.rounds):
            for key, root in roots.items():
                export_dir = root / "exports"
                export_dir.mkdir(exist_ok=True)
                for group, label, how in commands(root, servers[key], round_, export_dir):
                    took = how() if callable(how) else run(root, *how)[0]  # type: ignore[misc]
                    times.setdefault((key, label), []).append(float(took))  # type: ignore[arg-type]
                    groups[label] = group
                for backup in (root / "backups").glob("*"):
                    backup.unlink()  # one backup at a time on disk
            print(f"round {round_ + 1}: " + ", ".join(
                f"{label} {times[('small', label)][-1]:.2f}/{times[('large', label)][-1]:.2f}"
                for label in groups), flush=True)
    finally:
        for server in servers.values():
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nmedians of {args.rounds} rounds, seconds (wall, process start included except for the POST)")
    print(f"{'command':<28}{args.small:>10,}{args.contacts:>12,}{'ratio':>8}  target")
    for label, group in groups.items():
        small, large = median(times[("small", label)]), median(times[("large", label)])
        target = ""
        if group == "person":
            ok = large <= PER_PERSON_LIMIT and large <= PER_PERSON_GROWTH * small
            target = f"≤ {PER_PERSON_LIMIT} s and ≤ {PER_PERSON_GROWTH:.0f}×: {'met' if ok else 'NOT met'}"
        elif label.startswith("report c"):
            target = f"≤ {REPORT_LIMIT} s: {'met' if large <= REPORT_LIMIT else 'NOT met'}"
        print(f"{label:<28}{small:>10.3f}{large:>12.3f}{large / small:>8.1f}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
