"""``mailcli report [CAMPAIGN]``: per-campaign counts, and the failures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import context
from ..completers import complete_campaign

if TYPE_CHECKING:
    from ..send.report import CampaignReport


# Complexity: JSON or table, then per campaign the kind line, the click table and the failures.
def report_cmd(
    ctx: typer.Context,
    campaign: Annotated[str | None, typer.Argument(help="One campaign (default: all).", metavar="CAMPAIGN",
                                                                  autocompletion=complete_campaign)] = None,
    failed: Annotated[bool, typer.Option("--failed", help="List each failed, deferred or uncertain message with the server's reply, and the delay, relay and expansion notices that came back.")] = False,
) -> None:
    """Show each campaign's counts: sent, failed, deferred, bounced and more.

    Each campaign's kind is shown: marketing, or service (with its reason);
    for one campaign with click counts on, the clicks per link. The counts are audience, sent, failed, deferred, pending, uncertain,
    bounced, unsubscribed and complained. Totals stay correct after `privacy purge` removes old delivery records.

    Examples:

        mailcli report

        mailcli report spring-2026 --json

        mailcli report spring-2026 --failed
    """
    from ..send.report import campaign_report, shown_counts

    app = context.get(ctx)
    out = app.out
    reports = campaign_report(app.store, campaign, failures=failed)
    if out.json:
        out.data(reports[0].as_dict() if campaign is not None else [r.as_dict() for r in reports])
        return
    if not reports:
        out.info("No campaigns yet; start one with: mailcli send NAME --template T --list L")
        return
    shown = shown_counts([r.counts for r in reports])
    out.table(("campaign", "kind", *(k.replace("_", " ") for k in shown)),
              [(r.campaign, r.kind, *(r.counts.get(k, 0) for k in shown)) for r in reports])
    for r in reports:
        if r.kind == "service" and campaign is not None:
            out.info(f"{r.campaign}: service message, reaching members who unsubscribed from marketing too;"
                     f" reason: {r.reason}")
        if r.clicks and campaign is not None:
            _click_table(out, r)
        _failure_tables(out, r)


def _click_table(out: Any, r: CampaignReport) -> None:
    """``report CAMPAIGN`` with click counts: one row per tracked link."""
    assert r.clicks is not None
    people = any("people" in link for link in r.clicks) and any(link.get("people") for link in r.clicks)
    columns = ("clicks", *(("people",) if people else ()), "link")
    out.line("")
    out.table(columns, [(link["clicks"], *((link.get("people") or 0,) if people else ()), link["url"])
                        for link in r.clicks], title=f"{r.campaign}: clicks per link")


def _failure_tables(out: Any, r: CampaignReport) -> None:
    """``report --failed``: a campaign's failures, then the notices about its deliveries."""
    if r.failures:
        out.line("")
        out.table(("email", "status", "attempts", "reply", "message-id"),
                  [(f["email"], f["status"], f["attempts"], f["reply"], f["message_id"]) for f in r.failures],
                  title=f"{r.campaign}: failed, deferred and uncertain")
    if r.notices:
        out.line("")
        out.table(("email", "notice", "status", "detail", "at"),
                  [(n["email"], n["kind"], n["status"] or "", n["detail"] or "", n["at"]) for n in r.notices],
                  title=f"{r.campaign}: delivery notices (delayed, relayed, expanded: not failures)")

def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
