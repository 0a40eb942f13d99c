"""Named, append-only schema migrations, recorded in the ``migrations`` table.

Never edit or reorder a migration once it has landed: add a new one at the end
of ``MIGRATIONS`` (``mNNN_what_it_does``). Every timestamp column is ISO-8601
UTC text (``*_at``); every status is a lowercase word checked in code.

The schema covers the whole mission so later features add tables rather than
rewrite them:

* ``contacts`` hold the person (address, names, custom attributes as JSON) and
  the person-level flags: restriction (art. 18) and objection to all direct
  marketing (art. 21). ``uid`` is random and is what tokens and Message-IDs
  carry, never the address or the integer id.
* ``memberships`` carry the per-list status and its consent evidence and
  the opt-out record: once unsubscribed, an import never flips it back.
* ``suppressions`` are keyed by HMAC of the normalised address; they
  outlive erasure, so an erased or unsubscribed person is never re-imported.
* ``campaigns`` / ``deliveries`` form the send ledger: one delivery per
  (campaign, contact). ``campaigns.archived_counts`` keeps the counts of
  delivery rows and events that purge or erasure removed, so campaign totals
  survive them.
* ``events`` are append-only facts (unsubscribed, bounced, complained ...).
* ``audit_log`` is the hash-chained log of every access to personal data.
* ``relays`` is what sending learnt about each SMTP relay (connection limit,
  rate, SMTPUTF8), so the next run starts where the last one ended.

One list serves both engines. A migration is written in SQLite's SQL; on
PostgreSQL its tables and indexes are created from the same text with the
column types PostgreSQL spells differently rewritten (:func:`postgresql_statements`:
``INTEGER PRIMARY KEY`` becomes an identity column, ``INTEGER`` ``BIGINT``,
``REAL`` ``DOUBLE PRECISION``, ``WITHOUT ROWID`` goes). A migration that
needs more than that — triggers, which PostgreSQL writes as functions — has
its PostgreSQL version in ``POSTGRESQL`` under the same name; a test checks
that both engines end with the same tables and columns.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .db import Connection

Migration = tuple[str, str | Callable[[Any], None]]

M001_INITIAL = """
CREATE TABLE lists (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE contacts (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL UNIQUE,
    first_name TEXT NOT NULL DEFAULT '',
    last_name TEXT NOT NULL DEFAULT '',
    attributes TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'active',
    restricted_at TEXT,
    no_marketing_at TEXT,
    source TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_activity_at TEXT NOT NULL
);
CREATE INDEX contacts_status ON contacts(status);

CREATE TABLE memberships (
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    consent_source TEXT,
    consent_method TEXT,
    consent_at TEXT,
    consent_ip TEXT,
    consent_text TEXT,
    confirmed_at TEXT,
    unsubscribed_at TEXT,
    unsubscribe_channel TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (contact_id, list_id)
) WITHOUT ROWID;
CREATE INDEX memberships_list_status ON memberships(list_id, status);

CREATE TABLE suppressions (
    hmac TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT '*',
    reason TEXT NOT NULL,
    channel TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (hmac, scope)
) WITHOUT ROWID;

CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    template TEXT NOT NULL,
    list_id INTEGER REFERENCES lists(id) ON DELETE SET NULL,
    list_name TEXT NOT NULL,
    subject TEXT,
    kind TEXT NOT NULL DEFAULT 'marketing',
    status TEXT NOT NULL DEFAULT 'created',
    archived_counts TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    frozen_at TEXT,
    finished_at TEXT
);

CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    status TEXT NOT NULL DEFAULT 'pending',
    message_id TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_reply TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    sent_at TEXT,
    UNIQUE (campaign_id, contact_id)
);
CREATE INDEX deliveries_campaign_status ON deliveries(campaign_id, status);
CREATE INDEX deliveries_message_id ON deliveries(message_id);
CREATE INDEX deliveries_contact ON deliveries(contact_id);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    contact_id INTEGER REFERENCES contacts(id) ON DELETE CASCADE,
    campaign_id INTEGER REFERENCES campaigns(id) ON DELETE SET NULL,
    kind TEXT NOT NULL,
    channel TEXT,
    scope TEXT,
    detail TEXT NOT NULL DEFAULT '{}',
    source_ref TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX events_contact ON events(contact_id);
