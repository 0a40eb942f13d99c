"""``mailcli lists``: every list with its member counts by status."""

from __future__ import annotations

import typer

from .. import context


def lists_cmd(ctx: typer.Context) -> None:
    """Show the lists with how many members are subscribed, unconfirmed and unsubscribed.

    Examples:

        mailcli lists

        mailcli lists --json
    """
    from ..store.contacts import list_summaries

    app = context.get(ctx)
    summaries = list_summaries(app.store)
    if app.out.json:
        app.out.data([s.as_dict() for s in summaries])
        return
    if not summaries:
        app.out.info("No lists yet. Import contacts with: mailcli import FILE --list NAME")
        return
    app.out.table(
        ["list", "subscribed", "unconfirmed", "unsubscribed"],
        [[s.name, s.subscribed, s.unconfirmed, s.unsubscribed] for s in summaries],
    )


def register(app: typer.Typer) -> None:
    app.command("lists")(lists_cmd)
