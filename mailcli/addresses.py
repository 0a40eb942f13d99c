"""Normalisation and validation of email addresses.

One function decides what an address is for the whole program: import,
``contacts set``, suppression lookups and unsubscribes all go through
:func:`normalise_address`, so the same person is the same key everywhere.

The rules, in order:

* reject CR, LF, NUL and every other control character anywhere in the input
  (a value that later lands in a ``To:`` header must not carry a line break);
* trim surrounding whitespace (including no-break and zero-width spaces that
  spreadsheets leave behind);
* accept exactly one RFC 5322 ``addr-spec`` — no display name, comment, quoted
  local part, domain literal or second address, so
  ``alice@example.org)<bob@example.org>`` is rejected rather than read as
  Alice (CVE-2023-27043);
* lower-case the domain and convert it to an IDNA2008 A-label with the ``idna``
  package (UTS #46, non-transitional), never the stdlib IDNA2003 codec:
  ``straße.de`` becomes ``xn--strae-oqa.de``, not ``strasse.de``;
* enforce the RFC 5321 limits: local part ≤ 64 octets, domain ≤ 255 octets,
  the whole ``<path>`` ≤ 256 octets.

The local part is kept exactly as given, because some servers treat it as
case-sensitive and the message must go to what the person typed; the
comparison ``key`` (dedupe, suppression HMAC) is the whole address lower-cased,
local part included.

Validation is delegated to ``email-validator`` (strict, syntax only, no DNS),
which is well kept and already does the IDNA work through the ``idna``
package. It is too slow for a million-row import (benchmarks/README.md,
"Addresses: a fast path in front of email-validator"), so a fast path handles the overwhelmingly common shape — an ASCII dot-atom at a
plain ASCII host name — with one regular expression and hands everything else
(non-ASCII, Punycode, odd lengths, reserved names, anything it does not
recognise) to ``email-validator``. The fast path never rejects; it only
accepts what ``email-validator`` would accept with the same result, which a
property test checks. Its verdict on a domain is kept (a file repeats the
same few domains), so per row only the local part is matched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from mailcli.errors import UsageError

LOCAL_MAX_OCTETS = 64
DOMAIN_MAX_OCTETS = 255
PATH_MAX_OCTETS = 256  # "<" + address + ">" (RFC 5321 §4.5.3.1.3)

# Control characters anywhere (C0 except TAB, DEL, C1): never trimmed away,
# always rejected, so a CR/LF can never survive into a header.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# Spreadsheets leave zero-width spaces and BOMs around cells; str.strip()
# does not consider them whitespace.
_EXTRA_TRIM = "\u200b\u200c\u200d\u2060\ufeff"
_TRIM = re.compile(rf"^[\s{_EXTRA_TRIM}]+|[\s{_EXTRA_TRIM}]+$")

_ATEXT = r"[A-Za-z0-9_!#$%&'*+/=?^`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TLD = r"(?:[A-Za-z0-9][A-Za-z0-9-]{0,61})?[A-Za-z]"  # all TLDs end in a letter
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_FAST_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_TLD}")
_FAST_DOMAINS: dict[str, str] = {}  # domain as written -> lower case, or "" for the full check
# Names email-validator refuses (RFC 6761 and friends); the fast path defers
# them so the reason comes from one place.
_RESERVED_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


class AddressError(UsageError):
    """An input that is not exactly one valid email address.

    ``reason`` is a short, human explanation suitable for a rejects file.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NormalisedAddress:
    """An address ready for sending (``address``) and for comparing (``key``)."""

    address: str
    key: str

    @property
    def domain(self) -> str:
        """The A-label domain, lower case."""
        return self.address.rpartition("@")[2]


def normalise_address(raw: str) -> NormalisedAddress:
    """Normalise and validate one address, or raise :class:`AddressError`."""
    return NormalisedAddress(*normalise_pair(raw))


