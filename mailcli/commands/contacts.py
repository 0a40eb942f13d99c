"""``mailcli contacts``: list, show and rectify contacts.

Every command here reads or changes personal data, so each records an audit
entry (docs/guarantees.md#audit). Addresses are named in output only where the user asked
for data about people or typed the address.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .. import context
from ..errors import NotFoundError

contacts_app = typer.Typer(
    help="List contacts (with no subcommand), show one, or correct one.",
    invoke_without_command=True,
)

PAGE = 50


@contacts_app.callback()
def contacts_cmd(
    ctx: typer.Context,
    list_name: Annotated[str | None, typer.Option("--list", "-l", help="Only members of this list.", metavar="L")]
    = None,
    status: Annotated[str | None, typer.Option(
        "--status", help="Only this status: with --list the member's status (subscribed, unconfirmed,"
        " unsubscribed, bounced, complained, restricted, objected; as `mailcli lists` counts them), else also"
        " the contact's (active, unsubscribed, bounced, complained).", metavar="S")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help=f"At most N contacts (table default {PAGE}).",
                                              metavar="N", min=0)] = None,
    offset: Annotated[int, typer.Option("--offset", help="Skip the first N contacts.", metavar="N", min=0)] = 0,
) -> None:
    """List contacts, paged; --json gives objects with email, first_name,
    last_name, status, lists and attributes.

    Examples:

        mailcli contacts --list news --status subscribed

        mailcli contacts --json --limit 1000 --offset 2000
    """
    if ctx.invoked_subcommand is not None:
        return
    from .. import audit
    from ..store.contacts import check_status, count_contacts, iter_contacts

    app = context.get(ctx)
    out = app.out
    store = app.store
    if status is not None:
        status = check_status(status, list_name=list_name)
    page = limit if limit is not None else (None if out.json else PAGE)
    rows = list(iter_contacts(store, list_name=list_name, status=status, limit=page, offset=offset))
    audit.record_access(store, app.settings, "contacts_list", command="contacts",
                        detail={"list": list_name, "status": status, "records": len(rows), "json": out.json})
    if out.json:
        out.data([row.as_dict() for row in rows])
        return
    total = count_contacts(store, list_name=list_name, status=status)
    if not rows:
        everyone = total if list_name is None and status is None else count_contacts(store)
        if not everyone:
            out.info("No contacts yet. Import some with: mailcli import FILE --list NAME")
        else:
            chosen = " and ".join(f"{name} {value}" for name, value in (("--list", list_name), ("--status", status))
                                  if value is not None)
            out.info(f"No contacts match {chosen}" if not total else f"No contacts after --offset {offset} ({total} match)")
            out.info(f"{everyone} contact(s) in all; `mailcli lists` counts each list's members by status")
        return
    out.table(
        ["email", "first_name", "last_name", "status", "lists"],
        [[r.email, r.first_name, r.last_name, r.status, ", ".join(r.lists)] for r in rows],
    )
    shown_to = offset + len(rows)
    if shown_to < total:
        # The next page is this same listing: the same list, status and page size.
        same = [*(["--list", list_name] if list_name else []), *(["--status", status] if status else []),
                *(["--limit", str(limit)] if limit is not None else [])]
        out.info(f"Showing {offset + 1}-{shown_to} of {total}; next page: "
                 f"{app.command('contacts', *same, '--offset', str(shown_to))}")


def _key(email: str) -> str:
    from ..addresses import AddressError, normalise_address
    from ..errors import UsageError

    try:
        return normalise_address(email).key
    except AddressError as exc:
        raise UsageError(f"Not a valid address {email.strip()!r}: {exc.reason}") from None


def show_cmd(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The contact's address (any case).", metavar="EMAIL")],
) -> None:
    """Show one contact: fields, attributes, lists with consent evidence, and history.

    The access is recorded in the audit log.

    Example:

        mailcli contacts show anna@example.nl
    """
    from .. import audit
    from ..store.contacts import contact_detail

    app = context.get(ctx)
    key = _key(email)
    detail = contact_detail(app.store, key)
    audit.record_access(app.store, app.settings, "contact_show", subject_email=key, command="contacts show",
                        detail={"found": detail is not None})
    if detail is None:
        raise NotFoundError(f"No contact {email.strip()}", hint="mailcli contacts lists who is in the database")
    if app.out.json:
        app.out.data(detail.as_dict())
        return
    out = app.out
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
    for m in detail.memberships:
        consent = ", ".join(p for p in (
            f"consent {m['consent_at']}" if m["consent_at"] else "",
            f"via {m['consent_method']}" if m["consent_method"] else "",
            f"source {m['consent_source']}" if m["consent_source"] else "",
            f"ip {m['consent_ip']}" if m["consent_ip"] else "",
            f"confirmed {m['confirmed_at']}" if m["confirmed_at"] else "",
        ) if p)
        line = f"  {m['list']}: {m['status']}" + (f" — {consent}" if consent else "")
        if m["unsubscribed_at"]:
            line += f"; unsubscribed {m['unsubscribed_at']} ({m['unsubscribe_channel']})"
        lines.append(line)
    if detail.history:
        lines.append("history:")
        for event in detail.history:
            extra = " ".join(str(v) for v in (event["channel"], event["scope"], event["campaign"]) if v)
            note = f"  ({_one_line(event['note'])})" if event.get("note") else ""
            lines.append(f"  {event['at']}  {event['kind']}" + (f"  {extra}" if extra else "") + note)
    out.data(detail.as_dict(), text="\n".join(lines))


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
    from .. import audit
    from ..addresses import normalise_pair
    from ..store.contacts import contact_detail, parse_changes, set_fields

    app = context.get(ctx)
    changes = parse_changes(assignments)
    key = _key(email)
    store = app.store
    settings = app.settings
    result = set_fields(store, key, changes, secret=settings.secret(), normalise=normalise_pair, new_fields=new_field)
    if result is None:
        audit.record_access(store, settings, "contact_set", subject_email=key, command="contacts set",
                            detail={"found": False})
        raise NotFoundError(f"No contact {email.strip()}", hint="mailcli contacts lists who is in the database")
    contact_id, changed, added = result
    new_key = next((normalise_pair(c.value)[1] for c in changes if c.field == "email"), key)
    audit.record_access(store, settings, "contact_set", subject_email=new_key, command="contacts set",
                        detail={"fields": changed, "email_changed": new_key != key})
    detail = contact_detail(store, new_key)
    if app.out.json:
        app.out.data(detail.as_dict() if detail else {})
        return
    if changed:
        app.out.success(f"Updated {detail.email if detail else email.strip()}: {', '.join(changed)}")
        if added:
            app.out.info(f"New field(s), which no other contact has: {', '.join(added)}")
    else:
        app.out.info("Nothing changed; the values were already so")


contacts_app.command("show")(show_cmd)
contacts_app.command("set")(set_cmd)


def register(app: typer.Typer) -> None:
    app.add_typer(contacts_app, name="contacts")
