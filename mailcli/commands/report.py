"""``mailcli report [CAMPAIGN]``: per-campaign counts, and the failures."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import context
from ..errors import NotFoundError
from ..send import ledger
from ..store.relays import delivery_notices

_COLUMNS = ("audience", "sent", "failed", "deferred", "pending", "uncertain", "bounced", "unsubscribed", "complained")


def report_cmd(
    ctx: typer.Context,
    campaign: Annotated[str | None, typer.Argument(help="One campaign (default: all).", metavar="CAMPAIGN")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="List each failed, deferred or uncertain message with the server's reply, and the delay, relay and expansion notices that came back.")] = False,
) -> None:
    """Show each campaign's counts: sent, failed, deferred, bounced and more.

    The counts are audience, sent, failed, deferred, pending, uncertain,
    bounced, unsubscribed and complained. Totals stay correct after `privacy purge` removes old delivery records.

    Examples:

        mailcli report

        mailcli report spring-2026 --json

        mailcli report spring-2026 --failed
    """
    app = context.get(ctx)
    out = app.out
    conn = app.store.conn
    if campaign is not None:
        found = ledger.get_campaign(conn, campaign)
        if found is None:
            names = [c.name for c in ledger.list_campaigns(conn)]
            raise NotFoundError(f"Campaign {campaign!r} not found",
                                hint=f"campaigns: {', '.join(names)}" if names else "start one with mailcli send")
        campaigns = [found]
    else:
        campaigns = ledger.list_campaigns(conn)
    rows = []
    for c in campaigns:
        counts = ledger.campaign_counts(conn, c)
        entry: dict[str, object] = {"campaign": c.name, "list": c.list_name, "template": c.template,
                                    "status": c.status, **counts}
        if failed:
            # Listing addresses is an access to personal data: audited.
            from .. import audit

            audit.append(app.store, "report_failed", subject_hmac=None, command="report",
                         detail={"campaign": c.name})
            entry["failures"] = [
                {"email": f.email, "status": "uncertain" if f.status == "sending" else f.status,
                 "reply": f.reply, "attempts": f.attempts, "at": f.updated_at}
                for f in ledger.failures(conn, c)
            ]
            # Not failures: news about deliveries (RFC 3464 delayed/relayed/expanded).
            entry["notices"] = [
                {"email": n.email, "kind": n.kind, "status": n.status, "detail": n.detail, "at": n.at}
                for n in delivery_notices(conn, c.id)
            ]
        rows.append(entry)
    if out.json:
        out.data(rows[0] if campaign is not None else rows)
        return
    if not rows:
        out.info("No campaigns yet; start one with: mailcli send NAME --template T --list L")
        return
    out.table(("campaign", *_COLUMNS), [(r["campaign"], *(r[k] for k in _COLUMNS)) for r in rows])
    if failed:
        for r in rows:
            failures: list[dict[str, object]] = r.get("failures") or []  # type: ignore[assignment]
            if failures:
                out.line("")
                out.table(("email", "status", "attempts", "reply"),
                          [(f["email"], f["status"], f["attempts"], f["reply"]) for f in failures],
                          title=f"{r['campaign']}: failed, deferred and uncertain")
            notices: list[dict[str, object]] = r.get("notices") or []  # type: ignore[assignment]
            if notices:
                out.line("")
                out.table(("email", "notice", "status", "detail", "at"),
                          [(n["email"], n["kind"], n["status"] or "", n["detail"] or "", n["at"]) for n in notices],
                          title=f"{r['campaign']}: delivery notices (delayed, relayed, expanded: not failures)")


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
