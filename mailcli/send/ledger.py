"""The campaign ledger: campaigns, their frozen audience and one delivery row
per (campaign, contact), in SQL with the reason for each query.

A delivery moves ``pending → sending → sent | failed | deferred | uncertain``
(plus ``skipped`` when a contact unsubscribed, was suppressed or restricted
after the audience was frozen, B12). The rules that make "every person exactly
once" hold:

* The audience is frozen into ``deliveries`` by the first send, inside one
  transaction, and ``UNIQUE (campaign_id, contact_id)`` makes a second freeze
  (``--include-new``) add only newcomers.
* ``sending`` is written — and committed — right before the end-of-data dot
  (see ``engine.LedgerWriter``). A row found in ``sending`` when a run starts
  belongs to a process that died in that window; it becomes ``uncertain`` and
  is not resent unless asked (``--resend-uncertain``).
* Everything else that is not ``sent``/``failed``/``skipped`` is simply sent
  again by a rerun.

Totals survive purge and erasure: code that deletes delivery rows or events
must first call ``mailcli.store.archive.archive_deliveries`` /
``archive_events`` in the same transaction (re-exported here); ``report``
adds ``campaigns.archived_counts`` to the live counts.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mailcli import clock
from mailcli.errors import NotFoundError, UsageError
from mailcli.store.archive import REPORT_KEYS, archive_deliveries, archive_events, archived_counts
from mailcli.store.audience import SENDABLE_SQL, list_not_found
from mailcli.store.deliveries import KILLED_AFTER_DOT, delivery_status_counts, uncertain_causes
from mailcli.store.optouts import SKIP_REASON_SQL
from mailcli.store.relays import smtputf8_marked
from mailcli.store.suppressions import suppressed_hmacs
from mailcli.tokens import address_hmac, message_id, new_uid

__all__ = [
    "REPORT_KEYS", "Campaign", "Recipient", "archive_deliveries", "archive_events", "campaign_counts",
    "create_campaign", "freeze_audience", "get_campaign", "iter_audience", "iter_sendable", "list_campaigns",
    "recover_interrupted", "sendable_count", "failures", "uncertain_causes",
]

# Delivery statuses a run sends (``uncertain`` only with --resend-uncertain).
SENDABLE = ("pending", "deferred")
# How the skip reason of an address the relay cannot take begins.
SKIP_SMTPUTF8 = "the address needs SMTPUTF8"


@dataclass(frozen=True, slots=True)
class Campaign:
    id: int
    uid: str
    name: str
    template: str
    list_id: int | None
    list_name: str
    subject: str | None
    kind: str
    status: str
    created_at: str
    frozen_at: str | None
    finished_at: str | None


@dataclass(frozen=True, slots=True)
class Recipient:
    """A delivery joined with what is needed to render and re-check it."""

    delivery_id: int
    contact_id: int
    contact_uid: str
    email: str
    email_key: str
    first_name: str
    last_name: str
    attributes: str  # JSON text, parsed only when rendering
    message_id: str
    skip_reason: str | None  # set when the send-time check (B12) says no

    def as_tuple(self) -> tuple[Any, ...]:
        """The fields in order (cheap to pickle to a render worker)."""
        return (self.delivery_id, self.contact_id, self.contact_uid, self.email, self.email_key,
                self.first_name, self.last_name, self.attributes, self.message_id, self.skip_reason)


_CAMPAIGN_COLUMNS = (
    "id, uid, name, template, list_id, list_name, subject, kind, status, created_at, frozen_at, finished_at"
)


def get_campaign(conn: sqlite3.Connection, name: str) -> Campaign | None:
    row = conn.execute(f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE name = ?", (name,)).fetchone()  # noqa: S608 - fixed columns
    return Campaign(*row) if row else None


def list_campaigns(conn: sqlite3.Connection) -> list[Campaign]:
    rows = conn.execute(f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns ORDER BY created_at, id").fetchall()  # noqa: S608
    return [Campaign(*row) for row in rows]


def list_id_of(conn: sqlite3.Connection, list_name: str) -> int:
    row = conn.execute("SELECT id FROM lists WHERE name = ?", (list_name,)).fetchone()
    if row is None:
        raise list_not_found(conn, list_name)
    return int(row[0])


def create_campaign(
    conn: sqlite3.Connection, *, name: str, template: str, list_name: str, subject: str | None
) -> Campaign:
    """Insert a campaign row (not yet frozen)."""
    if not name.strip() or any(ord(c) < 32 for c in name):
        raise UsageError(f"Invalid campaign name {name!r}")
    list_id = list_id_of(conn, list_name)
    # Another process (another configuration naming this database) may have
    # created it a moment ago: then that row is the campaign.
    conn.execute(
        "INSERT INTO campaigns (uid, name, template, list_id, list_name, subject, kind, status, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, 'marketing', 'created', ?) ON CONFLICT (name) DO NOTHING",
        (new_uid(), name, template, list_id, list_name, subject, clock.now_iso()),
    )
    campaign = get_campaign(conn, name)
    assert campaign is not None
    return campaign


# The audience: the list's subscribed members as store.audience defines them
# (contact active, not restricted (art. 18), no objection to marketing (art.
# 21)), the count `lists` shows. Suppression is checked in Python because it
# needs the HMAC of the address. Read a page at a time, in the order of the
# membership index (list, status, contact), so memory stays flat however
# large the list and each page starts where the last one ended.
_AUDIENCE_SQL = f"""
SELECT c.id, c.uid, c.email_key
FROM memberships m JOIN contacts c ON c.id = m.contact_id
WHERE m.list_id = ? AND {SENDABLE_SQL} AND m.contact_id > ?
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.campaign_id = ? AND d.contact_id = c.id)
ORDER BY m.contact_id
LIMIT ?
"""  # noqa: S608 - fixed SQL
AUDIENCE_PAGE = 10_000


def iter_audience(conn: sqlite3.Connection, campaign_id: int, list_id: int, list_name: str, secret: bytes,
                  *, page: int | None = None) -> Iterator[list[tuple[int, str]]]:
    """Pages of (contact id, uid) of members not yet in the campaign, minus suppressed.

    Each page is read in full before it is handed out, so the caller may
    write deliveries for it before asking for the next.
    """
    suppressed = suppressed_hmacs(conn, list_name)
    after = 0
    while True:
        rows = conn.execute(_AUDIENCE_SQL, (list_id, after, campaign_id, page or AUDIENCE_PAGE)).fetchall()
        if not rows:
            return
        after = rows[-1][0]
        yield [(contact_id, uid) for contact_id, uid, email_key in rows
               if not (suppressed and address_hmac(secret, email_key) in suppressed)]


def freeze_audience(conn: sqlite3.Connection, campaign: Campaign, secret: bytes, domain: str, *,
                    keep: int | None = None) -> int:
    """Insert a pending delivery for every audience member not yet in it.

    Run inside a transaction. Returns the number of members added. The
    Message-ID is derived from campaign and contact, so it is the same in
    every run and a bounce can be traced back to this delivery (C10).
    ``keep`` writes only the first ``keep`` of them and counts the rest, for
    a transaction that is rolled back (a dry run, the confirmation's plan).
    """
    if campaign.list_id is None:
        raise NotFoundError(f"The list of campaign {campaign.name!r} ({campaign.list_name}) no longer exists")
    now = clock.now_iso()
    added = 0
    for members in iter_audience(conn, campaign.id, campaign.list_id, campaign.list_name, secret):
        wanted = members if keep is None else members[: max(0, keep - added)]
        added += len(members)
        if wanted:
            conn.executemany(
                "INSERT OR IGNORE INTO deliveries (campaign_id, contact_id, status, message_id, created_at, updated_at)"
                " VALUES (?, ?, 'pending', ?, ?, ?)",
                [(campaign.id, contact_id, message_id(campaign.uid, uid, domain), now, now)
                 for contact_id, uid in wanted],
            )
    conn.execute(
        "UPDATE campaigns SET frozen_at = COALESCE(frozen_at, ?), status = CASE WHEN status = 'created' THEN 'sending' ELSE status END"
        " WHERE id = ?",
        (now, campaign.id),
    )
    return added


def recover_interrupted(conn: sqlite3.Connection, campaign_id: int) -> int:
    """A run starts: rows left in 'sending' by a dead process become 'uncertain'.

    Only a process killed between writing the end-of-data dot and recording
    the reply leaves such a row (RFC 1047), so the server may have the message.
    (The reply of the interrupted attempt, if any, was an earlier one's.)
    """
    cursor = conn.execute(
        "UPDATE deliveries SET status = 'uncertain', updated_at = ?, last_reply = ?"
        " WHERE campaign_id = ? AND status = 'sending'",
        (clock.now_iso(), KILLED_AFTER_DOT, campaign_id),
    )
    return cursor.rowcount


def sendable_statuses(resend_uncertain: bool) -> tuple[str, ...]:
    return (*SENDABLE, "uncertain") if resend_uncertain else SENDABLE


def sendable_count(conn: sqlite3.Connection, campaign_id: int, *, resend_uncertain: bool = False) -> int:
    counts = delivery_status_counts(conn, campaign_id)
    return sum(counts.get(status, 0) for status in sendable_statuses(resend_uncertain))


# One page of deliveries to send, joined with the live state of the contact
# (send-time check, B12): the membership must still be 'subscribed', the
# contact active, unrestricted and without a marketing objection. Keyset
# pagination walks the primary key from the last id (``ids`` is "d.id > ?"):
# the unary "+" keeps SQLite off the campaign's indexes, which would read and
# sort every remaining row for each page (quadratic: 100,000 recipients ran at
# half speed). The preflight reads chosen rows through the same query.
_PAGE_SQL = """
SELECT d.id, c.id, c.uid, c.email, c.email_key, c.first_name, c.last_name, c.attributes, d.message_id,
       {reason}
FROM deliveries d
JOIN contacts c ON c.id = d.contact_id
LEFT JOIN memberships m ON m.contact_id = c.id AND m.list_id = ?
WHERE +d.campaign_id = ? AND +d.status IN ({marks}) AND {ids}
ORDER BY d.id
LIMIT ?
"""


def iter_sendable(
    conn: sqlite3.Connection, campaign: Campaign, secret: bytes, *, resend_uncertain: bool = False, page: int = 100,
    relay: tuple[str, bool | None] | None = None,
) -> Iterator[list[Recipient]]:
    """Pages of deliveries still to send, each re-checked right before use.

    Pages are small and fetched lazily, so the check happens moments before
    each message is rendered and transmitted; an unsubscribe recorded during
    a long send stops every later message (B12). ``relay`` is the relay's
    address and whether it offers SMTPUTF8: an address with a non-ASCII
    local part that this relay already failed is skipped while it does not.
    """
    statuses = sendable_statuses(resend_uncertain)
    sql = _PAGE_SQL.format(marks=",".join("?" for _ in statuses), ids="d.id > ?", reason=SKIP_REASON_SQL)
    last = 0
    while True:
        rows = conn.execute(sql, (campaign.list_id or -1, campaign.id, *statuses, last, page)).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        yield _checked(conn, campaign, secret, rows, relay)


def _checked(conn: sqlite3.Connection, campaign: Campaign, secret: bytes, rows: list[Any],
             relay: tuple[str, bool | None] | None = None) -> list[Recipient]:
    """Rows of ``_PAGE_SQL`` as Recipients, the suppression list checked too."""
    digests = {address_hmac(secret, row[4]): i for i, row in enumerate(rows)}
    suppressed = suppressed_hmacs(conn, campaign.list_name, among=list(digests))
    suppressed_rows = {digests[d] for d in suppressed}
    marked: dict[int, str | None] = {}
    if relay is not None and relay[1] is False:
        # Only addresses that need SMTPUTF8 are looked up, and only while the
        # relay does not offer it: nearly every page skips this.
        utf8 = [row[1] for row in rows if not row[3].isascii()]
        marked = smtputf8_marked(conn, utf8, relay[0]) if utf8 else {}
    out = []
    for i, row in enumerate(rows):
        reason = row[9]
        if reason is None and i in suppressed_rows:
            reason = "address is on the suppression list"
        if reason is None and row[1] in marked:
            failed_in = marked[row[1]]
            reason = (f"{SKIP_SMTPUTF8}, which {relay[0] if relay else 'the relay'} does not offer"
                      + (f" (it failed in campaign {failed_in})" if failed_in else "")
                      + "; skipped until the relay offers it")
        out.append(Recipient(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], reason))
    return out


# The first few sendable deliveries of every distinct set of contact fields
# (attribute names, sorted), for the preflight render (F08). SQLite's JSON
# functions group 100,000 contacts in a fraction of the time Python would
# take to parse them; attributes that are not a JSON object form one group.
_SAMPLE_SQL = """
SELECT did, sig FROM (
  SELECT did, sig, row_number() OVER (PARTITION BY sig ORDER BY did) AS n FROM (
    SELECT d.id AS did,
           CASE WHEN json_valid(c.attributes) AND json_type(c.attributes) = 'object'
                THEN (SELECT group_concat(key, char(31)) FROM (SELECT key FROM json_each(c.attributes) ORDER BY key))
                ELSE NULL END AS sig
    FROM deliveries d
    JOIN contacts c ON c.id = d.contact_id
    JOIN memberships m ON m.contact_id = c.id AND m.list_id = ?
    WHERE d.campaign_id = ? AND d.status IN ({marks}) AND c.status = 'active' AND c.restricted_at IS NULL
      AND c.no_marketing_at IS NULL AND m.status = 'subscribed'
    ORDER BY d.id  -- keeps this subquery whole: flattened, each row's signature was computed twice
  )
) WHERE n <= ? ORDER BY did
"""


def preflight_samples(conn: sqlite3.Connection, campaign: Campaign, secret: bytes, *,
                      resend_uncertain: bool = False, per_group: int = 3) -> list[tuple[str | None, Recipient]]:
    """``(field-set key, recipient)`` for the first ``per_group`` sendable
    deliveries of each distinct set of contact fields, in delivery order."""
    statuses = sendable_statuses(resend_uncertain)
    rows = conn.execute(_SAMPLE_SQL.format(marks=",".join("?" for _ in statuses)),
                        (campaign.list_id or -1, campaign.id, *statuses, per_group)).fetchall()
    signatures = dict(rows)
    page_sql = _PAGE_SQL.format(marks=",".join("?" for _ in statuses), ids="d.id IN (SELECT value FROM json_each(?))",
                                reason=SKIP_REASON_SQL)
    out: list[tuple[str | None, Recipient]] = []
    ids = list(signatures)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found = conn.execute(page_sql, (campaign.list_id or -1, campaign.id, *statuses, json.dumps(chunk),
                                        len(chunk))).fetchall()
        if found:
            out.extend((signatures[r.delivery_id], r) for r in _checked(conn, campaign, secret, found))
    return out


def campaign_counts(conn: sqlite3.Connection, campaign: Campaign) -> dict[str, int]:
    """The report keys for one campaign: live rows + archived totals.

    ``sending`` counts as ``uncertain`` (outside a running send it can only be
    a row a killed process left behind). bounced/unsubscribed/complained are
    the events attributed to the campaign (written by ``bounces``/``serve``).
    """
    counts = {key: 0 for key in (*REPORT_KEYS, "skipped")}
    for status, n in delivery_status_counts(conn, campaign.id).items():
        key = "uncertain" if status == "sending" else status
        counts[key] = counts.get(key, 0) + n
        counts["audience"] += n
    for kind, n in conn.execute(
        "SELECT kind, count(*) FROM events WHERE campaign_id = ? AND kind IN ('bounced', 'unsubscribed', 'complained')"
        " GROUP BY kind",
        (campaign.id,),
    ):
        counts[kind] += n
    for key, n in archived_counts(conn, campaign.id).items():
        counts[key] += n
    row = conn.execute("SELECT archived_counts FROM campaigns WHERE id = ?", (campaign.id,)).fetchone()
    extra = json.loads(row[0] or "{}") if row else {}
    counts["skipped"] += int(extra.get("skipped", 0))
    return counts


@dataclass(frozen=True, slots=True)
class Failure:
    email: str
    status: str
    reply: str
    attempts: int
    updated_at: str


def failures(conn: sqlite3.Connection, campaign: Campaign) -> list[Failure]:
    """Failed, deferred and uncertain deliveries with the server's last reply."""
    rows = conn.execute(
        "SELECT c.email, d.status, COALESCE(d.last_reply, ''), d.attempts, d.updated_at"
        " FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
        " WHERE d.campaign_id = ? AND d.status IN ('failed', 'deferred', 'uncertain', 'sending')"
        " ORDER BY d.status, c.email",
        (campaign.id,),
    ).fetchall()
    return [Failure(*row) for row in rows]


def set_campaign_status(conn: sqlite3.Connection, campaign_id: int, counts: dict[str, Any]) -> None:
    """'sent' once nothing is left to send or retry; otherwise 'sending'."""
    done = counts.get("pending", 0) + counts.get("deferred", 0) == 0
    conn.execute(
        "UPDATE campaigns SET status = ?, finished_at = CASE WHEN ? THEN ? ELSE finished_at END WHERE id = ?",
        ("sent" if done else "sending", done, clock.now_iso(), campaign_id),
    )
