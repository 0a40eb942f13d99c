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
   command, process start included), then the peak RSS of that process and
   its render workers;
4. times ``smtp-source`` with 8 sessions, the same message count and the same
   message size against the same sink, and prints both rates and the ratio;
5. times the peer users would otherwise reach for, ``mailmerge`` (PyPI), on
   the first ``--mailmerge-count`` (default 1,000) of the same contacts with an
   equivalent job: a multipart/alternative template (text and HTML parts with
   the same sections, fields and per-contact unsubscribe link), a database CSV
   and a server conf pointing at the same sink with ``security = Never`` and
   ``ratelimit = 0`` (mailmerge's "unlimited"). It runs
   ``mailmerge --no-dry-run --no-limit --output-format raw`` (process start
   included, stdout captured as mailmerge prints every message) and prints its
   rate and mailcli's multiple of it. mailmerge is installed only for this, into
   its own venv under ``benchmarks/out/`` (git-ignored) with this Python; it is
   never a dependency of mailcli. ``--no-mailmerge`` skips it (no network).

Targets (issue "Sending"): ≥ 1,000 msg/s end to end, ≥ 0.25× smtp-source,
≥ 20× mailmerge, peak RSS < 150 MB at 100,000 recipients (``--count 100000``).

The machine's speed drifts by tens of percent from minute to minute on a
shared host, so the three measurements run back to back in each of
``--rounds`` rounds (default 3, each mailcli run in a fresh project) and the
medians of the rates and of the per-round ratios are reported.

    python benchmarks/bench_send.py [--count N] [--concurrency C] [--quick] [--rounds R]
                                    [--mailmerge-count M | --no-mailmerge]
"""

from __future__ import annotations

import argparse
import json
import os
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
MAILMERGE_VENV = OUT / "mailmerge-venv"
TARGET_RATE = 1000.0
TARGET_RATIO = 0.25
TARGET_MAILMERGE = 20.0


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

# Sections per part: with the personalised fields filled in, mailcli's message
# (HTML with inlined styles, quoted-printable, plus the text part) is ~20 KB.
HTML_SECTIONS = 21
TEXT_SECTIONS = 7

# "{n}" is the section number, filled in with str.replace: str.format would
# also turn every "{{ field }}" into a literal "{ field }" and quietly take the
# personalisation out of the body.
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
        f'<div class="box"><h2>Section {n} for {{{{ contact.city }}}}</h2><p>{PARAGRAPH.replace("{n}", str(n))}</p>'
        f'<p><a href="https://example.org/news/{n}?m={{{{ contact.member }}}}">Read section {n}</a></p></div>'
        for n in range(1, HTML_SECTIONS + 1)
    )
    (folder / "message.html").write_text(
        "<!doctype html><html><head><meta charset=\"utf-8\">" + STYLE + "</head><body><div class=\"page\">"
        "<h1>Hello {{ contact.first_name }}!</h1>" + sections
        + '<p class="muted">{{ sender.name }}, {{ sender.postal_address }}. '
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a></p></div></body></html>\n',
        encoding="utf-8",
    )
    text_sections = "\n\n".join(
        f"Section {n}\n{PARAGRAPH.replace('{n}', str(n))}" for n in range(1, TEXT_SECTIONS + 1)
    )
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


def mailmerge_binary() -> tuple[Path, str]:
    """mailmerge in its own venv (created on first use), and its version."""
    exe = MAILMERGE_VENV / "bin" / "mailmerge"
    python = MAILMERGE_VENV / "bin" / "python"
    if not exe.exists():
        print("installing mailmerge into benchmarks/out/mailmerge-venv (not into mailcli's venv) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MAILMERGE_VENV)], check=True, capture_output=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "mailmerge"], capture_output=True, text=True)
        if done.returncode != 0 or not exe.exists():
            raise RuntimeError(f"pip install mailmerge failed:\n{done.stderr}")
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('mailmerge'))"],
        capture_output=True, text=True,
    ).stdout.strip()
    return exe, version or "?"


def write_mailmerge_job(folder: Path, db: Path, port: int, count: int) -> None:
    """The same job for mailmerge: template, database CSV and server conf.

    The template is the mailcli one with ``contact.`` dropped from the field
    names (mailmerge exposes CSV columns directly) and written as the
    multipart/alternative message mailmerge sends as is: the same HTML
    and text sections, the CSS written into style attributes by
    hand (mailcli inlines the <style> block; mailmerge has no inliner), one
    element per line (mailmerge sends the parts 7bit, and SMTP lines stop at
    998 bytes), a per-contact unsubscribe link in the body and in
    List-Unsubscribe. The contacts are the first ``count`` rows of
    the mailcli project's database, so both tools address the same people.
    """
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    paragraph = PARAGRAPH.replace("contact.", "")
    rules = {
        sel.strip(): ";".join(d.strip() for d in body.split(";") if d.strip()) + ";"
        for sel, body in (rule.split("{") for rule in STYLE.strip().removeprefix("<style>").removesuffix("</style>")
                          .strip().rstrip("}").split("}"))
    }

    def style(tag: str, cls: str = "") -> str:
        return f' style="{rules.get(tag, "")}{rules.get("." + cls, "") if cls else ""}"'

    sections = "\n".join(
        f'<div class="box"{style("div", "box")}>\n<h2{style("h2")}>Section {n} for {{{{ city }}}}</h2>\n'
        f'<p{style("p")}>{paragraph.replace("{n}", str(n))}</p>\n'
        f'<p{style("p")}><a href="https://example.org/news/{n}?m={{{{ member }}}}"{style("a")}>Read section {n}</a>'
        f"</p>\n</div>"
        for n in range(1, HTML_SECTIONS + 1)
    )
    html = (
        f'<!doctype html><html><head><meta charset="utf-8"></head>\n<body{style("body")}>\n'
        f'<div class="page"{style("div", "page")}>\n<h1{style("h1")}>Hello {{{{ first_name }}}}!</h1>\n'
        + sections
        + f'\n<p class="muted"{style("p", "muted")}>Proj, Keizersgracht 1, 1015 AA Amsterdam.\n'
        f'<a href="{{{{ unsubscribe_url }}}}"{style("a")}>Unsubscribe</a></p>\n</div>\n</body></html>'
    )
    text_sections = "\n\n".join(
        f"Section {n}\n{paragraph.replace('{n}', str(n))}" for n in range(1, TEXT_SECTIONS + 1)
    )
    text = (
        "Hello {{ first_name }}!\n\n" + text_sections
        + "\n\nProj, Keizersgracht 1, 1015 AA Amsterdam\nUnsubscribe: {{ unsubscribe_url }}"
    )
    boundary = "mailmerge-bench-boundary"
    (folder / "mailmerge_template.txt").write_text(
        "TO: {{ first_name }} {{ last_name }} <{{ email }}>\n"
        "FROM: Proj <news@example.org>\n"
        "SUBJECT: {{ first_name }}, your digest for {{ city }}\n"
        "List-Unsubscribe: <{{ unsubscribe_url }}>\n"
        "MIME-Version: 1.0\n"
        f'CONTENT-TYPE: multipart/alternative; boundary="{boundary}"\n\n'
        f"--{boundary}\nContent-Type: text/plain; charset=us-ascii\n\n{text}\n\n"
        f"--{boundary}\nContent-Type: text/html; charset=us-ascii\n\n{html}\n\n"
        f"--{boundary}--\n",
        encoding="utf-8",
    )
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT email, first_name, last_name, attributes, uid FROM contacts ORDER BY id LIMIT ?", (count,)
    ).fetchall()
    conn.close()
    with (folder / "mailmerge_database.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "first_name", "last_name", "city", "member", "unsubscribe_url"])
        for email, first, last, attributes, uid in rows:
            extra = json.loads(attributes)
            writer.writerow([email, first, last, extra["city"], extra["member"],
                             f"https://example.org/unsubscribe/{uid}"])
    (folder / "mailmerge_server.conf").write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\nsecurity = Never\nratelimit = 0\n", encoding="utf-8",
    )


def run_mailmerge(exe: Path, folder: Path, count: int) -> tuple[float, int]:
    """Time one mailmerge run over the whole CSV; return (seconds, bytes of the first message)."""
    common = ["--template", "mailmerge_template.txt", "--database", "mailmerge_database.csv",
              "--config", "mailmerge_server.conf", "--output-format", "raw"]
    sample = subprocess.run([str(exe), "--dry-run", "--limit", "1", *common], cwd=folder, capture_output=True)
    # raw output: ">>> message 1", the message as mailmerge sends it, ">>> message 1 sent", the hints.
    body = sample.stdout.split(b">>> message 1\n", 1)[-1].split(b"\n>>> message 1 sent", 1)[0]
    size = len(body.replace(b"\n", b"\r\n"))
    log = folder / "mailmerge.out"
    # stdout to a file, not a pipe: this process would otherwise spend CPU
    # draining ~20 KB per message while mailmerge is being timed.
    with log.open("wb") as out:
        started = time.perf_counter()
        result = subprocess.run([str(exe), "--no-dry-run", "--no-limit", *common], cwd=folder, stdout=out,
                                stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - started
    with log.open("rb") as lines:
        sent = sum(1 for line in lines if line.startswith(b">>> message ") and line.rstrip().endswith(b" sent"))
    if result.returncode != 0 or sent != count:
        raise RuntimeError(f"mailmerge sent {sent} of {count} (exit {result.returncode}): "
                           f"{result.stderr.decode(errors='replace').strip()}")
    return elapsed, size


def message_size(root: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-m", "mailcli", "render", "bench", "--to", "reader0@bench0.example", "--format", "eml"],
        cwd=root, capture_output=True,
    )
    return len(out.stdout) if out.returncode == 0 else 20_000


def make_project(work: Path, name: str, count: int, port: int, concurrency: int, env: dict[str, str]) -> Path:
    root = work / name
    subprocess.run([sys.executable, "-m", "mailcli", "init", str(root)], check=True, capture_output=True, env=env)
    write_template(root)
    add_contacts(root / "mailcli.db", count)
    configure(root, port, concurrency)
    return root


def run_mailcli(root: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Time one ``mailcli send`` in a fresh project: (seconds, peak RSS MB, its summary line)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailcli", "send", "bench", "--template", "bench", "--list", "bench", "--yes"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    err = proc.stderr.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(proc.pid, 0)  # this process (and its render workers) only
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"mailcli send failed (exit {proc.returncode}):\n{err}")
    return elapsed, usage.ru_maxrss / 1024, err.strip().splitlines()[-1]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2,000 messages, one round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of all three measurements, interleaved; medians are reported")
    parser.add_argument("--keep", action="store_true", help="keep the generated projects")
    parser.add_argument("--mailmerge-count", type=int, default=1_000,
                        help="messages for the mailmerge baseline (it is slow; capped at --count)")
    parser.add_argument("--no-mailmerge", action="store_true", help="skip the mailmerge baseline")
    args = parser.parse_args()
    count = 2_000 if args.quick else args.count
    rounds = 1 if args.quick else max(1, args.rounds)
    mm_count = min(count, args.mailmerge_count)

    sink, source, penv = postfix_binaries()
    mailmerge = None if args.no_mailmerge or mm_count < 1 else mailmerge_binary()
    work = Path(tempfile.mkdtemp(prefix="bench-send-", dir=OUT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}
    port = free_port()
    roots = [make_project(work, f"proj{n}", count, port, args.concurrency, env) for n in range(1, rounds + 1)]
    size = message_size(roots[0])
    if mailmerge is not None:
        write_mailmerge_job(work / "mailmerge", roots[0] / "mailcli.db", port, mm_count)

    sink_cmd = [str(sink), "-u", "nobody", f"127.0.0.1:{port}", "256"] if os.geteuid() == 0 else [
        str(sink), f"127.0.0.1:{port}", "256"]
    sink_proc = subprocess.Popen(sink_cmd, env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ours: list[float] = []
    theirs: list[float] = []
    mm_rates: list[float] = []
    rss: list[float] = []
    mm_size = 0
    try:
        time.sleep(0.3)
        print(f"{count:,} recipients, ~{size / 1024:.1f} KB messages, {args.concurrency} connections, "
              f"{os.cpu_count()} CPUs shared by client and sink; {rounds} round(s), medians below", flush=True)
        for n, root in enumerate(roots, 1):
            # The machine's speed drifts; each round measures all three tools
            # back to back, so every ratio compares like with like.
            mailcli_time, rss_mb, line = run_mailcli(root, env)
            ours.append(count / mailcli_time)
            rss.append(rss_mb)
            started = time.perf_counter()
            subprocess.run(
                [str(source), "-s", "8", "-m", str(count), "-l", str(size), "-f", "bench@example.org",
                 "-t", "reader@bench.example", f"127.0.0.1:{port}"],
                env=penv, check=True, capture_output=True,
            )
            theirs.append(count / (time.perf_counter() - started))
            report = f"round {n}: mailcli {ours[-1]:,.0f} msg/s, smtp-source {theirs[-1]:,.0f} msg/s"
            if mailmerge is not None:
                mm_time, mm_size = run_mailmerge(mailmerge[0], work / "mailmerge", mm_count)
                mm_rates.append(mm_count / mm_time)
                report += f", mailmerge {mm_rates[-1]:,.0f} msg/s"
            print(report + f"  ({line})", flush=True)
    finally:
        sink_proc.terminate()
        sink_proc.wait()
    rate, source_rate = median(ours), median(theirs)
    ratio = median([a / b for a, b in zip(ours, theirs, strict=True)])
    print(f"{'mailcli send (end to end)':<30}{rate:8,.0f} msg/s   peak RSS {max(rss):.0f} MB")
    print(f"{'postfix smtp-source (8)':<30}{source_rate:8,.0f} msg/s")
    if mailmerge is not None:
        print(f"{f'mailmerge {mailmerge[1]} (end to end)':<30}{median(mm_rates):8,.0f} msg/s   "
              f"{mm_count:,} messages of ~{mm_size / 1024:.1f} KB, one connection each")
    print(f"ratio {ratio:.3f} (target ≥ {TARGET_RATIO}); rate target {TARGET_RATE:,.0f} msg/s: "
          f"{'met' if rate >= TARGET_RATE else 'NOT met'}; ratio target: {'met' if ratio >= TARGET_RATIO else 'NOT met'}")
    if mailmerge is not None:
        mm_ratio = median([a / b for a, b in zip(ours, mm_rates, strict=True)])
        print(f"mailcli/mailmerge {mm_ratio:.1f}× (target ≥ {TARGET_MAILMERGE:.0f}×): "
              f"{'met' if mm_ratio >= TARGET_MAILMERGE else 'NOT met'}")
    if args.quick:
        print(f"quick run: the start-up of each send weighs more on {count:,} messages than on the default"
              f" {parser.get_default('count'):,}; the targets are judged on a full run")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