# Complexity: the per-address hot path of an import: the fast path's checks inline (benchmarks/README.md, "Addresses").
def normalise_pair(raw: str) -> tuple[str, str]:
    """``(address, key)`` for ``raw``: :func:`normalise_address` without the
    wrapper object, for the import hot path."""
    if raw.isprintable():
        # No control or exotic space characters: only ASCII spaces to trim.
        text = raw.strip(" ")
    else:
        if _CONTROL.search(raw):
            raise AddressError("contains a control character (line break, NUL or similar)")
        text = raw.strip()
        if text and (text[0] in _EXTRA_TRIM or text[-1] in _EXTRA_TRIM):
            text = _TRIM.sub("", text)
    if not text:
        raise AddressError("missing email address")
    # The fast path: an ASCII dot-atom at a host name it has seen before (a
    # file repeats the same domains, so each is checked once, not per row).
    local, at, domain = text.rpartition("@")
    if at:
        fast = _FAST_DOMAINS.get(domain)
        if fast is None:
            fast = _fast_domain(domain)
        if (
            fast
            # An address of up to 64 characters is within both limits (the
            # fast path is ASCII: a character is an octet).
            and (len(text) <= LOCAL_MAX_OCTETS
                 or (len(local) <= LOCAL_MAX_OCTETS and len(local) + len(fast) + 3 <= PATH_MAX_OCTETS))
            and _DOT_ATOM.fullmatch(local) is not None
        ):
            address = text if fast == domain else f"{local}@{fast}"
            return address, address.lower()
    return _slow_normalise(text)


def _fast_domain(domain: str) -> str:
    """``domain`` lower-cased if the fast path may take it, else ``""``."""
    lower = domain.lower()
    fast = lower if (
        _FAST_DOMAIN.fullmatch(domain) is not None
        and "--" not in lower  # R-LDH / Punycode labels need the full IDNA check
        and lower.rpartition(".")[2] not in _RESERVED_TLDS
        and len(lower) <= 253
    ) else ""
    if len(_FAST_DOMAINS) >= 4096:  # bounded: memory stays flat whatever the file
        _FAST_DOMAINS.clear()
    _FAST_DOMAINS[domain] = fast
    return fast


def mask_address(address: str) -> str:
    """``alice@example.nl`` → ``a***@example.nl``: how status lines, warnings,
    progress and logs name a person (docs/guarantees.md#masked-output)."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def _slow_normalise(text: str) -> tuple[str, str]:
    local, at, domain = text.rpartition("@")
    if at and _DOT_ATOM.fullmatch(local):
        # Plain ASCII local part: only the domain needs the expensive checks,
        # and a file tends to repeat the same few unusual domains.
        outcome = _normalise_domain(domain)
        if isinstance(outcome, AddressError):
            raise AddressError(outcome.reason)
        ascii_domain = outcome
    else:
        local, ascii_domain = _validate(text)
    address = f"{local}@{ascii_domain}"
    _check_limits(local, ascii_domain, address)
    return address, address.lower()


@lru_cache(maxsize=4096)
def _normalise_domain(domain: str) -> str | AddressError:
    # Validate with a stand-in local part; lengths are checked by the caller.
    # Failures are cached too (returned, since lru_cache does not keep raises).
    try:
        return _validate(f"x@{domain}")[1]
    except AddressError as exc:
        return exc


def _validate(text: str) -> tuple[str, str]:
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(
            text,
            allow_smtputf8=True,  # UTF-8 local parts are sent only via SMTPUTF8
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            check_deliverability=False,  # no DNS during import; see --check-mx
            strict=True,
        )
    except EmailNotValidError as exc:
        raise AddressError(str(exc).rstrip(".")) from None
    # email-validator produces the A-label through idna (UTS #46,
    # non-transitional); lower() is a no-op safeguard for the key's sake.
    return result.local_part, result.ascii_domain.lower()


def _check_limits(local: str, domain: str, address: str) -> None:
    if len(local.encode("utf-8")) > LOCAL_MAX_OCTETS:
        raise AddressError(f"local part longer than {LOCAL_MAX_OCTETS} octets")
    if len(domain) > DOMAIN_MAX_OCTETS:
        raise AddressError(f"domain longer than {DOMAIN_MAX_OCTETS} octets")
    if len(address.encode("utf-8")) + 2 > PATH_MAX_OCTETS:
        raise AddressError(f"address longer than {PATH_MAX_OCTETS - 2} octets")
