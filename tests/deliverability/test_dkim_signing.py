"""DKIM signing: a signed message travels through a real SMTP server and verifies.

The public key is served by a real DNS server on 127.0.0.1 and dkimpy looks it
up there, exactly as a receiver would.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from types import SimpleNamespace

import dkim
import pytest

from mailcli.deliverability.dkim import DkimSigner, load_signer, signer_from_config
from mailcli.deliverability.dns_checks import dkim_record_hint
from mailcli.errors import ConfigError, ExitCode
from tests.dkimkeys import private_pem, public_b64
from tests.dnsserver import DnsServer, free_port, txt


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    key = public_b64(private_pem(2048))
    zone = f"mail2025._domainkey TXT {txt(f'v=DKIM1; k=rsa; p={key}')}\n"
    with DnsServer({"acme.example": zone}) as server:
        yield server


class _Sink:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.messages.append(envelope.original_content)
        return "250 OK"


@pytest.fixture
def smtp_sink() -> Iterator[tuple[_Sink, int]]:
    from aiosmtpd.controller import Controller

    sink = _Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def campaign_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Acme <news@acme.example>"
    msg["To"] = "jan@example.net"
    msg["Subject"] = "Nieuws van Acme — maart"
    msg["Date"] = "Tue, 11 Mar 2025 10:00:00 +0000"
    msg["Message-ID"] = "<c1.k1@acme.example>"
    msg["List-Id"] = "Acme news <news.acme.example>"
    msg["List-Unsubscribe"] = (
        "<https://news.acme.example/unsubscribe/tok123>, <mailto:unsubscribe@acme.example?subject=tok123>"
    )
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Feedback-ID"] = "c1:news:acme:AcmeSender1"
    msg.set_content("Hallo Jan,\n\nDit is het nieuws.\n")
    msg.add_alternative("<p>Hallo Jan,</p><p>Dit is het nieuws.</p>", subtype="html")
    return msg.as_bytes(policy=SMTP)


def signature_tags(message: bytes) -> dict[str, str]:
    header = re.search(rb"^DKIM-Signature:(.*?)\r?\n(?![ \t])", message, re.S | re.M)
    assert header, "no DKIM-Signature header"
    value = re.sub(rb"\s+", b"", header.group(1)).decode()
    return dict(part.split("=", 1) for part in value.split(";") if part)


def test_signed_message_sent_over_smtp_verifies_and_covers_unsubscribe_headers(
    dns_server: DnsServer, smtp_sink: tuple[_Sink, int]
) -> None:
    sink, port = smtp_sink
    signer = DkimSigner("acme.example", "mail2025", private_pem(2048))
    signed = signer.sign(campaign_message())

    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("bounces@acme.example", ["jan@example.net"], signed)

    received = sink.messages[0]
    assert dkim.verify(received, dnsfunc=dns_server.lookup_txt)
    tags = signature_tags(received)
    signed_headers = [h.strip().lower() for h in tags["h"].split(":")]
    assert "list-unsubscribe" in signed_headers
    assert "list-unsubscribe-post" in signed_headers
    assert {"from", "to", "subject", "date", "message-id", "list-id", "feedback-id"} <= set(
        signed_headers
    )
    assert tags["d"] == "acme.example" and tags["s"] == "mail2025"
    assert tags["a"] == "rsa-sha256" and tags["c"] == "relaxed/relaxed"


def test_a_header_changed_after_signing_breaks_the_signature(dns_server: DnsServer) -> None:
    signer = DkimSigner("acme.example", "mail2025", private_pem(2048))
    signed = signer.sign(campaign_message())
    assert dkim.verify(signed, dnsfunc=dns_server.lookup_txt)
    # A relay rewriting the one-click header must be detected (RFC 8058 §4).
    tampered = signed.replace(
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x"
    )
    assert not dkim.verify(tampered, dnsfunc=dns_server.lookup_txt)
    # And so must adding an unsubscribe header that was absent when signing.
    without = re.sub(rb"List-Unsubscribe-Post:[^\r\n]*\r\n", b"", campaign_message())
    added = signer.sign(without).replace(
        b"\r\n\r\n", b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n", 1
    )
    assert not dkim.verify(added, dnsfunc=dns_server.lookup_txt)


def test_signer_never_shows_the_key() -> None:
    signer = DkimSigner("acme.example", "mail2025", private_pem(2048))
    assert "PRIVATE" not in repr(signer)
    assert signer.key_bits == 2048
    record = dkim_record_hint(signer.domain, signer.selector, signer.public_key_b64())
    assert record.startswith('mail2025._domainkey.acme.example. TXT "v=DKIM1; k=rsa; p=MII')


# -- loading the key -------------------------------------------------------------


def settings_with(tmp_path: Path, **dkim_keys: object) -> SimpleNamespace:
    base = {
        "domain": "acme.example",
        "selector": "mail2025",
        "private_key_env": None,
        "private_key_file": None,
    }
    base.update(dkim_keys)
    return SimpleNamespace(dkim=SimpleNamespace(**base), project=SimpleNamespace(root=tmp_path))


def test_no_dkim_section_means_no_signer() -> None:
    assert load_signer(SimpleNamespace(dkim=None)) is None


def test_key_file_readable_by_others_is_refused_with_exit_4(tmp_path: Path) -> None:
    key = tmp_path / "dkim.pem"
    key.write_bytes(private_pem(2048))
    key.chmod(0o644)
    with pytest.raises(ConfigError) as caught:
        load_signer(settings_with(tmp_path, private_key_file=Path("dkim.pem")))
    assert caught.value.exit_code == ExitCode.CONFIG
    assert str(key) in caught.value.message and "0644" in caught.value.message
    assert caught.value.hint == f"chmod 600 {key}"

    key.chmod(0o600)
    signer = load_signer(settings_with(tmp_path, private_key_file=Path("dkim.pem")))
    assert signer is not None and signer.domain == "acme.example"


def test_key_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Env files often hold the PEM on one line with literal \n.
    monkeypatch.setenv("MAILCLI_DKIM_KEY", private_pem(2048).decode().replace("\n", "\\n"))
    signer = load_signer(settings_with(tmp_path, private_key_env="MAILCLI_DKIM_KEY"))
    assert signer is not None
    assert dkim.verify(
        signer.sign(campaign_message()),
        dnsfunc=lambda name, timeout=5: txt_value(signer),
    )


def txt_value(signer: DkimSigner) -> bytes:
    return f"v=DKIM1; k=rsa; p={signer.public_key_b64()}".encode()


def test_unset_key_variable_and_garbage_key_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MAILCLI_DKIM_KEY is not set"):
        signer_from_config("acme.example", "s", private_key_env="MAILCLI_DKIM_KEY", environ={})
    with pytest.raises(
        ConfigError, match="private_key_env MAILCLI_DKIM_KEY: DKIM private key is not an RSA key"
    ):
        signer_from_config(
            "acme.example",
            "s",
            private_key_env="MAILCLI_DKIM_KEY",
            environ={"MAILCLI_DKIM_KEY": "nope"},
        )
