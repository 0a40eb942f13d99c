"""The plain-text letter that answers an access request (GDPR art. 15(1)).

Art. 15(1) asks for more than the data: the purposes, the categories of data,
the recipients (the SMTP relay is one: it processes every message), how long
each kind of data is kept, the person's rights, the right to complain to the
supervisory authority (in the Netherlands the Autoriteit Persoonsgegevens),
where the data came from when not from the person, and whether automated
decisions are made. Every value that can differ per project comes from the
configuration, so the letter never promises a period the purge does not keep.
The letter is in English with a Dutch version below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config import Duration, Settings

AP_URL = "https://autoriteitpersoonsgegevens.nl"

_NL_UNITS = {
    "s": ("seconde", "seconden"), "m": ("minuut", "minuten"), "h": ("uur", "uur"),
    "d": ("dag", "dagen"), "w": ("week", "weken"), "mo": ("maand", "maanden"), "y": ("jaar", "jaar"),
}

RETENTION_TEXT_EN = {
    "unconfirmed": "a subscription that is never confirmed is deleted after {d}",
    "unsubscribed": "after you unsubscribe from everything or object, your data are erased after {d};"
                    " only a keyed hash of your address is kept, so that you are never mailed again",
    "bounced": "an address that bounces permanently is erased after {d} (a keyed hash is kept)",
    "inactive": "all data of a contact who is subscribed to no list and shows no activity (a confirmation,"
                " a click, a correction, an import that changed them) for {d} are erased",
    "send_log": "the record of each message sent to you is kept for {d}; after that only campaign totals remain",
    "audit_log": "the log of who accessed your data is kept for {d}",
    "backups": "backups of the database are kept for {d}",
    "exports": "a copy of your data made for you (such as the answer to this request) is deleted after {d}",
    "clicks": "where we record which links you clicked (only if switched on), each click is kept for {d}",
}
RETENTION_TEXT_NL = {
    "unconfirmed": "een inschrijving die nooit wordt bevestigd, verwijderen wij na {d}",
    "unsubscribed": "nadat u zich overal hebt afgemeld of bezwaar hebt gemaakt, wissen wij uw gegevens na {d};"
                    " alleen een versleutelde hash van uw adres blijft, zodat u nooit meer mail krijgt",
    "bounced": "een adres dat blijvend onbestelbaar is, wissen wij na {d} (een versleutelde hash blijft)",
    "inactive": "alle gegevens van een contact dat op geen lijst staat en {d} lang geen activiteit toont"
                " (een bevestiging, een klik, een correctie, een import die iets veranderde) wissen wij",
    "send_log": "het overzicht van elk bericht aan u bewaren wij {d}; daarna blijven alleen totalen per campagne",
    "audit_log": "het logboek van wie uw gegevens heeft ingezien bewaren wij {d}",
    "backups": "back-ups van de database bewaren wij {d}",
    "exports": "een kopie van uw gegevens die wij voor u maken (zoals het antwoord op dit verzoek) verwijderen wij"
               " na {d}",
    "clicks": "als wij bijhouden op welke links u klikt (alleen als dat aanstaat), bewaren wij elke klik {d}",
}


def describe_nl(duration: Duration) -> str:
    one, many = _NL_UNITS[duration.unit]
    return f"{duration.amount} {one if duration.amount == 1 else many}"


@dataclass(frozen=True, slots=True)
class LetterFacts:
    """What the letter needs to know about this person's data."""

    generated_at: str
    lists: Sequence[str]
    attribute_names: Sequence[str]
    sources: Sequence[str]
    counts: dict[str, int]


