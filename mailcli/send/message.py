"""Building one campaign message: render the template for a recipient, wrap
it in MIME with the campaign's headers and List-Unsubscribe, DKIM-sign last.

``MessageFactory`` does it for a send (in the sending process and in every
render worker); ``message_skeleton`` and ``unsubscribe_header`` are the same
steps for ``mailcli render --format eml``, so a preview shows the headers a
send writes (docs/guarantees.md#message-format).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from mailcli import clock
from mailcli.config import Settings
from mailcli.errors import MailcliError
from mailcli.send import ledger
from mailcli.send.headers import list_unsubscribe_header, unsubscribe_url
from mailcli.send.outgoing import dot_stuff
from mailcli.tokens import make_unsubscribe_token


def message_skeleton(settings: Settings | None) -> Any:
    """The headers every message of a campaign shares (From, Reply-To,
    List-Id, Feedback-ID, Precedence), encoded once; without a project, the
    sample sender's."""
    from mailcli.render import MessageSkeleton
    from mailcli.render.preview import SAMPLE_SENDER

    if settings is None:
        return MessageSkeleton(from_name=SAMPLE_SENDER["name"], from_address=SAMPLE_SENDER["address"],
                               reply_to=SAMPLE_SENDER["reply_to"] or None, list_id=SAMPLE_SENDER["list_id"],
                               precedence="bulk")
    s = settings.sender
    return MessageSkeleton(from_name=s.from_name, from_address=s.from_address, reply_to=s.reply_to,
                           list_id=s.list_id, feedback_id=s.feedback_id, precedence="bulk")


def build_message(skeleton: Any, *, email: str, first_name: str | None, last_name: str | None, parts: Any,
                  message_id: str, date: datetime, list_unsubscribe: str | None, eightbit: bool = False) -> bytes:
    """The wire bytes of one rendered message to one person."""
    to_name = " ".join(p for p in (first_name, last_name) if p) or None
    data: bytes = skeleton.build(
        to_address=email, to_name=to_name, subject=parts.subject, text=parts.text, html=parts.html,
        message_id=message_id, date=date, list_unsubscribe=list_unsubscribe, eightbit=eightbit,
    )
    return data


