"""Benchmark: the same import and sends on PostgreSQL and on SQLite, in one run.

What it does:

1. starts a PostgreSQL server of its own: ``initdb`` and ``pg_ctl`` in a
   temporary folder, on a free port of 127.0.0.1, as the test suite does
   (``tests/pgserver.py``), but with the server's own defaults (``fsync`` on,
   128 MB of shared buffers) rather than the tests' shortcuts; and Postfix's
   ``smtp-sink`` on another free port (as ``bench_send.py`` finds it);
2. imports a generated Mailchimp-style CSV of ``--rows`` rows (default
   1,000,000; ``bench_import.py``'s generator) into a new project on each
   engine: the whole ``mailcli import`` process, timed;
3. makes a project on each engine with ``--messages`` contacts (default
   20,000; imported from a CSV, half of them ``half = a``, half ``b``) and
   sends ``init``'s newsletter to all of them through ``--concurrency``
   connections (default 8): with one ``send`` process, then with two ``send``
   processes started together on one new campaign. On PostgreSQL the two
   share the campaign. On SQLite the second is refused (it stops, naming the
   first); the benchmark says so and then measures two senders of two
   campaigns there instead, each to one half of the list (``--where "half =
   'a'"`` and ``'b'``): the same messages, two processes. Every send is
   checked with ``report``: each recipient sent exactly once;
4. repeats the measurements ``--rounds`` times (default 1), the engines
   interleaved, and prints every round and the medians.

There are no targets yet: this sets the baseline. ``--quick`` takes 100,000
rows and 2,000 messages. A full run takes about ten minutes on two cores.

    python benchmarks/bench_postgres.py [--rows N] [--messages M] [--concurrency C] [--rounds R] [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_import import generate  # noqa: E402 - this folder's scripts, after the path
from bench_send import configure, free_port, postfix_binaries  # noqa: E402

from tests.pgserver import PostgresServer, start_server  # noqa: E402

ENGINES = ("sqlite", "postgresql")
REFUSED = "is being sent by another process"


class Engine:
    """One engine: where a new project's database lives and the environment its commands run in."""

    def __init__(self, name: str, server: PostgresServer | None) -> None:
        self.name = name
        self.server = server
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILCLI_", "PG"))}
        if server is not None:
            self.env["PGPASSWORD"] = server.password

    def project(self, root: Path) -> dict[str, str]:
        """A new project at ``root`` with its database on this engine; the environment to run it in."""
        subprocess.run([sys.executable, "-m", "mailcli", "init", str(root)], check=True, capture_output=True,
                       env=self.env)
        if self.server is None:
            return dict(self.env)
        return {**self.env, "MAILCLI_DATABASE_URL": self.server.url(self.server.create_database())}


def mailcli(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "mailcli", *args], cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mailcli {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr}")
    return done


def timed_import(root: Path, env: dict[str, str], path: Path) -> tuple[float, dict[str, int]]:
    """Seconds of one ``mailcli import`` process, and its counts."""
    os.sync()  # no step pays for writing back the previous one's files
    started = time.perf_counter()
    done = mailcli(root, env, "import", str(path), "--list", "news", "--json", "-q")
    seconds = time.perf_counter() - started
    counts = json.loads(done.stdout)
    return seconds, {k: counts[k] for k in ("imported", "duplicates", "rejected")}


