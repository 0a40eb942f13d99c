"""``mailcli contacts``: list, show and rectify contacts.

Every command here reads or changes personal data, so each records an audit
entry (docs/guarantees.md#audit). Addresses are named in output only where the user asked
for data about people or typed the address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import context
from ..completers import complete_list, complete_segment
from . import LARGEST, given_list

if TYPE_CHECKING:
    from ..contacts import ContactPage
    from ..store.contacts import ContactDetail

contacts_app = typer.Typer(
    help="List contacts (with no subcommand), show one, or correct one.",
    invoke_without_command=True,
)

PAGE = 50


# Complexity: one branch per option and per output form (table, --json, empty), as a user reads them.
@contacts_app.callback()
def contacts_cmd(
    ctx: typer.Context,
    list_name: Annotated[str | None, typer.Option("--list", "-l", help="Only members of this list.", metavar="L", callback=given_list,
                                                            autocompletion=complete_list)]
    = None,
    status: Annotated[str | None, typer.Option(
        "--status", help="Only this status: with --list the member's status (subscribed, unconfirmed,"
        " unsubscribed, bounced, complained, restricted, objected, no_basis; as `mailcli lists` counts them), else also"
        " the contact's (active, unsubscribed, bounced, complained).", metavar="S")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help=f"At most N contacts (table default {PAGE}).",
                                              metavar="N", min=0, max=LARGEST)] = None,
    offset: Annotated[int, typer.Option("--offset", help="Skip the first N contacts.", metavar="N", min=0,
                                        max=LARGEST)] = 0,
    where: Annotated[str | None, typer.Option(
        "--where", help="Only contacts this expression matches, like \"city = 'Utrecht' and member_rating >= 3\".",
        metavar="EXPR")] = None,
    segment: Annotated[str | None, typer.Option(
        "--segment", help="Only contacts in this segment of \\[segments] in mailcli.toml.", metavar="NAME",
        autocompletion=complete_segment)] = None,
) -> None:
    """List contacts, paged; --json gives objects with email, first_name,
    last_name, status, lists and attributes.

    Examples:

        mailcli contacts --list news --status subscribed

        mailcli contacts --json --limit 1000 --offset 2000

        mailcli contacts --list news --where "city = 'Utrecht' and member_rating >= 3"
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..contacts import list_contacts
    from ..segments import choose_segment

    app = context.get(ctx)
    out = app.out
    chosen = choose_segment(app.settings.segments, where=where, segment=segment,
                            config_name=app.settings.path.name)
    page = list_contacts(app.store, app.settings, list_name=list_name, status=status, offset=offset,
                         limit=limit if limit is not None else (None if out.json else PAGE), machine_readable=out.json,
                         segment=chosen)
    if out.json:
        out.data([row.as_dict() for row in page.rows])
        return
    if not page.rows:
        _nothing_listed(out, page, list_name, status, offset, where if where is not None else segment)
        return
    out.table(
        ["email", "first_name", "last_name", "status", "lists"],
        [[r.email, r.first_name, r.last_name, r.status, ", ".join(r.lists)] for r in page.rows],
    )
    shown_to = offset + len(page.rows)
    if shown_to < page.total:
        # The next page is this same listing: the same list, status and page size.
        same = [*(["--list", list_name] if list_name else []), *(["--status", status] if status else []),
                *(["--where", where] if where is not None else []), *(["--segment", segment] if segment else []),
                *(["--limit", str(limit)] if limit is not None else [])]
        out.info(f"Showing {offset + 1}-{shown_to} of {page.total}; next page: "
                 f"{app.command('contacts', *same, '--offset', str(shown_to))}")


def _nothing_listed(out: Any, page: ContactPage, list_name: str | None, status: str | None, offset: int,
                    segment: str | None = None) -> None:
    """Why a listing is empty: no contacts at all, none that match, or past the last page."""
    if not page.everyone:
        out.info("No contacts yet. Import some with: mailcli import FILE --list NAME")
        return
    chosen = " and ".join(f"{name} {value}" for name, value in
                          (("--list", list_name), ("--status", status), ("the segment", segment))
                          if value is not None)
    out.info(f"No contacts match {chosen}" if not page.total
             else f"No contacts after --offset {offset} ({page.total} match)")
    out.info(f"{page.everyone} contact(s) in all; `mailcli lists` counts each list's members by status")

def show_cmd(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The contact's address (any case).", metavar="EMAIL")],
) -> None:
    """Show one contact: fields, attributes, lists with consent evidence, and history.

    The access is recorded in the audit log.

    Example:

        mailcli contacts show anna@example.nl
    """
    from ..contacts import show_contact

    app = context.get(ctx)
    detail = show_contact(app.store, app.settings, email)
    app.out.data(detail.as_dict(), text=_detail_text(detail))


