"""``mailcli campaigns``: every campaign with its kind, status, audience, subject, dates and counts."""

from __future__ import annotations

import typer

from .. import context

#: The counts the table shows, where each member of the audience is (``--json``
#: has every count ``report`` has).
SHOWN = ("audience", "sent", "failed", "deferred", "pending", "uncertain", "skipped")


def campaigns_cmd(ctx: typer.Context) -> None:
    """List every campaign with its status, audience, subject, dates and counts.

    Each line: kind, status, template, list and segment, subject, when it
    was created and first and last sent, and its counts. A campaign started with --not-before is "scheduled" until the first run
    after that moment; one with uncertain messages left shows "sent, N uncertain". `mailcli report CAMPAIGN` has every count and the
    failures.

    Examples:

        mailcli campaigns

        mailcli campaigns --json
    """
    from ..send.campaigns import campaign_overview
    from ..send.report import display_status, shown_counts

    app = context.get(ctx)
    out = app.out
    lines = campaign_overview(app.store)
    if out.json:
        out.data([line.as_dict() for line in lines])
        return
    if not lines:
        out.info("No campaigns yet; start one with: mailcli send NAME --template T --list L")
        return
    shown = shown_counts([c.counts for c in lines], SHOWN)
    out.table(
        ("campaign", "kind", "status", "template", "to", "subject", "created", "first sent", "last sent",
         *(k.replace("_", " ") for k in shown)),
        [(c.name, c.kind, f"scheduled for {_when(c.not_before)}" if c.not_before else display_status(c.status, c.counts),
          c.template, c.audience, c.subject or "", _when(c.created_at), _when(c.first_sent_at), _when(c.last_sent_at),
          *(c.counts.get(k, 0) for k in shown)) for c in lines],
    )


def _when(at: str | None) -> str:
    """``2026-12-24T08:00:00Z`` as ``2026-12-24 08:00Z``: to the minute, in UTC as stored."""
    return f"{at[:10]} {at[11:16]}Z" if at else ""


def register(app: typer.Typer) -> None:
    app.command("campaigns")(campaigns_cmd)
