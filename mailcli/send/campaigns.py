"""``mailcli campaigns``: every campaign at a glance, callable from Python.

One line per campaign: its kind (``marketing``, or ``service`` with the
reason it is one), status (``scheduled`` until the first run
after its ``--not-before``, then ``sending`` and ``sent``; the table
shows ``sent, N uncertain`` while uncertain messages are left), template, who it
goes to (the list, and the segment), the subject as written, when it was
created and first and last sent, and the counts ``report`` shows. The
counts come from the per-campaign totals the store keeps, so listing a
hundred campaigns of a million messages each reads no delivery row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..store import Store
from . import ledger


@dataclass(frozen=True, slots=True)
class CampaignLine:
    """One campaign as ``mailcli campaigns`` lists it."""

    name: str
    kind: str
    status: str
    template: str
    list_name: str
    segment: str | None  # the name of a segment of mailcli.toml
    where: str | None  # the expression the audience was chosen by
    subject: str | None
    created_at: str
    not_before: str | None
    first_sent_at: str | None
    last_sent_at: str | None
    counts: dict[str, int]
    reason: str | None = None  # why a service message is one (None for marketing)

    @property
    def audience(self) -> str:
        """Who it goes to, in a few words: ``news``, ``news / utrecht`` or ``news where …``."""
        if self.segment:
            return f"{self.list_name} / {self.segment}"
        if self.where:
            return f"{self.list_name} where {self.where}"
        return self.list_name

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``campaigns --json``."""
        return {"campaign": self.name, "kind": self.kind, "reason": self.reason, "status": self.status,
                "template": self.template,
                "list": self.list_name, "segment": self.segment, "where": self.where, "subject": self.subject,
                "created_at": self.created_at, "not_before": self.not_before, "first_sent_at": self.first_sent_at,
                "last_sent_at": self.last_sent_at, **self.counts}


def campaign_overview(store: Store) -> list[CampaignLine]:
    """Every campaign, oldest first, with its counts."""
    conn = store.conn
    return [
        CampaignLine(
            name=c.name, kind=c.kind, status=c.status, template=c.template, list_name=c.list_name,
            segment=c.segment, where=c.segment_where, subject=c.subject_line or c.subject,
            created_at=c.created_at, not_before=c.not_before_at if c.status == "scheduled" else None,
            first_sent_at=c.first_sent_at, last_sent_at=c.last_sent_at, counts=ledger.campaign_counts(conn, c),
            reason=c.service_reason if c.kind == "service" else None,
        )
        for c in ledger.list_campaigns(conn)
    ]
