"""Reading what comes back: DSN bounces, ARF complaints and mailto unsubscribes.

Pure functions over ``email.message.Message``; nothing here touches the
database, so every rule can be tested on fixtures alone.

* RFC 3464 delivery-status reports (``multipart/report;
  report-type=delivery-status``) are read here, per recipient block:
  ``Final-Recipient``, ``Original-Recipient``, ``Action``, ``Status``,
  ``Diagnostic-Code``, ``Remote-MTA``; what each status means is
  :mod:`mailcli.feedback.verdicts`. flufl.bounce finds recipients in DSNs
  too but does not expose the status codes that decide hard versus soft, so
  it is used for what it is best at: the many non-standard bounce formats
  (qmail, Exim, Exchange, Yahoo, ...), whose codes are then read from the text.
* RFC 6533 internationalised reports (``report-type=global-delivery-status``)
  the same way: their ``message/global-delivery-status`` part is UTF-8 text
  (perhaps in base64 or quoted-printable), and an address may be of the type
  ``utf-8`` with ``\\x{HEX}`` escapes (``utf-8; j\\x{F6}rg@example.org``).
* RFC 5965 ARF reports (``report-type=feedback-report``) with their
  ``Feedback-Type``, ``User-Agent`` and ``Version`` fields.
* The returned original (``message/rfc822``, ``text/rfc822-headers`` or the
  RFC 6533 ``message/global*`` forms) gives the Message-ID and the
  List-Unsubscribe token that tie a report to a delivery.
* Mailto unsubscribes carry the token as a plus-address
  (``unsubscribe+TOKEN@domain``) or in the subject (``unsubscribe TOKEN``) —
  the form ``mailcli/send/headers.py`` writes into List-Unsubscribe.

Gmail's reports carry the original Message-ID in ``X-Original-Message-ID``
among the per-message fields; it attributes a report whose returned
headers are missing.

With VERP the envelope sender is ``bounce+TOKEN@domain``, and a report
comes back to that address: ``verp_tokens`` finds the token in the
headers that carry the envelope recipient.
"""

from __future__ import annotations

import base64
import email
import quopri
import re
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.utils import getaddresses, parseaddr

from .verdicts import Verdict, classify

_TOKEN = r"[A-Za-z0-9_-]{20,80}"
# The token runs to the first character that cannot be in one: a \b would
# cut a token that ends in "-" (one in 64) short of its last character.
_SUBJECT_TOKEN = re.compile(rf"\bunsubscribe\s+({_TOKEN})(?![A-Za-z0-9_-])", re.IGNORECASE)
_MESSAGE_ID_LINE = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers")
_GLOBAL_TYPES = ("message/global", "message/global-headers", "message/global-delivery-status")
_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_UNICODE_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_RECIPIENT_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """One per-recipient block of a DSN (RFC 3464 §2.3)."""

    final_recipient: str | None
    original_recipient: str | None
    action: str | None
    status: str | None
    diagnostic: str | None
    remote_mta: str | None
    verdict: Verdict
    will_retry_until: str | None = None


@dataclass(frozen=True, slots=True)
class Original:
    """What the returned original tells us about the message we sent."""

    message_id: str | None
    list_unsubscribe: str | None


@dataclass(frozen=True, slots=True)
class Dsn:
    recipients: tuple[RecipientStatus, ...]
    original: Original
    envelope_id: str | None


@dataclass(frozen=True, slots=True)
class Arf:
    feedback_type: str
    user_agent: str | None
    version: str | None
    original_rcpt_to: str | None
    original: Original


@dataclass(frozen=True, slots=True)
class HeuristicBounce:
    """A non-standard bounce that flufl.bounce recognised."""

    recipients: tuple[str, ...]
    permanent: bool
    verdict: Verdict
    original: Original


def parse_bytes(raw: bytes) -> Message:
    """Parse leniently (compat32), as flufl.bounce and broken MTAs expect."""
    return email.message_from_bytes(raw, policy=policy.compat32)


