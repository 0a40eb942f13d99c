"""VERP: ``[sender] verp = true`` gives each message its own return path,
``bounce+TOKEN@domain``, and ``bounces`` knows whose bounce it is by that
address even when the report itself cannot be read."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mailcli.errors import ExitCode
from mailcli.tokens import VERP_TOKEN_LENGTH, make_verp_token, parse_verp_token
from tests.conftest import Cli, set_smtp
from tests.feedback.test_bounces import write_maildir
from tests.feedback.test_feedback_support import add_campaign, seed
from tests.sendhelpers import add_contacts, people

VERP = re.compile(rf"^bounces\+([a-z2-7]{{{VERP_TOKEN_LENGTH}}})@example\.org$")


def _verp_config(project: Path, bounce: str = "bounces@example.org") -> None:
    config = project / "mailcli.toml"
    text = config.read_text()
    config.write_text(text.replace("[sender]\n", f'[sender]\nbounce_address = "{bounce}"\nverp = true\n', 1))


def test_each_message_gets_its_own_opaque_return_path(project: Path, cli: Cli) -> None:
    from tests.smtpserver import SmtpServer

    _verp_config(project)
    add_contacts(project / "mailcli.db", "news", people(5))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        assert result.exit_code == 0, result.output
    paths = {m.rcpt_tos[0]: m.mail_from for m in server.messages}
    assert len(set(paths.values())) == 5
    from mailcli.config import load_settings

    secret = load_settings(project / "mailcli.toml").secret()
    for rcpt, path in paths.items():
        match = VERP.match(path)
        assert match, path
        assert rcpt.split("@")[0] not in path  # the token reveals no address
        assert parse_verp_token(secret, match.group(1)) is not None
        assert b"Return-Path" not in next(m.data for m in server.messages if m.rcpt_tos[0] == rcpt)


def test_bounces_attribute_by_the_verp_address_when_the_report_says_nothing(
        project: Path, cli: Cli, tmp_path: Path) -> None:
    _verp_config(project)
    s = seed(project, ["ann@example.org", "bob@example.org"])
    campaign, _ = add_campaign(s, "may")
    token = make_verp_token(s.settings.secret(), campaign, s.uids["ann@example.org"])
    # A bounce in no format anyone documents: no status, no address, no
    # returned headers. Only the address it came back to says whose it is.
    unreadable = (f"Return-Path: <>\nDelivered-To: bounces+{token}@example.org\nTo: bounces+{token}@example.org\n"
                  "From: postmaster@mx.example.net\nSubject: returned mail\nMessage-ID: <odd.1@mx.example.net>\n\n"
                  "Your mail could not be delivered. Goodbye.\n").encode()
    forged = unreadable.replace(token.encode(), token[:-2].encode() + b"aa").replace(b"odd.1", b"odd.2")
    data = json.loads(cli("bounces", str(write_maildir(tmp_path / "Maildir", [unreadable, forged])), "--json").stdout)
    assert data["soft_bounces"] == 1 and data["unmatched"] == 1
    events = s.events("soft_bounced")
    assert events == [(s.contacts["ann@example.org"], campaign, "soft_bounced", "bounce", "*")]


def test_verp_settings_are_checked(project: Path, cli: Cli) -> None:
    config = project / "mailcli.toml"
    original = config.read_text()
    config.write_text(original.replace("[sender]\n", "[sender]\nverp = true\n", 1))
    missing = cli("config", "show")
    assert missing.exit_code == ExitCode.CONFIG and "sender.verp" in missing.stderr
    assert "bounce_address" in missing.stderr
    config.write_text(original)
    _verp_config(project, bounce="a-very-long-bounce-mailbox-name@example.org")
    too_long = cli("config", "show")
    assert too_long.exit_code == ExitCode.CONFIG and "sender.bounce_address" in too_long.stderr
