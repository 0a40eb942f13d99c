"""`mailcli send` against relays that push back, as real ones do.

aiosmtpd on 127.0.0.1 plays a relay that allows two connections at once
(Postfix's ``smtpd_client_connection_count_limit``), one that allows only so
many new connections a second, one that ends a session after five messages
or recipients, one that says "too much mail" past a message rate, and one
that refuses every connection. Each time every recipient gets exactly one
message (or, for the last, the run stops with exit 5 and state saved), and
what was found is reported and remembered for the next run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mailcli.errors import ExitCode
from mailcli.send.pacing import reply_kind
from mailcli.send.replies import parse_reply
from mailcli.send.smtp import ConnectParams, ehlo_name
from tests.conftest import Cli, Engine, set_smtp
from tests.sendhelpers import add_contacts, deliveries, people
from tests.smtpserver import SmtpServer

FAST = ["connect_backoff = 0.1"]


def _send(cli: Cli, campaign: str = "spring", *args: str) -> Any:
    return cli("--json", "send", campaign, "--template", "newsletter", "--list", "news", "--yes", *args)


def _exactly_once(server: SmtpServer, members: list[dict[str, str]]) -> None:
    received = Counter(server.recipients())
    assert set(received) == {m["email"] for m in members}
    assert set(received.values()) == {1}


def _relay_row(project: Path) -> tuple[Any, ...] | None:
    conn = sqlite3.connect(project / "mailcli.db")
    try:
        return conn.execute("SELECT connections_limit, rate_limit, smtputf8 FROM relays").fetchone()
    finally:
        conn.close()


def _window(project: Path, text: str) -> None:
    config = project / "mailcli.toml"
    config.write_text(config.read_text().replace('retry_window = "2m"', f'retry_window = "{text}"'))


def test_a_relay_that_takes_two_connections_gets_two_and_the_next_run_starts_there(project: Path, cli: Cli) -> None:
    members = people(60)
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer(max_connections=2) as server:
        set_smtp(project, "127.0.0.1", server.port, extra=FAST)
        result = _send(cli)  # concurrency = 4, the default
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["connections_limit"] == 2 and data["sent"] == 60
        assert "takes 2 connection(s) at once" in result.stderr and "too many connections" in result.stderr
        _exactly_once(server, members)
        assert server.refused >= 1 and server.max_concurrent <= 2
        assert _relay_row(project)[0] == 2

        refused = server.refused
        again = _send(cli, "summer")
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)["connections_limit"] == 2
        assert server.refused == refused  # it started with two: nothing refused this time
    assert Counter(server.recipients()) == Counter({m["email"]: 2 for m in members})


def test_a_relay_that_limits_new_connections_and_messages_per_session(project: Path, cli: Cli) -> None:
    members = people(50)
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer(connection_rate=(3, 1.0), messages_per_session=8) as server:
        set_smtp(project, "127.0.0.1", server.port, extra=FAST)
        result = _send(cli)
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
    _exactly_once(server, members)
    assert server.refused >= 1 and data["connections_limit"] is not None and data["connections_limit"] <= 3
    assert set(deliveries(project / "mailcli.db", "spring").values()) == {"sent"}


@pytest.mark.parametrize("limit", [
    {"messages_per_session": 5},  # 421 4.7.0 Too many messages in this session, closing
    {"recipients_per_session": 5},  # 452 4.5.3 Too many recipients
])
def test_a_session_limit_means_a_new_session_not_a_failure(project: Path, cli: Cli, limit: dict[str, int]) -> None:
    members = people(30)
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer(**limit) as server:  # type: ignore[arg-type]
        set_smtp(project, "127.0.0.1", server.port, extra=FAST)
        result = _send(cli)
        assert result.exit_code == 0, result.output
    _exactly_once(server, members)
    assert server.sessions >= 6  # five a session
    failed = json.loads(cli("report", "spring", "--failed", "--json").stdout)
    assert failed["failures"] == [] and failed["sent"] == 30
    conn = sqlite3.connect(project / "mailcli.db")
    # Not the message's failure: one attempt each.
    assert {row[0] for row in conn.execute("SELECT attempts FROM deliveries")} == {1}
    conn.close()


def test_a_relay_that_says_too_much_mail_is_sent_to_more_slowly(project: Path, cli: Cli) -> None:
    members = people(30)
    add_contacts(project / "mailcli.db", "news", members)
    _window(project, "1m")
    with SmtpServer(message_rate=(20, 1.0)) as server:
        set_smtp(project, "127.0.0.1", server.port, extra=FAST)
        result = _send(cli)
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
    _exactly_once(server, members)
    assert "asks to slow down" in result.stderr and "too much mail" in result.stderr
    assert data["rate_limit"] is not None and 0 < data["rate_limit"] < 20
    assert round(_relay_row(project)[1], 3) == data["rate_limit"]


def test_a_relay_that_refuses_every_connection_exits_5_after_the_retry_window(project: Path, cli: Cli) -> None:
    members = people(5)
    add_contacts(project / "mailcli.db", "news", members)
    _window(project, "2s")
    with SmtpServer(refuse_all=True) as server:
        set_smtp(project, "127.0.0.1", server.port, extra=["connect_backoff = 0.2"])
        started = time.monotonic()
        result = _send(cli)
        took = time.monotonic() - started
        assert result.exit_code == ExitCode.TRANSPORT, result.output
        assert took >= 2 and server.refused >= 3  # tried again and again for the whole window
        assert "too many connections" in result.stderr and "retry_window" in result.stderr
        assert server.messages == []
    assert set(deliveries(project / "mailcli.db", "spring").values()) == {"pending"}  # state saved
    with SmtpServer(port=server.port) as good:
        again = cli("send", "spring", "--yes")
        assert again.exit_code == 0, again.output
    _exactly_once(good, members)


def test_never_more_connections_than_messages_left(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(2))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = _send(cli, "spring", "--concurrency", "8")
        assert result.exit_code == 0, result.output
    assert server.sessions <= 2 and len(server.messages) == 2


def test_helo_name_setting_and_default(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", people(1))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port, extra=['helo_name = "mail.acme.example"'])
        assert _send(cli).exit_code == 0
    assert set(server.helo_names) == {"mail.acme.example"}
    # Without a usable FQDN: the address literal of this end toward another
    # host, never a localhost name; "localhost" only toward loopback.
    def params(host: str) -> ConnectParams:
        return ConnectParams(host=host, port=25, security="starttls", username=None, password=None, timeout=5,
                             ca_file=None, local_hostname=None)
    assert ehlo_name(params("smtp.example.net"), ("192.0.2.10", 40000)) == "[192.0.2.10]"
    assert ehlo_name(params("smtp.example.net"), ("2001:db8::5", 40000, 0, 0)) == "[IPv6:2001:db8::5]"  # type: ignore[arg-type]
    assert ehlo_name(params("127.0.0.1"), ("127.0.0.1", 40000)) == "localhost"
    config = project / "mailcli.toml"
    text = config.read_text().replace('helo_name = "mail.acme.example"', 'helo_name = "localhost.localdomain"')
    config.write_text(text.replace('host = "127.0.0.1"', 'host = "smtp.example.net"').replace(
        'security = "none"', 'security = "starttls"'))
    refused = cli("config", "show")
    assert refused.exit_code == ExitCode.CONFIG and "helo_name" in refused.stderr


def test_a_used_up_daily_quota_stops_the_run_and_fails_nobody(project: Path, cli: Cli) -> None:
    members = people(10)
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer(daily_quota=4) as server:
        set_smtp(project, "127.0.0.1", server.port, extra=FAST)
        result = _send(cli)
        assert result.exit_code == ExitCode.PARTIAL, result.output
        assert "sending quota is used up" in result.stderr and "Daily message quota exceeded" in result.stderr
    assert 4 <= len(server.messages) < 10  # (MAIL commands in flight on other connections still got in)
    statuses = deliveries(project / "mailcli.db", "spring")
    assert "failed" not in statuses.values()  # no address is to blame
    with SmtpServer(port=server.port) as tomorrow:
        again = cli("send", "spring", "--yes")
        assert again.exit_code == 0, again.output
    assert Counter(server.recipients() + tomorrow.recipients()) == Counter({m["email"]: 1 for m in members})


@pytest.mark.parametrize(("line", "kind"), [
    (b"421 4.7.0 mail.example.org Error: too many connections from 192.0.2.1", "connections"),  # Postfix
    (b"432 4.3.2 Concurrent connections limit exceeded.", "connections"),  # Microsoft 365
    (b"432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", "connections"),  # Microsoft 365
    (b"452 4.5.3 Error: too many recipients", "session"),  # Postfix, Exchange
    (b"421 4.7.0 Too many messages in this session, closing", "session"),
    (b"450 4.7.1 Error: too much mail from 192.0.2.1", "rate"),  # Postfix anvil
    (b"454 Throttling failure: Maximum sending rate exceeded.", "rate"),  # Amazon SES
    (b"450 4.2.1 Peak SMTP relay limit exceeded for customer", "rate"),  # Google Workspace relay
    (b"454 Throttling failure: Daily message quota exceeded.", "quota"),  # Amazon SES
    (b"550 5.4.5 Daily SMTP relay limit exceeded for user", "quota"),  # Google Workspace relay
    (b"554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException", "quota"),  # Microsoft 365
    (b"552 5.2.2 <ann@example.net>: user over quota", None),  # the recipient's mailbox
    (b"451 4.3.0 greylisted", None),
    (b"550 5.1.1 <ann@example.net>: Recipient address rejected: User unknown", None),
])
def test_what_relays_say_is_read_for_what_it_means(line: bytes, kind: str | None) -> None:
    assert reply_kind(parse_reply([line])) == kind


class _FastClock:
    """``clock.monotonic`` running ``speed`` times as fast as the real one."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.start = time.monotonic()

    def __call__(self) -> float:
        return self.start + (time.monotonic() - self.start) * self.speed

    def elapsed(self) -> float:
        return self() - self.start


