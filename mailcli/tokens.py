"""Keyed hashes and opaque tokens derived from the project secret.

Three things come from the one secret (the variable ``[unsubscribe] secret_env``
names, else ``.mailcli/secret``):

* ``address_hmac`` — HMAC-SHA256 of a normalised address. The suppression list
  and the audit log hold this instead of the address
  (docs/guarantees.md#suppression).
* unsubscribe tokens — ``base64url(version ‖ contact uid ‖ list id ‖ MAC)``.
  The contact uid is a random 9-byte value, never the address or a sequential
  id, so the token is opaque and reveals nothing; the 128-bit MAC makes it
  unforgeable and is compared in constant time
  (docs/guarantees.md#opaque-identifiers). A token
  has exactly one accepted spelling: 40 characters of the URL-safe base64
  alphabet, no padding, no spaces, no ``+`` or ``/``. Python's decoder would
  otherwise skip characters outside the alphabet and accept the standard
  alphabet too, so many strings would name the same token.
* ``message_id`` — derived from campaign and contact uids, so a rerun of a
  campaign uses the same Message-ID and bounces can be traced back.
* click tokens — ``base64url(version ‖ campaign id ‖ link number [‖ contact
  uid] ‖ MAC)``: the path of serve's ``/c/TOKEN``. The MAC binds the token to
  one campaign and one of its stored links, so serve redirects only to a URL
  it stored, never to one a request names. Without per-contact clicks the
  token carries no contact: every recipient's message holds the same one.
  Two lengths (32 characters without a contact, 44 with), one spelling each.
* ``secret_fingerprint`` — a keyed fingerprint of the secret itself, which the
  database keeps, so a configuration with another secret is refused instead
  of silently failing to match the suppression list (``docs/guarantees.md#secrets``).
* ``audit_key`` — the key the audit log's entries are chained with
  (``docs/guarantees.md#audit``).
* VERP tokens — the per-recipient part of a ``bounce+TOKEN@domain`` return
  path: ``base32(version ‖ campaign id ‖ contact uid ‖ MAC)`` in lower case.
  Base32 because mail systems may change the case of a local part; the
  token fits in the 64 octets of a local part next to a short mailbox name.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

TOKEN_VERSION = 1
_UID_LEN = 9
_MAC_LEN = 16
_PAYLOAD = struct.Struct(">B9sI")  # version, contact uid, list id
# 30 bytes are exactly 40 base64 characters, so the one spelling needs no padding.
TOKEN_LENGTH = (_PAYLOAD.size + _MAC_LEN) * 4 // 3
TOKEN_SPELLING = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_LENGTH}}}")


def address_hmac(secret: bytes, normalised_email: str) -> str:
    """Keyed hash of an address as compared by mailcli (case-insensitive)."""
    return address_hasher(secret)(normalised_email)


@functools.lru_cache(maxsize=8)
def address_hasher(secret: bytes) -> Callable[[str], str]:
    """:func:`address_hmac` under one secret: HMAC-SHA256 (RFC 2104) of
    ``address:`` and the address in lower case.

    The keyed inner and outer hashes and the prefix are worked out once per
    secret (and kept), and copied per address: a send checks every member's
    address against the suppression list, and keying a new HMAC per address
    was most of that time at a million members.
    """
    key = hashlib.sha256(secret).digest() if len(secret) > 64 else secret
    key = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(octet ^ 0x36 for octet in key))
    inner.update(b"address:")
    outer = hashlib.sha256(bytes(octet ^ 0x5C for octet in key))

    def address_hmac_of(normalised_email: str) -> str:
        first = inner.copy()
        first.update(normalised_email.strip().lower().encode("utf-8"))
        second = outer.copy()
        second.update(first.digest())
        return second.hexdigest()

    return address_hmac_of


def secret_fingerprint(secret: bytes) -> str:
    """What the database keeps to recognise the secret: a MAC of a fixed text, which tells nothing of the key."""
    return hmac.new(secret, b"mailcli secret fingerprint", hashlib.sha256).hexdigest()


def audit_key(secret: bytes) -> bytes:
    """The key of the audit chain, derived from the secret (no other MAC uses it)."""
    return hmac.new(secret, b"mailcli audit log", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class UnsubscribeToken:
    contact_uid: str  # hex, 18 characters
    list_id: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _seal(secret: bytes, purpose: bytes, payload: bytes) -> str:
    """``base64url(payload ‖ MAC)``, the MAC keyed for one ``purpose`` only."""
    mac = hmac.new(secret, purpose + payload, hashlib.sha256).digest()
    return _b64(payload + mac[:_MAC_LEN])


def _open(secret: bytes, purpose: bytes, token: str, layout: struct.Struct) -> tuple[object, ...] | None:
    """The payload fields of a sealed token, or None for any other spelling, a
    bad MAC (compared in constant time), another purpose or another version."""
    if not isinstance(token, str) or not TOKEN_SPELLING.fullmatch(token):
        return None
    raw = _unb64(token)
    payload, mac = raw[: layout.size], raw[layout.size :]
    expected = hmac.new(secret, purpose + payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected[:_MAC_LEN]):
        return None
    fields = layout.unpack(payload)
    return fields if fields[0] == TOKEN_VERSION else None


def make_unsubscribe_token(secret: bytes, contact_uid: str, list_id: int) -> str:
    """The opaque token carried by List-Unsubscribe and the footer link."""
    return _seal(secret, b"unsubscribe:", _PAYLOAD.pack(TOKEN_VERSION, bytes.fromhex(contact_uid), list_id))


def parse_unsubscribe_token(secret: bytes, token: str) -> UnsubscribeToken | None:
    """Verify a token; ``None`` for anything malformed, tampered or foreign,
    and for any other spelling of a valid token."""
    fields = _open(secret, b"unsubscribe:", token, _PAYLOAD)
    if fields is None:
        return None
    _, uid, list_id = fields
    assert isinstance(uid, bytes) and isinstance(list_id, int)
    return UnsubscribeToken(contact_uid=uid.hex(), list_id=list_id)


@dataclass(frozen=True, slots=True)
class ConfirmToken:
    nonce: str  # hex, 18 characters: the sign-up it confirms
    expires: int  # Unix time


_CONFIRM_PAYLOAD = struct.Struct(">B9sI")  # version, sign-up nonce, expiry (Unix time)


def make_confirm_token(secret: bytes, nonce: str, expires: int) -> str:
    """The opaque token of a double opt-in link: it names one sign-up and when
    it expires, and its MAC is keyed for confirming only (an unsubscribe
    token never passes as one, nor the other way round). Same spelling
    rules as the unsubscribe token."""
    return _seal(secret, b"confirm:", _CONFIRM_PAYLOAD.pack(TOKEN_VERSION, bytes.fromhex(nonce), expires))


def parse_confirm_token(secret: bytes, token: str) -> ConfirmToken | None:
    """Verify a confirmation token; None for anything malformed, tampered or foreign
    (expiry is the caller's to check, so an expired link can say so)."""
    fields = _open(secret, b"confirm:", token, _CONFIRM_PAYLOAD)
    if fields is None:
        return None
    _, nonce, expires = fields
    assert isinstance(nonce, bytes) and isinstance(expires, int)
    return ConfirmToken(nonce=nonce.hex(), expires=expires)


@dataclass(frozen=True, slots=True)
class VerpToken:
    campaign_id: int
    contact_uid: str  # hex, 18 characters


_VERP_PAYLOAD = struct.Struct(">BI9s")  # version, campaign id, contact uid
_VERP_MAC_LEN = 12
#: Characters of a VERP token: 26 bytes in base32 without padding.
VERP_TOKEN_LENGTH = 42


def make_verp_token(secret: bytes, campaign_id: int, contact_uid: str) -> str:
    """The opaque token of one recipient's return path."""
    payload = _VERP_PAYLOAD.pack(TOKEN_VERSION, campaign_id, bytes.fromhex(contact_uid))
    mac = hmac.new(secret, b"verp:" + payload, hashlib.sha256).digest()[:_VERP_MAC_LEN]
    return base64.b32encode(payload + mac).decode("ascii").rstrip("=").lower()


def parse_verp_token(secret: bytes, token: str) -> VerpToken | None:
    """Verify a VERP token; ``None`` for anything malformed, tampered or foreign."""
    text = token.strip().upper()
    if len(text) != VERP_TOKEN_LENGTH:
        return None
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (ValueError, TypeError):
        return None
    payload, mac = raw[: _VERP_PAYLOAD.size], raw[_VERP_PAYLOAD.size :]
    expected = hmac.new(secret, b"verp:" + payload, hashlib.sha256).digest()[:_VERP_MAC_LEN]
    if len(raw) != _VERP_PAYLOAD.size + _VERP_MAC_LEN or not hmac.compare_digest(mac, expected):
        return None
    version, campaign_id, uid = _VERP_PAYLOAD.unpack(payload)
    if version != TOKEN_VERSION:
        return None
    return VerpToken(campaign_id=campaign_id, contact_uid=uid.hex())


@dataclass(frozen=True, slots=True)
class ClickToken:
    campaign_id: int
    link_no: int
    contact_uid: str | None  # hex, 18 characters; only with per-contact clicks


_CLICK_PAYLOAD = struct.Struct(">BII")  # version, campaign id, link number
_CLICK_MAC_LEN = 15  # 9 + 15 and 18 + 15 bytes: whole base64 characters, no padding
_CLICK_SPELLING = re.compile(r"[A-Za-z0-9_-]{32}|[A-Za-z0-9_-]{44}")


def make_click_token(secret: bytes, campaign_id: int, link_no: int, contact_uid: str | None = None) -> str:
    """The opaque token of one tracked link (and, with ``contact_uid``, one recipient)."""
    payload = _CLICK_PAYLOAD.pack(TOKEN_VERSION, campaign_id, link_no)
    if contact_uid is not None:
        payload += bytes.fromhex(contact_uid)
    mac = hmac.new(secret, b"click:" + payload, hashlib.sha256).digest()[:_CLICK_MAC_LEN]
    return _b64(payload + mac)


def parse_click_token(secret: bytes, token: str) -> ClickToken | None:
    """Verify a click token; ``None`` for anything malformed, tampered or
    foreign, and for any other spelling of a valid token."""
    if not isinstance(token, str) or not _CLICK_SPELLING.fullmatch(token):
        return None
    raw = _unb64(token)
    payload, mac = raw[:-_CLICK_MAC_LEN], raw[-_CLICK_MAC_LEN:]
    expected = hmac.new(secret, b"click:" + payload, hashlib.sha256).digest()[:_CLICK_MAC_LEN]
    if not hmac.compare_digest(mac, expected):
        return None
    version, campaign_id, link_no = _CLICK_PAYLOAD.unpack(payload[: _CLICK_PAYLOAD.size])
    if version != TOKEN_VERSION:
        return None
    rest = payload[_CLICK_PAYLOAD.size:]
    return ClickToken(campaign_id=campaign_id, link_no=link_no, contact_uid=rest.hex() if rest else None)


def verp_address(bounce_address: str, token: str) -> str:
    """``bounces@example.org`` + token → ``bounces+TOKEN@example.org``."""
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{token}@{domain}"


def new_uid() -> str:
    """A random, non-sequential identifier for a contact or campaign."""
    import secrets

    return secrets.token_hex(_UID_LEN)


def message_id(campaign_uid: str, contact_uid: str, domain: str) -> str:
    """The Message-ID of one campaign message, stable across reruns."""
    return f"<{campaign_uid}.{contact_uid}@{domain}>"
