"""Benchmark: `mailcli send` end to end against Postfix's smtp-sink, next to
Postfix's own smtp-source in the same run.

What it does:

1. gets Postfix's ``smtp-sink`` and ``smtp-source`` without installing or
   starting any service: ``apt-get download postfix`` and ``dpkg -x`` into
   ``benchmarks/out/postfix`` (git-ignored), run with LD_LIBRARY_PATH set;
2. makes a project (``mailcli init``) with N contacts (default 20,000) in one
   list and a ~20 KB personalised template (HTML with a <style> block that is
   inlined, a text part and a subject, each with per-contact fields);
3. starts ``smtp-sink`` on a free high port of 127.0.0.1 and times
   ``mailcli send bench --yes`` (rendering, MIME, ledger and SMTP: the whole
   command, process start included), then the peak RSS of that process;
4. times ``smtp-source`` with 8 sessions, the same message count and the same
   message size against the same sink, and prints both rates and the ratio.

Targets (issue "Sending"): ≥ 1,000 msg/s end to end, ≥ 0.25× smtp-source,
peak RSS < 150 MB at 100,000 recipients (``--count 100000``).

    python benchmarks/bench_send.py [--count N] [--concurrency C] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
POSTFIX = OUT / "postfix"
TARGET_RATE = 1000.0
TARGET_RATIO = 0.25


def postfix_binaries() -> tuple[Path, Path, dict[str, str]]:
    """smtp-sink and smtp-source from the Debian package, unpacked here."""
    sink = POSTFIX / "usr/sbin/smtp-sink"
    source = POSTFIX / "usr/sbin/smtp-source"
    if not sink.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        debs = sorted(OUT.glob("postfix_*.deb"))
        if not debs:
            print("downloading the postfix package (not installing it) ...", flush=True)
            subprocess.run(["apt-get", "download", "postfix"], cwd=OUT, check=True, capture_output=True)
            debs = sorted(OUT.glob("postfix_*.deb"))
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(POSTFIX)], check=True)
    env = dict(os.environ, LD_LIBRARY_PATH=str(POSTFIX / "usr/lib/postfix"))
    return sink, source, env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STYLE = """<style>