CREATE INDEX events_campaign_kind ON events(campaign_id, kind);
CREATE INDEX events_source_ref ON events(source_ref);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    command TEXT NOT NULL,
    action TEXT NOT NULL,
    subject_hmac TEXT,
    detail TEXT NOT NULL DEFAULT '{}',
    reason TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_subject ON audit_log(subject_hmac);
"""

# Every message `bounces` has read (DSN, ARF, mailto, unmatched), by a hash of
# its Message-ID (or bytes), so reading the same mailbox again changes nothing.
M002_PROCESSED_MESSAGES = """
CREATE TABLE processed_messages (
    ref TEXT PRIMARY KEY,
    outcome TEXT NOT NULL,
    processed_at TEXT NOT NULL
) WITHOUT ROWID;
"""

# Every message of a send moves its delivery from pending to sending to sent,
# and each move rewrote two entries of this index (one page each, in every
# fsynced commit a connection waits for before its end-of-data dot). The few
# queries by campaign and status find a campaign's rows through
# UNIQUE (campaign_id, contact_id) and filter on status.
M003_DROP_DELIVERIES_STATUS_INDEX = """
DROP INDEX IF EXISTS deliveries_campaign_status;
"""

# Nearly every contact is 'active', and every contact an import creates wrote
# an entry to this index that no query looks for (a sixth of the contacts
# insert). Only the other statuses are looked up by status (purge: bounced),
# so only they are indexed; such a query names "status != 'active'" too, as
# SQLite uses a partial index only when the query repeats its condition.
M004_PARTIAL_CONTACTS_STATUS_INDEX = """
DROP INDEX IF EXISTS contacts_status;
CREATE INDEX contacts_status ON contacts(status) WHERE status != 'active';
"""

# What a send learnt about a relay, keyed by the relay and the login used
# (some relays count connections per mailbox): how many connections it took
# at once, the message rate it held us to, and whether it offered SMTPUTF8.
# NULL means "not known". No personal data: the login is the sender's own.
M007_RELAYS = """
CREATE TABLE relays (
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    login TEXT NOT NULL DEFAULT '',
    connections_limit INTEGER,
    rate_limit REAL,
    smtputf8 INTEGER,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (host, port, login)
) WITHOUT ROWID;
"""

# An unmatched message (a person's reply, a bounce of unknown mail) stays
# listed on every run of `bounces` until someone acknowledges it; its reason
# is kept so the listing can say why, without keeping the message.
M009_PROCESSED_MESSAGES_REASON = """
ALTER TABLE processed_messages ADD COLUMN reason TEXT;
ALTER TABLE processed_messages ADD COLUMN acknowledged_at TEXT;
"""
# What lets a running send honour opt-outs at once, and a second line of
# defence against two sends of one campaign:
#
# * ``optout_counter`` holds one number, raised by triggers in the same
#   transaction as every change that can end someone's mail: a membership
#   leaving ``subscribed`` or deleted, a contact no longer active, restricted,
#   objecting or deleted (erasure, purge), a new suppression. So no path —
#   unsubscribe, one-click, bounce, complaint, erasure, restriction, objection,
#   purge, an import's opt-outs — can forget it. It says that, not who: a send
#   that finds it higher than when it read a recipient checks that recipient
#   again before mailing them.
# * ``claims`` names the process that sends a campaign (owner, pid, host,
#   command, heartbeat), taken in the transaction that starts the run, so a
#   duplicate run is refused even if the lock file beside the database is lost.
M005_OPTOUT_COUNTER_AND_CLAIMS = """
CREATE TABLE optout_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n INTEGER NOT NULL
);
INSERT INTO optout_counter (id, n) VALUES (1, 0);

CREATE TRIGGER optout_membership_ended AFTER UPDATE OF status ON memberships
WHEN OLD.status = 'subscribed' AND NEW.status != 'subscribed'
BEGIN
    UPDATE optout_counter SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER optout_membership_deleted AFTER DELETE ON memberships
