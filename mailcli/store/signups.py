"""Sign-ups and their double opt-in: the SQL behind ``serve``'s form and ``reconfirm``.

* A sign-up of someone not yet on the list makes a contact if need be and an
  ``unconfirmed`` membership with no basis; it carries its own evidence (time,
  network, form, the wording's hash, the language) in ``signups``, so an
  address that left the list keeps its ``unsubscribed`` membership untouched
  until the person confirms.
* Confirming makes the membership ``subscribed`` with basis ``consent`` and
  copies the evidence onto it (method ``double opt-in``). For someone who had
  unsubscribed, objected or been erased before, the suppressions that kept
  them out are lifted and the contact is active again: the new confirmed
  consent is what the law asks for, and an event records it. A restriction
  of processing (art. 18) is never lifted this way.
* The confirmation mail's state lives on the sign-up row: ``serve`` sends due
  ones and retries failures until the link expires.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .events import add_event

if TYPE_CHECKING:
    from .db import Connection


def store_consent_text(conn: Connection, text: str, language: str, now: str) -> str:
    """The hash under which a consent wording is kept, stored the first time it is seen."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    conn.execute("INSERT INTO consent_texts (hash, text, language, created_at) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT (hash) DO NOTHING", (digest, text, language, now))
    return digest


def consent_wording(conn: Connection, digest: str | None) -> str | None:
    """The wording stored under ``digest`` (None for none)."""
    if not digest:
        return None
    row = conn.execute("SELECT text FROM consent_texts WHERE hash = ?", (digest,)).fetchone()
    return str(row[0]) if row else None


@dataclass(frozen=True, slots=True)
class Person:
    """What a sign-up needs to know about an existing contact and its membership of the list."""

    contact_id: int
    restricted: bool
    member_status: str | None  # the membership row's status; None when not a member
    reachable: bool  # active, not objecting: a subscribed member is already mailed


def find_person(conn: Connection, key: str, list_id: int) -> Person | None:
    row = conn.execute(
        "SELECT c.id, c.restricted_at IS NOT NULL, m.status, c.status = 'active' AND c.no_marketing_at IS NULL"
        " FROM contacts c LEFT JOIN memberships m ON m.contact_id = c.id AND m.list_id = ?"
        " WHERE c.email_key = ?", (list_id, key)).fetchone()
    if row is None:
        return None
    return Person(int(row[0]), bool(row[1]), row[2], bool(row[3]))


def contact_key(conn: Connection, contact_id: int) -> str:
    """The comparison key (normalised address) of a contact."""
    (key,) = conn.execute("SELECT email_key FROM contacts WHERE id = ?", (contact_id,)).fetchone()
    return str(key)


