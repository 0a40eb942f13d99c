"""``mailcli migrate-store --to TARGET``: copy the project to a SQLite file or a PostgreSQL server."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import context
from ..migrate_store import migrate_store, overridden, parse_target


def migrate_store_cmd(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", metavar="URL",
                                    help="The new database: a postgresql:// URL (no password in it) or a SQLite"
                                         " file such as mailcli.db.")],
    replace: Annotated[bool, typer.Option("--replace",
                                          help="Overwrite a target that already holds data.")] = False,
    switch: Annotated[bool, typer.Option("--switch",
                                         help="Afterwards, make \\[project] database in mailcli.toml name the"
                                              " target.")] = False,
) -> None:
    """Copy the project's database to another engine: SQLite to PostgreSQL, or back.

    Every row is copied in one transaction of the target, checked (rows and a
    checksum per table, the audit chain verified) before it commits; no send,
    import, purge or restore runs meanwhile, and erasures and opt-outs
    recorded during the copy are re-applied to the target. The project keeps
    using its old database until \\[project] database names the new one
    (--switch does that). A target that holds data is refused unless
    --replace. The password of a server comes from PGPASSWORD or ~/.pgpass.

    Examples:

        mailcli migrate-store --to postgresql://mailcli@db.example.org/newsletter --switch

        mailcli migrate-store --to mailcli.db --switch
    """
    app = context.get(ctx)
    target = parse_target(to, app.settings)
    result = migrate_store(app.settings, app.store, target, replace=replace, switch=switch,
                           on_lock_wait=app.say_waiting_for)
    rows = sum(result.tables.values())
    app.out.result(result.as_json(),
                   text=f"Copied {rows} row(s) in {len(result.tables)} tables to {result.target}; every table's"
                        f" rows checked and the audit chain ({result.audit_entries} entries) verified")
    if result.reapplied:
        app.out.info(f"Re-applied {result.reapplied} erasure(s) and opt-out(s) recorded during the copy")
    for path in result.ledgers_copied:
        app.out.detail(f"Copied the ledger to {path}")
    if result.switched:
        app.out.success(f"mailcli.toml now says [project] database = \"{result.setting}\"")
        if overridden():
            app.out.warn("MAILCLI_DATABASE_URL is set: it names the database whatever mailcli.toml says;"
                         " change or unset it too")
    else:
        app.out.info(f"To use it, set [project] database = \"{result.setting}\" in mailcli.toml"
                     f" (or run {app.command('migrate-store', '--to', to, '--replace', '--switch')})")
    app.out.warn(f"{result.source} still holds everyone's data: delete it (and its backups, in time) once the"
                 " new database works, or an erasure will not reach it")


def register(app: typer.Typer) -> None:
    app.command("migrate-store")(migrate_store_cmd)