WHEN OLD.status = 'subscribed'
BEGIN
    UPDATE optout_counter SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER optout_contact_flagged AFTER UPDATE OF status, restricted_at, no_marketing_at ON contacts
WHEN (OLD.status = 'active' AND NEW.status != 'active')
  OR (OLD.restricted_at IS NULL AND NEW.restricted_at IS NOT NULL)
  OR (OLD.no_marketing_at IS NULL AND NEW.no_marketing_at IS NOT NULL)
BEGIN
    UPDATE optout_counter SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER optout_contact_deleted AFTER DELETE ON contacts
BEGIN
    UPDATE optout_counter SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER optout_suppressed AFTER INSERT ON suppressions
BEGIN
    UPDATE optout_counter SET n = n + 1 WHERE id = 1;
END;

CREATE TABLE claims (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    command TEXT NOT NULL,
    since TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
) WITHOUT ROWID;
"""


def m005_optout_counter_and_claims(conn: Connection) -> None:
    """The tables and triggers above, and archived totals made final."""
    for statement in statements(M005_OPTOUT_COUNTER_AND_CLAIMS):
        conn.execute(statement)
    _m005_final_archived_counts(conn)


def _m005_final_archived_counts(conn: Any) -> None:
    """A delivery row deleted (erasure, purge) while still pending or deferred
    was archived as ``pending``/``deferred``: a campaign that nothing can
    send any more, stuck in ``sending`` for good. Such rows are skips, and a
    campaign with nothing else left to send is complete.
    """
    import json

    from ..clock import now_iso

    now = now_iso()
    for campaign_id, text in conn.execute("SELECT id, archived_counts FROM campaigns").fetchall():
        counts = json.loads(text or "{}")
        stuck = int(counts.pop("pending", 0)) + int(counts.pop("deferred", 0))
        if stuck:
            counts["skipped"] = int(counts.get("skipped", 0)) + stuck
            conn.execute("UPDATE campaigns SET archived_counts = ? WHERE id = ?",
                         (json.dumps(counts, sort_keys=True), campaign_id))
            conn.execute(
                "UPDATE campaigns SET status = 'sent', finished_at = COALESCE(finished_at, ?)"
                " WHERE id = ? AND status = 'sending' AND NOT EXISTS (SELECT 1 FROM deliveries"
                " WHERE campaign_id = ? AND status IN ('pending', 'deferred', 'sending'))",
                (now, campaign_id, campaign_id),
            )


def statements(script: str) -> Iterator[str]:
    """The SQL statements of a script, one by one (trigger bodies kept whole)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()


# A campaign's report counted its deliveries by status, reading every row of
# the campaign (a table lookup each, as status is not indexed): seconds for a
# campaign of a million, and `report` did it for every campaign. These counts
# are kept by triggers on every insert, status change and delete, whatever
# the code path (send, purge, erasure, a campaign deleted with its rows); a
# send pays two updates of one small hot page per status change. Existing
# rows are counted once, here.
M008_DELIVERY_COUNTS = """
CREATE TABLE delivery_counts (
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, status)
) WITHOUT ROWID;
INSERT INTO delivery_counts (campaign_id, status, n)
    SELECT campaign_id, status, count(*) FROM deliveries GROUP BY campaign_id, status;
CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries BEGIN
    INSERT INTO delivery_counts (campaign_id, status, n) VALUES (NEW.campaign_id, NEW.status, 1)
        ON CONFLICT (campaign_id, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER deliveries_count_update AFTER UPDATE OF status, campaign_id ON deliveries
    WHEN OLD.status IS NOT NEW.status OR OLD.campaign_id IS NOT NEW.campaign_id BEGIN
    UPDATE delivery_counts SET n = n - 1 WHERE campaign_id = OLD.campaign_id AND status = OLD.status;
    INSERT INTO delivery_counts (campaign_id, status, n) VALUES (NEW.campaign_id, NEW.status, 1)
        ON CONFLICT (campaign_id, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER deliveries_count_delete AFTER DELETE ON deliveries BEGIN
    UPDATE delivery_counts SET n = n - 1 WHERE campaign_id = OLD.campaign_id AND status = OLD.status;
END;
"""


