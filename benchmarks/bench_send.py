"""Benchmark: `mailcli send` end to end against Postfix's smtp-sink, next to
Postfix's own smtp-source and mailmerge in the same interleaved rounds.

What it does:

1. makes a project (``mailcli init``) with N contacts (default 20,000) in one
   list and three templates, each the way people really write them:

   * ``newsletter`` — ``init``'s newsletter as written (with ``message.txt``);
   * ``newsletter-html`` — the same without ``message.txt``, so the text part
     comes from the HTML;
   * ``digest`` — a loop-heavy ~19 KB newsletter: a ``{% for %}`` over eight
     articles with ``upper``, ``truncate`` and ``urlencode`` filters and
     per-contact conditions, no ``message.txt``;

2. starts Postfix's ``smtp-sink`` on a free port of 127.0.0.1 (the installed
   one, else ``apt-get download postfix`` unpacked into ``benchmarks/out``);
3. in each of ``--rounds`` rounds (default 3), for each template, back to back:
   ``mailcli send --dry-run`` (render and build every message, no SMTP),
   ``mailcli send --yes`` in a fresh copy of the project (rendering, MIME,
   ledger and SMTP: the whole command, process start included; peak RSS of it
   and its render workers), and ``smtp-source -d`` with the same number of
   sessions, keeping them open between messages as mailcli does, sending that
   template's message as ``mailcli send`` writes it to this sink (``-F``, a
   file built by the send's own code): the ceiling for the same bytes on the same
   machine. Then, once per round, the peer people would otherwise reach for,
   ``mailmerge`` 2.3.0 from the pip index (in its own venv under
   ``benchmarks/out``, never a dependency of mailcli), sending the
   ``newsletter`` template's HTML and text parts to the first
   ``--mailmerge-count`` (default 1,000) contacts, one connection per message
   as it always does. ``--no-mailmerge`` skips it;
4. prints every round's rates and ratios, then the medians.

Targets: the loop-heavy digest ≥ 2,000 msg/s end to end and ≥ 3,000 msg/s for
``send --dry-run``; ``init``'s newsletter ≥ 0.25× ``smtp-source -d`` in the
same round; ≥ 20× mailmerge; peak RSS < 150 MB at 100,000 recipients
(``--count 100000``).

The machine's speed drifts by tens of percent from minute to minute on a
shared host, so every round measures everything back to back and the ratios
are taken within a round. A full run takes 4-6 minutes on two cores.

    python benchmarks/bench_send.py [--count N] [--concurrency C] [--rounds R] [--quick]
                                    [--mailmerge-count M | --no-mailmerge] [--keep]
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
from statistics import median

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
POSTFIX = OUT / "postfix"
MAILMERGE_VENV = OUT / "mailmerge-venv"
MAILMERGE_VERSION = "2.3.0"
TEMPLATES = ("newsletter", "newsletter-html", "digest")
TARGET_DIGEST_RATE = 2000.0
TARGET_DIGEST_DRY_RUN = 3000.0
TARGET_RATIO = 0.25
TARGET_MAILMERGE = 20.0


def postfix_binaries() -> tuple[Path, Path, dict[str, str]]:
    """smtp-sink and smtp-source: the installed ones, else from the Debian package unpacked here."""
    env = dict(os.environ)
    sink, source = shutil.which("smtp-sink", path="/usr/sbin:/usr/bin"), shutil.which("smtp-source", path="/usr/sbin:/usr/bin")
    if sink and source:
        return Path(sink), Path(source), env
    sink_path, source_path = POSTFIX / "usr/sbin/smtp-sink", POSTFIX / "usr/sbin/smtp-source"
    if not sink_path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        debs = sorted(OUT.glob("postfix_*.deb"))
        if not debs:
            print("downloading the postfix package (not installing it) ...", flush=True)
            subprocess.run(["apt-get", "download", "postfix"], cwd=OUT, check=True, capture_output=True)
            debs = sorted(OUT.glob("postfix_*.deb"))
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(POSTFIX)], check=True)
    env["LD_LIBRARY_PATH"] = str(POSTFIX / "usr/lib/postfix")
    return sink_path, source_path, env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------
# Templates

ARTICLES = [
    ("We moved to a greener data centre", "infrastructure", 4,
     "Our servers now run on wind power in Groningen. Same speed, a third of the footprint, and the heat warms four "
     "hundred homes nearby. We measured every rack before and after the move, and the numbers are on our blog for "
     "anyone who wants to check them."),
    ("New: export your data in one click", "product", 3,
     "Everything we hold about you, as a ZIP with JSON and CSV, straight from your account page. It includes your "
     "invoices, your settings and every login we recorded, with a letter that explains what each file means and how "
     "long we keep it."),
    ("Meet us in Utrecht", "events", 2,
     "We are at the Dutch Open Source Day on the 14th. Come by for coffee and stroopwafels, ask the engineers "
     "anything, and see the new dashboard before it ships. There is a quiet room if you want to talk about your own "
     "setup."),
    ("How we answer support mail in under an hour", "team", 6,
     "Our support team grew from two to five people this year. They wrote down how they triage, which replies they "
     "reuse, and the one rule that made the biggest difference: answer the question that was asked before anything "
     "else."),
    ("Price changes from March", "billing", 3,
     "The basic plan stays the same. The team plan gets two extra seats for the same price, and the annual discount "
     "goes from ten to fifteen percent. Nothing changes for you until your next renewal, and you can switch plans at "
     "any time."),
    ("A look back at ten years", "company", 8,
     "Ten years ago we started in a spare bedroom in Zwolle with one server and three customers. Today we serve "
     "eleven thousand teams in nine countries. Here are the decisions we got right, the ones we did not, and what we "
     "learned from both."),
    ("Two-factor sign-in for everyone", "security", 3,
     "From next month every account can sign in with a security key or an authenticator app. Teams can make it "
     "compulsory for all members, and we will remind anyone who has not set it up yet once a week until they do."),
    ("What our customers built this year", "community", 5,
     "A bakery in Deventer that takes orders by text message, a cycling club that plans routes for three hundred "
     "riders, and a school that sends every parent the week's menu. Six short stories about people who used our "
     "tools in ways we never planned."),
]

DIGEST_HTML = """{% extends "_layouts/base.html" %}
{% block preheader %}Eight stories this month, picked for you.{% endblock %}
{% block tagline %}Monthly digest &middot; {{ now.strftime("%B %Y") }}{% endblock %}
{% block content %}
{% from "digest/articles.jinja" import articles %}
<tr>
<td class="content">
<h1>{% if contact.first_name %}Hi {{ contact.first_name|title }},{% else %}Hello,{% endif %}</h1>
<p>Here are {{ articles|length }} stories from {{ sender.name }} this month{% if contact.city %}, and what is on near {{ contact.city }}{% endif %}. Reading all of them takes about {{ articles|sum(attribute="minutes") }} minutes.</p>
</td>
</tr>
{% for article in articles %}
<tr>
<td class="article">
<p class="kicker">{{ loop.index }} of {{ loop.length }} &middot; {{ article.category|upper }} &middot; {{ article.minutes }} min read</p>
<h2>{{ article.title }}</h2>
<p>{{ article.summary }}</p>
{% if loop.first and contact.city %}<p>Readers in {{ contact.city }} get a seat at the next meetup first: reply to this mail to book one.</p>{% endif %}
<p><a href="{{ article.url }}?utm_source=newsletter&amp;utm_campaign={{ campaign.name|urlencode }}&amp;utm_content={{ article.category|urlencode }}&amp;r={{ contact.email|urlencode }}">Read &ldquo;{{ article.title|truncate(40) }}&rdquo; &rarr;</a></p>
</td>
</tr>
{% endfor %}
<tr>
<td class="cta"><a class="button" href="https://acme.example/account?r={{ contact.email|urlencode }}">Open your account</a></td>
</tr>
{% endblock %}
"""


def write_templates(root: Path) -> None:
    """The three templates, next to the ``newsletter`` that ``mailcli init`` wrote."""
    templates = root / "templates"
    html_only = templates / "newsletter-html"
    shutil.copytree(templates / "newsletter", html_only)
    (html_only / "message.txt").unlink()
    for path in html_only.iterdir():  # its own name in the import of the shared content
        path.write_text(path.read_text(encoding="utf-8").replace('"newsletter/', '"newsletter-html/'), encoding="utf-8")
    digest = templates / "digest"
    digest.mkdir()
    items = ",\n".join(
        f'  {{"title": {json.dumps(title)}, "category": {json.dumps(category)}, "minutes": {minutes}, '
        f'"summary": {json.dumps(summary)}, "url": "https://acme.example/blog/{number}"}}'
        for number, (title, category, minutes, summary) in enumerate(ARTICLES, 1)
    )
    (digest / "articles.jinja").write_text("{% set articles = [\n" + items + "\n] %}\n", encoding="utf-8")
    (digest / "subject.txt").write_text(
        "{% if contact.first_name %}{{ contact.first_name }}, your{% else %}Your{% endif %} digest: eight stories\n",
        encoding="utf-8")
    (digest / "message.html").write_text(DIGEST_HTML, encoding="utf-8")


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
        "INSERT INTO memberships (contact_id, list_id, status, consent_source, consent_at, created_at, updated_at,"
        " basis) SELECT id, 1, 'subscribed', 'bench', ?, ?, ?, 'consent' FROM contacts",
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


def mailcli(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "mailcli", *args], cwd=root, env=env, capture_output=True)


def sent_message(root: Path, template: str) -> bytes:
    """The message ``mailcli send`` writes for the bench's first contact, byte
    for byte as it goes to this sink (which offers 8BITMIME: bodies as 8-bit
    UTF-8), built by the send's own code: the ceiling sends the same bytes."""
    from mailcli.config import load_settings
    from mailcli.send import ledger
    from mailcli.send.message import MessageFactory

    settings = load_settings(root / "mailcli.toml")
    conn = sqlite3.connect(root / "mailcli.db")
    contact = conn.execute("SELECT id, uid, email, email_key, first_name, last_name, attributes FROM contacts"
                           " ORDER BY id LIMIT 1").fetchone()
    list_id = conn.execute("SELECT id FROM lists WHERE name = 'bench'").fetchone()[0]
    conn.close()
    campaign = ledger.Campaign(id=1, uid="bench", name=f"bench-{template}", template=template, list_id=list_id,
                               list_name="bench", subject=None, kind="marketing", status="sending",
                               created_at="2026-01-01T00:00:00Z", frozen_at=None, finished_at=None)
    factory = MessageFactory(settings, campaign)
    factory.use_eightbit(True)
    return factory.build(ledger.Recipient(1, *contact, "<bench.1@example.org>", None))