# ---------------------------------------------------------------------------
# The returned original


def _header_block(part: Message) -> Message | None:
    """The headers of a returned original, whichever form it takes."""
    if part.get_content_type() in _GLOBAL_TYPES:
        return email.message_from_string(_global_text(part).lstrip("\r\n"), policy=policy.compat32)
    payload = part.get_payload()
    if isinstance(payload, list):
        first = payload[0] if payload else None
        return first if isinstance(first, Message) else None
    if isinstance(payload, str):
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else payload
        return email.message_from_string(text.lstrip("\r\n"), policy=policy.compat32)
    return None


def find_original(msg: Message) -> Original:
    """Message-ID and List-Unsubscribe of the message we sent, if it came back."""
    for part in msg.walk():
        if part.get_content_type() in _ORIGINAL_TYPES:
            block = _header_block(part)
            if block is not None and (block.get("Message-ID") or block.get("List-Unsubscribe")):
                return Original(_clean_id(block.get("Message-ID")), _clean(block.get("List-Unsubscribe")))
    # Plain-text bounces (qmail, some Exim set-ups) quote the original headers inline.
    for part in msg.walk():
        if part.get_content_maintype() == "text" and part.get_content_type() not in _ORIGINAL_TYPES:
            text = _text(part)
            match = _MESSAGE_ID_LINE.search(text)
            if match:
                return Original(match.group(1), None)
    return Original(None, None)


def _text(part: Message) -> str:
    raw = part.get_payload(decode=True)
    if isinstance(raw, bytes):
        return raw.decode(part.get_content_charset() or "utf-8", "replace")
    payload = part.get_payload()
    return payload if isinstance(payload, str) else ""


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _clean_id(value: object) -> str | None:
    text = _clean(value)
    if not text:
        return None
    match = re.search(r"<[^<>\s]+>", text)
    return match.group(0) if match else text


def _global_text(part: Message) -> str:
    """An RFC 6533 ``message/global*`` part as the UTF-8 text it was sent as.

    The stdlib parses every ``message/*`` part but ``delivery-status`` as one
    encapsulated message: the first block of fields becomes its headers and
    the rest (a report's per-recipient blocks) its body. They are put back
    together here, byte for byte, and a base64 or quoted-printable transfer
    encoding (which a 7-bit relay needs) is undone.
    """
    payload = part.get_payload()
    if not isinstance(payload, list):
        raw = part.get_payload(decode=True)
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    inner = payload[0] if payload and isinstance(payload[0], Message) else None
    if inner is None:
        return ""
    head = "".join(f"{name}: {value}\n" for name, value in inner.raw_items())
    body = inner.get_payload(decode=True)  # bytes as received (get_payload() would replace 8-bit ones)
    data = (head + ("\n" if head else "")).encode("utf-8", "surrogateescape") + (
        body if isinstance(body, bytes) else b"")
    return _undo_transfer_encoding(part, data).decode("utf-8", "replace")


def _undo_transfer_encoding(part: Message, data: bytes) -> bytes:
    encoding = str(part.get("Content-Transfer-Encoding") or "").strip().lower()
    try:
        if encoding == "base64":
            return base64.b64decode(data)
        if encoding == "quoted-printable":
            return quopri.decodestring(data)
    except ValueError:  # binascii.Error: not base64 after all, read as it is
        pass
    return data


def _blocks(part: Message) -> list[Message]:
    if part.get_content_type() == "message/global-delivery-status":
        return _split_blocks(_global_text(part))
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    if isinstance(payload, str):
        # Some MTAs send delivery-status as quoted-printable text: split the blocks ourselves.
        return _split_blocks(_text(part))
    return []


def _split_blocks(text: str) -> list[Message]:
    """Blocks of fields separated by blank lines, each read as a header block."""
    return [email.message_from_string(b.strip() + "\n", policy=policy.compat32)
            for b in re.split(r"\r?\n\s*\r?\n", text) if b.strip()]