def _remember_rate(project: Path, port: int, rate: float, hours_ago: float) -> None:
    from datetime import timedelta

    from mailcli import clock

    found = clock.to_iso(clock.now() - timedelta(hours=hours_ago))
    conn = sqlite3.connect(project / "mailcli.db")
    with conn:
        conn.execute("INSERT INTO relays (host, port, login, rate_limit, updated_at) VALUES ('127.0.0.1', ?, '', ?, ?)",
                     (port, rate, found))
    conn.close()


def test_a_burst_of_slow_down_replies_lowers_the_rate_once_per_round_trip(
        project: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailcli import clock

    fast = _FastClock(3)  # calm stretches pass sooner; refusals come far more often than every 3 s
    monkeypatch.setattr(clock, "monotonic", fast)
    members = people(60)
    add_contacts(project / "mailcli.db", "news", members)
    _window(project, "1m")  # 20 connections x 12 messages each in a minute: no slower than 4 a second
    with SmtpServer() as server:
        for member in members[:40]:  # the first 40 recipients: refused once each
            server.script("RCPT", member["email"], ["451 4.7.1 rate limit exceeded, slow down"])
        set_smtp(project, "127.0.0.1", server.port, extra=FAST)
        result = _send(cli, "spring", "--concurrency", "20")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
    _exactly_once(server, members)
    assert data["sent"] == 60 and data["deferred"] == 0
    slowdowns = result.stderr.count("asks to slow down")
    # Replies about messages in flight before a decrease do not decrease
    # again, and nothing goes below the floor (4 a second here).
    assert 1 <= slowdowns <= 3, result.stderr
    rates = [float(line.rsplit("now ", 1)[1].split()[0]) for line in result.stderr.splitlines()
             if "asks to slow down" in line]
    assert min(rates) >= 4.0


def test_a_remembered_low_rate_is_said_and_recovers_in_minutes(
        project: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailcli import clock

    fast = _FastClock(100)
    monkeypatch.setattr(clock, "monotonic", fast)
    members = people(60)
    add_contacts(project / "mailcli.db", "news", members)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port, extra=FAST)
        _remember_rate(project, server.port, 0.05, hours_ago=0)  # as a burst of slow-downs once left it
        result = _send(cli, "spring", "--rate", "50/s")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
    _exactly_once(server, members)
    # Said once, at the default verbosity: why it starts slower, and what clears it.
    said = [line for line in result.stderr.splitlines() if "starting at" in line]
    assert len(said) == 1, result.stderr
    assert "starting at 1.00 message(s)/s, not the configured 50.00" in said[0]
    assert "forgets it" in said[0]
    # It rose by a quarter every 10 s (as the clock runs) back to the configured rate, which forgets it.
    assert data["rate_limit"] is None and _relay_row(project)[1] is None


@pytest.mark.parametrize(("hours_ago", "start"), [(3.1, "4.00"), (25, None)])
def test_a_remembered_rate_doubles_every_hour_and_is_ignored_after_a_day(
        project: Path, cli: Cli, hours_ago: float, start: str | None) -> None:
    add_contacts(project / "mailcli.db", "news", people(2))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port, extra=FAST)
        _remember_rate(project, server.port, 0.5, hours_ago=hours_ago)
        result = _send(cli, "spring", "--rate", "50/s")
        assert result.exit_code == 0, result.output
    if start is None:
        assert "starting at" not in result.stderr
    else:
        assert f"starting at {start} message(s)/s, not the configured 50.00" in result.stderr