class MessageFactory:
    """Renders and builds the wire bytes of one campaign's messages."""

    def __init__(self, settings: Settings, campaign: ledger.Campaign, *, sign: bool = True) -> None:
        from mailcli.deliverability.dkim import load_signer
        from mailcli.render import compile_template
        from mailcli.render.preview import sender_from_settings

        self.settings = settings
        self.campaign = campaign
        self.secret = settings.secret()
        self.template = compile_template(settings.templates_dir, campaign.template)
        self.skeleton = message_skeleton(settings)
        self.sender = sender_from_settings(settings)
        self.signer = load_signer(settings) if sign else None
        s = settings.sender
        self.mail_from = s.bounce_address or s.from_address
        self.verp = s.verp and s.bounce_address is not None
        self.campaign_vars = {"name": campaign.name, "subject": campaign.subject or ""}
        self.language = settings.language(campaign.list_name)
        # Tracked links (URL -> link number), set once the campaign's links
        # are known (``send.clicks``); None: links are left as they are.
        self.links: dict[str, int] | None = None
        self.per_contact = settings.tracking.per_contact
        self._click_base = ""
        self._shared_tokens: dict[str, str] = {}
        # Bodies as UTF-8, unencoded, once the relay is known to take them
        # (``use_eightbit``); never for a message mailcli signs itself.
        self.eightbit = False

    def use_eightbit(self, offered: bool) -> None:
        """Send bodies as 8-bit UTF-8 where the relay offers 8BITMIME (RFC 6152),
        unless mailcli DKIM-signs them: a relay further on that must convert an
        8-bit body to 7 bits would break the signature, so signed messages keep
        quoted-printable, as RFC 6376 advises signers to."""
        self.eightbit = offered and getattr(self.settings, "dkim", None) is None  # configured, signing this run or not

    def context(self, r: ledger.Recipient) -> Any:
        from mailcli.render import RenderContext

        contact: dict[str, str] = {}
        try:
            attributes = json.loads(r.attributes or "{}")
        except ValueError:
            attributes = {}
        for key, value in attributes.items():
            contact[str(key)] = "" if value is None else str(value)
        contact.update(email=r.email, first_name=r.first_name or "", last_name=r.last_name or "")
        token = make_unsubscribe_token(self.secret, r.contact_uid, self.campaign.list_id or 0)
        ctx = RenderContext(
            contact=contact, campaign=self.campaign_vars, sender=self.sender,
            unsubscribe_url=unsubscribe_url(self.settings, token), now=clock.now(), language=self.language,
        )
        return ctx, token

    def return_path(self, r: ledger.Recipient) -> str:
        """The envelope sender: the bounce address, or with VERP its per-recipient form."""
        if not self.verp:
            return self.mail_from
        from mailcli.tokens import make_verp_token, verp_address

        return verp_address(self.mail_from, make_verp_token(self.secret, self.campaign.id, r.contact_uid))

    def verify_inlining(self, samples: list[tuple[Any, ...]]) -> None:
        """Check the inline-once fast path against real recipients (render API)."""
        contexts = []
        for fields in samples:
            try:
                contexts.append(self.context(ledger.Recipient(*fields))[0])
            except Exception:  # noqa: BLE001 - a bad sample is reported by the run
                continue
        if contexts:
            try:
                self.template.verify_inlining(contexts)
            except MailcliError:
                pass

    def build(self, r: ledger.Recipient) -> bytes:
        """Wire bytes for one recipient; raises MailcliError for per-contact problems."""
        ctx, token = self.context(r)
        # A service message is one people cannot opt out of: no
        # List-Unsubscribe (nor its one-click Post), so no mail client offers
        # an unsubscribe that would not stop it (see README, Service messages).
        unsubscribe = None if self.campaign.kind == "service" else list_unsubscribe_header(self.settings, token)
        parts = self.template.render(ctx)
        if self.links:
            parts = self._tracked(parts, r.contact_uid)
        data = build_message(self.skeleton, email=r.email, first_name=r.first_name, last_name=r.last_name,
                             parts=parts, message_id=r.message_id, date=ctx.now,
                             list_unsubscribe=unsubscribe, eightbit=self.eightbit)
        if self.signer is not None:
            data = self.signer.sign(data)  # the very last step: nothing may change a signed message
        return data

    def _tracked(self, parts: Any, contact_uid: str) -> Any:
        """The rendered parts with every tracked link pointed at serve's ``/c/TOKEN``."""
        from mailcli.render.values import RenderedParts
        from mailcli.send.clicks import click_base, rewrite_html, rewrite_text
        from mailcli.tokens import make_click_token

        links = self.links or {}
        if not self._click_base:
            self._click_base = click_base(self.settings.unsubscribe.url)
        base, secret, campaign_id = self._click_base, self.secret, self.campaign.id
        if self.per_contact:
            def target(url: str) -> str | None:
                no = links.get(url)
                return None if no is None else base + make_click_token(secret, campaign_id, no, contact_uid)
        else:
            shared = self._shared_tokens  # the same for every recipient: made once

            def target(url: str) -> str | None:
                found = shared.get(url)
                if found is None and (no := links.get(url)) is not None:
                    found = shared[url] = base + make_click_token(secret, campaign_id, no)
                return found
        return RenderedParts(subject=parts.subject, text=rewrite_text(parts.text, links, target),
                             html=rewrite_html(parts.html, target))

    def wire(self, r: ledger.Recipient) -> bytes:
        """:meth:`build`, dot-stuffed for DATA: what both the render workers
        and this process hand the transport (as ``stuffed``). The bytes are
        CRLF by construction, so the line-ending check is skipped."""
        return dot_stuff(self.build(r), crlf=True)


def envelope_rcpt(email: str) -> str:
    """The address for RCPT TO: an internationalised domain in its ASCII form."""
    from mailcli.render.mime import ascii_address

    try:
        return ascii_address(email, "To")
    except MailcliError:
        return email
