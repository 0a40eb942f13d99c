"""``mailcli demo``: the whole flow against a local sink, printing each step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import context
from ..errors import MailcliError


# Complexity: one branch per way a demo step can end, each printed its own way.
def demo_cmd(
    ctx: typer.Context,
    keep: Annotated[Path | None, typer.Option("--keep", help="Build the demo project in DIR and keep it.", metavar="DIR")] = None,
) -> None:
    """Run init, import, lint, render, send and report in a temporary project.

    Mail goes to an SMTP sink started inside this process on 127.0.0.1; no
    configuration and no network are needed.

    Example:

        mailcli demo
    """
    from ..demo import run_demo

    app = context.get(ctx)
    out = app.out
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    failed = None
    steps = []
    for number, step in enumerate(run_demo(keep.resolve() if keep else None), 1):
        steps.append({"title": step.title, "command": step.command, "exit_code": step.exit_code, "output": step.output})
        if out.json:
            continue
        out.line(f"\n== {number}. {step.title}")
        if step.command:
            out.line(f"$ {step.command}")
        for line in step.output.splitlines():
            out.line(f"  {line}")
        if step.exit_code not in (0, 3):
            failed = step
    if out.json:
        out.data(steps)
    if failed is not None:
        raise MailcliError(f"The demo stopped at: {failed.command} (exit {failed.exit_code})")
    if keep is not None:
        out.info(f"\nThe demo project is in {keep.resolve() / 'demo-project'}")
    out.success("\nDemo finished: that is the whole flow. Start your own with: mailcli init")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
