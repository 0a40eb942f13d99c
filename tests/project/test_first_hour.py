"""What a new user meets in the first hour: prompts, suggested commands, hints.

Each test is one thing a newcomer tripped over, checked as they would see it:
on a real terminal where it matters, else through the real command line.
"""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
from pathlib import Path

from mailcli.errors import ExitCode
from tests.conftest import Cli, set_smtp
from tests.sendhelpers import add_contacts, people
from tests.smtpserver import SmtpServer
from tests.terminal import Terminal


def test_the_send_question_stays_on_screen_until_answered(project: Path) -> None:
    add_contacts(project / "mailcli.db", "news", people(30))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        term = Terminal("send", "spring", "--template", "newsletter", "--list", "news", cwd=project)
        before = term.read_until("[y/N]:")
        # Nothing has drawn over the question: no bar, no carriage return back over it.
        assert "Send 30 message(s) of campaign spring" in before
        assert "Sending" not in before and "━" not in before and "\r" not in before.rstrip("\r\n")
        term.type("y\n")
        assert term.wait() == 0, term.text
        assert len(server.messages) == 30
        assert "30 sent" in term.text


def test_dry_run_suggests_the_command_it_rehearsed(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(12))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        dry = cli("-C", str(project), "send", "test-limit", "--template", "newsletter", "--list", "news",
                  "--dry-run", "--limit", "3", "--rate", "5/s", "--subject", "Hi 'there'")
        assert dry.exit_code == 0, dry.output
        suggested = next(line for line in dry.stderr.splitlines() if line.startswith("To send: "))
        words = shlex.split(suggested.removeprefix("To send: "))
        assert words[:4] == ["mailcli", "-C", str(project), "send"]
        for option in (["--limit", "3"], ["--rate", "5/s"], ["--subject", "Hi 'there'"], ["--list", "news"]):
            assert " ".join(option) in " ".join(words), option
        assert "--dry-run" not in words
        # Pasted (with --yes, no terminal here), it sends what was rehearsed: three.
        result = cli(*words[1:], "--yes")
        assert result.exit_code == 0, result.output
        assert len(server.messages) == 3


def test_dry_run_points_at_the_template_line_not_the_contacts(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(7))
    html = project / "templates" / "newsletter" / "message.html"
    text = html.read_text(encoding="utf-8")
    html.write_text(text.replace("{% if contact.first_name %}", "{% if contact.frist_name %}", 1), encoding="utf-8")
    line = next(n for n, row in enumerate(html.read_text(encoding="utf-8").splitlines(), 1) if "frist_name" in row)
    result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--dry-run")
    # An invalid template: exit 1 and one line naming file and line, as the real run's preflight says it.
    assert result.exit_code == ExitCode.ERROR, result.output
    errors = [row for row in result.stderr.splitlines() if row.startswith("Error:")]
    assert len(errors) == 1 and f"templates/newsletter/message.html:{line}" in errors[0] and "frist_name" in errors[0]
    assert "would fail" not in result.stderr and "Warning:" not in result.stderr


def test_lint_refuses_plain_http_links_and_checks_a_real_contact(project: Path, cli: Cli) -> None:
    html = project / "templates" / "newsletter" / "message.html"
    text = html.read_text(encoding="utf-8")
    html.write_text(text.replace("{% endblock %}\n", '{% endblock %}\n', 1).replace(
        "<h1>", '<h1><a href="http://bakkerij-dejong.nl/kerst">Kerst</a> {{ contact.woonplaats }} ', 1), encoding="utf-8")
    add_contacts(project / "mailcli.db", "news", [{"email": "renee@example.nl", "first_name": "Renée",
                                                   "woonplaats": "Gouda"}])
    sample = cli("lint", "newsletter", "--json")
    assert sample.exit_code == ExitCode.ERROR
    findings = json.loads(sample.stdout)
    http = [f for f in findings if f["code"] == "link-scheme"]
    assert len(http) == 1 and http[0]["severity"] == "error" and "http://bakkerij-dejong.nl/kerst" in http[0]["message"]
    assert any("contact.woonplaats" in f["message"] for f in findings)  # the sample contact has no such field

    real = cli("lint", "newsletter", "--to", "RENEE@example.nl", "--json")
    assert real.exit_code == ExitCode.ERROR
    codes = [f["code"] for f in json.loads(real.stdout) if f["code"] != "link-placeholder"]
    assert codes == ["link-scheme"]  # the real contact has woonplaats
    assert cli("lint", "newsletter", "--to", "nobody@example.nl").exit_code == ExitCode.ERROR


