"""Tab completion of names: the templates, lists, segments and campaigns of
the project on the command line being completed.

A completer finds the project like every command (the current folder or its
parents, ``-C DIR``, ``--config FILE``) and reads the database without
writing to it (no migration, no wait for a busy database); anything it cannot
read offers nothing rather than an error in the middle of a command line.
The commands name these functions as the ``autocompletion`` of their
options; ``mailcli completion SHELL`` prints the script a shell needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _settings(ctx: Any) -> Any:
    """The project's settings as the command line being completed chooses it, or None."""
    from .config import resolve

    root = ctx.find_root() if ctx is not None else None
    params = root.params if root is not None else {}
    try:
        return resolve(config_file=params.get("config_file"), directory=params.get("directory"))
    except Exception:  # noqa: BLE001 - no project, or a broken one: nothing to offer
        return None


def _matching(names: list[str], incomplete: str) -> list[str]:
    return [name for name in names if name.startswith(incomplete)]


def template_names(settings: Any) -> list[str]:
    """The template folders of a project (layouts and partials left out)."""
    folder: Path = settings.templates_dir
    try:
        return sorted(p.name for p in folder.iterdir()
                      if p.is_dir() and not p.name.startswith(("_", ".")) and (p / "message.html").is_file())
    except OSError:
        return []


def _names(ctx: Any) -> tuple[list[str], list[str]]:
    from .store.lists import names_for_completion

    settings = _settings(ctx)
    return names_for_completion(settings.project.database) if settings is not None else ([], [])


def complete_template(ctx: Any, incomplete: str) -> list[str]:
    settings = _settings(ctx)
    return _matching(template_names(settings), incomplete) if settings is not None else []


def complete_list(ctx: Any, incomplete: str) -> list[str]:
    return _matching(_names(ctx)[0], incomplete)


def complete_campaign(ctx: Any, incomplete: str) -> list[str]:
    return _matching(_names(ctx)[1], incomplete)


def complete_segment(ctx: Any, incomplete: str) -> list[str]:
    settings = _settings(ctx)
    return _matching(sorted(settings.segments), incomplete) if settings is not None else []
