"""What a recipient reads, in their language: the texts of ``en.toml`` and ``nl.toml``.

Every page ``serve`` shows (sign-up, confirmation, unsubscribe) and the
footer mailcli adds to a text part take their words from these files and
nowhere else, so a translation is one file and a test can check that every
word on a page comes from it. Dates are written by Babel in the same
language (:func:`format_date`).
"""

from __future__ import annotations

import functools
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ..config.settings import LANGUAGES

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

_HERE = Path(__file__).parent


@functools.cache
def texts(language: str) -> dict[str, dict[str, str]]:
    """The texts of one language: section -> key -> text (English for an unknown language)."""
    name = language if language in LANGUAGES else "en"
    with open(_HERE / f"{name}.toml", "rb") as handle:
        data: dict[str, dict[str, str]] = tomllib.load(handle)
    return data


def text(language: str, key: str, **values: Any) -> str:
    """``section.key`` in ``language``, with ``{name}`` filled in from ``values``."""
    section, _, name = key.partition(".")
    template = texts(language)[section][name]
    return template.format(**values) if values else template


def days(language: str, count: int) -> str:
    """``7 days`` / ``7 dagen``; one of each for 1."""
    return text(language, "days.one" if count == 1 else "days.other", n=count)


def format_date(value: date | datetime, form: str = "long", language: str = "en") -> str:
    """A date as people of ``language`` write it: ``6 december 2026`` (nl, long),
    ``December 6, 2026`` (en, long). ``form`` is short, medium, long or full,
    or a Babel/CLDR pattern such as ``d MMMM``."""
    day = value.date() if isinstance(value, datetime) else value
    return _format_day(day, form, language if language in LANGUAGES else "en")


@functools.lru_cache(maxsize=512)
def _format_day(day: date, form: str, language: str) -> str:
    """Babel's formatting, kept: a template writes the same few dates into
    every message of a send, and Babel takes tens of microseconds each time."""
    from babel.dates import format_date as babel_format_date

    return str(babel_format_date(day, format=form, locale=language))
