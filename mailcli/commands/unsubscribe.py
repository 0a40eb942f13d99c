"""``mailcli unsubscribe EMAIL [--list L]``: a manual opt-out (channel ``cli``)."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import context
from ..completers import complete_list
from ..feedback.actions import ALL, unsubscribe_address
from . import given_list


def unsubscribe_cmd(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The address to opt out.", metavar="EMAIL")],
    list_name: Annotated[
        str | None, typer.Option("--list", "-l", help="Only this list (default: all marketing).", metavar="L",
                                  autocompletion=complete_list, callback=given_list)
    ] = None,
) -> None:
    """Unsubscribe an address from one list, or from all marketing.

    The opt-out is recorded with the time and channel "cli", and the address
    goes on the suppression list, so no later import resubscribes it. An
    address that is not in the database is suppressed all the same.

    Examples:

        mailcli unsubscribe ann@example.org

        mailcli unsubscribe ann@example.org --list news
    """
    app = context.get(ctx)
    result = unsubscribe_address(app.store, app.settings, email, list_name=list_name, channel="cli")
    where = "all marketing" if result.scope == ALL else f"list {result.scope}"
    if app.out.json:
        app.out.data({"email": email.strip(), "scope": result.scope, "known": result.known, "changed": result.changed})
        return
    if not result.known:
        if result.changed:
            app.out.success(f"{email.strip()} is not in the database; suppressed from {where} so an import will never add it")
        else:
            app.out.info(f"{email.strip()} is not in the database and was already suppressed from {where}; nothing changed")
    elif result.changed:
        app.out.success(f"Unsubscribed {email.strip()} from {where}")
    else:
        app.out.info(f"{email.strip()} was already unsubscribed from {where}; nothing changed")


def register(app: typer.Typer) -> None:
    app.command("unsubscribe")(unsubscribe_cmd)