def test_a_misspelt_field_or_status_gets_a_suggestion(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", [{"email": "renee@example.nl", "first_name": "Renee",
                                                   "woonplaats": "Gouda"}])
    typo = cli("contacts", "set", "renee@example.nl", "frist_name=Renée")
    assert typo.exit_code == ExitCode.USAGE and "did you mean first_name?" in typo.stderr
    assert "--new-field" in typo.stderr
    assert "wonplaats" not in cli("contacts", "show", "renee@example.nl", "--json").stdout
    assert cli("contacts", "set", "renee@example.nl", "wonplaats=Delft").exit_code == ExitCode.USAGE
    new = cli("contacts", "set", "renee@example.nl", "city=Gouda")  # far from every known field: a new one
    assert new.exit_code == 0 and "New field(s), which no other contact has: city" in new.stderr
    assert cli("contacts", "set", "renee@example.nl", "wonplaats=Delft", "--new-field").exit_code == 0

    status = cli("contacts", "--status", "actief")
    assert status.exit_code == ExitCode.USAGE and "did you mean active?" in status.stderr
    nobody = cli("contacts", "--list", "news", "--status", "bounced")
    assert nobody.exit_code == 0 and "No contacts yet" not in nobody.stderr
    assert "No contacts match --list news and --status bounced" in nobody.stderr


def test_import_lists_and_send_count_the_same_people(project: Path, cli: Cli) -> None:
    rows = "".join(f"person{i}@example.net,P{i}\n" for i in range(10))
    repeats = "PERSON1@example.net,P1\nPerson2@Example.NET,P2\n"  # case repeats of two earlier rows
    (project / "export.csv").write_text("Email Address,First Name\n" + rows + repeats, encoding="utf-8")
    imported = cli("import", "export.csv", "--list", "news", "--basis", "customer", "--json")
    counts = json.loads(imported.stdout)
    assert (counts["imported"], counts["duplicates"]) == (10, 2)
    assert "imported 10, updated 0, unchanged 0, suppressed 0, rejected 0, merged 2" in imported.stderr

    def subscribed() -> tuple[int, int, int]:
        listed = json.loads(cli("lists", "--json").stdout)[0]
        members = json.loads(cli("contacts", "--list", "news", "--status", "subscribed", "--json").stdout)
        dry = cli("send", "next", "--template", "newsletter", "--list", "news", "--dry-run", "--json")
        return listed["subscribed"], len(members), json.loads(dry.stdout)["campaign_totals"]["audience"]

    assert subscribed() == (10, 10, 10)
    with SmtpServer() as server:
        server.script("RCPT", "person3@example.net", ["550 5.1.1 no such user"])
        set_smtp(project, "127.0.0.1", server.port)
        assert cli("send", "first", "--template", "newsletter", "--list", "news", "--yes").exit_code == ExitCode.PARTIAL
    assert cli("privacy", "restrict", "person4@example.net").exit_code == 0
    # The bounced and the restricted member are held back everywhere alike.
    assert subscribed() == (8, 8, 8)
    listed = json.loads(cli("lists", "--json").stdout)[0]
    assert (listed["held_back"], listed["held_back_by"]["bounced"], listed["held_back_by"]["restricted"]) == (2, 1, 1)
    table = cli("lists").stdout.splitlines()
    assert re.split(r"\s{2,}", table[1].strip()) == ["news", "8", "0", "0", "2 (1 bounced, 1 restricted)"]
    for email, status in (("person3@example.net", "bounced"), ("person4@example.net", "restricted"),
                          ("person5@example.net", "subscribed")):
        shown = json.loads(cli("contacts", "show", email, "--json").stdout)
        assert [m["status"] for m in shown["memberships"]] == [status]  # as lists counts them


