"""Click counts without tracking people: links rewritten to serve's
``/c/TOKEN`` only when switched on, a real HTTP client against a real
``mailcli serve``: 302 to the exact URL, tampered tokens 400, no open
redirect, per-link counts, per-contact clicks only when switched on and
gone after erase."""

from __future__ import annotations

import email
import email.policy
import json
import re
import sqlite3
import zipfile
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from mailcli import clock
from tests.conftest import Cli, set_smtp
from tests.privacy_support import freeze
from tests.sendhelpers import add_contacts
from tests.serve_support import Server
from tests.smtpserver import SmtpServer

AGENDA = "https://acme.nl/agenda?utm_source=nieuwsbrief&x=1"
PRICES = "https://acme.nl/prijzen"
CLICK = re.compile(r"https://news\.example\.org/c/([A-Za-z0-9_-]+)")


def template(project: Path) -> None:
    folder = project / "templates" / "clicky"
    folder.mkdir()
    (folder / "subject.txt").write_text("Nieuws\n", encoding="utf-8")
    (folder / "message.html").write_text(
        "<p>Hallo {{ contact.first_name }},</p>\n"
        '<p><a href="https://acme.nl/agenda?utm_source=nieuwsbrief&amp;x=1">Agenda</a></p>\n'
        '<p><a href="https://acme.nl/prijzen">Prijzen</a> <a href="mailto:info@acme.nl">Mail ons</a></p>\n'
        '<p><a href="https://acme.nl/klant?nr={{ contact.klantnummer }}">Uw gegevens</a></p>\n'
        '<p><a href="{{ unsubscribe_url }}">Afmelden</a></p>\n', encoding="utf-8")


def members(project: Path) -> None:
    add_contacts(project / "mailcli.db", "news", [
        {"email": f"lid{i}@example.net", "first_name": f"Lid{i}", "klantnummer": f"KL-100{i}"} for i in range(3)])


def tracking(project: Path, *, per_contact: bool) -> None:
    path = project / "mailcli.toml"
    text = re.sub(r"\n\[tracking\][^\[]*", "\n", path.read_text(encoding="utf-8"))
    path.write_text(text + f"\n[tracking]\nclicks = true\nper_contact = {str(per_contact).lower()}\n",
                    encoding="utf-8")


def send(cli: Cli, project: Path, campaign: str) -> list[email.message.EmailMessage]:
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("send", campaign, "--template", "clicky", "--list", "news", "--yes")
        assert result.exit_code == 0, result.output
    return [email.message_from_bytes(m.data, policy=email.policy.default) for m in server.messages]


def parts(msg: email.message.EmailMessage) -> tuple[str, str]:
    text, html = (part.get_content() for part in msg.iter_parts())
    return text, html


def click(server: Server, token: str, method: str = "GET", **kwargs: object) -> httpx.Response:
    return httpx.request(method, f"{server.base}/c/{token}", follow_redirects=False, timeout=60, **kwargs)  # type: ignore[arg-type]


def db(project: Path) -> sqlite3.Connection:
    return sqlite3.connect(project / "mailcli.db")


def test_off_by_default_links_are_left_alone(project: Path, cli: Cli) -> None:
    template(project)
    members(project)
    for msg in send(cli, project, "plain"):
        text, html = parts(msg)
        assert 'href="https://acme.nl/agenda?utm_source=nieuwsbrief&amp;x=1"' in html
        assert "/c/" not in html and "/c/" not in text
    assert db(project).execute("SELECT count(*) FROM campaign_links").fetchone() == (0,)