def _address_field(value: object) -> str | None:
    """``rfc822; ann@example.org`` → ``ann@example.org``; ``utf-8; j\\x{F6}rg@example.org``
    → ``jörg@example.org`` (RFC 6533 §3)."""
    text = _clean(value)
    if not text:
        return None
    kind, sep, rest = text.partition(";")
    address = rest if sep else kind
    if sep and kind.strip().lower() == "utf-8":
        address = _UNICODE_ESCAPE.sub(_unescape, address)
    address = parseaddr(address.strip())[1] or address.strip().strip("<>")
    return address or None


def _unescape(match: re.Match[str]) -> str:
    point = int(match.group(1), 16)
    valid = point <= 0x10FFFF and not 0xD800 <= point <= 0xDFFF  # a code point, not a surrogate
    return chr(point) if valid else match.group(0)


# ---------------------------------------------------------------------------
# Report types


def report_type(msg: Message) -> str | None:
    if msg.get_content_type() == "multipart/report":
        value = msg.get_param("report-type")
        if isinstance(value, str):
            return value.strip().lower()
    return None


# Complexity: one branch per part and field of RFC 3464, which senders fill in loosely.
def parse_dsn(msg: Message) -> Dsn | None:
    """An RFC 3464 report, or None when the message is not one."""
    status_parts = [p for p in msg.walk() if p.get_content_type() in _STATUS_TYPES]
    if not status_parts or report_type(msg) not in (None, "delivery-status", "global-delivery-status"):
        return None
    recipients: list[RecipientStatus] = []
    envelope_id = None
    quoted_id = None  # Gmail: the original Message-ID among the per-message fields
    for part in status_parts:
        blocks = _blocks(part)
        for index, block in enumerate(blocks):
            if index == 0 and not (block.get("Final-Recipient") or block.get("Action")):
                envelope_id = _clean(block.get("Original-Envelope-Id")) or envelope_id
                quoted_id = _clean_id(block.get("X-Original-Message-ID")) or quoted_id
                continue
            recipients.append(_recipient_status(block))
    original = find_original(msg)
    if original.message_id is None and quoted_id:
        original = Original(quoted_id, original.list_unsubscribe)
    return Dsn(tuple(recipients), original, envelope_id)


def _recipient_status(block: Message) -> RecipientStatus:
    """One per-recipient block of a DSN, read and classified."""
    action = _clean(block.get("Action"))
    status = _clean(block.get("Status"))
    diagnostic = _clean(block.get("Diagnostic-Code"))
    return RecipientStatus(
        final_recipient=_address_field(block.get("Final-Recipient")),
        original_recipient=_address_field(block.get("Original-Recipient")),
        action=action.lower() if action else None,
        status=status,
        diagnostic=diagnostic,
        remote_mta=_address_field(block.get("Remote-MTA")),
        verdict=classify(action, status, diagnostic),
        will_retry_until=_clean(block.get("Will-Retry-Until")),
    )


def parse_arf(msg: Message) -> Arf | None:
    """An RFC 5965 feedback report, or None when the message is not one."""
    parts = [p for p in msg.walk() if p.get_content_type() == "message/feedback-report"]
    if not parts or report_type(msg) not in (None, "feedback-report"):
        return None
    blocks = _blocks(parts[0])
    fields = blocks[0] if blocks else Message()
    return Arf(
        feedback_type=(_clean(fields.get("Feedback-Type")) or "").lower(),
        user_agent=_clean(fields.get("User-Agent")),
        version=_clean(fields.get("Version")),
        original_rcpt_to=_address_field(fields.get("Original-Rcpt-To")),
        original=find_original(msg),
    )