def test_import_progress_is_in_megabytes_and_stops_at_the_whole_file(project: Path, tmp_path: Path) -> None:
    # Over 8 MiB: two readers, whose read-ahead once pushed the count past the file size.
    path = tmp_path / "big.csv"
    rows = (f"person{i}@example.net,First{i},a note of some length for row {i}\n" for i in range(150_000))
    path.write_text("Email Address,First Name,NOTES\n" + "".join(rows), encoding="utf-8")
    assert path.stat().st_size > 9 * 1024 * 1024
    term = Terminal("import", str(path), "--list", "news", "--basis", "customer", cwd=project)
    assert term.wait(timeout=120) == 0, term.text[-2000:]
    frames = re.findall(r"([\d.]+)/([\d.]+) (kB|MB)", term.text)
    assert frames, term.text[-2000:]
    assert all(float(done) <= float(total) for done, total, _ in frames)
    assert frames[-1][:2] == (frames[-1][1], frames[-1][1]) and frames[-1][2] == "MB"
    assert not re.search(r"\b\d{6,}/\d{6,}\b", term.text)  # no raw byte counts
    # Read to the end, the bar says what it waits for instead of standing at 100%.
    assert term.text.rindex("Saving big.csv") > term.text.rindex("Importing big.csv")


def test_config_show_speaks_the_files_language_and_doctor_spots_the_examples(project: Path, cli: Cli) -> None:
    shown = cli("config", "show")
    assert shown.exit_code == 0, shown.output
    assert 'rate = "20/s"' in shown.stdout and 'retry_window = "2m"' in shown.stdout
    assert 'from = "Proj <news@example.org>"' in shown.stdout and "None" not in shown.stdout
    # It is mailcli.toml text: read back, it is the same configuration.
    from mailcli.config import load_settings, parse_settings, tomllib

    again = parse_settings(tomllib.loads(shown.stdout), project / "mailcli.toml")
    assert again == load_settings(project / "mailcli.toml")
    config = project / "mailcli.toml"
    config.write_text(config.read_text(encoding="utf-8").replace('rate = "20/s"', 'rate = "600/m"'), encoding="utf-8")
    assert 'rate = "600/m"' in cli("config", "show").stdout  # as the user wrote it
    assert json.loads(cli("config", "show", "--json").stdout)["smtp"]["retry_window"] == "2m"

    scaffold = config.read_text(encoding="utf-8")
    serve = scaffold[scaffold.index("\n[serve]"):]
    assert 'host = "127.0.0.1"' in serve and "port = 8025" in serve and "trusted_proxies" in serve

    untouched = cli("doctor", "--json")
    assert untouched.exit_code == ExitCode.ERROR
    verdicts = {c["name"]: (c["verdict"], c["summary"]) for c in json.loads(untouched.stdout)}
    assert verdicts["sender"][0] == "fail" and "news@example.org" in verdicts["sender"][1]
    assert verdicts["unsubscribe"][0] == "fail" and verdicts["smtp-config"][0] == "warn"
    text = scaffold.replace("example.org", "bakkerij-dejong.nl").replace('host = "localhost"', 'host = "smtp.bakkerij-dejong.nl"')
    config.write_text(text.replace("Keizersgracht 1, 1015 AA Amsterdam", "Oudegracht 12, 3511 AP Utrecht"), encoding="utf-8")
    edited = cli("doctor", "--json")
    assert edited.exit_code == 0, edited.output
    assert {c["name"]: c["verdict"] for c in json.loads(edited.stdout)}["sender"] == "pass"


