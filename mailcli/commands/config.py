"""``mailcli config show``: the settings in effect, secrets scrubbed.

The text is what the user would write in mailcli.toml — its key names
(``from = "Name <address>"``), rates and durations as text (``"20/s"``,
``"2m"``), unset keys as comments — so a value can be copied back into the
file. ``--json`` gives the same sections and keys as an object.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any

import typer

from .. import context
from ..config import (
    Duration,
    Settings,
    format_rate,
    format_seconds,
    parse_duration,
    parse_rate,
    tomllib,
)

config_app = typer.Typer(help="Show the configuration in effect.", no_args_is_help=True)

# Settings fields that are not keys of the file, and values kept as numbers
# internally that the file spells as text.
_NOT_KEYS = {("project", "root"), ("project", "database_url"), ("sender", "from_name"), ("sender", "from_address"),
             ("consent", "lists")}
_AS_TEXT = {("smtp", "rate"): (format_rate, parse_rate), ("smtp", "retry_window"): (format_seconds,
                                                                                    lambda v: parse_duration(v).seconds())}


def _written(raw: dict[str, Any], section: str, key: str, value: Any) -> Any:
    """The value as the file spells it: the user's own text when it means the same."""
    format_, parse = _AS_TEXT[(section, key)]
    mine = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
    if mine is not None:
        try:
            if parse(mine) == value:
                return mine
        except (ValueError, TypeError):
            pass
    return format_(value)


# Complexity: one branch per kind of setting (secret, duration, rate, list, table), in the file's order.
def settings_view(settings: Settings) -> dict[str, Any]:
    """Settings as the file's sections and keys; secrets appear only as the names of their variables."""
    try:
        raw = tomllib.loads(settings.path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raw = {}

    def plain(value: Any) -> Any:
        if isinstance(value, Duration):
            return value.text
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):  # one address: as written
            return str(value.network_address) if value.num_addresses == 1 else str(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    view: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name.startswith("_") or not dataclasses.is_dataclass(value) and value is not None:
            continue
        section: dict[str, Any] = {}
        if field.name == "sender":
            section["from"] = settings.sender.from_header
        if value is not None:
            for item in dataclasses.fields(value):
                if item.name.startswith("_") or (field.name, item.name) in _NOT_KEYS:
                    continue
                entry = getattr(value, item.name)
                if (field.name, item.name) in _AS_TEXT:
                    section[item.name] = _written(raw, field.name, item.name, entry)
                else:
                    section[item.name] = plain(entry)
        view[field.name] = section
    view["segments"] = dict(settings.segments)
    url = settings.project.database_url
    if url is not None:  # a server: its URL without the password, and where the password comes from
        view["project"]["database"] = url.display
        if url.password_env:
            view["project"]["database_password_env"] = url.password_env
    for name, own in settings.consent.lists.items():
        key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name, ensure_ascii=False)
        view[f"lists.{key}"] = {k: v for k, v in (("consent_text", own.consent_text), ("language", own.language))
                                if v is not None}
    view["smtp"]["password_set"] = settings.smtp.password() is not None
    view["secret_source"] = (
        f"environment variable {settings.unsubscribe.secret_env}"
        if os.environ.get(settings.unsubscribe.secret_env) else ".mailcli/secret"
    )
    return view


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string is a JSON string


# Complexity: one branch per kind of key (a variable's name, set or not, a value, none) and the comment each gets.
def render_toml(view: dict[str, Any], path: Path) -> str:
    """The view as mailcli.toml text, with what is not a key as comments."""
    lines = [f"# {path} (validated; defaults included)"]
    for section, values in view.items():
        if not isinstance(values, dict):
            continue
        lines.append("")
        if not values:
            lines.append(f"# [{section}] not set")
            continue
        lines.append(f"[{section}]")
        for key, value in values.items():
            if key == "password_set":
                continue
            if value is None:
                lines.append(f"# {key} = (not set)")
            elif key.endswith("_env"):
                state = "set" if os.environ.get(str(value)) else "not set"
                if key == "password_env" and section == "smtp":
                    state = "set" if values.get("password_set") else "not set"
                lines.append(f"{key} = {_toml_value(value)}  # {state} in this environment")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
    lines += ["", f"# the HMAC secret comes from {view['secret_source']}"]
    return "\n".join(lines)


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
    app.out.data(view, text=render_toml(view, app.settings.path))


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