# ---------------------------------------------------------------------------
# mailmerge


def mailmerge_binary() -> tuple[Path, str]:
    """mailmerge in its own venv (created on first use), and its version."""
    exe = MAILMERGE_VENV / "bin" / "mailmerge"
    python = MAILMERGE_VENV / "bin" / "python"
    version = ""
    if exe.exists():
        version = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('mailmerge'))"],
            capture_output=True, text=True,
        ).stdout.strip()
    if version != MAILMERGE_VERSION:
        print(f"installing mailmerge {MAILMERGE_VERSION} into benchmarks/out/mailmerge-venv"
              " (not into mailcli's venv) ...", flush=True)
        shutil.rmtree(MAILMERGE_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(MAILMERGE_VENV)], check=True, capture_output=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", f"mailmerge=={MAILMERGE_VERSION}"],
                              capture_output=True, text=True)
        if done.returncode != 0 or not exe.exists():
            raise RuntimeError(f"pip install mailmerge failed:\n{done.stderr}")
        version = MAILMERGE_VERSION
    return exe, version


MARKS = {"first_name": "Mmfirstmm", "email": "mm.email.mm@mm.example"}


def write_mailmerge_job(folder: Path, root: Path, env: dict[str, str], port: int, count: int) -> None:
    """The ``newsletter`` job for mailmerge: its template, database CSV and server conf.

    The template's HTML (CSS already inlined) and text parts are mailcli's own
    renders for a contact whose fields are marks, with the marks turned into
    mailmerge's ``{{ field }}``; per-contact fields are the first name, the
    address and the unsubscribe link. mailmerge sends it as is, one
    connection per message. The contacts are the first ``count`` of the
    project's database, so both tools address the same people.
    """
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    parts = {}
    for fmt in ("html", "text"):
        data = root / "mailmerge-contact.json"
        data.write_text(json.dumps({**MARKS, "last_name": "", "city": "", "member": ""}), encoding="utf-8")
        out = mailcli(root, env, "render", "newsletter", "--data", str(data), "--format", fmt)
        if out.returncode != 0:
            raise RuntimeError(f"mailcli render failed:\n{out.stderr.decode()}")
        body = out.stdout.decode("utf-8").replace("{", "{{ '{' }}")
        body = body.replace(MARKS["first_name"], "{{ first_name }}").replace(MARKS["email"], "{{ email }}")
        parts[fmt] = body.replace("https://news.example.org/unsubscribe?t=PREVIEW-NOT-A-REAL-TOKEN",
                                  "{{ unsubscribe_url }}")
    boundary = "mailmerge-bench-boundary"
    (folder / "mailmerge_template.txt").write_text(
        "TO: {{ first_name }} {{ last_name }} <{{ email }}>\n"
        "FROM: Bench <news@example.org>\n"
        "SUBJECT: {{ first_name }}, your update from Bench\n"
        "List-Unsubscribe: <{{ unsubscribe_url }}>\n"
        "MIME-Version: 1.0\n"
        f'CONTENT-TYPE: multipart/alternative; boundary="{boundary}"\n\n'
        f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n\n{parts['text']}\n"
        f"--{boundary}\nContent-Type: text/html; charset=utf-8\n\n{parts['html']}\n"
        f"--{boundary}--\n",
        encoding="utf-8",
    )
    conn = sqlite3.connect(root / "mailcli.db")
    rows = conn.execute("SELECT email, first_name, last_name, uid FROM contacts ORDER BY id LIMIT ?", (count,)).fetchall()
    conn.close()
    with (folder / "mailmerge_database.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "first_name", "last_name", "unsubscribe_url"])
        for email, first, last, uid in rows:
            writer.writerow([email, first, last, f"https://news.example.org/unsubscribe?t={uid}"])
    (folder / "mailmerge_server.conf").write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\nsecurity = Never\nratelimit = 0\n", encoding="utf-8",
    )


