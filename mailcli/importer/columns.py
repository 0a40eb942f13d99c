"""Which column of a contact file feeds which field.

Columns are matched case- and punctuation-insensitively against aliases
(Mailchimp ``Email Address``, Dutch ``E-mailadres``/``Voornaam``/``Achternaam``);
``--map "CSV column=field"`` overrides. A lone ``name`` column is split at
the first space (``Jan van der Berg`` → ``Jan`` / ``van der Berg``, which keeps
Dutch prefixes with the surname), or at its one comma when it is written
last name first (``Berg, Jan`` → ``Jan`` / ``Berg``; ``Vries, Lies de`` →
``Lies`` / ``de Vries``); like every column that feeds a field, it is not
kept as an attribute too. A Dutch ``Tussenvoegsel`` column joins the last name
(``van der`` + ``Berg`` → ``van der Berg``), as it is written in a salutation.
A ``CONFIRM_TIME``/``OPTIN_TIME``-style column gives the consent time
(confirmation preferred over opt-in, as it is the later, double-opt-in
moment), an IP column the consent network; an ``UNSUB_TIME`` or
``CLEAN_TIME`` column (Mailchimp's unsubscribed and cleaned exports) marks
the people who left the list at the old service. Every other column becomes
a custom attribute named in lower snake_case so templates can use it
(``{{ contact.member_rating }}``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from mailcli.addresses import AddressError, normalise_address
from mailcli.errors import InputFileError, UsageError

# Fields a column can be mapped to; anything else given to --map is an attribute.
FIELDS = ("email", "first_name", "last_name", "name", "consent_time", "consent_ip", "unsubscribed_at", "bounced_at",
          "ignore")
RESERVED_ATTRIBUTES = frozenset({"email", "first_name", "last_name", "lists", "status", "uid"})

# Header aliases, keyed by header_key(): lower case, letters and digits only.
_ALIASES: dict[str, str] = {
    **dict.fromkeys(
        ["email", "emailaddress", "mail", "mailaddress", "emailadres", "mailadres", "emails",
         "email1value"],  # Google Contacts: "E-mail 1 - Value"
        "email",
    ),
    **dict.fromkeys(["firstname", "first", "fname", "givenname", "voornaam", "roepnaam"], "first_name"),
    **dict.fromkeys(
        ["lastname", "last", "lname", "surname", "familyname", "achternaam"], "last_name"
    ),
    **dict.fromkeys(["name", "fullname", "naam", "volledigenaam"], "name"),
}
# Consent columns in order of preference: the confirmation (double opt-in)
# is the stronger evidence, so it wins over the opt-in when both are filled.
_CONSENT_TIME = ["confirmtime", "confirmedat", "consenttime", "consentat", "consentdate",
                 "optintime", "optinat", "optindate", "timestampopt",
                 # Dutch exports: when the person signed up, or gave or confirmed consent
                 "aangemeldop", "aanmelddatum", "inschrijfdatum", "ingeschrevenop", "toestemmingop",
                 "toestemmingsdatum", "bevestigdop"]
_CONSENT_IP = ["confirmip", "consentip", "optinip", "signupip", "ip", "ipaddress", "ipopt"]
# Columns saying the person left the list at the old service (the first two
# are Mailchimp's); cleaned means the address bounced there.
_OPTED_OUT = ["unsubtime", "unsubscribedat", "unsubscribetime", "optouttime", "optedoutat", "optoutat",
              "afgemeldop", "afmelddatum", "uitgeschrevenop", "uitschrijfdatum"]
_CLEANED = ["cleantime", "cleanedat"]
# The Dutch name prefix ("van der", "de"), kept in a column of its own by
# many Dutch systems; it belongs in front of the last name.
_LAST_NAME_PREFIX = ["tussenvoegsel", "tussenvoegsels", "voorvoegsel", "voorvoegsels"]
# What a column found by its header is, when that is not a field of FIELDS
# (attribute_name never gives a name with "<").
_PREFIX = "<last name prefix>"

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """Which column feeds which field; the rest become attributes."""

    headers: tuple[str, ...]
    email: int
    first_name: int | None = None
    last_name: int | None = None
    name: int | None = None
    consent_time: tuple[int, ...] = ()
    consent_ip: tuple[int, ...] = ()
    attributes: tuple[tuple[str, int], ...] = ()
    opted_out: tuple[int, ...] = ()  # a filled cell makes the row an OptOut (unsubscribed)
    cleaned: tuple[int, ...] = ()  # the same, bounced
    last_name_prefix: int | None = None  # "Tussenvoegsel": put in front of the last name


def header_key(header: str) -> str:
    """``E-mailadres`` → ``emailadres``: how headers are compared."""
    text = unicodedata.normalize("NFKD", header).encode("ascii", "ignore").decode("ascii")
    return _NON_ALNUM.sub("", text.lower())


def attribute_name(header: str) -> str:
    """``Member Rating`` → ``member_rating``: an identifier usable in templates."""
    text = unicodedata.normalize("NFKD", header).encode("ascii", "ignore").decode("ascii")
    name = _NON_ALNUM.sub("_", text.lower()).strip("_")
    if not name:
        return "column"
    if name[0].isdigit():
        # Jinja names cannot start with a digit, and a leading underscore is
        # blocked by the sandbox, so give it a letter prefix.
        name = f"col_{name}"
    return name


def parse_map_options(values: Iterable[str]) -> dict[str, str]:
    """``["Mail adres=email", "Plaats=city"]`` → header key → field or attribute."""
    mapping: dict[str, str] = {}
    for value in values:
        column, sep, target = value.rpartition("=")
        if not sep or not column.strip() or not target.strip():
            raise UsageError(f'--map "{value}": expected "CSV column=field"')
        target = target.strip().lower()
        if target in ("skip", "-", "none"):
            target = "ignore"
        if target.replace("-", "_") in FIELDS:
            target = target.replace("-", "_")
        else:
            target = attribute_name(target)
        mapping[header_key(column)] = target
    return mapping


class _Planner:
    """The plan as the columns are gone through, left to right."""

    def __init__(self, headers: list[str], explicit: set[str]) -> None:
        self.headers = headers
        self.explicit = explicit  # fields --map names: no column is matched to them by its header
        self.chosen: dict[str, int] = {}
        self.consent_time: list[tuple[int, int]] = []  # (preference, column)
        self.consent_ip: list[tuple[int, int]] = []
        self.opted_out: list[int] = []
        self.cleaned: list[int] = []
        self.prefix: int | None = None
        self.attributes: list[tuple[str, int]] = []

    # Complexity: one branch per kind of header an export uses (email, names, consent, opt-out columns).
    def guess(self, key: str) -> tuple[str | None, int]:
        """What a column not named by --map is, by its header, with its
        preference among columns of the same field (consent)."""
        alias = _ALIASES.get(key)
        if alias is not None and alias not in self.explicit and alias not in self.chosen:
            return alias, 0
        if key in _CONSENT_TIME and "consent_time" not in self.explicit:
            return "consent_time", _CONSENT_TIME.index(key)
        if key in _CONSENT_IP and "consent_ip" not in self.explicit:
            return "consent_ip", _CONSENT_IP.index(key)
        if key in _OPTED_OUT:
            return "unsubscribed_at", 0
        if key in _CLEANED:
            return "bounced_at", 0
        if key in _LAST_NAME_PREFIX and self.prefix is None:
            return _PREFIX, 0
        return None, 0

    def add(self, index: int, target: str | None, rank: int) -> None:
        """Column ``index`` feeds ``target`` (None: an attribute named after its header)."""
        if target == "ignore":
            return
        if target == "unsubscribed_at":
            self.opted_out.append(index)
        elif target == "bounced_at":
            self.cleaned.append(index)
        elif target == "consent_time":
            self.consent_time.append((rank, index))
        elif target == "consent_ip":
            self.consent_ip.append((rank, index))
        elif target == _PREFIX:
            self.prefix = index
        elif target in FIELDS and target not in self.chosen:
            self.chosen[target] = index
        else:
            self.attributes.append((target or attribute_name(self.headers[index]), index))

    def plan(self) -> ColumnPlan:
        chosen, attributes, prefix = self.chosen, self.attributes, self.prefix
        if prefix is not None and "last_name" not in chosen:
            attributes.append((attribute_name(self.headers[prefix]), prefix))  # no last name to join
            prefix = None
        name_index = chosen.get("name")
        if name_index is not None and ("first_name" in chosen or "last_name" in chosen):
            # Explicit first/last columns win; the full name stays an attribute.
            attributes.append(("name", name_index))
            name_index = None
        return ColumnPlan(
            headers=tuple(self.headers),
            email=chosen["email"],
            first_name=chosen.get("first_name"),
            last_name=chosen.get("last_name"),
            name=name_index,
            consent_time=tuple(i for _, i in sorted(self.consent_time)),
            consent_ip=tuple(i for _, i in sorted(self.consent_ip)),
            attributes=_unique_names(attributes),
            opted_out=tuple(self.opted_out),
            cleaned=tuple(self.cleaned),
            last_name_prefix=prefix,
        )


def plan_columns(
    headers: list[str], mapping: dict[str, str] | None, source: str
) -> ColumnPlan:
    """Resolve columns to fields; raises InputFileError without an email column."""
    mapping = dict(mapping or {})
    keys = [header_key(h) for h in headers]
    for wanted in mapping:
        if wanted not in keys:
            raise InputFileError(
                f"{source}: --map names a column that is not in the file: {wanted!r}",
                hint=f"columns found: {_show_headers(headers)}",
            )
    planner = _Planner(headers, set(mapping.values()) & set(FIELDS))
    for index, key in enumerate(keys):
        target = mapping.get(key)
        # Named by --map: it comes first among the columns of its field.
        planner.add(index, *((target, -1) if target is not None else planner.guess(key)))
    if "email" not in planner.chosen:
        raise InputFileError(
            f"{source}: no email column (columns found: {_show_headers(headers)})",
            hint='name the column with --map "COLUMN=email"',
        )
    return planner.plan()


def headerless_plan(first_row: list[str]) -> ColumnPlan | None:
    """A file of bare addresses (no header): the column whose first cell is one."""
    for index, cell in enumerate(first_row):
        try:
            normalise_address(cell)
        except AddressError:
            continue
        headers = tuple(f"column_{i + 1}" for i in range(len(first_row)))
        attributes = tuple((headers[i], i) for i in range(len(first_row)) if i != index)
        return ColumnPlan(headers=headers, email=index, attributes=attributes)
    return None


def _show_headers(headers: list[str]) -> str:
    """Headers for an error message: printable, short, at most 20 of them."""
    shown = []
    for header in headers[:20]:
        text = "".join(ch if ch.isprintable() else "?" for ch in header.strip())
        if text:
            shown.append(text if len(text) <= 40 else text[:39] + "…")
    more = len(headers) - 20
    return (", ".join(shown) or "(none)") + (f" and {more} more" if more > 0 else "")


def _unique_names(attributes: list[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    seen: set[str] = set()
    result = []
    for name, index in attributes:
        base, n = name, 1
        while name in seen or name in RESERVED_ATTRIBUTES:
            n += 1
            name = f"{base}_{n}"
        seen.add(name)
        result.append((name, index))
    return tuple(result)
