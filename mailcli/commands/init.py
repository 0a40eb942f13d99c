"""``mailcli init``: scaffold a project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import context
from ..project import init_project


def init_cmd(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Folder for the project (created if missing).")] = Path("."),
    name: Annotated[str | None, typer.Option("--name", help="Project and sender name.")] = None,
    language: Annotated[str, typer.Option("--language", help="Language of the newsletter, the pages and mails"
                                          " recipients see, and the config's comments.", metavar="en|nl")] = "en",
) -> None:
    """Create a project: mailcli.toml, templates/, .gitignore, a secret and the database.

    Then edit mailcli.toml: the sender, the SMTP relay and the unsubscribe
    URL (`mailcli doctor` says what is still the example).

    Example:

        mailcli init newsletter && cd newsletter

        mailcli init nieuwsbrief --language nl
    """
    app = context.get(ctx)
    result = init_project(directory, name=name, language=language)
    app.out.data(
        {"root": str(result.root), "config": str(result.config), "database": str(result.database), "templates": result.templates},
        text=f"Created {result.config}",
    ) if app.out.json else app.out.success(f"Created a mailcli project in {result.root}")
    if not app.out.json:
        first = result.templates[0] if result.templates else "newsletter"
        app.out.info(
            "Next steps:\n"
            f"  1. edit {result.config.name}: [sender] from, postal_address, [smtp] and [unsubscribe]"
            " (mailcli doctor lists what is still the example)\n"
            "  2. mailcli import YOUR-EXPORT.csv --list news   (a Mailchimp export or an Excel CSV as is; a file\n"
            "     without an opt-in time column needs the basis: --basis consent --consent-source \"where they\n"
            "     agreed\", --basis customer, or --status unconfirmed to ask them by mail first)\n"
            f"  3. mailcli lint {first} && mailcli render {first} --format text\n"
            f"  4. mailcli send first-issue --template {first} --list news --dry-run\n"
            "Keep .mailcli/secret safe and backed up: without it the suppression list cannot be read.\n"
            "To see the whole flow first on sample data and a local test server: mailcli demo"
        )


def register(app: typer.Typer) -> None:
    app.command("init")(init_cmd)
