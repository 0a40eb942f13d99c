"""What one recipient would get, for ``mailcli render``: the template
rendered as a send renders it, and with ``--format eml`` the whole message a
send builds — the same headers, List-Unsubscribe included — unsigned, with a
token that is clearly fake.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailcli import clock
from mailcli.config import Settings
from mailcli.errors import MailcliError, NotFoundError
from mailcli.render import CompiledTemplate, RenderContext, RenderedParts
from mailcli.render.preview import PREVIEW_TOKEN, preview_context, sender_from_settings
from mailcli.send.headers import list_unsubscribe_header
from mailcli.send.message import build_message, message_skeleton
from mailcli.store import Store
from mailcli.store.contacts import template_fields

SAMPLE_ADDRESS = "jane.doe@example.org"


@dataclass(frozen=True)
class MessagePreview:
    """One recipient's message as a send would render it."""

    template: CompiledTemplate
    context: RenderContext
    parts: RenderedParts
    settings: Settings | None
    converted: bool = False  # this contact's text part needed the conversion of its HTML

    @property
    def html_bytes(self) -> int:
        """The HTML part's size after inlining (mail clients clip large ones)."""
        return len(self.parts.html.encode("utf-8"))

    def notes(self) -> list[str]:
        """How the CSS and the text part were made, in words (``render -v``)."""
        compiled = self.template
        css = "once per template" if compiled.inline_once else f"per message: {compiled.fallback_reason}"
        text = compiled.text_source
        if compiled.text_once and self.converted:
            text += ", but this contact's data needed the conversion of this message's HTML"
        return [f"HTML {self.html_bytes / 1024:.1f} KB after inlining; CSS inlined {css}", f"Text part {text}"]

    def eml(self) -> bytes:
        """The whole message as a send builds it (not DKIM-signed)."""
        skeleton = message_skeleton(self.settings)
        now = self.context.now
        domain = skeleton.from_address.rpartition("@")[2]
        contact = self.context.contact
        if self.settings is not None:
            unsubscribe = list_unsubscribe_header(self.settings, PREVIEW_TOKEN)
        else:
            unsubscribe = f"<{self.context.unsubscribe_url}>"
        return build_message(
            skeleton, email=str(contact.get("email") or SAMPLE_ADDRESS), first_name=contact.get("first_name"),
            last_name=contact.get("last_name"), parts=self.parts,
            message_id=f"<preview.{now.strftime('%Y%m%d%H%M%S')}@{domain}>", date=now, list_unsubscribe=unsubscribe,
        )


def preview_context_for(settings: Settings | None, contact: Mapping[str, Any] | None, *, subject: str = "",
                        now: datetime | None = None) -> RenderContext:
    """The variables a template sees in a preview: the project's sender and
    unsubscribe URL (a sample's without a project), the sample contact unless
    one is given, and the campaign named "preview"."""
    return preview_context(
        now=now or clock.now(), contact=contact,
        sender=sender_from_settings(settings) if settings is not None else None,
        unsubscribe_base=settings.unsubscribe.url if settings is not None else None,
        subject=subject, language=settings.project.language if settings is not None else "en",
    )


def preview_message(template: CompiledTemplate, *, settings: Settings | None = None,
                    contact: Mapping[str, Any] | None = None, subject: str = "",
                    now: datetime | None = None) -> MessagePreview:
    """Render ``template`` (from ``compile_template``) for ``contact`` (the
    sample contact when None), as a send would; raises ``TemplateError``
    naming the file and line when it does not render."""
    context = preview_context_for(settings, contact, subject=subject, now=now)
    converted = template.text_converted
    parts = template.render(context)
    return MessagePreview(template=template, context=context, parts=parts, settings=settings,
                          converted=template.text_converted > converted)


def preview_contact(store: Store, settings: Settings, email: str) -> dict[str, Any]:
    """The contact as templates see it, read from the database; the access is
    audited, and a contact whose processing is restricted is refused."""
    from mailcli.addresses import normalise_address
    from mailcli.audit import record_access

    found = template_fields(store.conn, normalise_address(email).key)
    if found is None:
        raise NotFoundError(f"No contact {email.strip()!r}", hint="mailcli contacts lists them; or use --data FILE.json")
    address, first, last, attributes, restricted_at = found
    if restricted_at:
        raise MailcliError(f"Contact {email.strip()!r} is restricted (GDPR art. 18): its data is not processed",
                           hint="preview with --data FILE.json instead")
    contact: dict[str, Any] = dict(json.loads(attributes))
    contact.update(email=address, first_name=first, last_name=last)
    record_access(store, settings, "render_preview", subject_email=address, command="render")
    return contact
