"""Signing up and confirming, as a library (no HTTP here).

A sign-up answers the same whatever the address is (new, a member already,
suppressed, or one that cannot be subscribed): the caller shows one page, so
nobody can learn from it who is on a list. What happens behind it differs:

* a new address, or a member who has not confirmed: an ``unconfirmed``
  membership (if none) and a sign-up with its evidence whose confirmation
  mail ``serve`` sends;
* someone who left the list, objected or was erased: only the sign-up and
  its mail; they are on the list again only once they confirm;
* a subscribed member, a restricted contact (art. 18), or a sign-up for the
  same person and list less than ``RESEND_AFTER`` ago: nothing, so a form
  cannot be used to flood a mailbox.

Confirming (``confirm``) checks the token's MAC and expiry, then the sign-up
it names: each can be confirmed once; a second POST says "subscribed" again
and changes nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from .. import clock
from ..addresses import AddressError, normalise_address
from ..config import Settings
from ..store import Store
from ..store import signups as rows
from ..store.lists import list_id as find_list
from ..tokens import address_hmac, make_confirm_token, new_uid, parse_confirm_token

RESEND_AFTER = timedelta(hours=1)  # at most one confirmation mail per person and list in this time
MAX_NAME = 100  # characters of a first or last name a form may give


@dataclass(frozen=True, slots=True)
class SignupRequest:
    list_name: str
    email: str
    first_name: str = ""
    last_name: str = ""
    ip: str | None = None  # the client's address, truncated before it is stored
    form: str = ""  # which form: the page it was posted to
    consent_text: str = ""  # the wording of the checkbox the person ticked


def consent_wording(settings: Settings, list_name: str) -> str:
    """What the consent checkbox of ``list_name`` says: ``[lists.NAME] consent_text``,
    else the standard wording in the list's language."""
    from ..locales import text

    own = settings.consent.of(list_name).consent_text
    return own or text(settings.language(list_name), "subscribe.consent", list=list_name,
                       sender=settings.sender.from_name or settings.project.name)


def list_exists(store: Store, settings: Settings, list_name: str) -> bool:
    """A form is served for lists in the database and lists named in ``[lists]``."""
    return list_name in settings.consent.lists or find_list(store.conn, list_name) is not None


def masked_ip(ip: str | None) -> str | None:
    """The /24 or /48 network of an address (the address itself is never stored)."""
    from ..importer.values import truncate_ip

    if not ip:
        return None
    try:
        return truncate_ip(ip)
    except ValueError:
        return None


# Complexity: one branch per kind of person a sign-up can be for, in the order they are told apart.
def sign_up(store: Store, settings: Settings, request: SignupRequest) -> bool:
    """Record a sign-up; True when a confirmation mail is now due.

    Raises ``AddressError`` for an address that is not one (the caller
    answers it like any other, to enumerate nothing)."""
    from ..store.imports import ensure_list

    address = normalise_address(request.email)
    now = clock.now()
    stamp = clock.to_iso(now)
    language = settings.language(request.list_name)
    ip = masked_ip(request.ip)
    with store.transaction() as conn:
        list_id = ensure_list(conn, request.list_name)
        person = rows.find_person(conn, address.key, list_id)
        if person is not None and (person.restricted or (person.member_status == "subscribed" and person.reachable)):
            return False
        if person is not None and rows.recent_signup(conn, person.contact_id, list_id, clock.to_iso(now - RESEND_AFTER)):
            return False
        text_hash = rows.store_consent_text(conn, request.consent_text, language, stamp) if request.consent_text \
            else None
        if person is None:
            contact_id = rows.add_contact(conn, uid=new_uid(), email=address.address, key=address.key,
                                          first_name=request.first_name[:MAX_NAME].strip(),
                                          last_name=request.last_name[:MAX_NAME].strip(), source=request.form,
                                          now=stamp)
        else:
            contact_id = person.contact_id
        if person is None or person.member_status is None:
            rows.add_pending_membership(conn, contact_id, list_id, source=request.form, ip=ip, text_hash=text_hash,
                                        now=stamp)
        expires = now + timedelta(seconds=settings.consent.confirm_within.seconds())
        rows.add_signup(conn, nonce=secrets.token_hex(9), contact_id=contact_id, list_id=list_id, form=request.form,
                        language=language, text_hash=text_hash, ip=ip, now=stamp, expires_at=clock.to_iso(expires))
    return True


@dataclass(frozen=True, slots=True)
class Confirmation:
    outcome: str  # confirmed, already, invalid, expired
    list_name: str = ""
    lifted: tuple[str, ...] = ()


def check_token(settings: Settings, token: str | None) -> tuple[str, int] | None:
    """The sign-up nonce and expiry a confirmation token names, or None when it is not a valid token."""
    parsed = parse_confirm_token(settings.secret(), token) if token else None
    return (parsed.nonce, parsed.expires) if parsed else None


def confirm(store: Store, settings: Settings, token: str | None, ip: str | None) -> Confirmation:
    """Confirm the sign-up ``token`` names, recording the confirmation's time and network."""
    named = check_token(settings, token)
    if named is None:
        return Confirmation("invalid")
    nonce, expires = named
    now = clock.now()
    if now.timestamp() >= expires:
        return Confirmation("expired")
    with store.transaction() as conn:
        signup = rows.signup_by_nonce(conn, nonce)
        if signup is None:  # purged, or the person was erased since
            return Confirmation("expired")
        if signup.confirmed_at is not None:
            return Confirmation("already", signup.list_name)
        lifted = rows.confirm_signup(conn, signup, ip=masked_ip(ip), now=clock.to_iso(now),
                                     email_hmac=address_hmac(settings.secret(), rows.contact_key(conn, signup.contact_id)))
    return Confirmation("confirmed", signup.list_name, tuple(lifted))


def confirm_token(settings: Settings, nonce: str, expires_at: str) -> str:
    """The token of a sign-up's confirmation link."""
    return make_confirm_token(settings.secret(), nonce, int(clock.parse_iso(expires_at).timestamp()))


def confirm_url(settings: Settings, token: str) -> str:
    """``https://…/confirm?t=TOKEN`` on the host of ``[unsubscribe] url``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(settings.unsubscribe.url)
    return urlunsplit((parts.scheme, parts.netloc, "/confirm", f"t={token}", ""))


__all__ = ["AddressError", "Confirmation", "SignupRequest", "check_token", "confirm", "confirm_token",
           "confirm_url", "consent_wording", "list_exists", "masked_ip", "sign_up"]