def test_per_link_counts_exact_redirects_and_no_open_redirect(project: Path, cli: Cli) -> None:
    template(project)
    members(project)
    tracking(project, per_contact=False)
    messages = send(cli, project, "june")
    tokens = []
    for msg in messages:
        text, html = parts(msg)
        found = CLICK.findall(html)
        assert len(found) == 2, html  # the agenda and the prices; not mailto, unsubscribe or the personal link
        assert 'href="mailto:info@acme.nl"' in html and "https://news.example.org/unsubscribe?t=" in html
        assert re.search(r'href="https://acme\.nl/klant\?nr=KL-100\d"', html)
        assert CLICK.findall(text) == found  # the text part's links count too
        assert "acme.nl/agenda" not in html and "acme.nl/prijzen" not in html
        tokens.append(found)
    assert tokens[0] == tokens[1] == tokens[2]  # no person in a token: every message has the same ones
    agenda, prices = tokens[0]
    assert len(agenda) == 32
    server = Server(project)
    try:
        first = click(server, agenda)
        assert first.status_code == 302
        assert first.headers["location"] == AGENDA  # exactly the URL of the template
        assert first.headers["referrer-policy"] == "no-referrer"
        assert click(server, agenda).headers["location"] == AGENDA
        assert click(server, prices).headers["location"] == PRICES
        assert click(server, prices, "HEAD").status_code == 302  # a link scanner: not counted
        # Tampered, cut or lengthened tokens: one 400, no Location.
        flipped = agenda[:5] + ("A" if agenda[5] != "A" else "B") + agenda[6:]
        for bad in (flipped, agenda[:-1], agenda + "A", agenda.lower(), "x", ""):
            response = click(server, bad)
            assert response.status_code == 400, bad
            assert "location" not in response.headers
        # The destination never comes from the request: a query is ignored (that click counts), anything
        # else is no token.
        response = httpx.get(f"{server.base}/c/{agenda}?url=https://evil.example/", follow_redirects=False,
                             timeout=60)
        assert (response.status_code, response.headers["location"]) == (302, AGENDA)
        for attempt in (f"{agenda}/https://evil.example/", "https://evil.example/", "//evil.example/",
                        f"{agenda}%0d%0aLocation:%20https://evil.example/"):
            response = httpx.get(f"{server.base}/c/{attempt}", follow_redirects=False, timeout=60)
            assert response.status_code in (400, 404), attempt
            assert "location" not in response.headers, attempt
        assert click(server, agenda, "POST").status_code == 405
    finally:
        assert server.stop() == 0
    assert "evil" not in "".join(server.log) and "acme.nl" not in "".join(server.log)
    report = json.loads(cli("report", "june", "--json").stdout)
    assert [(c["url"], c["clicks"]) for c in report["clicks"]] == [(AGENDA, 3), (PRICES, 1)]
    assert all("people" not in c for c in report["clicks"])
    table = cli("report", "june")
    assert "june: clicks per link" in table.stdout
    assert re.search(r"^3\s+https://acme\.nl/agenda", table.stdout, re.M)
    conn = db(project)
    assert conn.execute("SELECT count(*) FROM clicks").fetchone() == (0,)  # nobody's clicks were kept