def run_mailmerge(exe: Path, folder: Path, count: int) -> float:
    """Seconds for one mailmerge run over the whole CSV."""
    common = ["--template", "mailmerge_template.txt", "--database", "mailmerge_database.csv",
              "--config", "mailmerge_server.conf", "--output-format", "raw"]
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
    return elapsed


# ---------------------------------------------------------------------------
# Timing


def run_send(root: Path, env: dict[str, str], template: str, *extra: str) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one ``mailcli send`` (this process's children: the command and its workers)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailcli", "send", f"bench-{template}", "--template", template, "--list", "bench",
         "--yes", *extra],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    err = proc.stderr.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"mailcli send {template} {' '.join(extra)} failed (exit {code}):\n{err}")
    return elapsed, usage.ru_maxrss / 1024


def run_source(source: Path, env: dict[str, str], message: Path, count: int, sessions: int, port: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(source), "-d", "-s", str(sessions), "-m", str(count), "-F", str(message), "-f", "news@example.org",
         "-t", "reader@bench.example", f"127.0.0.1:{port}"],
        env=env, check=True, capture_output=True,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2,000 messages, one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement, interleaved")
    parser.add_argument("--keep", action="store_true", help="keep the generated projects")
    parser.add_argument("--mailmerge-count", type=int, default=1_000,
                        help="messages for the mailmerge peer (it is slow; capped at --count)")
    parser.add_argument("--no-mailmerge", action="store_true", help="skip the mailmerge peer")
    args = parser.parse_args()
    count = 2_000 if args.quick else args.count
    rounds = 1 if args.quick else max(1, args.rounds)
    mm_count = min(count, args.mailmerge_count)

    sink, source, penv = postfix_binaries()
    mailmerge = None if args.no_mailmerge or mm_count < 1 else mailmerge_binary()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-send-", dir=OUT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}
    port = free_port()
    base = work / "base"
    subprocess.run([sys.executable, "-m", "mailcli", "init", str(base)], check=True, capture_output=True, env=env)
    write_templates(base)
    add_contacts(base / "mailcli.db", count)
    configure(base, port, args.concurrency)
    messages: dict[str, Path] = {}
    sizes: dict[str, int] = {}
    for template in TEMPLATES:
        eml = sent_message(base, template)
        sizes[template] = len(eml)
        messages[template] = work / f"{template}.eml"
        messages[template].write_bytes(eml.replace(b"\r\n", b"\n"))  # -F adds CRLF to every line
    if mailmerge is not None:
        write_mailmerge_job(work / "mailmerge", base, env, port, mm_count)

    sink_cmd = [str(sink), "-u", "nobody", f"127.0.0.1:{port}", "256"] if os.geteuid() == 0 else [
        str(sink), f"127.0.0.1:{port}", "256"]
    sink_proc = subprocess.Popen(sink_cmd, env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rates: dict[tuple[str, str], list[float]] = {}
    rss: dict[str, list[float]] = {}
    try:
        time.sleep(0.3)
        print(f"{count:,} recipients, {args.concurrency} connections, {os.cpu_count()} CPUs shared by client and sink;"
              f" {rounds} round(s)", flush=True)
        print("messages: " + ", ".join(f"{t} {sizes[t] / 1024:.1f} KB" for t in TEMPLATES), flush=True)
        for number in range(1, rounds + 1):
            line = []
            for template in TEMPLATES:
                project = work / f"r{number}-{template}"
                shutil.copytree(base, project)
                dry, _ = run_send(project, env, template, "--dry-run")
                sent, peak = run_send(project, env, template)
                ceiling = run_source(source, penv, messages[template], count, args.concurrency, port)
                shutil.rmtree(project)
                for key, seconds in (("dry-run", dry), ("send", sent), ("source", ceiling)):
                    rates.setdefault((template, key), []).append(count / seconds)
                rss.setdefault(template, []).append(peak)
                ratio = ceiling / sent
                line.append(f"{template}: dry run {count / dry:,.0f}, send {count / sent:,.0f},"
                            f" smtp-source -d {count / ceiling:,.0f} msg/s (ratio {ratio:.2f})")
            report = f"round {number}: " + "; ".join(line)
            if mailmerge is not None:
                mm = mm_count / run_mailmerge(mailmerge[0], work / "mailmerge", mm_count)
                rates.setdefault(("mailmerge", "send"), []).append(mm)
                report += (f"; mailmerge {mm:,.0f} msg/s"
                           f" (newsletter {rates[('newsletter', 'send')][-1] / mm:.1f}×)")
            print(report, flush=True)
    finally:
        sink_proc.terminate()
        sink_proc.wait()

    def ratios(template: str) -> list[float]:
        return [a / b for a, b in zip(rates[(template, "send")], rates[(template, "source")], strict=True)]

    print(f"\nmedians of {rounds} round(s), msg/s")
    print(f"{'template':<18}{'dry run':>10}{'send':>10}{'smtp-source -d':>16}{'ratio':>8}   ratios per round   peak RSS")
    for template in TEMPLATES:
        per_round = ", ".join(f"{r:.2f}" for r in ratios(template))
        print(f"{template:<18}{median(rates[(template, 'dry-run')]):>10,.0f}{median(rates[(template, 'send')]):>10,.0f}"
              f"{median(rates[(template, 'source')]):>16,.0f}{median(ratios(template)):>8.2f}   {per_round:<18} "
              f"{max(rss[template]):.0f} MB")
    digest_send, digest_dry = median(rates[("digest", "send")]), median(rates[("digest", "dry-run")])
    ratio = median(ratios("newsletter"))
    print(f"digest end to end {digest_send:,.0f} msg/s (target ≥ {TARGET_DIGEST_RATE:,.0f}):"
          f" {'met' if digest_send >= TARGET_DIGEST_RATE else 'NOT met'}; dry run {digest_dry:,.0f} msg/s"
          f" (target ≥ {TARGET_DIGEST_DRY_RUN:,.0f}): {'met' if digest_dry >= TARGET_DIGEST_DRY_RUN else 'NOT met'}")
    print(f"newsletter / smtp-source -d {ratio:.2f} (target ≥ {TARGET_RATIO}): {'met' if ratio >= TARGET_RATIO else 'NOT met'}")
    if mailmerge is not None:
        mm_rates = rates[("mailmerge", "send")]
        multiples = [a / b for a, b in zip(rates[("newsletter", "send")], mm_rates, strict=True)]
        print(f"mailmerge {mailmerge[1]}: {median(mm_rates):,.0f} msg/s ({mm_count:,} messages, one connection each);"
              f" newsletter {median(multiples):.1f}× faster (per round {', '.join(f'{m:.1f}' for m in multiples)};"
              f" target ≥ {TARGET_MAILMERGE:.0f}×): {'met' if median(multiples) >= TARGET_MAILMERGE else 'NOT met'}")
    if args.quick:
        print(f"quick run: the start-up of each send weighs more on {count:,} messages than on the default"
              f" {parser.get_default('count'):,}; the targets are judged on a full run")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