# What `mailcli campaigns` shows of a campaign, kept on its row:
# * ``segment`` and ``segment_where``: the part of the list it was sent to
#   (the name of a segment of mailcli.toml, and the expression as it was when
#   the campaign started, which --include-new applies again);
# * ``subject_line``: the subject as its messages carry it, before any
#   personalisation (the --subject given, or the template's subject.txt);
# * ``not_before_at``: the moment before which no run sends (scheduling);
# * ``first_sent_at`` / ``last_sent_at``: when its first and last runs that
#   sent something started and ended; they outlive the per-message records
#   that retention removes, so existing campaigns take them from those now.
M015_CAMPAIGN_DETAILS = """
ALTER TABLE campaigns ADD COLUMN segment TEXT;
ALTER TABLE campaigns ADD COLUMN segment_where TEXT;
ALTER TABLE campaigns ADD COLUMN subject_line TEXT;
ALTER TABLE campaigns ADD COLUMN not_before_at TEXT;
ALTER TABLE campaigns ADD COLUMN first_sent_at TEXT;
ALTER TABLE campaigns ADD COLUMN last_sent_at TEXT;
UPDATE campaigns SET
    first_sent_at = (SELECT min(sent_at) FROM deliveries d WHERE d.campaign_id = campaigns.id),
    last_sent_at = (SELECT max(sent_at) FROM deliveries d WHERE d.campaign_id = campaigns.id);
"""

# The lawful basis of every membership: ``consent`` (with its evidence in the
# consent_* columns), ``customer`` (the soft opt-in for existing customers,
# Telecommunicatiewet 11.7) or ``none``. A send mails only members with a
# basis. Memberships made before the basis was recorded get ``consent`` only
# where the file they came from showed evidence of it: an opt-in time from
# the file (a consent time other than the moment of the import) or an IP
# address. Every other one gets ``none``: nothing shows that the person
# agreed, and the sender states the basis (an import with ``--basis``) or
# asks them (``reconfirm``). The partial index finds the members without a
# basis of a list without reading the others.
M013_MEMBERSHIP_BASIS = """
ALTER TABLE memberships ADD COLUMN basis TEXT NOT NULL DEFAULT 'none';
UPDATE memberships SET basis = 'consent'
    WHERE consent_ip IS NOT NULL OR (consent_at IS NOT NULL AND consent_at != created_at);
CREATE INDEX memberships_no_basis ON memberships(list_id) WHERE basis = 'none' AND status = 'subscribed';
"""


# What keeps the privacy promises that reach beyond one table:
#
# * ``project_facts``: what the database knows about its project, about no
#   person: the keyed fingerprint of the HMAC secret it is used with (a
#   second secret would silently stop matching the suppression list) and the
#   state of the audit chain (the MAC the oldest kept entry follows, once
#   retention has cut older ones).
# * ``written_files``: every file mailcli wrote that holds personal data — an
#   access-request export, an import's rejects file, a rendered preview — by
#   path, kind, the keyed hash of the person it is about (none for a file
#   about several people) and whether it lies in the project's folders, so
#   that erasure and retention reach it.
# * ``requests``: the register of data-subject requests: which right, when
#   received, when due (a month; extended once by up to two more), when and
#   by what closed. A person is named by the keyed hash of the address only.
M011_PRIVACY_RECORDS = """
CREATE TABLE project_facts (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE written_files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject_hmac TEXT,
    managed INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX written_files_subject ON written_files(subject_hmac);

CREATE TABLE requests (
    id INTEGER PRIMARY KEY,
    subject_hmac TEXT NOT NULL,
    kind TEXT NOT NULL,
    received_at TEXT NOT NULL,
    due_at TEXT NOT NULL,
    extended_months INTEGER NOT NULL DEFAULT 0,
    extension_reason TEXT,
    closed_at TEXT,
    closed_by TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX requests_subject ON requests(subject_hmac);
"""