def heuristic_bounce(msg: Message) -> HeuristicBounce | None:
    """Non-standard bounce formats, through flufl.bounce's detectors."""
    import logging

    from flufl.bounce import all_failures

    # flufl.bounce logs a traceback before re-raising a detector error; the
    # error is handled here ("not recognised"), so keep it off stderr.
    flufl_log = logging.getLogger("flufl.bounce")
    if not flufl_log.handlers:
        flufl_log.addHandler(logging.NullHandler())
        flufl_log.propagate = False
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # noqa: BLE001 - a detector choking on odd input is "not recognised"
        return None
    if not temporary and not permanent:
        return None
    addresses = sorted({a.decode("ascii", "replace") for a in (permanent or temporary)})
    text = "\n".join(_text(p) for p in msg.walk() if p.get_content_maintype() == "text")
    # Only temporary failures: a warning that delivery is still being tried.
    verdict = classify("failed" if permanent else "delayed", None, text)
    return HeuristicBounce(tuple(addresses), bool(permanent), verdict, find_original(msg))


def verp_tokens(msg: Message, bounce_address: str | None) -> list[str]:
    """Candidate VERP tokens: ``bounce+TOKEN@domain`` among the envelope recipient headers."""
    from ..tokens import VERP_TOKEN_LENGTH

    if not bounce_address:
        return []
    local, _, domain = bounce_address.lower().rpartition("@")
    prefix = local + "+"
    found: list[str] = []
    values = [str(v) for name in _RECIPIENT_HEADERS for v in (msg.get_all(name) or [])]
    for _, address in getaddresses(values):
        addr_local, _, addr_domain = address.lower().rpartition("@")
        if addr_domain == domain and addr_local.startswith(prefix):
            candidate = addr_local[len(prefix):]
            if len(candidate) == VERP_TOKEN_LENGTH and re.fullmatch(r"[a-z2-7]+", candidate):
                found.append(candidate)
    return list(dict.fromkeys(found))


def is_auto_reply(msg: Message) -> bool:
    """RFC 3834 auto-replies (vacation notices): nothing for us to act on."""
    auto = str(msg.get("Auto-Submitted") or "").strip().lower()  # a Header object if it has 8-bit bytes
    return auto.startswith("auto-replied")


def mailto_tokens(msg: Message, mailto: str | None) -> list[str]:
    """Candidate unsubscribe tokens: ``local+TOKEN@domain`` recipients, then the subject."""
    found: list[str] = []
    if mailto:
        local, _, domain = mailto.lower().rpartition("@")
        values = [str(v) for name in _RECIPIENT_HEADERS for v in (msg.get_all(name) or [])]
        for _, address in getaddresses(values):
            addr_local, _, addr_domain = address.rpartition("@")
            if addr_domain.lower() == domain and addr_local.lower().startswith(local + "+"):
                candidate = addr_local[len(local) + 1:]
                if re.fullmatch(_TOKEN, candidate):
                    found.append(candidate)
    subject = _clean(msg.get("Subject")) or ""
    found += _SUBJECT_TOKEN.findall(subject)
    return list(dict.fromkeys(found))


def addressed_to_mailto(msg: Message, mailto: str | None) -> bool:
    """Sent to the unsubscribe address (with or without a token)?"""
    if not mailto:
        return False
    local, _, domain = mailto.lower().rpartition("@")
    values = [str(v) for name in _RECIPIENT_HEADERS for v in (msg.get_all(name) or [])]
    for _, address in getaddresses(values):
        addr_local, _, addr_domain = address.lower().rpartition("@")
        if addr_domain == domain and (addr_local == local or addr_local.startswith(local + "+")):
            return True
    return False


def list_unsubscribe_token(value: str | None) -> str | None:
    """The token in a List-Unsubscribe header value (``...?t=TOKEN`` or ``+TOKEN@``)."""
    if not value:
        return None
    match = re.search(rf"[?&]t=({_TOKEN})", value) or re.search(rf"\+({_TOKEN})@", value)
    return match.group(1) if match else None
