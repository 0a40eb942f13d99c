"""Sign-up form and double opt-in: a real `mailcli serve`, a real HTTP client, aiosmtpd as the relay."""

from __future__ import annotations

import email
import email.policy
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from mailcli import clock
from tests.conftest import Cli, set_smtp
from tests.privacy_support import freeze
from tests.serve_support import Server
from tests.smtpserver import Received, SmtpServer

WORDING = "Yes, send me the monthly Acme newsletter."


@pytest.fixture
def relay() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def served(project: Path, relay: SmtpServer) -> Iterator[Server]:
    set_smtp(project, "127.0.0.1", relay.port)
    with (project / "mailcli.toml").open("a", encoding="utf-8") as config:
        config.write(f'\n[lists.news]\nconsent_text = "{WORDING}"\n\n[lists.nieuws]\nlanguage = "nl"\n')
    server = Server(project)
    try:
        yield server
    finally:
        server.stop()


def _db(project: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(project / "mailcli.db")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _member(project: Path, address: str, list_name: str = "news") -> tuple[object, ...] | None:
    found = _db(project, "SELECT m.status, m.basis, m.consent_method, m.consent_ip, m.consent_text, m.confirmed_at"
                         " FROM memberships m JOIN contacts c ON c.id = m.contact_id JOIN lists l ON l.id = m.list_id"
                         " WHERE c.email_key = ? AND l.name = ?", address, list_name)
    return found[0] if found else None


def _sign_up(server: Server, address: str, list_name: str = "news", **extra: str) -> httpx.Response:
    # As a form on another site posts it: urlencoded, with that site as Origin.
    fields = {"email": address, "first_name": "Ann", "consent": "yes", "website": "", **extra}
    return httpx.post(f"{server.base}/subscribe/{list_name}", data=fields, timeout=30,
                      headers={"Origin": "https://www.acme-bakery.example", "Referer": "https://www.acme-bakery.example/"})


def _mail_to(relay: SmtpServer, address: str, count: int = 1) -> list[Received]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [m for m in relay.messages if address in m.rcpt_tos]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no confirmation mail to {address}: {[m.rcpt_tos for m in relay.messages]}")


def _link(server: Server, received: Received) -> tuple[str, str, email.message.EmailMessage]:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    match = re.search(r"https://news\.example\.org/confirm\?t=([A-Za-z0-9_-]{40})", text)
    assert match, text
    return f"{server.base}/confirm", match.group(1), message  # type: ignore[return-value]


def test_sign_up_confirm_and_the_next_campaign_reaches_them(served: Server, relay: SmtpServer, project: Path,
                                                            cli: Cli) -> None:
    form = httpx.get(f"{served.base}/subscribe/news")
    assert form.status_code == 200 and '<html lang="en">' in form.text
    assert WORDING in form.text and 'type="checkbox"' in form.text and "checked" not in form.text
    assert "<script" not in form.text and "http" not in form.text.split("<body>")[1]  # nothing from elsewhere

    answer = _sign_up(served, "new@example.org")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert _member(project, "new@example.org")[:2] == ("unconfirmed", "none")  # type: ignore[index]
    url, token, message = _link(served, _mail_to(relay, "new@example.org")[0])
    assert message["Subject"] == "Confirm your subscription to news"
    assert message["List-Unsubscribe"] is None and message["Precedence"] is None

    for _ in range(3):  # a link scanner opening the link confirms nobody
        page = httpx.get(url, params={"t": token})
        assert page.status_code == 200 and 'method="post"' in page.text
    assert _member(project, "new@example.org")[0] == "unconfirmed"  # type: ignore[index]

    done = httpx.post(url, params={"t": token}, data={"t": token})
    assert done.status_code == 200 and "You are subscribed" in done.text
    status, basis, method, ip, text_hash, confirmed = _member(project, "new@example.org")  # type: ignore[misc]
    assert (status, basis, method, ip) == ("subscribed", "consent", "double opt-in", "127.0.0.0/24")
    assert confirmed
    assert _db(project, "SELECT text FROM consent_texts WHERE hash = ?", text_hash) == [(WORDING,)]
    again = httpx.post(url, params={"t": token}, data={"t": token})
    assert again.status_code == 200 and again.text == done.text
    shown = cli("contacts", "show", "new@example.org").stdout
    assert "basis consent" in shown and "ip 127.0.0.0/24" in shown and f'agreed to "{WORDING}"' in shown

    sent = cli("--json", "send", "june", "--template", "newsletter", "--list", "news", "--yes")
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.stdout)["sent"] == 1
    assert relay.recipients().count("new@example.org") == 2  # the confirmation, then the newsletter


