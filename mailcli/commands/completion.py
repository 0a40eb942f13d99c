"""``mailcli completion SHELL``: the Tab-completion script for bash, zsh or fish.

The script asks mailcli itself what to offer (Typer's completion, driven by
``_MAILCLI_COMPLETE``), so commands and options are always those of the
installed version; the names of templates, lists, segments and campaigns come
from ``mailcli.completers``.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

COMPLETE_VAR = "_MAILCLI_COMPLETE"


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion_script(shell: str) -> str:
    """The completion script for ``shell`` (bash, zsh or fish)."""
    from typer.completion import get_completion_script

    return get_completion_script(prog_name="mailcli", complete_var=COMPLETE_VAR, shell=shell) + "\n"


def completion_cmd(
    shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.", metavar="SHELL")],
) -> None:
    """Print the Tab-completion script for bash, zsh or fish.

    Tab then completes commands, options, and the names of templates, lists,
    segments and campaigns of the project you are in.

    Examples:

        mailcli completion bash > ~/.local/share/bash-completion/completions/mailcli

        mailcli completion zsh > ~/.zfunc/_mailcli        # with fpath+=~/.zfunc before compinit

        mailcli completion fish > ~/.config/fish/completions/mailcli.fish
    """
    typer.echo(completion_script(shell.value), nl=False)


def register(app: typer.Typer) -> None:
    app.command("completion")(completion_cmd)
