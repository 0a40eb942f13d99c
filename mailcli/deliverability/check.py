"""The verdict of one deliverability check, shared by every doctor check.

A ``Check`` is what ``mailcli doctor`` prints one line for and what ``--json``
serialises. It lives in its own module so the DNS, SMTP and configuration checks
can build them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["pass", "warn", "fail", "error"]


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: a verdict, a one-line summary and, when it fails, the fix.

    ``fix`` holds the exact DNS record to add or the setting to change; ``details``
    carries the parsed values (record text, counts, tags) for ``--json``.
    """

    name: str
    verdict: Verdict
    summary: str
    fix: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the check does not make doctor exit non-zero."""
        return self.verdict in ("pass", "warn")

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape of ``doctor --json``."""
        return {
            "name": self.name,
            "verdict": self.verdict,
            "summary": self.summary,
            "fix": self.fix,
            "details": self.details,
        }


def has_failures(checks: list[Check]) -> bool:
    """True when any check failed or could not be run (doctor exits 1)."""
    return any(not check.ok for check in checks)
