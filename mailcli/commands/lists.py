"""``mailcli lists``: every list with its member counts by status."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import context
from ..completers import complete_segment


def lists_cmd(
    ctx: typer.Context,
    where: Annotated[str | None, typer.Option(
        "--where", help="Count only the members this expression matches, like \"city = 'Utrecht'\".",
        metavar="EXPR")] = None,
    segment: Annotated[str | None, typer.Option(
        "--segment", help="Count only the members in this segment of \\[segments] in mailcli.toml.", metavar="NAME",
        autocompletion=complete_segment)] = None,
) -> None:
    """Show the lists with their members counted by status.

    "subscribed" is who the next send reaches; "held back" are subscribed
    members whose address bounced or complained, who restricted
    processing or objected to direct marketing, or who have no lawful
    basis recorded (neither consent with its evidence nor the customer
    soft opt-in). The columns add up to the members of the list. With
    --where or --segment, only the members in that part of the list are
    counted: "subscribed" is then who a send with the same --where or
    --segment reaches.

    Examples:

        mailcli lists

        mailcli lists --json

        mailcli lists --segment utrecht
    """
    from ..contacts import list_counts
    from ..segments import choose_segment

    app = context.get(ctx)
    chosen = choose_segment(app.settings.segments, where=where, segment=segment,
                            config_name=app.settings.path.name)
    summaries = list_counts(app.store, segment=chosen)
    if app.out.json:
        app.out.data([s.as_dict() for s in summaries])
        return
    if not summaries:
        app.out.info("No lists yet. Import contacts with: mailcli import FILE --list NAME")
        return
    app.out.table(
        ["list", "subscribed", "unconfirmed", "unsubscribed", "held back"],
        [[s.name, s.subscribed, s.unconfirmed, s.unsubscribed, _held(s.held_back)] for s in summaries],
    )
    for s in summaries:
        if s.held_back.get("no_basis"):
            app.out.warn(f"{s.held_back['no_basis']} member(s) of {s.name} have no lawful basis recorded, so no send"
                         f" reaches them; state it (mailcli import FILE --list {s.name} --basis consent"
                         f' --consent-source "..." or --basis customer) or ask them (mailcli reconfirm --list {s.name})')


def _held(counts: dict[str, int]) -> str:
    """``0``, or the total with its reasons: ``2 (1 bounced, 1 restricted)``."""
    total = sum(counts.values())
    reasons = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in counts.items() if n)
    return f"{total} ({reasons})" if total else "0"


def register(app: typer.Typer) -> None:
    app.command("lists")(lists_cmd)
