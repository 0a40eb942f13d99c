"""Which contact and campaign a report is about; never a guess.

A report is tied to a delivery by the VERP token of the address it came
back to (``[sender] verp``), by the Message-ID of the returned original
(``deliveries.message_id``, or the campaign and contact uids the Message-ID
is built from when the delivery row was purged), by ``Original-Envelope-Id``,
or by the token in the returned List-Unsubscribe header. Only a report that
quotes none of these falls back to its ``Original-Recipient``,
``Final-Recipient`` or ``Original-Rcpt-To`` address (the one mailcli sent to
first: a forwarded address fails at another), and then only on an exact
match of the normalised address.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from typing import TYPE_CHECKING

from ..addresses import AddressError, normalise_address
from ..config import Settings
from ..store.attribution import (
    campaign_id_by_uid,
    campaign_name,
    delivery_by_message_id,
    latest_campaign,
)
from ..store.subjects import contact_by_email_key, contact_by_uid
from ..tokens import parse_unsubscribe_token, parse_verp_token
from . import reports

if TYPE_CHECKING:
    from ..store.db import Connection

_OUR_MESSAGE_ID = re.compile(r"^<?([0-9a-f]{18})\.([0-9a-f]{18})@", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Target:
    contact_id: int
    campaign_id: int | None


def by_verp(conn: Connection, settings: Settings, msg: Message) -> Target | None:
    """The delivery a message names by the VERP return path it came back to."""
    for token in reports.verp_tokens(msg, settings.sender.bounce_address):
        parsed = parse_verp_token(settings.secret(), token)
        if parsed is None:
            continue
        contact = contact_by_uid(conn, parsed.contact_uid)
        if contact is None:
            continue
        known = campaign_name(conn, parsed.campaign_id) is not None
        return Target(contact.id, parsed.campaign_id if known else None)
    return None


def by_message_id(conn: Connection, message_id: str) -> Target | None:
    found = delivery_by_message_id(conn, message_id)
    if found:
        return Target(*found)
    # The delivery row may have been purged (send_log retention): the
    # Message-ID itself names campaign and contact by their random uids.
    match = _OUR_MESSAGE_ID.match(message_id.strip())
    if match:
        contact = contact_by_uid(conn, match.group(2).lower())
        if contact is not None:
            return Target(contact.id, campaign_id_by_uid(conn, match.group(1).lower()))
    return None


def _by_token(conn: Connection, settings: Settings, token: str | None) -> Target | None:
    if not token:
        return None
    parsed = parse_unsubscribe_token(settings.secret(), token)
    if parsed is None:
        return None
    contact = contact_by_uid(conn, parsed.contact_uid)
    if contact is None:
        return None
    return Target(contact.id, latest_campaign(conn, contact.id, parsed.list_id))


def by_address(conn: Connection, address: str | None) -> Target | None:
    if not address:
        return None
    try:
        key = normalise_address(address).key
    except AddressError:
        return None
    contact = contact_by_email_key(conn, key)
    return Target(contact.id, None) if contact else None


def by_addresses(conn: Connection, addresses: Iterable[str]) -> list[Target]:
    """The contacts among ``addresses``."""
    return [t for t in (by_address(conn, a) for a in addresses) if t]


def recipient_target(conn: Connection, recipient: reports.RecipientStatus) -> Target | None:
    """A report's recipient as a contact: the address mailcli sent to
    (Original-Recipient) first; a forwarded address fails at another."""
    return by_address(conn, recipient.original_recipient) or by_address(conn, recipient.final_recipient)


def attribute(conn: Connection, settings: Settings, original: reports.Original,
              envelope_id: str | None = None, verp: Target | None = None) -> Target | None | bool:
    """The delivery a report is about; None when it quotes something that
    names no delivery of ours, False when it quotes nothing to go by."""
    if verp is not None:
        return verp
    for candidate in (original.message_id, envelope_id):
        if candidate:
            target = by_message_id(conn, candidate)
            if target:
                return target
    by_token = _by_token(conn, settings, reports.list_unsubscribe_token(original.list_unsubscribe))
    if by_token:
        return by_token
    if original.message_id or envelope_id or original.list_unsubscribe:
        return None
    return False