def test_a_dutch_list_gets_a_dutch_form_page_and_mail(served: Server, relay: SmtpServer) -> None:
    form = httpx.get(f"{served.base}/subscribe/nieuws")
    assert form.status_code == 200 and '<html lang="nl">' in form.text and "Aanmelden voor nieuws" in form.text
    answer = _sign_up(served, "nieuw@example.org", "nieuws")
    assert "Kijk in je inbox" in answer.text and "7 dagen" in answer.text
    url, token, message = _link(served, _mail_to(relay, "nieuw@example.org")[0])
    assert message["Subject"] == "Bevestig je aanmelding voor nieuws"
    page = httpx.get(url, params={"t": token})
    assert '<html lang="nl">' in page.text and "Bevestig mijn aanmelding" in page.text
    done = httpx.post(url, data={"t": token})
    assert "Je bent aangemeld" in done.text


def test_the_same_answer_for_new_existing_suppressed_and_bad_addresses(served: Server, relay: SmtpServer,
                                                                       project: Path, cli: Cli) -> None:
    (project / "members.csv").write_text("email\nmember@example.org\nleft@example.org\n", encoding="utf-8")
    assert cli("import", "members.csv", "--list", "news", "--basis", "customer").exit_code == 0
    assert cli("unsubscribe", "left@example.org", "--list", "news").exit_code == 0
    answers = {address: _sign_up(served, address) for address in
               ("fresh@example.org", "member@example.org", "left@example.org", "not an address@example")}
    bodies = {a.text for a in answers.values()}
    assert len(bodies) == 1 and {a.status_code for a in answers.values()} == {200}
    _mail_to(relay, "fresh@example.org")
    _mail_to(relay, "left@example.org")
    assert "member@example.org" not in relay.recipients()  # already subscribed: nothing to confirm
    # Someone who left the list is back only once they confirm.
    assert _member(project, "left@example.org")[0] == "unsubscribed"  # type: ignore[index]


def test_resubscribing_after_an_unsubscribe_goes_only_through_the_confirmation(
        served: Server, relay: SmtpServer, project: Path, cli: Cli) -> None:
    (project / "members.csv").write_text("email\nleft@example.org\n", encoding="utf-8")
    assert cli("import", "members.csv", "--list", "news", "--basis", "customer").exit_code == 0
    assert cli("unsubscribe", "left@example.org").exit_code == 0  # all marketing
    # An import never brings them back...
    assert cli("--json", "import", "members.csv", "--list", "news", "--basis", "customer").exit_code == 0
    assert _member(project, "left@example.org")[0] == "unsubscribed"  # type: ignore[index]
    # ...their own confirmed sign-up does.
    _sign_up(served, "left@example.org")
    url, token, _ = _link(served, _mail_to(relay, "left@example.org")[0])
    assert httpx.post(url, data={"t": token}).status_code == 200
    assert _member(project, "left@example.org")[:2] == ("subscribed", "consent")  # type: ignore[index]
    assert _db(project, "SELECT count(*) FROM suppressions") == [(0,)]
    (kind, detail), = _db(project, "SELECT kind, detail FROM events WHERE kind = 'resubscribed'")
    assert "unsubscribed" in str(detail)
    shown = cli("contacts", "show", "left@example.org").stdout
    assert "basis consent" in shown and "double opt-in" in shown and "resubscribed" in shown


