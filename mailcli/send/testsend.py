"""``send CAMPAIGN --test-to ADDRESS``: one message, as the campaign would send
it, to yourself — and nothing else.

The message is rendered for one real contact (``--as``; the access is
audited, and a restricted contact is refused) or for the sample contact that
``render`` uses, and goes through the project's relay with the same SMTP
client, TLS rules and login as a send, DKIM-signed when configured. Its
subject starts with ``[TEST]``. Nothing is recorded: no campaign is created,
no delivery written, and the unsubscribe link and List-Unsubscribe header
carry the preview's fake token, which ``serve`` refuses, so following them
changes nothing. A test of a service message (the campaign's kind, or
``--kind service`` for a new one) has no List-Unsubscribe header, as the
real messages will not.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

from mailcli import clock
from mailcli.config import Settings
from mailcli.errors import MailcliError, TransportError, UsageError
from mailcli.send import ledger
from mailcli.store import Store
from mailcli.tokens import new_uid

TEST_PREFIX = "[TEST] "


@dataclass(frozen=True, slots=True)
class TestSend:
    """What a test send did."""

    campaign: str
    template: str
    to: str
    rendered_for: str  # the contact's address, or the sample's
    subject: str
    message_id: str
    reply: str  # the relay's answer to the message


# Complexity: one refusal per way a test send can be wrong (campaign, contact, address), each in words.
def send_test(store: Store, settings: Settings, campaign: str, to: str, *, template: str | None = None,
              subject: str | None = None, as_contact: str | None = None, kind: str | None = None) -> TestSend:
    """Render the campaign's template for ``as_contact`` (or the sample
    contact) and send it to ``to`` with ``[TEST]`` in the subject; record nothing.

    A campaign that exists keeps its template, subject and kind; a new one
    needs ``template`` and is of ``kind`` (marketing when None). Raises ``TransportError`` (exit 5) when the relay cannot be
    reached or refuses the message.
    """
    from mailcli.addresses import AddressError, normalise_address
    from mailcli.render import compile_template
    from mailcli.render.preview import PREVIEW_TOKEN, SAMPLE_CONTACT
    from mailcli.send.headers import list_unsubscribe_header
    from mailcli.send.message import build_message, envelope_rcpt, message_skeleton
    from mailcli.send.preview import preview_contact, preview_context_for

    try:
        recipient = normalise_address(to).address
    except AddressError as exc:
        raise UsageError(f"--test-to {to.strip()!r} is not a valid address: {exc.reason}") from None
    existing = ledger.get_campaign(store.conn, campaign)
    if existing is not None:
        if kind is not None and kind != existing.kind:
            raise UsageError(f"Campaign {campaign!r} is a {existing.kind} campaign, not {kind}",
                             hint="a campaign keeps its kind; use a new campaign name")
        template = existing.template
        subject = existing.subject
        kind = existing.kind
    elif not template:
        raise UsageError(f"Campaign {campaign!r} does not exist yet; a test send needs --template",
                         hint=f"mailcli send {campaign} --template NAME --test-to {recipient}")
    compiled = compile_template(settings.templates_dir, template)
    contact = preview_contact(store, settings, as_contact) if as_contact else None
    context = preview_context_for(settings, contact, subject=subject or "")
    context = dataclasses.replace(context, campaign={"name": campaign, "subject": subject or ""})
    parts = compiled.render(context)
    parts = dataclasses.replace(parts, subject=TEST_PREFIX + parts.subject)
    domain = settings.sender.domain
    message_id = f"<test.{new_uid()}@{domain}>"
    data = build_message(message_skeleton(settings), email=recipient, first_name=None, last_name=None, parts=parts,
                         message_id=message_id, date=clock.now(),
                         list_unsubscribe=None if kind == "service" else list_unsubscribe_header(settings, PREVIEW_TOKEN))
    if settings.dkim is not None:
        from mailcli.deliverability.dkim import load_signer

        signer = load_signer(settings)
        if signer is not None:
            data = signer.sign(data)
    sender = settings.sender.bounce_address or settings.sender.from_address
    reply = asyncio.run(_transmit(settings, sender, envelope_rcpt(recipient), data))
    rendered_for = str(contact["email"]) if contact else SAMPLE_CONTACT["email"]
    return TestSend(campaign=campaign, template=template, to=recipient, rendered_for=rendered_for,
                    subject=parts.subject, message_id=message_id, reply=reply)


async def _transmit(settings: Settings, sender: str, recipient: str, data: bytes) -> str:
    """One SMTP transaction through the project's relay; the relay's reply to the message."""
    from mailcli.net import tls_context
    from mailcli.send.outgoing import dot_stuff
    from mailcli.send.plan import SendOptions
    from mailcli.send.relay import transport_options
    from mailcli.send.replies import SmtpFatal, SmtpProtocolError
    from mailcli.send.smtp import SmtpConnection

    params = transport_options(settings, SendOptions(campaign="")).params
    smtp = settings.smtp
    tls = tls_context(smtp.ca_file) if smtp.security in ("tls", "starttls") else None
    connection = SmtpConnection(params, tls)
    try:
        await connection.open()
        utf8 = " SMTPUTF8" if not (sender + recipient).isascii() and "SMTPUTF8" in connection.extensions else ""
        steps = [(f"MAIL FROM:<{sender}>{utf8}", "the sender"), (f"RCPT TO:<{recipient}>", "the recipient"),
                 ("DATA", "the message")]
        for line, what in steps:
            answer = await connection.command(line.encode("utf-8"))
            if not answer.positive:
                raise TransportError(f"{params.where} refused {what} of the test message: {answer.code} {answer.text}")
        connection.write(dot_stuff(data, crlf=True) + b".\r\n")
        final = (await connection.read_replies(1))[0]
        if not final.positive:
            raise TransportError(f"{params.where} refused the test message: {final.code} {final.text}")
        return f"{final.code} {final.text}".strip()
    except MailcliError:
        raise
    except (SmtpProtocolError, SmtpFatal, OSError) as exc:
        raise TransportError(f"Test message not sent: {exc}") from None
    finally:
        await connection.quit()
