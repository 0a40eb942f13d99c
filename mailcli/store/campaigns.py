"""Campaign rows: created by the first send, frozen with their audience,
marked sent when nothing is left to send or retry.

A campaign's name is unique: two processes that create the same campaign at
the same moment (two configurations naming one database) end up with one row.
Per-message rows are in ``deliveries`` (``store.deliveries``); what purge and
erasure took away is folded into ``archived_counts`` (``store.archive``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Connection

# What ``report`` counts of the events attributed to a campaign.
FEEDBACK_KINDS = ("bounced", "unsubscribed", "complained")
# What a campaign is: marketing (to subscribers) or a service message (to
# everyone with an active relationship, opted out of marketing or not).
CAMPAIGN_KINDS = ("marketing", "service")


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
    segment: str | None = None  # the name of a segment of mailcli.toml
    segment_where: str | None = None  # the expression the audience was chosen by
    subject_line: str | None = None  # the subject as written, before personalisation
    not_before_at: str | None = None  # no run sends before this moment (UTC)
    first_sent_at: str | None = None
    last_sent_at: str | None = None
    service_reason: str | None = None  # why a service message goes to people who left marketing
    # The version of the template (``CompiledTemplate.version``) its first
    # messages were sent from; None before any was, or for a campaign started
    # before mailcli recorded it.
    template_version: str | None = None
    # How many were sent from that version before a run first sent another (None: none has).
    template_version_sent: int | None = None


_COLUMNS = ("id, uid, name, template, list_id, list_name, subject, kind, status, created_at, frozen_at, finished_at,"
            " segment, segment_where, subject_line, not_before_at, first_sent_at, last_sent_at, service_reason,"
            " template_version, template_version_sent")


def get_campaign(conn: Connection, name: str) -> Campaign | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM campaigns WHERE name = ?", (name,)).fetchone()  # noqa: S608 - fixed columns
    return Campaign(*row) if row else None


def list_campaigns(conn: Connection) -> list[Campaign]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM campaigns ORDER BY created_at, id").fetchall()  # noqa: S608
    return [Campaign(*row) for row in rows]


def insert_campaign(conn: Connection, *, uid: str, name: str, template: str, list_id: int, list_name: str,
                    subject: str | None, created_at: str, segment: str | None = None,
                    segment_where: str | None = None, subject_line: str | None = None,
                    not_before_at: str | None = None, kind: str = "marketing",
                    service_reason: str | None = None) -> None:
    """A new campaign of ``kind``, not yet frozen (``scheduled`` when it has a
    ``not_before_at``); nothing when the name is taken (another process
    created it a moment ago: that row is the campaign)."""
    conn.execute(
        "INSERT INTO campaigns (uid, name, template, list_id, list_name, subject, kind, status, created_at,"
        " segment, segment_where, subject_line, not_before_at, service_reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        (uid, name, template, list_id, list_name, subject, kind, "scheduled" if not_before_at else "created",
         created_at, segment, segment_where, subject_line, not_before_at, service_reason),
    )


def mark_frozen(conn: Connection, campaign_id: int, now: str) -> None:
    """The audience is frozen: note when (the first time only) and start sending."""
    conn.execute(
        "UPDATE campaigns SET frozen_at = coalesce(frozen_at, ?),"
        " status = CASE WHEN status IN ('created', 'scheduled') THEN 'sending' ELSE status END WHERE id = ?",
        (now, campaign_id),
    )


def reschedule(conn: Connection, campaign_id: int, not_before_at: str) -> None:
    """A campaign not yet started gets another moment before which nothing is sent."""
    conn.execute("UPDATE campaigns SET not_before_at = ?, status = 'scheduled' WHERE id = ? AND frozen_at IS NULL",
                 (not_before_at, campaign_id))


def note_sent(conn: Connection, campaign_id: int, started_at: str, ended_at: str) -> None:
    """A run that sent something: the earliest such run's start, the latest one's end
    (runs side by side on PostgreSQL may end in any order)."""
    conn.execute("UPDATE campaigns SET"
                 " first_sent_at = CASE WHEN first_sent_at IS NULL OR first_sent_at > ? THEN ? ELSE first_sent_at END,"
                 " last_sent_at = CASE WHEN last_sent_at IS NULL OR last_sent_at < ? THEN ? ELSE last_sent_at END"
                 " WHERE id = ?", (started_at, started_at, ended_at, ended_at, campaign_id))


def set_subject_line(conn: Connection, campaign_id: int, subject_line: str | None) -> None:
    """The subject as the campaign's messages carry it, set when its audience is frozen."""
    conn.execute("UPDATE campaigns SET subject_line = ? WHERE id = ?",
                 (subject_line, campaign_id))


def set_template_version(conn: Connection, campaign_id: int, version: str) -> None:
    """The version of the template the campaign's first messages are sent
    from, set by a run while none has been sent (so again by each such run)."""
    conn.execute("UPDATE campaigns SET template_version = ?, template_version_sent = NULL WHERE id = ?",
                 (version, campaign_id))


def note_template_change(conn: Connection, campaign_id: int, sent: int) -> None:
    """A run sends another version of the template than the first messages
    had: ``sent`` messages came from that one (kept from the first such run)."""
    conn.execute("UPDATE campaigns SET template_version_sent = coalesce(template_version_sent, ?) WHERE id = ?",
                 (sent, campaign_id))


def set_campaign_status(conn: Connection, campaign_id: int, status: str, finished_at: str | None) -> None:
    """The campaign's status; ``finished_at`` is set when given, else kept."""
    conn.execute(
        "UPDATE campaigns SET status = ?, finished_at = coalesce(?, finished_at) WHERE id = ?",
        (status, finished_at, campaign_id),
    )


def complete_campaign(conn: Connection, campaign_id: int, now: str) -> bool:
    """Mark the campaign 'sent' (finished ``now``) unless it is already:
    True when this call completed it. Several senders of one campaign each
    ask when they end; the row's lock makes one of them the one."""
    return conn.execute(
        "UPDATE campaigns SET status = 'sent', finished_at = ? WHERE id = ? AND status != 'sent'",
        (now, campaign_id)).rowcount > 0


def feedback_counts(conn: Connection, campaign_id: int) -> dict[str, int]:
    """Bounces, unsubscribes and complaints attributed to the campaign (kinds with none left out)."""
    marks = ",".join("?" for _ in FEEDBACK_KINDS)
    return {
        kind: n
        for kind, n in conn.execute(
            f"SELECT kind, count(*) FROM events WHERE campaign_id = ? AND kind IN ({marks}) GROUP BY kind",  # noqa: S608 - placeholders only
            (campaign_id, *FEEDBACK_KINDS),
        )
    }


def redact_segments(conn: Connection, texts: list[str]) -> int:
    """Replace each of ``texts`` (an erased person's address, in any case) in
    the segment expressions campaigns recorded with ``[erased]``; how many
    campaigns changed. A segment like ``email = 'ann@example.org'`` would
    otherwise keep the address after the person is erased."""
    import re

    wanted = [t for t in texts if t]
    if not wanted:
        return 0
    pattern = re.compile("|".join(re.escape(t) for t in sorted(wanted, key=len, reverse=True)), re.IGNORECASE)
    changed = 0
    for campaign_id, where in conn.execute("SELECT id, segment_where FROM campaigns WHERE segment_where IS NOT NULL"
                                           ).fetchall():
        redacted = pattern.sub("[erased]", where)
        if redacted != where:
            conn.execute("UPDATE campaigns SET segment_where = ? WHERE id = ?", (redacted, campaign_id))
            changed += 1
    return changed
