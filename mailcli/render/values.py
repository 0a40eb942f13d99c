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
    # The double opt-in link; only the confirmation mail (``templates/_confirm``) has one.
    confirm_url: str | None = None
    language: str = "en"  # of the recipient's list: the date filter and the footer mailcli adds

    def variables(self) -> dict[str, Any]:
        """The template namespace: exactly the six documented names (and
        ``confirm_url`` for the confirmation mail)."""
        names = {
            "contact": self.contact,
            "campaign": self.campaign,
            "sender": self.sender,
            "unsubscribe_url": self.unsubscribe_url,
            "now": self.now,
            "language": self.language,
        }
        if self.confirm_url is not None:
            names["confirm_url"] = self.confirm_url
        return names


@dataclass(frozen=True, slots=True)
class RenderedParts:
    """One rendered message before MIME: subject, text part, inlined HTML."""

    subject: str
    text: str
    html: str


# The names a template may use at the top level (the README's Rendering section).
TEMPLATE_VARIABLES = ("contact", "campaign", "sender", "unsubscribe_url", "now", "language")
# The confirmation mail of a double opt-in: a service message, not marketing.
CONFIRM_TEMPLATE = "_confirm"


def is_confirm_template(name: str) -> bool:
    """``_confirm``, or ``_confirm.nl`` for a list in another language than the project's."""
    return name == CONFIRM_TEMPLATE or (name.startswith(CONFIRM_TEMPLATE + ".") and name[9:].isalpha())