def m011_privacy_records(conn: sqlite3.Connection) -> None:
    """The tables above. The entries an audit log already has were chained by
    plain SHA-256: the fact ``audit_chain`` says up to which entry, and every
    later entry is chained under the secret's key (``mailcli.audit``)."""

    for statement in statements(M011_PRIVACY_RECORDS):
        conn.execute(statement)
    _m011_audit_chain_fact(conn)


def postgres_m011_privacy_records(conn: Any) -> None:
    """m011 on PostgreSQL: the same tables in its column types, the same fact."""
    for statement in postgresql_statements(M011_PRIVACY_RECORDS):
        conn.execute(statement)
    _m011_audit_chain_fact(conn)


def _m011_audit_chain_fact(conn: Any) -> None:
    from ..clock import now_iso

    last = conn.execute("SELECT max(id) FROM audit_log").fetchone()[0]
    if last is not None:
        conn.execute("INSERT INTO project_facts (name, value, updated_at) VALUES ('audit_chain', ?, ?)",
                     (f"sha256:{int(last)}", now_iso()))


# Rectification that lasts: the fields a person had corrected (``contacts
# set``), each with the time, as a JSON object; NULL for the many contacts
# never corrected. An import does not overwrite them (unless told to), and
# the partial index lets it skip the check when no contact has any.
M012_RECTIFIED_FIELDS = """
ALTER TABLE contacts ADD COLUMN rectified TEXT;
CREATE INDEX contacts_rectified ON contacts(email_key) WHERE rectified IS NOT NULL;
"""


# Sign-ups through the form of ``mailcli serve`` and their double opt-in.
#
# * ``consent_texts`` holds each wording a person was shown next to the
#   consent checkbox, once, under its SHA-256 (memberships.consent_text and
#   signups.consent_text name the hash): what exactly someone agreed to can
#   be shown years later, and changing the wording makes a new version.
# * ``signups`` is one request to join a list: its evidence (time, the /24 or
#   /48 network, the form, the wording's hash, the language), the
#   confirmation mail's state (pending, sent, failed; attempts and the next
#   try, so ``serve`` retries it) and, once the person confirms, when and from
#   which network. ``nonce`` is what the confirmation link's token carries:
#   random, so a token reveals nothing, and the row can be confirmed once.
#   ``campaign_id`` names the ``reconfirm`` run that asked, if any.
M014_SIGNUPS = """
CREATE TABLE consent_texts (
    hash TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    language TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE signups (
    id INTEGER PRIMARY KEY,
    nonce TEXT NOT NULL UNIQUE,
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
    form TEXT NOT NULL,
    language TEXT NOT NULL,
    consent_text TEXT REFERENCES consent_texts(hash),
    ip TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    mail_status TEXT NOT NULL DEFAULT 'pending',
    mail_attempts INTEGER NOT NULL DEFAULT 0,
    mail_next_at TEXT,
    mail_error TEXT,
    mailed_at TEXT,
    confirmed_at TEXT,
    confirmed_ip TEXT,
    campaign_id INTEGER REFERENCES campaigns(id) ON DELETE SET NULL
);
CREATE INDEX signups_contact ON signups(contact_id, list_id);
CREATE INDEX signups_mail ON signups(mail_next_at) WHERE mail_status = 'pending';
"""


# Service messages (an outage, a change to the terms) reach people who left
# marketing; the reason given for one is kept with the campaign, so `report`
# and the campaign list can show why it went to them.
#
# Click counts: each tracked link of a campaign has a number (the click
# token names it, so serve redirects only to a URL stored here, never to one
# a request brings) and a count that holds no person. Who clicked is kept
# only when [tracking] per_contact is on: one row per click, with the time
# and the client's network (/24 or /48), going with the contact on erasure.
M016_SERVICE_AND_CLICKS = """
ALTER TABLE campaigns ADD COLUMN service_reason TEXT;
CREATE TABLE campaign_links (
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    link_no INTEGER NOT NULL,
    url TEXT NOT NULL,
    clicks INTEGER NOT NULL DEFAULT 0,
    first_click_at TEXT,
    last_click_at TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (campaign_id, link_no),
    UNIQUE (campaign_id, url)
) WITHOUT ROWID;
CREATE TABLE clicks (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL,
    link_no INTEGER NOT NULL,
    contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    clicked_at TEXT NOT NULL,
    ip_network TEXT,
    FOREIGN KEY (campaign_id, link_no) REFERENCES campaign_links(campaign_id, link_no) ON DELETE CASCADE
);
CREATE INDEX clicks_contact ON clicks(contact_id);
CREATE INDEX clicks_link ON clicks(campaign_id, link_no);
CREATE INDEX clicks_time ON clicks(clicked_at);
"""