body { margin: 0; padding: 0; background: #f4f6f8; font-family: Georgia, serif; }
.page { max-width: 640px; margin: 0 auto; background: #ffffff; }
h1 { font-size: 26px; color: #1a2b3c; margin: 0 0 12px 0; }
h2 { font-size: 19px; color: #22374d; margin: 18px 0 6px 0; }
p { font-size: 15px; line-height: 1.55; color: #333333; margin: 0 0 12px 0; }
.muted { color: #777777; font-size: 12px; }
.box { border: 1px solid #dde3ea; padding: 14px; border-radius: 6px; }
a { color: #0b63b6; }
</style>"""

PARAGRAPH = (
    "Dear {{ contact.first_name }}, this is section {n} of your personal digest for {{ contact.city }}. "
    "We looked at what changed around {{ contact.city }} this month and picked the stories that matter to "
    "people like you, {{ contact.first_name }} {{ contact.last_name }}: local energy prices, the new cycling "
    "routes, and the opening hours of the library over the holidays. Member number {{ contact.member }}."
)


def write_template(root: Path) -> None:
    folder = root / "templates" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    sections = "\n".join(
        f'<div class="box"><h2>Section {n} for {{{{ contact.city }}}}</h2><p>{PARAGRAPH.format(n=n)}</p>'
        f'<p><a href="https://example.org/news/{n}?m={{{{ contact.member }}}}">Read section {n}</a></p></div>'
        for n in range(1, 25)
    )
    (folder / "message.html").write_text(
        "<!doctype html><html><head><meta charset=\"utf-8\">" + STYLE + "</head><body><div class=\"page\">"
        "<h1>Hello {{ contact.first_name }}!</h1>" + sections
        + '<p class="muted">{{ sender.name }}, {{ sender.postal_address }}. '
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a></p></div></body></html>\n',
        encoding="utf-8",
    )
    text_sections = "\n\n".join(f"Section {n}\n{PARAGRAPH.format(n=n)}" for n in range(1, 8))
    (folder / "message.txt").write_text(
        "Hello {{ contact.first_name }}!\n\n" + text_sections
        + "\n\n{{ sender.name }}, {{ sender.postal_address }}\nUnsubscribe: {{ unsubscribe_url }}\n",
        encoding="utf-8",
    )
    (folder / "subject.txt").write_text("{{ contact.first_name }}, your digest for {{ contact.city }}\n", encoding="utf-8")


def add_contacts(db: Path, count: int) -> None:
    from mailcli.tokens import new_uid

    now = "2026-01-01T00:00:00Z"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO lists (name, created_at) VALUES ('bench', ?)", (now,))
    cities = ["Amsterdam", "Utrecht", "Groningen", "Maastricht", "Zwolle", "Delft"]
    conn.executemany(
        "INSERT INTO contacts (id, uid, email, email_key, first_name, last_name, attributes, status, created_at,"
        " updated_at, last_activity_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)",
        (
            (i + 1, new_uid(), f"reader{i}@bench{i % 50}.example", f"reader{i}@bench{i % 50}.example",
             f"Reader{i}", f"Family{i % 997}",
             json.dumps({"city": cities[i % len(cities)], "member": str(100000 + i)}), now, now, now)
            for i in range(count)
        ),
    )
    conn.execute(
        "INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_at, created_at, updated_at)"
        " SELECT id, 1, 'subscribed', 'bench', ?, ?, ? FROM contacts",
        (now, now, now),
    )
    conn.execute("COMMIT")
    conn.close()


def configure(root: Path, port: int, concurrency: int) -> None:
    config = root / "mailcli.toml"
    text = config.read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        key = line.split("=")[0].strip()
        if key in ("host", "port", "security", "rate", "concurrency"):
            continue
        lines.append(line)
        if line.strip() == "[smtp]":
            lines += ['host = "127.0.0.1"', f"port = {port}", 'security = "none"', 'rate = "0"',
                      f"concurrency = {concurrency}"]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")


def message_size(root: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-m", "mailcli", "render", "bench", "--format", "eml"], cwd=root, capture_output=True,
    )
    return len(out.stdout) if out.returncode == 0 else 20_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2,000 messages")
    parser.add_argument("--keep", action="store_true", help="keep the generated project")
    args = parser.parse_args()
    count = 2_000 if args.quick else args.count

    sink, source, penv = postfix_binaries()
    work = Path(tempfile.mkdtemp(prefix="bench-send-", dir=OUT))
    root = work / "proj"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}
    subprocess.run([sys.executable, "-m", "mailcli", "init", str(root)], check=True, capture_output=True, env=env)
    write_template(root)
    add_contacts(root / "mailcli.db", count)
    port = free_port()
    configure(root, port, args.concurrency)
    size = message_size(root)

    sink_cmd = [str(sink), "-u", "nobody", f"127.0.0.1:{port}", "256"] if os.geteuid() == 0 else [
        str(sink), f"127.0.0.1:{port}", "256"]
    sink_proc = subprocess.Popen(sink_cmd, env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        print(f"{count:,} recipients, ~{size / 1024:.1f} KB messages, {args.concurrency} connections, "
              f"{os.cpu_count()} CPUs shared by client and sink", flush=True)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "mailcli", "send", "bench", "--template", "bench", "--list", "bench", "--yes"],
            cwd=root, env=env, capture_output=True, text=True,
        )
        mailcli_time = time.perf_counter() - started
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return 1
        print(result.stderr.strip().splitlines()[-1])
        started = time.perf_counter()
        subprocess.run(
            [str(source), "-s", "8", "-m", str(count), "-l", str(size), "-f", "bench@example.org",
             "-t", "reader@bench.example", f"127.0.0.1:{port}"],
            env=penv, check=True, capture_output=True,
        )
        source_time = time.perf_counter() - started
    finally:
        sink_proc.terminate()
        sink_proc.wait()
    ours = count / mailcli_time
    theirs = count / source_time
    ratio = ours / theirs
    print(f"mailcli send (end to end)   {ours:8,.0f} msg/s   {mailcli_time:6.2f} s   peak RSS {rss_mb:.0f} MB")
    print(f"postfix smtp-source (8)     {theirs:8,.0f} msg/s   {source_time:6.2f} s")
    print(f"ratio {ratio:.2f} (target ≥ {TARGET_RATIO}); rate target {TARGET_RATE:,.0f} msg/s: "
          f"{'met' if ours >= TARGET_RATE else 'NOT met'}; ratio target: {'met' if ratio >= TARGET_RATIO else 'NOT met'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