def test_a_misspelt_template_names_the_templates_and_takes_no_campaign_name(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(3))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        typo = cli("send", "2026-12", "--template", "nieuwsbrief", "--list", "news", "--yes")
        assert typo.exit_code == ExitCode.ERROR
        assert "templates: newsletter" in typo.stderr
        assert json.loads(cli("report", "--json").stdout) == []  # nothing was created
        near = cli("send", "2026-12", "--template", "newsleter", "--list", "news", "--dry-run")
        assert "did you mean newsletter?" in near.stderr
        wrong_list = cli("send", "2026-12", "--template", "newsletter", "--list", "nws", "--yes")
        assert wrong_list.exit_code == ExitCode.ERROR and "did you mean news?" in wrong_list.stderr
        fixed = cli("send", "2026-12", "--template", "newsletter", "--list", "news", "--yes")
        assert fixed.exit_code == 0, fixed.output
        assert len(server.messages) == 3


def test_a_human_reply_stays_listed_until_acknowledged(project: Path, cli: Cli, tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.reply").write_bytes(
        b"From: Renee <renee@bakkerij.example>\r\nTo: news@example.org\r\nSubject: Re: Kerstbrood\r\n"
        b"Message-ID: <reply-1@bakkerij.example>\r\n\r\nKunnen jullie mijn adres wijzigen?\r\n")

    def run(*extra: str) -> dict[str, object]:
        result = cli("bounces", str(maildir), "--json", *extra)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    first = run()
    assert first["unmatched"] == 1 and first["unmatched_messages"][0]["subject"] == "Re: Kerstbrood"  # type: ignore[index]
    second = run()
    listed = second["unmatched_messages"][0]  # type: ignore[index]
    assert second["unmatched"] == 1 and second["already_processed"] == 0
    assert listed["reason"] == "not a bounce, complaint or unsubscribe request" and listed["first_seen"]
    assert (maildir / "new" / "1.reply").exists()  # still unread
    text = cli("bounces", str(maildir))
    assert "Re: Kerstbrood" in text.stdout and "--ack" in text.stderr
    assert cli("-q", "bounces", str(maildir)).stdout == ""  # cron stays quiet

    acked = run("--ack")
    assert acked["acknowledged"] == 1
    assert not (maildir / "new" / "1.reply").exists() and [p.name for p in (maildir / "cur").iterdir()] == ["1.reply:2,S"]
    after = run()
    assert (after["unmatched"], after["already_processed"]) == (0, 1)


def test_render_serve_is_a_local_page_that_reloads_on_save(project: Path) -> None:
    import http.client
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "mailcli", "render", "newsletter", "--serve"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline() if proc.stderr else ""
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        port = int(match.group(1))

        def get(path: str, host: str = "127.0.0.1") -> tuple[int, str]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path, headers={"Host": f"{host}:{port}"})
            response = conn.getresponse()
            body = response.read().decode("utf-8")
            conn.close()
            return response.status, body

        status, page = get("/")
        assert status == 200 and "Hi Jane," in page and 'fetch("/stamp"' in page
        assert "Hi Jane," in get("/text")[1] and "<" not in get("/text")[1].splitlines()[0]
        assert get("/", host="preview.attacker.example")[0] == 403
        before = get("/stamp")[1]
        html = project / "templates" / "newsletter" / "message.html"
        html.write_text(html.read_text(encoding="utf-8").replace("<h1>", "<h1>Vers kerstbrood! ", 1), encoding="utf-8")
        deadline = time.monotonic() + 20
        while get("/stamp")[1] == before:  # what the page's script asks every second
            assert time.monotonic() < deadline, "the stamp never changed"
            time.sleep(0.05)
        assert "Vers kerstbrood!" in get("/")[1]
        html.write_text(html.read_text(encoding="utf-8").replace("{% endblock %}", "{% endblok %}", 1), encoding="utf-8")
        status, page = get("/")
        assert status == 500 and "message.html" in page and 'fetch("/stamp"' in page  # the error, and it reloads
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Stopped" in err and "Traceback" not in err