def test_per_contact_clicks_only_when_on_in_export_and_gone_after_erase(project: Path, cli: Cli, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    template(project)
    members(project)
    tracking(project, per_contact=True)
    messages = send(cli, project, "july")
    by_person = {str(m["To"].addresses[0].addr_spec): CLICK.findall(parts(m)[1]) for m in messages}
    assert len({tuple(t) for t in by_person.values()}) == 3  # each person's links are their own
    agenda = by_person["lid0@example.net"][0]
    assert len(agenda) == 44
    conn = db(project)
    conn.execute("UPDATE contacts SET last_activity_at = '2020-01-01T00:00:00Z'")
    conn.commit()
    # A serve whose configuration keeps no per-person clicks counts the link only.
    tracking(project, per_contact=False)
    server = Server(project)
    try:
        assert click(server, agenda).headers["location"] == AGENDA
    finally:
        server.stop()
    assert conn.execute("SELECT count(*) FROM clicks").fetchone() == (0,)
    tracking(project, per_contact=True)
    server = Server(project)
    try:
        assert click(server, agenda).headers["location"] == AGENDA
        assert click(server, by_person["lid1@example.net"][1]).headers["location"] == PRICES
    finally:
        server.stop()
    rows = conn.execute("SELECT c.email, k.ip_network FROM clicks k JOIN contacts c ON c.id = k.contact_id"
                        " ORDER BY c.email").fetchall()
    assert rows == [("lid0@example.net", "127.0.0.0/24"), ("lid1@example.net", "127.0.0.0/24")]
    # A click is activity: the inactive rule no longer counts from 2020.
    (active,) = conn.execute("SELECT last_activity_at FROM contacts WHERE email = 'lid0@example.net'").fetchone()
    assert active > "2026"
    report = json.loads(cli("report", "july", "--json").stdout)
    assert [(c["url"], c["clicks"], c["people"]) for c in report["clicks"]] == [(AGENDA, 2, 1), (PRICES, 1, 1)]
    # In the person's export...
    out = tmp_path / "lid0.zip"
    assert cli("privacy", "export", "lid0@example.net", "-o", str(out)).exit_code == 0
    with zipfile.ZipFile(out) as archive:
        subject = json.loads(archive.read("subject.json"))
        assert "clicks.csv" in archive.namelist()
    assert [(c["campaign"], c["url"], c["ip_network"]) for c in subject["clicks"]] == [
        ("july", AGENDA, "127.0.0.0/24")]
    # ...and gone with them; the per-link count stays.
    assert cli("privacy", "erase", "lid0@example.net", "--yes").exit_code == 0
    assert conn.execute("SELECT count(*) FROM clicks").fetchone() == (1,)
    assert conn.execute("SELECT sum(clicks) FROM campaign_links").fetchone() == (3,)
    # [retention] clicks takes the rest when they are older.
    purged = cli("privacy", "purge", "--as-of", "2099-01-01", "--dry-run", "--json")
    assert json.loads(purged.stdout)["clicks"] == 1
    assert cli("privacy", "purge").exit_code == 0
    assert conn.execute("SELECT count(*) FROM clicks").fetchone() == (1,)
    freeze(monkeypatch, clock.to_iso(clock.now() + timedelta(days=14 * 31)))
    purged = cli("privacy", "purge", "--json")
    assert json.loads(purged.stdout)["clicks"] == 1
    assert conn.execute("SELECT count(*) FROM clicks").fetchone() == (0,)


def test_tracking_configuration_is_checked(project: Path, cli: Cli) -> None:
    path = project / "mailcli.toml"
    text = re.sub(r"\n\[tracking\][^\[]*", "\n", path.read_text(encoding="utf-8"))
    path.write_text(text + "\n[tracking]\nper_contact = true\n", encoding="utf-8")
    result = cli("lists")
    assert result.exit_code == 4
    assert "tracking.per_contact: needs clicks = true" in result.stderr


def test_click_networks_and_location_headers() -> None:
    from mailcli.feedback.web import client_network, location_header
    from mailcli.send.clicks import click_base, static_links

    assert client_network("192.0.2.57") == "192.0.2.0/24"
    assert client_network("2001:db8:1:2::/64") == "2001:db8:1::/48"  # the limiter's key for an IPv6 client
    assert client_network("unknown") is None
    assert location_header(AGENDA) == AGENDA
    assert location_header("https://bücher.example/straße?q=ë") == "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%AB"
    assert click_base("https://news.example.org/mail/unsubscribe") == "https://news.example.org/mail/c/"
    html = ('<a href="https://acme.nl/a?x=1&amp;y=2">a</a><a href="mailto:x@acme.nl">m</a>'
            '<a href="https://acme.nl/k?id=KL-1001">k</a><a href="https://news.example.org/unsubscribe?t=T">u</a>'
            "<a href='http://acme.nl/b'>b</a>")
    assert static_links(html, {"klantnummer": "KL-1001", "land": "NL"}, "https://news.example.org/unsubscribe") == [
        "https://acme.nl/a?x=1&y=2", "http://acme.nl/b"]