def write_audience(path: Path, count: int) -> None:
    """``count`` distinct subscribers with their opt-in time, half of them ``half = a``, half ``b``."""
    lines = ["email,first_name,last_name,city,half,OPTIN_TIME"]
    lines += [f"reader{i}@bench{i % 50}.example,Reader{i},Family{i % 997},Utrecht,{'ab'[i % 2]},2024-01-01 10:00:00"
              for i in range(count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def spawn_send(root: Path, env: dict[str, str], campaign: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailcli", "send", campaign, "--template", "newsletter", "--list", "news", "--yes",
         "-q", *extra], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    """Each process's exit code and stderr, once all have ended."""
    return [(proc.wait(), proc.stderr.read() if proc.stderr else "") for proc in procs]


def check_sent(root: Path, env: dict[str, str], campaign: str, expected: int) -> None:
    """``report``: every recipient of the campaign sent, none twice, none left or uncertain."""
    report = json.loads(mailcli(root, env, "report", campaign, "--json").stdout)
    if (report["audience"], report["sent"]) != (expected, expected):
        raise RuntimeError(f"campaign {campaign}: {report['sent']} of {report['audience']} sent, {expected} expected:"
                           f" {report}")


def send_one(root: Path, env: dict[str, str], campaign: str, count: int) -> float:
    """Seconds for one ``send`` process to send the campaign to everyone."""
    started = time.perf_counter()
    [(code, err)] = finish([spawn_send(root, env, campaign)])
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"mailcli send {campaign} failed (exit {code}):\n{err}")
    check_sent(root, env, campaign, count)
    return seconds


def send_two(root: Path, env: dict[str, str], campaign: str, count: int) -> tuple[str, float, str]:
    """Two ``send`` processes started together: on one campaign, or, when the
    second is refused, on two campaigns of one half of the list each.
    Returns (what was measured, seconds, why it fell back)."""
    started = time.perf_counter()
    outcomes = finish([spawn_send(root, env, campaign), spawn_send(root, env, campaign)])
    seconds = time.perf_counter() - started
    refused = [err for code, err in outcomes if code != 0 and REFUSED in err]
    failed = [err for code, err in outcomes if code != 0 and REFUSED not in err]
    if failed:
        raise RuntimeError(f"two senders of {campaign}: {failed[0]}")
    if not refused:
        check_sent(root, env, campaign, count)
        return "one campaign", seconds, ""
    why = next((line.removeprefix("Error: ") for line in refused[0].splitlines() if REFUSED in line), refused[0])
    halves = [f"{campaign}-{half}" for half in "ab"]
    started = time.perf_counter()
    outcomes = finish([spawn_send(root, env, name, "--where", f"half = '{half}'")
                       for name, half in zip(halves, "ab", strict=True)])
    seconds = time.perf_counter() - started
    for code, err in outcomes:
        if code != 0:
            raise RuntimeError(f"two senders of two campaigns: exit {code}:\n{err}")
    for name in halves:
        check_sent(root, env, name, count // 2)
    return "two campaigns", seconds, why


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the imported file")
    parser.add_argument("--messages", type=int, default=20_000, help="messages of each send (an even number)")
    parser.add_argument("--concurrency", type=int, default=8, help="SMTP connections of each send process")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every measurement, engines interleaved")
    parser.add_argument("--quick", action="store_true", help="100,000 rows and 2,000 messages")
    parser.add_argument("--keep", action="store_true", help="keep the projects and the server's folder")
    args = parser.parse_args()
    rows = 100_000 if args.quick else args.rows
    messages = 2_000 if args.quick else args.messages - args.messages % 2

    server, why = start_server(settings="")
    if server is None:
        print(f"skipped: no PostgreSQL server could be started here: {why}")
        return 0
    sink, _, sink_env = postfix_binaries()
    work = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
    port = free_port()
    sink_cmd = [str(sink), "-u", "nobody", f"127.0.0.1:{port}", "256"] if os.geteuid() == 0 else [
        str(sink), f"127.0.0.1:{port}", "256"]
    sink_proc = subprocess.Popen(sink_cmd, env=sink_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engines = {"sqlite": Engine("sqlite", None), "postgresql": Engine("postgresql", server)}
    results: dict[tuple[str, str], list[float]] = {}
    labels: dict[str, str] = {}
    try:
        version = subprocess.run([str(server.bindir / "postgres"), "--version"], capture_output=True,
                                 text=True).stdout.strip()
        print(f"{version}, the server's defaults (fsync on), on 127.0.0.1:{server.port}; SQLite"
              f" {__import__('sqlite3').sqlite_version}; {os.cpu_count()} CPUs shared by everything;"
              f" {rows:,} rows imported, {messages:,} messages per send through {args.concurrency} connections"
              f" per sender to smtp-sink; {args.rounds} round(s)", flush=True)
        csv_file = work / "contacts.csv"
        generate(csv_file, rows)
        audience = work / "audience.csv"
        write_audience(audience, messages)
        senders: dict[str, tuple[Path, dict[str, str]]] = {}
        for name, engine in engines.items():
            root = work / f"send-{name}"
            env = engine.project(root)
            configure(root, port, args.concurrency)
            mailcli(root, env, "import", str(audience), "--list", "news", "-q")
            senders[name] = (root, env)
        counts: dict[str, dict[str, int]] = {}
        for number in range(1, max(1, args.rounds) + 1):
            line = []
            for name, engine in engines.items():
                root = work / f"import-{name}-{number}"
                seconds, counts[name] = timed_import(root, engine.project(root), csv_file)
                results.setdefault((name, "import"), []).append(seconds)
                line.append(f"{name} import {seconds:.1f} s ({rows / seconds:,.0f} rows/s)")
                shutil.rmtree(root, ignore_errors=True)
            for name in engines:
                root, env = senders[name]
                seconds = send_one(root, env, f"one-{number}", messages)
                results.setdefault((name, "one sender"), []).append(seconds)
                line.append(f"{name} one sender {messages / seconds:,.0f} msg/s")
            for name in engines:
                root, env = senders[name]
                how, seconds, refusal = send_two(root, env, f"two-{number}", messages)
                results.setdefault((name, "two senders"), []).append(seconds)
                labels[name] = how
                if refusal:
                    print(f"{name}: two senders of one campaign: the second was refused ({refusal});"
                          " measuring two senders of two campaigns, half the list each, instead", flush=True)
                line.append(f"{name} two senders ({how}) {messages / seconds:,.0f} msg/s")
            print(f"round {number}: " + "; ".join(line), flush=True)
        if counts["sqlite"] != counts["postgresql"]:
            raise RuntimeError(f"the engines counted the import differently: {counts}")
    finally:
        sink_proc.terminate()
        sink_proc.wait()
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(server.base, ignore_errors=True)

    print(f"\nmedians of {max(1, args.rounds)} round(s); the last column: PostgreSQL's time over SQLite's")
    print(f"{'':<32}{'SQLite':>24}{'PostgreSQL':>24}{'ratio':>8}")
    for step, unit, n in (("import", "rows/s", rows), ("one sender", "msg/s", messages),
                          ("two senders", "msg/s", messages)):
        lite, pg = median(results[("sqlite", step)]), median(results[("postgresql", step)])
        what = f"{step}, {labels['postgresql']}" if step == "two senders" else step
        cells = [f"{seconds:6.1f} s {n / seconds:>8,.0f} {unit:<6}" for seconds in (lite, pg)]
        print(f"{what:<32}{cells[0]:>24}{cells[1]:>24}{pg / lite:>7.2f}x")
    print(f"import counts (both engines): {counts['sqlite']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
