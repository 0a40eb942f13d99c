"""What a failure report means for the address: hard, soft, policy, a notice or a success.

``hard`` suppresses the address; ``soft`` only counts towards ``[bounces]
soft_limit``; ``policy`` (5.7.x and other sender problems) never suppresses,
it says the sender's setup is at fault. What RFC 3464 calls ``delayed``
("will continue to try"), ``relayed`` and ``expanded`` are not failures at
all: they are notices about a delivery, recorded as such and never counted
as bounces; ``none`` is a success (delivered).

Only the address-related permanent codes suppress: a mailbox that is full,
a message too big or a server refusing the sender says nothing about
whether the address exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Address-related permanent codes: the only ones that suppress (RFC 3463; RFC 7505 for 5.1.10).
HARD_CODES = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.10", "5.2.1"})
# Permanent failures caused by the sender or the message, not the address.
SENDER_CODES = frozenset({"5.1.7", "5.1.8", "5.2.3", "5.3.4"})
NOTICES = ("delayed", "relayed", "expanded")

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_BASIC = re.compile(r"(?<![\d.])([245]\d\d)(?:[\s-]|$)")
_POLICY_WORDS = re.compile(
    r"spam|policy|blocked|block ?list|black ?list|dmarc|\bspf\b|dkim|reputation|unauthenticated"
    r"|not authenticated|\brbl\b|spamhaus",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one failure is handled, and the code that decided it."""

    kind: str  # hard | soft | policy | delayed | relayed | expanded | none | unknown
    code: str | None  # "5.1.1", "550", or None

    @property
    def is_failure(self) -> bool:
        return self.kind in ("hard", "soft", "policy")

    @property
    def is_notice(self) -> bool:
        """A delay, relay or expansion notice: news about a delivery, not a failure."""
        return self.kind in NOTICES


def enhanced_code(text: str | None) -> str | None:
    if not text:
        return None
    match = _ENHANCED.search(text)
    return ".".join(str(int(g)) for g in match.groups()) if match else None


def basic_code(text: str | None) -> str | None:
    if not text:
        return None
    # "smtp; 550 ..." — look past the diagnostic type
    body = text.split(";", 1)[1] if ";" in text[:20] else text
    match = _BASIC.search(body)
    return match.group(1) if match else None


# Complexity: one branch per combination of Action, Status and Diagnostic-Code that real MTAs send.
def classify(action: str | None, status: str | None, diagnostic: str | None) -> Verdict:
    """Hard, soft, policy, a notice or a success, from a DSN's Action, Status and Diagnostic-Code.

    ``delayed`` means the reporting MTA "will continue to try" (RFC 3464
    §2.3.3), whatever code it quotes: a notice, never a bounce.
    """
    words = (action or "").strip().lower().split()
    action = words[0] if words else ""
    if action == "delivered":
        return Verdict("none", enhanced_code(status))
    if action in NOTICES:
        return Verdict(action, enhanced_code(status) or enhanced_code(diagnostic) or basic_code(diagnostic))
    code = _deciding_code(status, diagnostic)
    if code and not code.endswith(".0.0"):
        return _by_enhanced(code)
    verdict = _by_basic(basic_code(diagnostic), diagnostic or "")
    if verdict is None and code:
        verdict = Verdict("soft" if code[0] == "4" else "unknown", code)
    return verdict or Verdict("unknown", None)


def _deciding_code(status: str | None, diagnostic: str | None) -> str | None:
    """The enhanced code that decides: Status's, unless it is a generic X.0.0
    (or missing) and the diagnostic names a specific one of the same class."""
    code = enhanced_code(status)
    detail = enhanced_code(diagnostic)
    if (code is None or code.endswith(".0.0")) and detail and (code is None or detail[0] == code[0]):
        return detail
    return code


def _by_enhanced(code: str) -> Verdict:
    klass, subject, _ = code.split(".")
    if klass == "2":
        return Verdict("none", code)
    if klass == "4":
        return Verdict("soft", code)
    if code in HARD_CODES:
        return Verdict("hard", code)
    if subject == "7" or code in SENDER_CODES or subject in ("5", "6"):
        return Verdict("policy", code)
    # 5.2.2 (mailbox full, RFC 3463 "persistent transient"), 5.3.x, 5.4.x ...
    # are permanent for this message but not about the address: they count
    # towards the soft limit instead of suppressing at once.
    return Verdict("soft", code)


def _by_basic(code: str | None, text: str) -> Verdict | None:
    """For DSNs without a usable enhanced code: the SMTP reply code (RFC 5321 §4.2)."""
    if code is None:
        return None
    if code.startswith("2"):
        return Verdict("none", code)
    if code.startswith("4"):
        return Verdict("soft", code)
    if _POLICY_WORDS.search(text):
        return Verdict("policy", code)
    if code in ("550", "551", "553", "556", "521"):
        return Verdict("hard", code)
    if code == "554":
        return Verdict("policy", code)
    return Verdict("soft", code)
