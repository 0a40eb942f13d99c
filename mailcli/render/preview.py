"""Sample data for ``render`` and ``lint``: a preview contact, campaign and sender.

Previews never touch real tokens: the unsubscribe link carries an obviously
fake token, so a preview forwarded by mistake unsubscribes nobody.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .values import RenderContext

PREVIEW_TOKEN = "PREVIEW-NOT-A-REAL-TOKEN"
PREVIEW_CAMPAIGN = "preview"
SAMPLE_CONTACT: Mapping[str, str] = {
    "email": "jane.doe@example.org",
    "first_name": "Jane",
    "last_name": "Doe",
}
SAMPLE_SENDER: Mapping[str, str] = {
    "name": "Example Sender",
    "address": "news@example.org",
    "postal_address": "Keizersgracht 1, 1015 AA Amsterdam",
    "reply_to": "",
    "list_id": "news.example.org",
}
SAMPLE_UNSUBSCRIBE_BASE = "https://news.example.org/unsubscribe"


def preview_unsubscribe_url(base: str | None) -> str:
    """The configured unsubscribe URL (same shape as a real one) with a token that is clearly not real."""
    base = (base or SAMPLE_UNSUBSCRIBE_BASE).rstrip("?&")
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}t={PREVIEW_TOKEN}"


def sender_from_settings(settings: Any) -> dict[str, str]:
    """The ``sender`` template variable from ``Settings`` (plain strings only)."""
    sender = settings.sender
    return {
        "name": sender.from_name or "",
        "address": sender.from_address or "",
        "postal_address": sender.postal_address or "",
        "reply_to": sender.reply_to or "",
        "list_id": sender.list_id or "",
    }


def plain_contact(data: Mapping[str, Any]) -> dict[str, str]:
    """A contact mapping with plain string values: templates see text, never objects."""
    contact: dict[str, str] = {key: "" for key in ("email", "first_name", "last_name")}
    for key, value in data.items():
        contact[str(key)] = "" if value is None else str(value)
    return contact


def preview_context(
    *,
    now: datetime,
    contact: Mapping[str, Any] | None = None,
    sender: Mapping[str, Any] | None = None,
    unsubscribe_base: str | None = None,
    subject: str = "",
    language: str = "en",
) -> RenderContext:
    """A ``RenderContext`` for previews: the sample contact unless one is given."""
    return RenderContext(
        contact=plain_contact(contact if contact is not None else SAMPLE_CONTACT),
        campaign={"name": PREVIEW_CAMPAIGN, "subject": subject},
        sender=dict(sender if sender is not None else SAMPLE_SENDER),
        unsubscribe_url=preview_unsubscribe_url(unsubscribe_base),
        now=now,
        language=language,
    )