def add_contact(conn: Connection, *, uid: str, email: str, key: str, first_name: str, last_name: str,
                source: str, now: str) -> int:
    (contact_id,) = conn.execute(  # RETURNING: a PostgreSQL cursor has no lastrowid
        "INSERT INTO contacts (uid, email, email_key, first_name, last_name, source, created_at, updated_at,"
        " last_activity_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (uid, email, key, first_name, last_name, source, now, now, now)).fetchone()
    return int(contact_id)


def add_pending_membership(conn: Connection, contact_id: int, list_id: int, *, source: str, ip: str | None,
                           text_hash: str | None, now: str) -> None:
    """An ``unconfirmed`` membership without a basis, with the sign-up's evidence."""
    conn.execute(
        "INSERT INTO memberships (contact_id, list_id, status, basis, consent_source, consent_method, consent_at,"
        " consent_ip, consent_text, created_at, updated_at) VALUES (?, ?, 'unconfirmed', 'none', ?, 'form', ?, ?, ?,"
        " ?, ?) ON CONFLICT (contact_id, list_id) DO NOTHING",
        (contact_id, list_id, source, now, ip, text_hash, now, now))


def recent_signup(conn: Connection, contact_id: int, list_id: int, since: str) -> bool:
    """Whether a confirmation was asked for this person and list since ``since``
    and is still open (so no second mail is sent)."""
    row = conn.execute("SELECT 1 FROM signups WHERE contact_id = ? AND list_id = ? AND created_at >= ?"
                       " AND confirmed_at IS NULL LIMIT 1", (contact_id, list_id, since)).fetchone()
    return row is not None


def add_signup(conn: Connection, *, nonce: str, contact_id: int, list_id: int, form: str, language: str,
               text_hash: str | None, ip: str | None, now: str, expires_at: str,
               campaign_id: int | None = None) -> int:
    (signup_id,) = conn.execute(
        "INSERT INTO signups (nonce, contact_id, list_id, form, language, consent_text, ip, created_at, expires_at,"
        " mail_next_at, campaign_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (nonce, contact_id, list_id, form, language, text_hash, ip, now, expires_at, now, campaign_id)).fetchone()
    return int(signup_id)


@dataclass(frozen=True, slots=True)
class Signup:
    id: int
    contact_id: int
    list_id: int
    list_name: str
    form: str
    language: str
    consent_text: str | None
    ip: str | None
    created_at: str
    expires_at: str
    confirmed_at: str | None


def signup_by_nonce(conn: Connection, nonce: str) -> Signup | None:
    row = conn.execute(
        "SELECT s.id, s.contact_id, s.list_id, l.name, s.form, s.language, s.consent_text, s.ip, s.created_at,"
        " s.expires_at, s.confirmed_at FROM signups s JOIN lists l ON l.id = s.list_id WHERE s.nonce = ?",
        (nonce,)).fetchone()
    return Signup(*row) if row else None


def confirm_signup(conn: Connection, signup: Signup, *, ip: str | None, email_hmac: str, now: str) -> list[str]:
    """Make the sign-up's membership subscribed with its evidence; returns what
    kept the person out before and was lifted (empty for a first sign-up)."""
    lifted: list[str] = []
    row = conn.execute("SELECT status FROM memberships WHERE contact_id = ? AND list_id = ?",
                       (signup.contact_id, signup.list_id)).fetchone()
    if row is not None and row[0] == "unsubscribed":
        lifted.append("unsubscribed from the list")
    contact = conn.execute("SELECT status, no_marketing_at FROM contacts WHERE id = ?", (signup.contact_id,)).fetchone()
    if contact is not None and contact[0] != "active":
        lifted.append(f"contact {contact[0]}")
    if contact is not None and contact[1] is not None:
        lifted.append("objection to direct marketing")
    removed = conn.execute("DELETE FROM suppressions WHERE hmac = ? AND scope IN ('*', ?)"
                           " RETURNING reason, scope", (email_hmac, signup.list_name)).fetchall()
    lifted += [f"suppression {reason} ({scope})" for reason, scope in removed]
    conn.execute("UPDATE contacts SET status = 'active', no_marketing_at = NULL, updated_at = ?,"
                 " last_activity_at = ? WHERE id = ?", (now, now, signup.contact_id))
    evidence = (f"{signup.form}", signup.created_at, signup.ip, signup.consent_text, now)
    conn.execute(
        "INSERT INTO memberships (contact_id, list_id, status, basis, consent_source, consent_method, consent_at,"
        " consent_ip, consent_text, confirmed_at, created_at, updated_at)"
        " VALUES (?, ?, 'subscribed', 'consent', ?, 'double opt-in', ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (contact_id, list_id) DO UPDATE SET status = 'subscribed', basis = 'consent',"
        " consent_source = excluded.consent_source, consent_method = excluded.consent_method,"
        " consent_at = excluded.consent_at, consent_ip = excluded.consent_ip, consent_text = excluded.consent_text,"
        " confirmed_at = excluded.confirmed_at, unsubscribed_at = NULL, unsubscribe_channel = NULL,"
        " updated_at = excluded.updated_at",
        (signup.contact_id, signup.list_id, *evidence, now, now))
    conn.execute("UPDATE signups SET confirmed_at = ?, confirmed_ip = ? WHERE id = ?", (now, ip, signup.id))
    add_event(conn, contact_id=signup.contact_id, kind="resubscribed" if lifted else "confirmed",
              channel="double opt-in", scope=signup.list_name, now=now,
              detail={"form": signup.form, "ip": ip, "lifted": lifted} if lifted else {"form": signup.form, "ip": ip})
    return lifted


@dataclass(frozen=True, slots=True)
class DueMail:
    """A confirmation mail to send: the sign-up, its person and list."""

    signup_id: int
    nonce: str
    expires_at: str
    attempts: int
    language: str
    list_name: str
    contact_uid: str
    email: str
    first_name: str
    last_name: str
    attributes: str


def due_confirmation_mails(conn: Connection, now: str, limit: int = 20) -> list[DueMail]:
    """Confirmation mails whose time has come, oldest first; expired ones are given up."""
    conn.execute("UPDATE signups SET mail_status = 'expired' WHERE mail_status = 'pending' AND expires_at <= ?",
                 (now,))
    rows = conn.execute(
        "SELECT s.id, s.nonce, s.expires_at, s.mail_attempts, s.language, l.name, c.uid, c.email, c.first_name,"
        " c.last_name, c.attributes FROM signups s JOIN lists l ON l.id = s.list_id"
        " JOIN contacts c ON c.id = s.contact_id"
        " WHERE s.mail_status = 'pending' AND s.mail_next_at <= ? ORDER BY s.mail_next_at, s.id LIMIT ?",
        (now, limit)).fetchall()
    return [DueMail(*row) for row in rows]


def mail_sent(conn: Connection, signup_id: int, now: str) -> None:
    conn.execute("UPDATE signups SET mail_status = 'sent', mailed_at = ?, mail_attempts = mail_attempts + 1,"
                 " mail_error = NULL WHERE id = ?", (now, signup_id))


def mail_failed(conn: Connection, signup_id: int, error: str, *, retry_at: str | None) -> None:
    """A failed attempt: tried again at ``retry_at``, or given up (None)."""
    conn.execute("UPDATE signups SET mail_attempts = mail_attempts + 1, mail_error = ?, mail_next_at = ?,"
                 " mail_status = CASE WHEN CAST(? AS TEXT) IS NULL THEN 'failed' ELSE 'pending' END WHERE id = ?",
                 (error[:500], retry_at, retry_at, signup_id))


def signups_of(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    """A person's sign-ups with the wording they were shown, for an export."""
    cursor = conn.execute(
        "SELECT l.name, s.form, s.language, s.created_at, s.ip, s.confirmed_at, s.confirmed_ip, s.mail_status,"
        " t.text FROM signups s JOIN lists l ON l.id = s.list_id LEFT JOIN consent_texts t ON t.hash = s.consent_text"
        " WHERE s.contact_id = ? ORDER BY s.id", (contact_id,))
    names = ("list", "form", "language", "created_at", "ip", "confirmed_at", "confirmed_ip", "mail_status",
             "consent_wording")
    return [dict(zip(names, row, strict=True)) for row in cursor]


# -- reconfirm: asking a list's members without a basis, or unconfirmed ones ---

# The members to ask: unconfirmed, or subscribed without a basis, and held
# back for no other reason (not bounced, complained, restricted, objecting);
# those already asked in this campaign are left out, so a rerun asks nobody twice.
_TO_ASK = """
SELECT c.id, c.uid FROM memberships m JOIN contacts c ON c.id = m.contact_id
WHERE m.list_id = ? AND (m.status = 'unconfirmed' OR (m.status = 'subscribed' AND m.basis = 'none'))
  AND c.status = 'active' AND c.restricted_at IS NULL AND c.no_marketing_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.campaign_id = ? AND d.contact_id = c.id)
ORDER BY c.id
"""


def freeze_reconfirm(conn: Connection, *, campaign_id: int, list_id: int, message_ids: Any, nonce: Any,
                     form: str, language: str, text_hash: str | None, now: str, expires_at: str) -> int:
    """A pending delivery and a sign-up (whose link the mail carries) for every member to ask;
    ``message_ids(contact_uid)`` and ``nonce()`` make their identifiers. Returns how many."""
    targets = conn.execute(_TO_ASK, (list_id, campaign_id)).fetchall()
    for contact_id, uid in targets:
        conn.execute("INSERT INTO deliveries (campaign_id, contact_id, status, message_id, created_at, updated_at)"
                     " VALUES (?, ?, 'pending', ?, ?, ?)", (campaign_id, contact_id, message_ids(uid), now, now))
        conn.execute(
            "INSERT INTO signups (nonce, contact_id, list_id, form, language, consent_text, created_at, expires_at,"
            " mail_status, campaign_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'reconfirm', ?)",
            (nonce(), contact_id, list_id, form, language, text_hash, now, expires_at, campaign_id))
    return len(targets)


_DUE = """
SELECT d.id, s.id, s.nonce, s.expires_at, s.mail_attempts, s.language, l.name, c.uid, c.email,
       c.first_name, c.last_name, c.attributes
FROM deliveries d JOIN signups s ON s.campaign_id = d.campaign_id AND s.contact_id = d.contact_id
JOIN lists l ON l.id = s.list_id JOIN contacts c ON c.id = d.contact_id
WHERE d.campaign_id = ? AND d.status IN ({marks}) ORDER BY d.id
"""


def reconfirm_due(conn: Connection, campaign_id: int, statuses: tuple[str, ...]) -> list[tuple[int, DueMail]]:
    """The campaign's deliveries in ``statuses`` with the mail each carries: (delivery id, mail)."""
    marks = ",".join("?" for _ in statuses)
    sql = _DUE.format(marks=marks)
    rows = conn.execute(sql, (campaign_id, *statuses)).fetchall()
    return [(int(row[0]), DueMail(*row[1:])) for row in rows]


def confirmed_in(conn: Connection, campaign_id: int) -> int:
    """How many of the people a reconfirm campaign asked have confirmed."""
    (count,) = conn.execute("SELECT count(*) FROM signups WHERE campaign_id = ? AND confirmed_at IS NOT NULL",
                            (campaign_id,)).fetchone()
    return int(count)