# Several senders may work one campaign at once on a PostgreSQL server. Each
# claims batches of deliveries by writing its lease on them: who (a number
# unique to that run, ``send_lease_owners`` on PostgreSQL) and until when
# (seconds since the epoch by the server's clock, so the machines' clocks
# need not agree). On SQLite, where one send per campaign runs at a time,
# the columns stay empty.
M017_SEND_LEASES = """
ALTER TABLE deliveries ADD COLUMN lease_owner INTEGER;
ALTER TABLE deliveries ADD COLUMN lease_until REAL;
"""


# A remembered rate ages (it doubles every hour, and is forgotten after a
# day) from when a send found it, not from when anything else about the
# relay (its connection limit, SMTPUTF8) was last recorded in the row. A
# rate recorded before this column existed takes the row's updated_at, the
# nearest time known.
M018_RELAY_RATE_FOUND_AT = """
ALTER TABLE relays ADD COLUMN rate_found_at TEXT;
UPDATE relays SET rate_found_at = updated_at WHERE rate_limit IS NOT NULL;
"""


# A campaign sent over several runs (interrupted, --limit, a relay's quota)
# may be resumed after its template was edited: the rest of the audience
# would get another text than the first recipients, and the run must say so.
# ``template_version`` is the version of the template (a short hex digest of
# the files it reads) that the campaign's first messages were sent from;
# ``template_version_sent`` how many were sent from it before the first run
# that sent another version. A campaign started before these columns existed
# keeps both empty: which version its messages came from is not known.
M019_CAMPAIGN_TEMPLATE_VERSION = """
ALTER TABLE campaigns ADD COLUMN template_version TEXT;
ALTER TABLE campaigns ADD COLUMN template_version_sent INTEGER;
"""


MIGRATIONS: list[Migration] = [
    ("m001_initial_schema", M001_INITIAL),
    ("m002_processed_messages", M002_PROCESSED_MESSAGES),
    ("m003_drop_deliveries_status_index", M003_DROP_DELIVERIES_STATUS_INDEX),
    ("m004_partial_contacts_status_index", M004_PARTIAL_CONTACTS_STATUS_INDEX),
    ("m007_relays", M007_RELAYS),
    ("m009_processed_messages_reason", M009_PROCESSED_MESSAGES_REASON),
    ("m005_optout_counter_and_claims", m005_optout_counter_and_claims),
    ("m008_delivery_counts", M008_DELIVERY_COUNTS),
    ("m015_campaign_details", M015_CAMPAIGN_DETAILS),
    ("m011_privacy_records", m011_privacy_records),
    ("m012_rectified_fields", M012_RECTIFIED_FIELDS),
    ("m016_service_and_clicks", M016_SERVICE_AND_CLICKS),
    ("m013_membership_basis", M013_MEMBERSHIP_BASIS),
    ("m014_signups", M014_SIGNUPS),
    ("m017_send_leases", M017_SEND_LEASES),
    ("m018_relay_rate_found_at", M018_RELAY_RATE_FOUND_AT),
    ("m019_campaign_template_version", M019_CAMPAIGN_TEMPLATE_VERSION),
]


