"""``mailcli config show``: the settings in effect, secrets scrubbed."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import typer

from .. import context
from ..config import Duration, Settings

config_app = typer.Typer(help="Show the configuration in effect.", no_args_is_help=True)


def settings_view(settings: Settings) -> dict[str, Any]:
    """Settings as plain data; secrets appear only as the names of their variables."""

    def plain(value: Any) -> Any:
        if isinstance(value, Duration):
            return value.text
        if isinstance(value, Path):
            return str(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if not f.name.startswith("_")}
        return value

    view = plain(settings)
    view["secret_source"] = (
        f"environment variable {settings.unsubscribe.secret_env}"
        if os.environ.get(settings.unsubscribe.secret_env) else ".mailcli/secret"
    )
    view["smtp"]["password"] = "set" if settings.smtp.password() else "not set"
    return view


@config_app.command("show")
def show_cmd(ctx: typer.Context) -> None:
    """Print the validated configuration (no secrets).

    Every key in effect, defaults included, written as in mailcli.toml
    ("20/s", "2m"); secrets appear only as the names of their variables.

    Examples:

        mailcli config show

        mailcli config show --json
    """
    app = context.get(ctx)
    view = settings_view(app.settings)
    lines = [f"# {app.settings.path}"]
    for section, values in view.items():
        if isinstance(values, dict):
            lines.append(f"[{section}]")
            lines += [f"  {key} = {value}" for key, value in values.items()]
        else:
            lines.append(f"{section} = {values}")
    app.out.data(view, text="\n".join(lines))


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