def test_ctrl_c_or_ctrl_d_at_the_question_changes_nothing(project: Path) -> None:
    add_contacts(project / "mailcli.db", "news", people(3))
    for key, code, said in (("\x03", ExitCode.INTERRUPTED, "Interrupted at the question"),
                            ("\x04", ExitCode.USAGE, "Cancelled")):
        term = Terminal("send", "spring", "--template", "newsletter", "--list", "news", cwd=project)
        term.read_until("[y/N]:")
        term.wait_for_read()
        term.type(key)
        assert term.wait() == code, term.text
        after = term.text.split("[y/N]:", 1)[1]
        assert f"\nError: {said}; nothing was changed" in after.replace("\r", ""), after
        assert "Abort" not in after
    assert json.loads(Cli()("report", "--json").stdout) == []


def test_a_table_too_wide_for_the_terminal_becomes_records(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(2))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        assert cli("send", "2026-12", "--template", "newsletter", "--list", "news", "--yes").exit_code == 0
    term = Terminal("report", cwd=project, columns=80, env={"NO_COLOR": "1"})
    assert term.wait() == 0
    lines = [line.rstrip() for line in term.text.replace("\r", "").splitlines()]
    # No header broken mid-word ("campaig" / "n"): one "column  value" line each.
    assert lines[:4] == ["campaign      2026-12", "kind          marketing", "audience      2", "sent          2"]
    assert all(len(line) <= 80 for line in lines)
    piped = cli("report").stdout.splitlines()
    assert piped[0].split() == ["campaign", "kind", "audience", "sent", "failed", "deferred", "pending", "uncertain",
                                "skipped", "bounced", "unsubscribed", "complained"]


def test_lists_counts_each_member_once_by_the_one_definition(project: Path, cli: Cli) -> None:
    # Members of two lists in every state; lists' counts must be the
    # per-member statuses contacts shows, summed.
    db = project / "mailcli.db"
    add_contacts(db, "news", people(8))
    add_contacts(db, "shop", people(4, start=4))
    add_contacts(db, "shop", people(2, start=20), status="unconfirmed")
    for args in (("unsubscribe", "person0@example.net", "--list", "news"), ("privacy", "restrict", "person1@example.net"),
                 ("privacy", "object", "person2@example.net"), ("privacy", "restrict", "person21@example.net"),
                 ("unsubscribe", "person5@example.net")):
        assert cli(*args).exit_code == 0, args
    with sqlite3.connect(db) as conn:  # a hard bounce and a complaint, as bounces would record them
        conn.execute("UPDATE contacts SET status = 'bounced' WHERE email IN ('person3@example.net', 'person6@example.net')")
        conn.execute("UPDATE contacts SET status = 'complained' WHERE email = 'person7@example.net'")
    listed = {d["name"]: d for d in json.loads(cli("lists", "--json").stdout)}
    for name, summary in listed.items():
        members = json.loads(cli("contacts", "--list", name, "--json").stdout)
        shown = {status: len(json.loads(cli("contacts", "--list", name, "--status", status, "--json").stdout))
                 for status in ("subscribed", "unconfirmed", "unsubscribed", "bounced", "complained", "restricted",
                                "objected", "no_basis")}
        counted = {k: summary[k] for k in ("subscribed", "unconfirmed", "unsubscribed")} | summary["held_back_by"]
        assert counted == shown, name
        assert sum(shown.values()) == len(members) == sum(counted.values())
    assert (listed["news"]["subscribed"], listed["news"]["held_back"], listed["news"]["unsubscribed"]) == (1, 4, 3)
    assert (listed["shop"]["subscribed"], listed["shop"]["unconfirmed"], listed["shop"]["held_back"]) == (1, 1, 3)
