"""The one registry of tables that hold personal data.

Export (art. 15/20) and erasure (art. 17) walk this registry instead of
naming tables in several places, so a table added later is either listed
here, with how a person's rows are found, or listed in ``EXCLUDED_TABLES``
with the reason it holds no personal data. ``uncovered_tables`` inspects the
live schema and names any table with a personal-data column that is in
neither; a test fails on it and ``export`` warns about it, so a new table can
never silently escape an export or an erasure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store.schema import column_names, table_names

if TYPE_CHECKING:
    from ..store.db import Connection

# Column names that mark a table as holding data about a person.
PERSONAL_COLUMNS = frozenset({
    "contact_id", "contact_uid", "email", "email_key", "address", "recipient", "subject_hmac", "hmac",
    "first_name", "last_name",
})


@dataclass(frozen=True, slots=True)
class PersonalTable:
    """How one table's rows about a person are found and what erasure does.

    ``key`` is the column that identifies the person: ``id``/``contact_id``
    (the contact's integer id) or ``hmac``/``subject_hmac`` (the keyed hash
    of the address). ``on_erase`` is ``delete`` (rows go) or ``keep`` with
    ``keep_reason`` (rows hold only the keyed hash and must outlive the
    person: the suppression list, the audit log).
    """

    table: str
    key: str
    on_erase: str
    description: str
    keep_reason: str = ""

    @property
    def by_hmac(self) -> bool:
        return self.key in ("hmac", "subject_hmac")


# Order matters for erasure: children before the contact row itself.
PERSONAL_DATA_TABLES: dict[str, PersonalTable] = {
    t.table: t
    for t in (
        PersonalTable("clicks", "contact_id", "delete",
                      "each click on a link of a message, with time and network (only with [tracking] per_contact)"),
        PersonalTable("events", "contact_id", "delete",
                      "what happened: subscriptions, unsubscribes, bounces, complaints"),
        PersonalTable("deliveries", "contact_id", "delete",
                      "each message sent: campaign, time, Message-ID, result"),
        PersonalTable("signups", "contact_id", "delete",
                      "each sign-up through the form and its confirmation: time, network, form, wording shown"),
        PersonalTable("memberships", "contact_id", "delete",
                      "list memberships with consent evidence and opt-outs"),
        PersonalTable("contacts", "id", "delete",
                      "the address, names and custom attributes; restriction and objection"),
        PersonalTable("suppressions", "hmac", "keep",
                      "the keyed hash of the address that stops mail and re-import",
                      keep_reason="holds only the keyed hash; it is what keeps an erased or "
                                  "opted-out person from being mailed or imported again (art. 17, 21)"),
        PersonalTable("audit_log", "subject_hmac", "keep",
                      "who accessed or changed this person's data, and why",
                      keep_reason="holds only the keyed hash; accountability for the erasure "
                                  "itself (art. 5(2)); cut by the audit_log retention period"),
        PersonalTable("written_files", "subject_hmac", "delete",
                      "files mailcli wrote about the person: access exports, rendered previews"),
        PersonalTable("requests", "subject_hmac", "keep",
                      "the person's requests (access, erasure, ...): when received, due and handled",
                      keep_reason="holds only the keyed hash and dates, the free text of an extension "
                                  "removed; the record that each request was handled in time (art. 5(2), 12(3))"),
    )
}

# Tables that hold no personal data (or only mailcli's own bookkeeping).
EXCLUDED_TABLES: dict[str, str] = {
    "lists": "list names and creation times only",
    "campaigns": "campaign name, template, subject and totals; no per-person data",
    "migrations": "schema bookkeeping",
    "consent_texts": "the wordings of the consent checkbox, by hash; the same for everyone who saw them",
    "processed_messages": "a hash of each bounce/complaint message already read, its outcome and, for one nobody could match, the reason in words and when it was acknowledged; no address",
    "relays": "what sending learnt about each SMTP relay (connection limit, rate, SMTPUTF8); the sender's own login",
    "optout_counter": "one number, raised by every opt-out or erasure, which tells a running send to check its "
                      "recipients again; not who",
    "claims": "which process sends which campaign (pid, host, command); no personal data",
    "delivery_counts": "how many deliveries of each campaign have each status; not whose",
    "campaign_links": "the tracked links of each campaign and how often each was clicked; not by whom",
    "project_facts": "the keyed fingerprint of the project's secret and the state of the audit chain; about no one",
    "_litestream_seq": "Litestream's own counter while it replicates the database; no personal data",
    "_litestream_lock": "Litestream's lock table while it replicates the database; always empty",
}


def personal_columns(conn: Connection, table: str) -> set[str]:
    return column_names(conn, table) & PERSONAL_COLUMNS


def live_tables(conn: Connection) -> list[str]:
    return table_names(conn)


def unclassified_tables(conn: Connection) -> list[str]:
    """Tables in neither list (the completeness test wants each one decided)."""
    return [t for t in live_tables(conn) if t not in PERSONAL_DATA_TABLES and t not in EXCLUDED_TABLES]


def uncovered_tables(conn: Connection) -> list[str]:
    """Tables with a personal-data column that the registry does not cover."""
    missing = []
    for table in live_tables(conn):
        if table in PERSONAL_DATA_TABLES or table in EXCLUDED_TABLES:
            continue
        if personal_columns(conn, table):
            missing.append(table)
    return missing
