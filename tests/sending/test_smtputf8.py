"""Addresses with a non-ASCII local part (RFC 6531/6532), end to end.

``zoë@example.net`` goes out with ``MAIL FROM:<…> SMTPUTF8`` and a UTF-8
``To`` header when the relay offers SMTPUTF8. When it does not, the message
fails once with the reason, the address is marked, and later campaigns
through that relay skip it — until the relay offers SMTPUTF8.
"""

from __future__ import annotations

import email
import email.policy
import json
from collections import Counter
from pathlib import Path

from mailcli.errors import ExitCode
from tests.conftest import Cli, set_smtp
from tests.sendhelpers import add_contacts, deliveries, people
from tests.smtpserver import SmtpServer

ZOE = "zoë@example.net"


def _send(cli: Cli, campaign: str) -> object:
    return cli("send", campaign, "--template", "newsletter", "--list", "news", "--yes")


def _members(project: Path) -> None:
    add_contacts(project / "mailcli.db", "news", [{"email": ZOE, "first_name": "Zoë", "last_name": "Ünal"},
                                                  *people(2)])


def test_zoe_is_delivered_through_a_relay_that_offers_smtputf8(project: Path, cli: Cli) -> None:
    _members(project)
    with SmtpServer() as server:  # aiosmtpd with enable_SMTPUTF8
        set_smtp(project, "127.0.0.1", server.port)
        result = _send(cli, "spring")
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    [message] = [m for m in server.messages if m.rcpt_tos == [ZOE]]
    assert "SMTPUTF8" in message.mail_options
    # RFC 6532: the header bytes are UTF-8; the standard library reads such a
    # message from text with its SMTPUTF8 policy.
    parsed = email.message_from_string(message.data.decode("utf-8"), policy=email.policy.SMTPUTF8)
    assert parsed["To"].addresses[0].addr_spec == ZOE
    assert parsed["To"].addresses[0].display_name == "Zoë Ünal"
    assert not parsed.defects and all(not part.defects for part in parsed.walk())
    # The body read as a mail client reads it, from the bytes (it may be 8-bit UTF-8).
    from_bytes = email.message_from_bytes(message.data, policy=email.policy.SMTPUTF8)
    assert "Zoë" in from_bytes.get_body(("plain",)).get_content()
    assert from_bytes.as_bytes(policy=email.policy.SMTPUTF8).count(ZOE.encode()) >= 1  # written back as UTF-8
    # The others need no SMTPUTF8: ASCII headers (their bodies may be 8-bit, announced as such).
    others = [m for m in server.messages if m.rcpt_tos != [ZOE]]
    assert all("SMTPUTF8" not in m.mail_options and m.data.split(b"\r\n\r\n", 1)[0].isascii() for m in others)
    assert all(m.data.isascii() or "BODY=8BITMIME" in m.mail_options for m in others)


def test_zoe_fails_once_without_smtputf8_is_skipped_next_time_and_sent_when_the_relay_offers_it(
        project: Path, cli: Cli) -> None:
    _members(project)
    with SmtpServer(smtputf8=False) as server:
        set_smtp(project, "127.0.0.1", server.port)
        first = _send(cli, "spring")
        assert first.exit_code == ExitCode.PARTIAL, first.output  # type: ignore[attr-defined]
        assert "SMTPUTF8" in first.stderr  # type: ignore[attr-defined]
        [failure] = json.loads(cli("report", "spring", "--failed", "--json").stdout)["failures"]
        assert failure["email"] == ZOE and failure["status"] == "failed"
        assert "non-ASCII local part" in failure["reply"] and f"127.0.0.1:{server.port} does not offer it" \
            in failure["reply"]

        second = _send(cli, "summer")
        assert second.exit_code == 0, second.output  # type: ignore[attr-defined]
        assert deliveries(project / "mailcli.db", "summer")[ZOE] == "skipped"
        assert "1 address(es) skipped" in second.stderr and "SMTPUTF8" in second.stderr  # type: ignore[attr-defined]
        assert json.loads(cli("report", "summer", "--json").stdout)["failed"] == 0
        shown = json.loads(cli("contacts", "show", ZOE, "--json").stdout)
        [mark] = [h for h in shown["history"] if h["kind"] == "needs_smtputf8"]
        assert mark["campaign"] == "spring" and f"127.0.0.1:{server.port}" in mark["note"]
    assert ZOE not in server.recipients()
    assert Counter(server.recipients()) == Counter({p["email"]: 2 for p in people(2)})

    # The same relay, now offering SMTPUTF8: the skip is lifted.
    with SmtpServer(port=server.port) as better:
        third = _send(cli, "autumn")
        assert third.exit_code == 0, third.output  # type: ignore[attr-defined]
    assert ZOE in better.recipients()
    assert deliveries(project / "mailcli.db", "autumn")[ZOE] == "sent"


def test_import_counts_addresses_that_need_smtputf8(project: Path, cli: Cli, tmp_path: Path) -> None:
    csv = tmp_path / "members.csv"
    csv.write_text("email,first_name\nzoë@example.net,Zoë\nann@example.net,Ann\njosé.ñ@example.net,José\n",
                   encoding="utf-8")
    result = cli("import", str(csv), "--list", "news", "--basis", "customer", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["needs_smtputf8"] == 2
    assert "2 address(es) have a non-ASCII local part" in result.stderr and "SMTPUTF8" in result.stderr