# PostgreSQL: the same tables and the same counts, kept by statement-level
# triggers that read the rows a statement changed from its transition
# tables. Row-level triggers, as on SQLite, would rewrite one counter row
# once per row changed: in one transaction (a freeze of 100,000 deliveries,
# a purge of thousands of contacts) every rewrite leaves a row version the
# next one must step over, and the statement slows down quadratically.
_PG_OPTOUT = """CREATE FUNCTION mailcli_optout_{name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS ({condition}) THEN
        UPDATE optout_counter SET n = n + 1 WHERE id = 1;
    END IF;
    RETURN NULL;
END $$"""
_PG_OPTOUT_TRIGGERS = {
    # name: (table, event and transition tables, condition)
    "membership_ended": (
        "memberships", "UPDATE REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "SELECT 1 FROM old_rows o JOIN new_rows n ON n.contact_id = o.contact_id AND n.list_id = o.list_id"
        " WHERE o.status = 'subscribed' AND n.status != 'subscribed'"),
    "membership_deleted": (
        "memberships", "DELETE REFERENCING OLD TABLE AS old_rows",
        "SELECT 1 FROM old_rows WHERE status = 'subscribed'"),
    "contact_flagged": (
        "contacts", "UPDATE REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "SELECT 1 FROM old_rows o JOIN new_rows n ON n.id = o.id"
        " WHERE (o.status = 'active' AND n.status != 'active')"
        " OR (o.restricted_at IS NULL AND n.restricted_at IS NOT NULL)"
        " OR (o.no_marketing_at IS NULL AND n.no_marketing_at IS NOT NULL)"),
    "contact_deleted": ("contacts", "DELETE REFERENCING OLD TABLE AS old_rows", "SELECT 1 FROM old_rows"),
    "suppressed": ("suppressions", "INSERT REFERENCING NEW TABLE AS new_rows", "SELECT 1 FROM new_rows"),
}


def postgres_m005_optout_counter_and_claims(conn: Any) -> None:
    """m005 on PostgreSQL: the tables, the counter's triggers per statement, the same final counts."""
    script = M005_OPTOUT_COUNTER_AND_CLAIMS.split("CREATE TRIGGER", 1)[0]
    claims = M005_OPTOUT_COUNTER_AND_CLAIMS[M005_OPTOUT_COUNTER_AND_CLAIMS.index("CREATE TABLE claims"):]
    for statement in [*postgresql_statements(script), *postgresql_statements(claims)]:
        conn.execute(statement)
    for name, (table, event, condition) in _PG_OPTOUT_TRIGGERS.items():
        conn.execute(_PG_OPTOUT.format(name=name, condition=condition))
        action, _, referencing = event.partition(" ")
        conn.execute(f"CREATE TRIGGER optout_{name} AFTER {action} ON {table} {referencing} FOR EACH STATEMENT"
                     f" EXECUTE FUNCTION mailcli_optout_{name}()")
    _m005_final_archived_counts(conn)


_PG_DELIVERY_COUNT = """CREATE FUNCTION mailcli_count_deliveries_{op}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
{body}
    RETURN NULL;
END $$"""
_PG_COUNT_OUT = """    UPDATE delivery_counts d SET n = d.n - o.k
    FROM (SELECT campaign_id, status, count(*) AS k FROM old_rows GROUP BY campaign_id, status) o
    WHERE d.campaign_id = o.campaign_id AND d.status = o.status;"""
_PG_COUNT_IN = """    INSERT INTO delivery_counts AS d (campaign_id, status, n)
    SELECT campaign_id, status, count(*) FROM new_rows GROUP BY campaign_id, status
    ON CONFLICT (campaign_id, status) DO UPDATE SET n = d.n + excluded.n;"""