def information(settings: Settings, facts: LetterFacts) -> dict[str, object]:
    """The art. 15(1)(a)-(h) information as data (also put into subject.json)."""
    return {
        "purposes": [
            "sending the e-mail newsletters you subscribed to" + (f" ({', '.join(facts.lists)})" if facts.lists else ""),
            "handling unsubscribes, bounces and complaints, and keeping you off our lists once you leave",
            "proving when and how you gave consent (GDPR art. 7(1))",
        ],
        "legal_basis": "consent (GDPR art. 6(1)(a)); keeping the suppression hash: legal obligation and"
                       " legitimate interest in honouring your opt-out (art. 6(1)(c), 6(1)(f))",
        "categories": [
            "e-mail address", "first and last name",
            "other details you gave us" + (f" ({', '.join(facts.attribute_names)})" if facts.attribute_names else ""),
            "list memberships and consent evidence (time, source, method, IP address where recorded)",
            "which messages were sent to you, when, and the delivery result",
            "unsubscribes, bounces and complaints", "the log of access to your data",
        ],
        "recipients": [
            f"our e-mail relay {settings.smtp.host} (processor; it transmits every message)",
            "your own mail provider, which receives the messages addressed to you",
        ],
        "retention": {
            key: {"period": duration.text, "described": duration.describe(),
                  "rule": RETENTION_TEXT_EN[key].format(d=duration.describe())}
            for key, duration in _rules(settings)
        },
        "source": list(facts.sources) or ["provided by you"],
        "rights": ["access (art. 15)", "rectification (art. 16)", "erasure (art. 17)", "restriction (art. 18)",
                   "data portability (art. 20)", "objection to direct marketing (art. 21)",
                   "withdrawing consent at any time, without affecting earlier processing (art. 7(3))"],
        "complaint": f"Autoriteit Persoonsgegevens, {AP_URL}",
        "automated_decision_making": "none; no profiling or automated decisions are made about you",
    }


def _bullets(items: Sequence[str]) -> str:
    import textwrap

    return "\n".join(textwrap.fill(item, 78, initial_indent="  - ", subsequent_indent="    ") for item in items)


