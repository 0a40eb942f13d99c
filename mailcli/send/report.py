"""Campaign reports: each campaign's counts, and on request its failures.

``campaign_report`` is what ``mailcli report`` shows, callable from Python.
The counts survive ``privacy purge`` and erasures (docs/guarantees.md#retention).
Listing failures names addresses, so it is audited (docs/guarantees.md#audit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import audit
from ..errors import NotFoundError
from ..store import Store
from ..store.clicks import campaign_link_clicks
from ..store.relays import delivery_notices
from . import ledger

if TYPE_CHECKING:
    from ..store.db import Connection

#: The counts of a report, in the order ``mailcli report`` prints them: the
#: audience, where each member of it is (sent to skipped, with
#: ``uncertain_erased``, add up to it), then what came back.
COUNTS = ("audience", "sent", "failed", "deferred", "pending", "uncertain", "skipped",
          "bounced", "unsubscribed", "complained")


def shown_counts(counts: Sequence[dict[str, int]], keys: Sequence[str] = COUNTS) -> tuple[str, ...]:
    """The count columns of a table of ``counts``: ``keys``, with
    ``uncertain_erased`` after ``uncertain`` where some row has such messages
    (rare: a person erased while their message was uncertain), so the
    delivery columns always add up to the audience."""
    shown = tuple(keys)
    if "uncertain" not in shown or not any(c.get("uncertain_erased") for c in counts):
        return shown
    at = shown.index("uncertain") + 1
    return (*shown[:at], "uncertain_erased", *shown[at:])


def display_status(status: str, counts: dict[str, int]) -> str:
    """The status a table shows: ``sent`` with uncertain messages left says
    so (``sent, 2 uncertain``); the JSON keeps ``status`` and the counts as
    they are."""
    uncertain = counts.get("uncertain", 0)
    return f"{status}, {uncertain} uncertain" if status == "sent" and uncertain else status


@dataclass(frozen=True, slots=True)
class CampaignReport:
    """One campaign's counts; with ``failures=True``, its failures and delivery notices."""

    campaign: str
    list_name: str
    template: str
    status: str
    counts: dict[str, int]
    failures: list[dict[str, Any]] | None = None  # failed, deferred and uncertain messages
    notices: list[dict[str, Any]] | None = None  # delayed, relayed, expanded: not failures
    kind: str = "marketing"  # or "service"
    reason: str | None = None  # why a service message went out
    clicks: list[dict[str, Any]] | None = None  # per tracked link, where click counts were on

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``report --json``."""
        data: dict[str, Any] = {"campaign": self.campaign, "list": self.list_name, "template": self.template,
                                "status": self.status, "kind": self.kind, "reason": self.reason, **self.counts}
        if self.failures is not None:
            data["failures"] = self.failures
        if self.notices is not None:
            data["notices"] = self.notices
        if self.clicks is not None:
            data["clicks"] = self.clicks
        return data


def campaign_report(store: Store, campaign: str | None = None, *, failures: bool = False) -> list[CampaignReport]:
    """The report of one campaign, or of every campaign (oldest first).

    ``failures``: also each failed, deferred or uncertain message with the
    server's reply, and the delay, relay and expansion notices that came back.
    Raises NotFoundError for a campaign that does not exist.
    """
    # Every count from one snapshot: a send or a purge writing meanwhile
    # would otherwise show live rows of one moment and archived ones of another.
    with store.reading() as conn:
        if campaign is not None:
            found = ledger.get_campaign(conn, campaign)
            if found is None:
                names = [c.name for c in ledger.list_campaigns(conn)]
                raise NotFoundError(f"Campaign {campaign!r} not found",
                                    hint=f"campaigns: {', '.join(names)}" if names else "start one with mailcli send")
            campaigns = [found]
        else:
            campaigns = ledger.list_campaigns(conn)
        reports = [_report(conn, c, failures) for c in campaigns]
    if failures:
        for c in campaigns:
            audit.append(store, "report_failed", subject_hmac=None, command="report", detail={"campaign": c.name})
    return reports


def _report(conn: Connection, c: ledger.Campaign, failures: bool) -> CampaignReport:
    counts = ledger.campaign_counts(conn, c)
    if c.template == "_confirm" and c.kind == "service":  # a reconfirmation round: who confirmed
        from ..store.signups import confirmed_in

        counts["confirmed"] = confirmed_in(conn, c.id)
    # Per link: how often, and (where per-contact clicks are kept) by how many people; never who.
    links = campaign_link_clicks(conn, c.id)
    clicks = [link.as_dict() for link in links] if links else None
    if not failures:
        return CampaignReport(c.name, c.list_name, c.template, c.status, counts, kind=c.kind,
                              reason=c.service_reason, clicks=clicks)
    return CampaignReport(
        c.name, c.list_name, c.template, c.status, counts, kind=c.kind, reason=c.service_reason, clicks=clicks,
        failures=[{"email": f.email, "status": "uncertain" if f.status == "sending" else f.status,
                   "reply": f.reply, "attempts": f.attempts, "at": f.updated_at,
                   "message_id": f.message_id}
                  for f in ledger.failures(conn, c)],
        notices=[{"email": n.email, "kind": n.kind, "status": n.status, "detail": n.detail, "at": n.at}
                 for n in delivery_notices(conn, c.id)],
    )
