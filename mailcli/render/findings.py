"""A lint finding: severity, code, file and line, and what is wrong."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from mailcli.errors import HeaderInjectionError, TemplateError

ERROR = "error"
WARNING = "warning"
NOTE = "note"  # not a problem: how the template will be rendered, where that costs speed


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str  # "error" | "warning" | "note"
    code: str
    file: str
    line: int | None
    message: str

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message} [{self.code}]"


_LOCATED = re.compile(r"^(?P<file>[^:\n]+?):(?P<line>\d+): (?P<message>.*)$", re.DOTALL)


def from_error(code: str, exc: TemplateError | HeaderInjectionError, fallback: str) -> Finding:
    """An error as a finding, at the file and line its message names (else ``fallback``)."""
    match = _LOCATED.match(exc.message)
    if match:
        return Finding(ERROR, code, match["file"], int(match["line"]), match["message"])
    return Finding(ERROR, code, fallback, None, exc.message)
