"""`mailcli send` with [dkim] configured: the bytes the server receives verify.

End to end: a project, a campaign sent through the real send engine to aiosmtpd
on 127.0.0.1, and dkimpy fetching the public key from a DNS server on
127.0.0.1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from tests.conftest import Cli, set_smtp
from tests.dkimkeys import private_pem, public_b64
from tests.dnsserver import DnsServer, txt
from tests.sendhelpers import add_contacts, people
from tests.smtpserver import SmtpServer


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    zone = f"mail2025._domainkey TXT {txt(f'v=DKIM1; k=rsa; p={public_b64(private_pem(2048))}')}\n"
    with DnsServer({"example.org": zone}) as server:
        yield server


def test_sent_campaign_is_signed_over_the_final_bytes(
    project: Path, cli: Cli, dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILCLI_DKIM_KEY", private_pem(2048).decode())
    config = project / "mailcli.toml"
    config.write_text(
        config.read_text(encoding="utf-8")
        + '\n[dkim]\nselector = "mail2025"\nprivate_key_env = "MAILCLI_DKIM_KEY"\n',
        encoding="utf-8",
    )
    add_contacts(project / "mailcli.db", "news", [{"email": "zoe@example.net", "first_name": "Zoë"}, *people(2)])
    with SmtpServer() as server:  # it offers 8BITMIME
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        assert result.exit_code == 0, result.output
        received = [m.data for m in server.messages]
    assert len(received) == 3
    for raw in received:
        # A signed body stays 7-bit (quoted-printable), so no relay on the way
        # has to convert it and break the signature.
        assert raw.isascii(), "a signed message went with an 8-bit body"
        # Signing is the last step: the signature is the topmost header.
        assert raw.startswith(b"DKIM-Signature: ")
        assert dkim.verify(raw, dnsfunc=dns_server.lookup_txt)
        header = re.match(rb"DKIM-Signature:(.*?)\r\n(?![ \t])", raw, re.S)
        assert header is not None
        tags = dict(
            part.split("=", 1)
            for part in re.sub(r"\s+", "", header.group(1).decode()).split(";")
            if part
        )
        signed = tags["h"].lower().split(":")
        assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed
        assert tags["d"] == "example.org" and tags["s"] == "mail2025"


def test_key_file_readable_by_others_stops_send_with_exit_4(project: Path, cli: Cli) -> None:
    key = project / "dkim.pem"
    key.write_bytes(private_pem(2048))
    key.chmod(0o640)
    config = project / "mailcli.toml"
    config.write_text(
        config.read_text(encoding="utf-8")
        + '\n[dkim]\nselector = "mail2025"\nprivate_key_file = "dkim.pem"\n',
        encoding="utf-8",
    )
    add_contacts(project / "mailcli.db", "news", people(1))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        assert server.messages == []
    assert result.exit_code == 4, result.output
    assert str(key) in result.stderr and "0640" in result.stderr


def test_the_confirmation_mails_of_reconfirm_are_signed_too(
    project: Path, cli: Cli, dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILCLI_DKIM_KEY", private_pem(2048).decode())
    config = project / "mailcli.toml"
    config.write_text(config.read_text(encoding="utf-8")
                      + '\n[dkim]\nselector = "mail2025"\nprivate_key_env = "MAILCLI_DKIM_KEY"\n', encoding="utf-8")
    add_contacts(project / "mailcli.db", "news", people(2), basis="none")
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        assert cli("reconfirm", "--list", "news", "--yes").exit_code == 0
        received = [m.data for m in server.messages]
    assert len(received) == 2
    for raw in received:
        assert raw.startswith(b"DKIM-Signature: ") and dkim.verify(raw, dnsfunc=dns_server.lookup_txt)