# Complexity: one fallback per fact the letter states in both languages when the data has none.
def render_letter(settings: Settings, facts: LetterFacts) -> str:
    sender = settings.sender
    controller = f"{settings.project.name} ({sender.from_address})"
    address = sender.postal_address or "(postal address not configured)"
    address_nl = sender.postal_address or "(postadres niet ingesteld)"
    contact = sender.reply_to or sender.from_address
    lists = ", ".join(facts.lists) or "none at the moment"
    lists_nl = ", ".join(facts.lists) or "op dit moment geen"
    sources = ", ".join(facts.sources) or "you gave it to us yourself"
    sources_nl = ", ".join(facts.sources) or "u hebt ze zelf aan ons gegeven"
    attrs = ", ".join(facts.attribute_names)
    relay = settings.smtp.host
    c = facts.counts
    retention_en = _bullets([RETENTION_TEXT_EN[k].format(d=d.describe()) for k, d in _rules(settings)])
    retention_nl = _bullets([RETENTION_TEXT_NL[k].format(d=describe_nl(d)) for k, d in _rules(settings)])
    return f"""\
Your personal data held by {controller}
Date: {facts.generated_at}

Dear subscriber,

You asked which personal data we hold about you (GDPR article 15). This file
contains all of it: subject.json (machine-readable, for moving your data
elsewhere, article 20), one CSV file per kind of record, and this letter.
manifest.sha256 lets you check that nothing was changed.

What we hold
  - your profile: e-mail address, name{", " + attrs if attrs else ""}
  - {c.get("memberships", 0)} list membership(s) with the evidence of your consent (lists: {lists})
  - {c.get("deliveries", 0)} message(s) sent to you, with time, Message-ID and delivery result
  - {c.get("events", 0)} event(s) such as unsubscribes, bounces and complaints
  - {c.get("suppression", 0)} suppression entry(ies) (a keyed hash of your address, not the address)
  - {c.get("audit", 0)} entry(ies) in the log of access to your data

Why (purposes) and on what basis
  We use your data only to send you the e-mail newsletters you subscribed to,
  to handle unsubscribes, bounces and complaints, and to prove your consent.
  The legal basis is your consent (article 6(1)(a)). We do not sell your data
  and do not use it for anything else.

Who receives it (recipients)
  - our e-mail relay {relay}, which transmits every message (a processor)
  - your own mail provider, which receives the messages addressed to you
  We give your data to no one else.

Where it came from (source)
  {sources}

How long we keep it (retention)
{retention_en}

Your rights
  You may ask us to correct your data (article 16), to erase it (article 17),
  to restrict its use (article 18), to receive it to take elsewhere
  (article 20), and you may object to direct marketing at any time
  (article 21). You may withdraw your consent at any time; every message has
  an unsubscribe link. This is free of charge. Write to {contact}.

Complaints
  You may complain to the Dutch supervisory authority, the Autoriteit
  Persoonsgegevens ({AP_URL}),
  or to the supervisory authority where you live or work.

Automated decisions
  We make no automated decisions and do no profiling.

{settings.project.name}
{address}

----------------------------------------------------------------------------

Uw persoonsgegevens bij {controller}
Datum: {facts.generated_at}

Beste abonnee,

U vroeg welke persoonsgegevens wij van u hebben (AVG artikel 15). Dit bestand
bevat ze allemaal: subject.json (machineleesbaar, om uw gegevens mee te nemen,
artikel 20), een CSV-bestand per soort gegeven, en deze brief.
Met manifest.sha256 kunt u controleren dat er niets is veranderd.

Wat wij van u hebben
  - uw profiel: e-mailadres, naam{", " + attrs if attrs else ""}
  - {c.get("memberships", 0)} lidmaatschap(pen) van een lijst met het bewijs van uw toestemming (lijsten: {lists_nl})
  - {c.get("deliveries", 0)} bericht(en) aan u verstuurd, met tijd, Message-ID en afleverresultaat
  - {c.get("events", 0)} gebeurtenis(sen) zoals afmeldingen, onbestelbare berichten en klachten
  - {c.get("suppression", 0)} blokkering(en) (een versleutelde hash van uw adres, niet het adres zelf)
  - {c.get("audit", 0)} regel(s) in het logboek van wie uw gegevens inzag

Waarvoor (doelen) en op welke grondslag
  Wij gebruiken uw gegevens alleen om u de nieuwsbrieven te sturen waarop u
  zich hebt ingeschreven, om afmeldingen, onbestelbare berichten en klachten
  te verwerken en om uw toestemming aan te tonen. De grondslag is uw
  toestemming (artikel 6 lid 1 sub a). Wij verkopen uw gegevens niet en
  gebruiken ze nergens anders voor.

Ontvangers
  - onze e-mailverzender {relay}, die elk bericht verstuurt (verwerker)
  - uw eigen e-mailprovider, die de berichten aan u ontvangt
  Wij geven uw gegevens aan niemand anders.

Herkomst
  {sources_nl}

Bewaartermijnen
{retention_nl}

Uw rechten
  U kunt ons vragen uw gegevens te corrigeren (artikel 16), te wissen
  (artikel 17), het gebruik te beperken (artikel 18) of ze aan u over te
  dragen (artikel 20), en u kunt altijd bezwaar maken tegen direct marketing
  (artikel 21). U kunt uw toestemming altijd intrekken; elk bericht heeft een
  afmeldlink. Dit is kosteloos. Schrijf naar {contact}.

Klachten
  U kunt een klacht indienen bij de Autoriteit Persoonsgegevens
  ({AP_URL}),
  of bij de toezichthouder waar u woont of werkt.

Geautomatiseerde besluiten
  Wij nemen geen geautomatiseerde besluiten en maken geen profielen.

{settings.project.name}
{address_nl}
"""


def _rules(settings: Settings) -> list[tuple[str, Duration]]:
    """The retention rules a person is told about: clicks only where they are kept per person."""
    return [(key, duration) for key, duration in settings.retention.items()
            if key != "clicks" or settings.tracking.per_contact]