def test_a_remembered_rate_ages_from_when_it_was_found_whatever_else_is_recorded_about_the_relay_later(
        project: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    # The rate aged from the time the relay's row last changed, and a later
    # run that recorded only a connection limit changed the row: a rate found
    # three hours before was taken as found just now, and the next send
    # started at it instead of at eight times it.
    from datetime import datetime, timedelta

    from mailcli import clock
    from mailcli.store.relays import save_relay
    from tests.conftest import project_store

    add_contacts(project / "mailcli.db", "news", people(2))
    real_now = clock.now
    found = real_now() - timedelta(hours=3, minutes=10)
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port, extra=FAST)

        def record(at: datetime, **fields: Any) -> None:
            monkeypatch.setattr(clock, "now", lambda: at)
            with project_store(project) as store, store.transaction() as conn:
                save_relay(conn, "127.0.0.1", server.port, None, **fields)

        record(found, rate_limit=0.5)  # a send the relay slowed down to 0.5 a second
        record(found + timedelta(hours=1), connections_limit=2)  # a later one found a connection limit only
        # and one more, written as a send writes it: the limit it found, the rate as it was
        record(found + timedelta(hours=2), connections_limit=3, rate_limit=0.5)
        monkeypatch.setattr(clock, "now", real_now)
        assert _relay_row(project)[:2] == (3, 0.5)

        result = _send(cli, "spring", "--rate", "50/s")
        assert result.exit_code == 0, result.output
    # three full hours since it was found: 0.5 doubled three times
    assert "starting at 4.00 message(s)/s, not the configured 50.00" in result.stderr, result.stderr