def test_honeypot_bad_requests_and_tampered_or_expired_tokens(served: Server, relay: SmtpServer,
                                                              project: Path) -> None:
    bot = _sign_up(served, "bot@example.org", website="http://spam.example")
    assert bot.status_code == 200 and "Check your inbox" in bot.text
    assert _member(project, "bot@example.org") is None
    no_box = httpx.post(f"{served.base}/subscribe/news", data={"email": "x@example.org"})
    assert no_box.status_code == 400
    for no_address in ({"email": "", "consent": "yes"}, {"email": " \t", "consent": "yes"}, {"consent": "yes"}):
        answer = httpx.post(f"{served.base}/subscribe/news", data=no_address)
        assert answer.status_code == 400 and "Check your inbox" not in answer.text
    assert _db(project, "SELECT count(*) FROM signups") == [(0,)]
    assert httpx.get(f"{served.base}/subscribe/nosuchlist").status_code == 404

    _sign_up(served, "real@example.org")
    url, token, _ = _link(served, _mail_to(relay, "real@example.org")[0])
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (tampered, token[:-1], "x" * 40):
        assert httpx.get(url, params={"t": bad}).status_code == 400
        assert httpx.post(url, data={"t": bad}).status_code == 400
    from mailcli.config import load_settings
    from mailcli.tokens import make_confirm_token

    settings = load_settings(project / "mailcli.toml")
    ((nonce,),) = _db(project, "SELECT nonce FROM signups")
    expired = make_confirm_token(settings.secret(), str(nonce), int(time.time()) - 1)
    assert httpx.post(url, data={"t": expired}).status_code == 400
    unsubscribe_token_as_confirmation = httpx.post(url, data={"t": _unsubscribe_token(project, settings)})
    assert unsubscribe_token_as_confirmation.status_code == 400
    assert _member(project, "real@example.org")[0] == "unconfirmed"  # type: ignore[index]


def _unsubscribe_token(project: Path, settings: object) -> str:
    from mailcli.tokens import make_unsubscribe_token

    ((uid, list_id),) = _db(project, "SELECT c.uid, m.list_id FROM contacts c JOIN memberships m ON m.contact_id = c.id")
    return make_unsubscribe_token(settings.secret(), str(uid), int(list_id))  # type: ignore[attr-defined]


def test_a_client_that_keeps_signing_up_is_limited(served: Server, relay: SmtpServer) -> None:
    codes = [_sign_up(served, f"p{i}@example.org").status_code for i in range(12)]
    assert codes[:10] == [200] * 10 and codes[10:] == [429, 429]


def test_a_confirmation_mail_the_relay_defers_is_sent_again_later(project: Path, relay: SmtpServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from mailcli.config import load_settings
    from mailcli.consent import flow, mailer
    from mailcli.store import open_store

    set_smtp(project, "127.0.0.1", relay.port)
    settings = load_settings(project / "mailcli.toml")
    store = open_store(settings.project.database)
    try:
        store.conn.execute("INSERT INTO lists (name, created_at) VALUES ('news', '2026-01-01T00:00:00Z')")
        relay.script("RCPT", "later@example.org", ["451 4.3.0 try again later"])
        assert flow.sign_up(store, settings, flow.SignupRequest("news", "later@example.org", form="test"))
        assert mailer.send_due(store, settings) == (0, 1)
        assert mailer.send_due(store, settings) == (0, 0)  # not before its time
        start = clock.now()
        monkeypatch.setattr(clock, "now", lambda: start + timedelta(seconds=31))
        assert mailer.send_due(store, settings) == (1, 0)
        assert relay.recipients() == ["later@example.org"]
    finally:
        store.close()


def test_a_sign_up_never_confirmed_goes_under_the_unconfirmed_retention(project: Path, relay: SmtpServer, cli: Cli,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from mailcli.config import load_settings
    from mailcli.consent import flow
    from mailcli.store import open_store

    set_smtp(project, "127.0.0.1", relay.port)
    settings = load_settings(project / "mailcli.toml")
    store = open_store(settings.project.database)
    try:
        store.conn.execute("INSERT INTO lists (name, created_at) VALUES ('news', '2026-01-01T00:00:00Z')")
        assert flow.sign_up(store, settings, flow.SignupRequest("news", "maybe@example.org", form="test",
                                                                ip="192.0.2.77"))
    finally:
        store.close()
    later = clock.to_iso(clock.now() + timedelta(days=40))
    kept = cli("--json", "privacy", "purge", "--dry-run", "--as-of", clock.to_iso(clock.now())[:10])
    assert json.loads(kept.stdout).get("unconfirmed", 0) == 0
    freeze(monkeypatch, later)
    purged = cli("--json", "privacy", "purge")
    assert purged.exit_code == 0, purged.output
    assert json.loads(purged.stdout)["unconfirmed"] == 1
    assert _db(project, "SELECT count(*) FROM signups") == [(0,)]
    assert _db(project, "SELECT count(*) FROM contacts") == [(0,)]
