"""The values that flow into and out of a template render.

``RenderContext`` is everything a template may see; ``RenderedParts`` is what
a render produces. Both are plain frozen data so the send engine can build
them in bulk and pass them between threads without surprises, and so the
sandbox only ever sees plain mappings and strings
(docs/guarantees.md#template-sandbox).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class RenderContext:
    """Everything a template sees for one recipient.

    ``contact`` holds email, first_name, last_name and every custom attribute
    (plain strings); ``campaign`` holds name and subject; ``sender`` holds
    name, address, postal_address, reply_to and list_id.
    """

    contact: Mapping[str, Any]
    campaign: Mapping[str, Any]
    sender: Mapping[str, Any]
    unsubscribe_url: str
    now: datetime

    def variables(self) -> dict[str, Any]:
        """The template namespace: exactly the five documented names."""
        return {
            "contact": self.contact,
            "campaign": self.campaign,
            "sender": self.sender,
            "unsubscribe_url": self.unsubscribe_url,
            "now": self.now,
        }


@dataclass(frozen=True, slots=True)
class RenderedParts:
    """One rendered message before MIME: subject, text part, inlined HTML."""

    subject: str
    text: str
    html: str


# The names a template may use at the top level (the README's Rendering section).
TEMPLATE_VARIABLES = ("contact", "campaign", "sender", "unsubscribe_url", "now")