def test_a_rate_remembered_before_the_upgrade_ages_from_when_its_row_was_written(
        tmp_path: Path, engine: Engine) -> None:
    from mailcli.store.db import apply_migrations, connect
    from mailcli.store.migrations import MIGRATIONS

    if engine.pg is None:
        conn: Any = connect(tmp_path / "old.db")
    else:
        from mailcli.store import postgres
        from mailcli.store.url import parse_database_url

        conn = postgres.connect(parse_database_url(engine.pg.url, from_file=True))
    names = [name for name, _ in MIGRATIONS]
    earlier = names[:names.index("m018_relay_rate_found_at")]
    assert apply_migrations(conn, only=earlier) == earlier
    for port, rate in ((25, 0.5), (587, None)):  # the row of a relay with a rate, and of one without
        conn.execute("INSERT INTO relays (host, port, login, connections_limit, rate_limit, updated_at)"
                     " VALUES ('mail.example.org', ?, '', 2, ?, '2026-03-01T10:00:00Z')", (port, rate))
    assert apply_migrations(conn, only=["m018_relay_rate_found_at"]) == ["m018_relay_rate_found_at"]
    rows = conn.execute("SELECT port, rate_limit, rate_found_at FROM relays ORDER BY port").fetchall()
    assert [tuple(row) for row in rows] == [(25, 0.5, "2026-03-01T10:00:00Z"), (587, None, None)]
    conn.close()