# Complexity: one line per field that may be empty; the output reads top to bottom like the code.
def _detail_text(detail: ContactDetail) -> str:
    """``contacts show`` for people: one field a line, then the lists and the history."""
    lines = [
        f"email:       {detail.email}",
        f"first_name:  {detail.first_name}",
        f"last_name:   {detail.last_name}",
        f"status:      {detail.status}" + (f" (restricted since {detail.restricted_at})" if detail.restricted_at else "")
        + (f" (no marketing since {detail.no_marketing_at})" if detail.no_marketing_at else ""),
        f"source:      {detail.source or ''}",
        f"created:     {detail.created_at}   updated: {detail.updated_at}",
    ]
    if detail.attributes:
        lines.append("attributes:")
        lines += [f"  {name}: {_one_line(value)}" for name, value in sorted(detail.attributes.items())]
    lines.append("lists:" if detail.memberships else "lists:       (none)")
    lines += [_membership_line(m) for m in detail.memberships]
    if detail.history:
        lines.append("history:")
        for event in detail.history:
            extra = " ".join(str(v) for v in (event["channel"], event["scope"], event["campaign"]) if v)
            note = f"  ({_one_line(event['note'])})" if event.get("note") else ""
            lines.append(f"  {event['at']}  {event['kind']}" + (f"  {extra}" if extra else "") + note)
    return "\n".join(lines)


# Complexity: one optional part per piece of consent evidence a membership may hold.
def _membership_line(m: dict[str, Any]) -> str:
    """``  news: subscribed — basis consent, at ..., via ..., source ...; unsubscribed ...``"""
    basis = {"consent": "basis consent", "customer": "basis customer (soft opt-in)",
             "none": "no lawful basis"}.get(m.get("basis") or "none", "")
    consent = ", ".join(p for p in (
        basis,
        f"at {m['consent_at']}" if m["consent_at"] else "",
        f"via {m['consent_method']}" if m["consent_method"] else "",
        f"source {m['consent_source']}" if m["consent_source"] else "",
        f"ip {m['consent_ip']}" if m["consent_ip"] else "",
        f"confirmed {m['confirmed_at']}" if m["confirmed_at"] else "",
        f"agreed to \"{_one_line(m['consent_wording'])}\"" if m.get("consent_wording") else "",
    ) if p)
    line = f"  {m['list']}: {m['status']}" + (f" — {consent}" if consent else "")
    if m["unsubscribed_at"]:
        line += f"; unsubscribed {m['unsubscribed_at']} ({m['unsubscribe_channel']})"
    return line

def _one_line(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text.replace("\r\n", " / ").replace("\n", " / ")


def set_cmd(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The contact's address (any case).", metavar="EMAIL")],
    assignments: Annotated[list[str], typer.Argument(
        help="FIELD=VALUE: email, first_name, last_name or an attribute; an empty value clears it.",
        metavar="FIELD=VALUE...")],
    new_field: Annotated[bool, typer.Option(
        "--new-field", help="Allow a field that looks like a misspelling of an existing one.")] = False,
) -> None:
    """Correct a contact's data (rectification, GDPR art. 16).

    Examples:

        mailcli contacts set anna@example.nl last_name="de Vries" city=Utrecht

        mailcli contacts set anna@example.nl email=anna.devries@example.nl

        mailcli contacts set anna@example.nl city=

    A field that no contact has yet but looks like a misspelling of one
    that exists (frist_name) is refused with a suggestion; --new-field adds
    it anyway.
    """
    from ..contacts import update_contact

    app = context.get(ctx)
    update = update_contact(app.store, app.settings, email, assignments, new_fields=new_field)
    detail = update.contact
    if app.out.json:
        app.out.data(detail.as_dict() if detail else {})
        return
    if update.changed:
        app.out.success(f"Updated {detail.email if detail else email.strip()}: {', '.join(update.changed)}")
        if update.added:
            app.out.info(f"New field(s), which no other contact has: {', '.join(update.added)}")
    else:
        app.out.info("Nothing changed; the values were already so")
    if update.requests_closed:
        app.out.info(f"Closed rectification request(s) {', '.join(f'#{i}' for i in update.requests_closed)}")

contacts_app.command("show")(show_cmd)
contacts_app.command("set")(set_cmd)


def register(app: typer.Typer) -> None:
    app.add_typer(contacts_app, name="contacts")
