"""Exit codes and the exception hierarchy of the core.

The core raises ``MailcliError`` subclasses and never exits or prints; the
command line turns them, in one place (``app.fail``), into a one-line message
and hint on stderr and the exit code the class carries.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The process's exit codes; stable, and listed in the README's "Exit codes"."""

    OK = 0
    ERROR = 1
    USAGE = 2
    PARTIAL = 3
    CONFIG = 4
    TRANSPORT = 5
    INTERRUPTED = 130


class MailcliError(Exception):
    """An expected failure with a message for people and an exit code."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class NotFoundError(MailcliError):
    """A contact, list, campaign or template that does not exist."""


class UsageError(MailcliError):
    """Bad arguments, or an input file that is missing or not usable."""

    exit_code = ExitCode.USAGE


class InputFileError(UsageError):
    """An input file that is missing, unreadable, binary or not a CSV."""


class NoBasisError(UsageError):
    """A contact file that shows no lawful basis for mailing its people, with none stated."""


class NoLawfulBasisError(MailcliError):
    """A send whose list has members, none of them with a lawful basis recorded."""


class ConfigError(MailcliError):
    """Missing or invalid configuration, or a missing secret."""

    exit_code = ExitCode.CONFIG


class TemplateError(MailcliError):
    """A template that does not compile or render (names file and line)."""


class TransportError(MailcliError):
    """SMTP unreachable, TLS failure or authentication refused."""

    exit_code = ExitCode.TRANSPORT


class PartialError(MailcliError):
    """The job finished but some items failed; a rerun resumes."""

    exit_code = ExitCode.PARTIAL


class Interrupted(MailcliError):
    """Ctrl-C or SIGTERM; the state is saved and a rerun resumes."""

    exit_code = ExitCode.INTERRUPTED


class HeaderInjectionError(MailcliError):
    """A value that would put CR, LF or NUL into a message header."""
