"""A relay whose replies are out of step with the commands: no message is
recorded as sent unless the relay received its body."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.conftest import Cli, set_smtp
from tests.rawsmtp import RawRelay
from tests.sendhelpers import add_contacts, deliveries, people


def _short_retry_window(project: Path) -> None:
    config = project / "mailcli.toml"
    text = config.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.strip().startswith("retry_window")]
    config.write_text("\n".join(lines).replace("[smtp]", '[smtp]\nretry_window = "1s"', 1) + "\n", encoding="utf-8")


def _send_until_done(project: Path, cli: Cli, relay: RawRelay, members: list[dict[str, str]]) -> None:
    """Send, then run again until nothing is left; after every run no
    recipient is recorded as sent whose body the relay did not receive."""
    for _ in range(6):
        result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", "--concurrency", "1")
        assert result.exit_code in (0, 3), result.output
        sent = {email for email, status in deliveries(project / "mailcli.db", "spring").items() if status == "sent"}
        assert sent <= set(relay.recipients()), result.output
        assert "uncertain" not in set(deliveries(project / "mailcli.db", "spring").values())
        if result.exit_code == 0:
            break
    statuses = deliveries(project / "mailcli.db", "spring")
    assert set(statuses.values()) == {"sent"}
    received = Counter(relay.recipients())
    assert set(received) == {m["email"] for m in members}
    assert set(received.values()) == {1}


def test_a_250_to_data_is_never_taken_for_a_sent_message(project: Path, cli: Cli) -> None:
    members = people(4)
    add_contacts(project / "mailcli.db", "news", members)
    with RawRelay(data_250=3) as relay:
        set_smtp(project, "127.0.0.1", relay.port)
        _short_retry_window(project)
        first = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", "--limit", "2",
                    "--concurrency", "1")
        assert first.exit_code == 3, first.output  # three refusals: one message left deferred
        sent = {email for email, status in deliveries(project / "mailcli.db", "spring").items() if status == "sent"}
        assert sent == set(relay.recipients()) and len(sent) <= 1
        assert "answered DATA with 250" in cli("report", "spring", "--failed").output
        _send_until_done(project, cli, relay, members)


def test_an_extra_reply_after_the_dot_closes_the_connection(project: Path, cli: Cli) -> None:
    members = people(6)
    add_contacts(project / "mailcli.db", "news", members)
    with RawRelay(extra_reply=True) as relay:
        set_smtp(project, "127.0.0.1", relay.port)
        _short_retry_window(project)
        _send_until_done(project, cli, relay, members)


def test_a_reply_that_mixes_codes_is_taken_at_its_worst_line(project: Path, cli: Cli) -> None:
    # "250-hmm" then "550 5.7.1 rejected" to a final dot: the first line's 250
    # had the refused message recorded as sent.
    add_contacts(project / "mailcli.db", "news", people(3))
    with RawRelay(mixed_reply=3) as relay:
        set_smtp(project, "127.0.0.1", relay.port)
        result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", "--concurrency", "1")
        assert result.exit_code == 3, result.output
        assert set(deliveries(project / "mailcli.db", "spring").values()) == {"failed"}
        assert relay.recipients() == []


def test_a_second_354_taken_for_the_reply_to_the_dot_is_not_a_sent_message(project: Path, cli: Cli) -> None:
    # DATA answered "354" twice: the second one arrives where the reply to
    # the final dot is read, and the relay's real answer (550) comes after.
    # A 354 does not answer a final dot: the message was counted as sent.
    add_contacts(project / "mailcli.db", "news", people(3))
    with RawRelay(double_354=1) as relay:
        set_smtp(project, "127.0.0.1", relay.port)
        result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", "--concurrency", "1")
        assert result.exit_code == 3, result.output
        statuses = deliveries(project / "mailcli.db", "spring")
        assert sorted(statuses.values()) == ["sent", "sent", "uncertain"]
        assert {email for email, status in statuses.items() if status == "sent"} == set(relay.recipients())
        assert "answered the final dot with 354" in cli("report", "spring", "--failed").output


def test_a_reply_code_no_command_has_is_never_taken_for_a_sent_message(project: Path, cli: Cli) -> None:
    # MAIL FROM answered "199 hmm": below 400, it counted as a 2xx, and the
    # message as sent although its body never went out.
    members = people(3)
    add_contacts(project / "mailcli.db", "news", members)
    with RawRelay(mail_199=2) as relay:
        set_smtp(project, "127.0.0.1", relay.port)
        _short_retry_window(project)
        result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes", "--concurrency", "1")
        assert result.exit_code == 0, result.output
        assert set(deliveries(project / "mailcli.db", "spring").values()) == {"sent"}
        # Each recipient's message arrived whole, once.
        bodies = [(rcpt, body) for rcpt, body in relay.bodies if body]
        assert sorted(rcpt for rcpt, _ in bodies) == sorted(m["email"] for m in members)
        assert all(b"Subject:" in body for _, body in bodies)
