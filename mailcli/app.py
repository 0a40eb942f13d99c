"""The root command: global options, command registration, ``main()``.

Command modules live in ``mailcli/commands/``; each has a
``register(app: typer.Typer)`` function and is listed in ``COMMANDS`` under
the command names it registers. A module is imported only when one of its
commands runs (or help lists them all): importing every command, with the
sending engine, asyncio and ssl behind them, slowed every run down
(benchmarks/README.md, "Command modules are imported on demand").

Global options (``--json``, ``-q``, ``-v``, ``--debug``, ``--no-color``,
``-C DIR``, ``--config FILE``) may be given before or after the command
(``mailcli report --json`` and ``mailcli --json report`` are the same): the
root group moves them to the front before parsing.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from . import __version__, interrupts
from .context import AppContext
from .errors import ExitCode, Interrupted, MailcliError
from .interrupts import InterruptedAfterSaving, raises_interrupt
from .output import Output, closed_pipes_ignored

# Command name -> the module in mailcli/commands that registers it, in the
# order help lists them.
COMMANDS = {
    "init": "init", "demo": "demo", "import": "import_", "lists": "lists", "render": "render",
    "lint": "render", "send": "send", "campaigns": "campaigns", "reconfirm": "reconfirm", "report": "report",
    "unsubscribe": "unsubscribe",
    "serve": "serve",
    "bounces": "bounces", "doctor": "doctor", "config": "config", "contacts": "contacts",
    "privacy": "privacy", "backup": "backup", "completion": "completion", "replicate": "replicate",
    "migrate-store": "migrate_store",
}

_FLAGS = {"--json", "-q", "--quiet", "-v", "--verbose", "--debug", "--no-color"}
_VALUED = {"-C", "--config"}


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """Move global options found after the command name to the front."""
    front: list[str] = []
    rest: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        if arg == "--":
            rest.extend(items[i:])
            break
        if arg in _FLAGS:
            front.append(arg)
        elif arg in _VALUED and i + 1 < len(items):
            front.extend([arg, items[i + 1]])
            i += 1
        elif arg.startswith("--config="):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


class MailcliGroup(TyperGroup):
    """Root group: hoists global options, loads command modules on demand and
    turns a command's failure into its message and exit code (``fail``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: set[str] = set()  # command modules imported so far

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        """Run; a usage error reads like every other error: ``Error:`` and a ``Hint:`` line.

        Typer would draw a box around it, several lines wide on every
        terminal and in every cron mail, unlike the one-line errors of the rest.
        """
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except Exception as exc:
            name = type(exc).__name__
            if name == "NoArgsIsHelpError":  # the help was shown; nothing else to say
                sys.exit(int(ExitCode.USAGE))
            if name == "Abort":
                sys.stderr.write("Error: Aborted\n")
                sys.exit(int(ExitCode.ERROR))
            if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
                raise
            ctx = getattr(exc, "ctx", None)
            sys.stderr.write(f"Error: {exc.format_message()}\n")
            if ctx is not None:
                sys.stderr.write(f"Hint: {ctx.command_path} --help shows the usage and examples\n")
            sys.exit(int(exc.exit_code))
        sys.exit(code if isinstance(code, int) else 0)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            if cmd_name in COMMANDS:
                self._load(COMMANDS[cmd_name])
            else:  # a typo: load them all, for the "did you mean" hint
                self.list_commands(ctx)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: Any) -> list[str]:
        for module in dict.fromkeys(COMMANDS.values()):
            self._load(module)
        return super().list_commands(ctx)

    def _load(self, module_name: str) -> None:
        """Import one command module and add the commands it registers."""
        if module_name in self._loaded:
            return
        module = importlib.import_module(f"{__package__}.commands.{module_name}")
        commands = typer.Typer()
        module.register(commands)
        for name, command in typer.main.get_group(commands).commands.items():
            self.add_command(command, name)
        self._loaded.add(module_name)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (MailcliError, KeyboardInterrupt) as exc:
            out = ctx.obj.out if isinstance(ctx.obj, AppContext) else Output()
            if out.debug:
                raise
            raise typer.Exit(fail(out, exc)) from None
        finally:
            if isinstance(ctx.obj, AppContext):
                ctx.obj.close()


