"""``mailcli reconfirm --list L``: ask members without a lawful basis, or unconfirmed, to confirm."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import typer

from .. import context
from ..errors import PartialError
from . import given_list


def reconfirm_cmd(
    ctx: typer.Context,
    list_name: Annotated[str, typer.Option("--list", "-l", help="The list whose members are asked.", metavar="L",
                                           callback=given_list)],
    campaign: Annotated[str | None, typer.Option(
        "--campaign", help="Name of this round (default reconfirm-LIST); a new name asks everyone again.",
        metavar="NAME")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say how many would be asked; send nothing, change"
                                          " nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (needed without a"
                                      " terminal).")] = False,
) -> None:
    """Ask members without a lawful basis, or unconfirmed, to confirm by mail.

    Each gets the confirmation mail of the sign-up form (templates/_confirm),
    a service message; confirming gives them the basis consent. Every
    member is asked exactly once per round: a rerun resumes, sends what was
    deferred and asks only members who lost their basis since. `mailcli
    report reconfirm-LIST` shows how many confirmed. Like `send`, it asks
    before sending on a terminal; without one it needs --yes.

    Examples:

        mailcli reconfirm --list news --dry-run

        mailcli reconfirm --list news --yes
    """
    from ..consent.reconfirm import ReconfirmPlan, reconfirm_list

    app = context.get(ctx)
    out = app.out
    again = app.command("reconfirm", "--list", list_name, *(["--campaign", campaign] if campaign else []))

    def confirm(plan: ReconfirmPlan) -> None:
        out.confirm(f"Send {plan.to_ask} confirmation mail(s) of {plan.campaign} ({plan.added} member(s) of list"
                    f" {plan.list_name} asked for the first time) via {plan.server}?", yes=yes, what="send")

    with contextlib.ExitStack() as bars:
        bar: Any = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = bars.enter_context(out.progress(total, f"Asking {list_name}"))
            bar.update(done)

        result = reconfirm_list(app.store, app.settings, list_name, campaign=campaign, progress=progress,
                                dry_run=dry_run, confirm=None if yes else confirm)
    if out.json:
        out.data(result.as_dict())
    if dry_run:
        out.success(f"Dry run: {result.would_ask} member(s) of list {list_name} would be asked to confirm now"
                    f" ({result.added} for the first time); nothing was sent or changed")
        if result.would_ask:
            out.info(f"To send: {again}")
        return
    totals = result.counts
    out.success(f"Reconfirmation {result.campaign}: {result.sent} asked now ({result.added} new), {result.failed}"
                f" failed, {result.deferred} deferred; {totals.get('confirmed', 0)} of {totals.get('audience', 0)}"
                " confirmed so far")
    if result.deferred or totals.get("pending", 0) or totals.get("deferred", 0):
        raise PartialError(f"{result.deferred} message(s) of {result.campaign} wait for a later run",
                           hint=again + (" --yes" if yes else ""))


def register(app: typer.Typer) -> None:
    app.command("reconfirm")(reconfirm_cmd)
