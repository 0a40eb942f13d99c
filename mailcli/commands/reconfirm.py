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
) -> None:
    """Ask members without a lawful basis, or unconfirmed, to confirm by mail.

    Each gets the confirmation mail of the sign-up form (templates/_confirm),
    a service message; confirming gives them the basis consent. Every
    member is asked exactly once per round: a rerun resumes, sends what was
    deferred and asks only members who lost their basis since. `mailcli
    report reconfirm-LIST` shows how many confirmed.

    Example:

        mailcli reconfirm --list news
    """
    from ..consent.reconfirm import reconfirm_list

    app = context.get(ctx)
    out = app.out
    with contextlib.ExitStack() as bars:
        bar: Any = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = bars.enter_context(out.progress(total, f"Asking {list_name}"))
            bar.update(done)

        result = reconfirm_list(app.store, app.settings, list_name, campaign=campaign, progress=progress)
    if out.json:
        out.data(result.as_dict())
    totals = result.counts
    out.success(f"Reconfirmation {result.campaign}: {result.sent} asked now ({result.added} new), {result.failed}"
                f" failed, {result.deferred} deferred; {totals.get('confirmed', 0)} of {totals.get('audience', 0)}"
                " confirmed so far")
    if result.deferred or totals.get("pending", 0) or totals.get("deferred", 0):
        raise PartialError(f"{result.deferred} message(s) of {result.campaign} wait for a later run",
                           hint=app.command("reconfirm", "--list", list_name,
                                            *(["--campaign", campaign] if campaign else [])))


def register(app: typer.Typer) -> None:
    app.command("reconfirm")(reconfirm_cmd)