def fail(out: Output, exc: MailcliError | KeyboardInterrupt) -> int:
    """Say on stderr what went wrong, in one line and a hint; return the exit code to end with.

    The one place where an expected failure becomes what the user sees: the
    core raises ``MailcliError`` subclasses, each with its message, hint and
    exit code, and never prints or exits. Ctrl-C and SIGTERM (both a
    ``KeyboardInterrupt`` here) stop a command with its state saved: exit 130.
    """
    error: MailcliError
    if isinstance(exc, InterruptedAfterSaving):
        error = Interrupted("Interrupted once the changes were saved: they are kept",
                            hint="run the same command again to finish what it does after saving")
    else:
        error = exc if isinstance(exc, MailcliError) else Interrupted(
            "Interrupted", hint="run the same command again to resume")
    out.error(error.message, error.hint)
    return int(error.exit_code)


app = typer.Typer(
    name="mailcli",
    cls=MailcliGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mailcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    directory: Annotated[str | None, typer.Option("-C", help="Run as if started in DIR.", metavar="DIR")] = None,
    config_file: Annotated[str | None, typer.Option("--config", help="Use this mailcli.toml.", metavar="FILE")] = None,
    json_mode: Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Errors only (for cron).")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="More detail on stderr.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colours.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Email campaigns from the command line, GDPR-first.

    Start with `mailcli init` in an empty folder, or `mailcli demo` to see the
    whole flow on sample data. Every command has --help with examples.

    Examples:

        mailcli init newsletter && cd newsletter

        mailcli import ~/Downloads/members_export.csv --list news

        mailcli send 2026-12 --template newsletter --list news --dry-run

        mailcli report 2026-12

        mailcli -q bounces imaps://bounces@mail.example.org/INBOX    # from cron
    """
    out = Output(json_mode=json_mode, quiet=quiet, verbose=verbose, debug=debug, no_color=no_color)
    ctx.obj = AppContext(out=out, directory=directory, config_file=config_file, subcommand=ctx.invoked_subcommand)


@raises_interrupt
def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM is a Ctrl-C: the command stops cleanly and exits 130."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: run the app; unexpected errors become one line.

    SIGTERM (a service manager, ``kill``, a CI timeout) is handled like
    Ctrl-C by every command: what a command does with Ctrl-C — roll back, or
    finish the messages in flight — it does with SIGTERM too, and exits 130.
    ``send`` and ``serve`` install their own handlers while they run.
    """
    with contextlib.suppress(ValueError):  # not the main thread (embedded): leave signals alone
        if not interrupts.ignored(signal.SIGTERM):
            signal.signal(signal.SIGTERM, _terminate)
    if "_MAILCLI_COMPLETE" in os.environ:  # a shell asks what Tab offers (mailcli completion SHELL)
        from typer.completion import completion_init

        completion_init()
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    with closed_pipes_ignored():  # `mailcli ... | head -1`: the command still ends as it would
        return _run(command, args)


def _run(command: Any, args: list[str]) -> int:
    """The command's exit code; an error outside a command as one line."""
    debug = "--debug" in args
    try:
        command.main(args=args, prog_name="mailcli", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except (MailcliError, KeyboardInterrupt) as exc:  # outside a command: while options are read
        if debug:
            raise
        return fail(Output(no_color="--no-color" in args), exc)
    except Exception as exc:  # the last resort: never a traceback without --debug
        if debug:
            raise
        sys.stderr.write(f"Error: unexpected {type(exc).__name__}: {exc}\nHint: re-run with --debug for a traceback\n")
        return int(ExitCode.ERROR)
    return 0