def postgres_m008_delivery_counts(conn: Any) -> None:
    """m008 on PostgreSQL: the counts table filled once, then kept per statement.

    An UPDATE trigger with transition tables cannot name columns: every
    update of deliveries takes its rows out of their old counts and into
    their new ones, which nets to nothing where the status stayed.
    """
    script = M008_DELIVERY_COUNTS.split("CREATE TRIGGER", 1)[0]
    for statement in postgresql_statements(script):
        conn.execute(statement)
    for op, body, event in (
        ("insert", _PG_COUNT_IN, "INSERT REFERENCING NEW TABLE AS new_rows"),
        ("update", _PG_COUNT_OUT + "\n" + _PG_COUNT_IN, "UPDATE REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("delete", _PG_COUNT_OUT, "DELETE REFERENCING OLD TABLE AS old_rows"),
    ):
        conn.execute(_PG_DELIVERY_COUNT.format(op=op, body=body))
        action, _, referencing = event.partition(" ")
        conn.execute(f"CREATE TRIGGER deliveries_count_{op} AFTER {action} ON deliveries {referencing}"
                     f" FOR EACH STATEMENT EXECUTE FUNCTION mailcli_count_deliveries_{op}()")


# The delivery counts move only the rows whose status or campaign changed: a
# sender's claim and lease renewal rewrite many rows without changing their
# status, and must not lock the campaign's counts (which every other
# sender's ledger writes too) for nothing.
_PG_COUNT_CHANGED = """    UPDATE delivery_counts d SET n = d.n - o.k
    FROM (SELECT o.campaign_id, o.status, count(*) AS k FROM old_rows o JOIN new_rows n ON n.id = o.id
          WHERE n.status IS DISTINCT FROM o.status OR n.campaign_id != o.campaign_id
          GROUP BY o.campaign_id, o.status) o
    WHERE d.campaign_id = o.campaign_id AND d.status = o.status;
    INSERT INTO delivery_counts AS d (campaign_id, status, n)
    SELECT n.campaign_id, n.status, count(*) FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.status IS DISTINCT FROM o.status OR n.campaign_id != o.campaign_id
    GROUP BY n.campaign_id, n.status
    ON CONFLICT (campaign_id, status) DO UPDATE SET n = d.n + excluded.n;"""


def postgres_m017_send_leases(conn: Any) -> None:
    """m017 on PostgreSQL: the lease columns; the numbers of the runs that
    take leases; an index of each campaign's unfinished deliveries, which is
    what claims, renewals and the checks of other senders read; and the
    count trigger that leaves the counts alone when no status changed."""
    for statement in postgresql_statements(M017_SEND_LEASES):
        conn.execute(statement)
    conn.execute("CREATE SEQUENCE send_lease_owners AS integer MINVALUE 1 CYCLE")
    conn.execute("CREATE INDEX deliveries_unfinished ON deliveries (campaign_id, id)"
                 " WHERE status IN ('pending', 'deferred', 'sending', 'uncertain')")
    conn.execute("CREATE OR REPLACE" + _PG_DELIVERY_COUNT.format(op="update", body=_PG_COUNT_CHANGED)[len("CREATE"):])


# The PostgreSQL version of each migration whose SQLite text PostgreSQL cannot
# run even with the column types rewritten. Every other migration runs its
# SQLite text through postgresql_statements.
POSTGRESQL: dict[str, str | Callable[[Any], None]] = {
    "m005_optout_counter_and_claims": postgres_m005_optout_counter_and_claims,
    "m008_delivery_counts": postgres_m008_delivery_counts,
    "m011_privacy_records": postgres_m011_privacy_records,
    "m017_send_leases": postgres_m017_send_leases,
}

_PG_TYPES = [
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\b", re.I), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
    (re.compile(r"\)\s*WITHOUT\s+ROWID\b", re.I), ")"),
]


def postgresql_statements(script: str) -> Iterator[str]:
    """The statements of a migration written for SQLite, as PostgreSQL spells their column types.

    Only DDL that both engines share otherwise (tables, indexes, ``ALTER
    TABLE ... ADD COLUMN``, plain ``INSERT``/``UPDATE``) comes through
    unchanged in meaning; a migration with triggers has its own version in
    ``POSTGRESQL``.
    """
    for statement in statements(script):
        if re.match(r"\s*CREATE\s+TRIGGER\b", statement, re.I):
            raise ValueError("a trigger needs a PostgreSQL version of its migration in POSTGRESQL")
        if re.match(r"\s*(CREATE|ALTER)\s+TABLE\b", statement, re.I):
            for pattern, replacement in _PG_TYPES:
                statement = pattern.sub(replacement, statement)
        yield statement
