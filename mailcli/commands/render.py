"""``mailcli render`` (preview one message) and ``mailcli lint`` (check templates for CI).

Both take a template by name (``templates/NAME/`` of the project) or by path
(a folder with ``message.html``; its parent is the templates folder), so
``mailcli lint templates/*/`` works in CI without a database.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import clock, context, interrupts
from ..completers import complete_template
from ..errors import InputFileError, MailcliError, NotFoundError, UsageError


def _project_settings(app: Any, *, required: bool) -> Any | None:
    """The project settings, or None when there is no project and none is needed."""
    from ..config import find_config

    if not required:
        try:
            find_config(config_file=app.config_file, directory=app.directory)
        except MailcliError:
            return None
    return app.settings


def _resolve_template(app: Any, template: str) -> tuple[Path, str, Any | None]:
    """``(templates folder, template name, settings or None)`` for a name or a path."""
    path = Path(template)
    if (path / "message.html").is_file():
        folder = path.resolve()
        settings = _project_settings(app, required=False)
        if settings is None:  # no project: the folder's parent is the only folder it reads from
            return folder.parent, folder.name, None
        # In a project, a template named by its path must be one of templates/:
        # its includes and layouts resolve from there, never from a folder
        # beside the configuration and the database.
        root = Path(os.path.realpath(settings.templates_dir))
        try:
            name = Path(os.path.realpath(folder)).relative_to(root).as_posix()
        except ValueError:
            raise UsageError(f"Template {template} is outside {root}: templates are rendered only from the"
                             " project's templates/ folder", hint=f"move or copy it into {root}") from None
        return root, name, settings
    if os.sep in template.rstrip(os.sep) or template.startswith("."):
        raise NotFoundError(f"Template not found: {template} has no message.html")
    settings = _project_settings(app, required=False)
    if settings is None:
        raise NotFoundError(
            f"Template {template!r} not found: no project here and no folder of that name",
            hint="run inside a mailcli project (or -C DIR), or pass the template folder's path",
        )
    return settings.templates_dir, template, settings


def _read_data(path: Path) -> dict[str, Any]:
    """A sample contact from a JSON object file (errors name file and line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(f"Data file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"Cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("contact"), dict):
        data = data["contact"]
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: expected a JSON object with the contact's fields (email, first_name, ...)")
    for key, value in data.items():
        if isinstance(value, (dict, list)):
            raise InputFileError(f"{path}: field {key!r} must be text or a number, not {type(value).__name__}")
    return data


def _is_desktop() -> bool:
    if not sys.stdout.isatty():
        return False
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def render_cmd(
    ctx: typer.Context,
    template: Annotated[str, typer.Argument(
        help="Template name (templates/NAME/) or folder path.", metavar="TEMPLATE", autocompletion=complete_template)],
    to: Annotated[str | None, typer.Option("--to", help="Render for this contact from the database.", metavar="EMAIL")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Render for the contact in this JSON file.", metavar="FILE.json")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="html, text or eml (the whole message).", metavar="FORMAT")] = "html",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to FILE instead of stdout.", metavar="FILE")] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="Subject when the template has no subject.txt.")] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the HTML in a browser (desktop terminals only;"
                                               " elsewhere the file's path is printed).")] = False,
    serve: Annotated[bool, typer.Option("--serve", help="Serve a preview page on 127.0.0.1 that reloads when a"
                                        " template file is saved (Ctrl-C stops).")] = False,
    port: Annotated[int, typer.Option("--port", help="With --serve: the port (default: a free one).",
                                      metavar="P", min=0, max=65535)] = 0,
) -> None:
    """Preview exactly what one recipient would get.

    Without --to or --data a sample contact is used. The campaign is named
    "preview" and the unsubscribe link carries a token that is clearly fake.
    --serve keeps a preview page open on this machine that reloads whenever
    you save a template (reach it from elsewhere through an SSH tunnel).

    Examples:

        mailcli render newsletter --to ann@example.org --format eml -o ann.eml

        mailcli render newsletter --serve --port 8026    # then open http://127.0.0.1:8026/
    """
    from ..render import compile_template
    from ..send.preview import preview_context_for, preview_message

    app = context.get(ctx)
    fmt = fmt.lower()
    _check_options(fmt, to=to, data=data, serve=serve, output=output, open_browser=open_browser)
    templates_dir, name, settings = _resolve_template(app, template)
    if to and settings is None:
        settings = _project_settings(app, required=True)
    if output is not None:
        from ..ownfiles import output_target

        output = output_target(settings, output, "-o", like=f"{Path(name).name}.{fmt}", inputs=[data])
    compiled = compile_template(templates_dir, name)
    contact = _sample_contact(app, to, data)

    def context_now(contact: dict[str, Any] | None) -> Any:
        return preview_context_for(settings, contact, subject=subject or "")

    if serve:
        _serve(app, templates_dir, name, data, contact, context_now, port)
        return
    preview = preview_message(compiled, settings=settings, contact=contact, subject=subject or "")
    if preview.html_bytes >= 90 * 1024:
        app.out.warn(f"the HTML is {preview.html_bytes / 1024:.0f} KB after inlining; Gmail clips messages over ~102 KB")
    for note in preview.notes():
        app.out.detail(note)
    _write_preview(app, preview, name, fmt, output, inline_once=compiled.inline_once, to=to)
    if open_browser:
        _open_in_browser(app, preview.parts.html, output if fmt == "html" else None, template)


def _sample_contact(app: Any, to: str | None, data: Path | None) -> dict[str, Any] | None:
    """The contact of ``--data`` or ``--to``; None for the built-in sample."""
    from ..send.preview import preview_contact

    if data is not None:
        return _read_data(data)
    return preview_contact(app.store, app.settings, to) if to else None


def _check_options(fmt: str, *, to: str | None, data: Path | None, serve: bool, output: Path | None,
                   open_browser: bool) -> None:
    """Refuse option combinations that cannot mean anything (exit 2)."""
    if fmt not in ("html", "text", "eml"):
        raise UsageError(f"Unknown --format {fmt!r}: use html, text or eml")
    if to and data:
        raise UsageError("Use either --to or --data, not both")
    if serve and (output is not None or open_browser or fmt != "html"):
        raise UsageError("--serve shows the HTML page (and the text part at /text); leave out -o, --open and --format")


def _write_preview(app: Any, preview: Any, name: str, fmt: str, output: Path | None, *, inline_once: bool,
                   to: str | None = None) -> None:
    """The message in ``fmt`` to ``output`` (0600; registered to the contact ``to``
    when it is one), as JSON with --json, or as bytes on stdout."""
    parts = preview.parts
    if fmt == "eml":
        body = preview.eml()
    else:
        body = (parts.html if fmt == "html" else parts.text).encode("utf-8")
    if output is not None:
        from ..privacy.files import write_private

        try:
            write_private(output, body)
        except OSError as exc:
            raise UsageError(f"Cannot write {output}: {exc.strerror}") from None
        if to:  # a real person's data: erasure and retention must find the file
            from ..addresses import normalise_address
            from ..privacy.files import register_written
            from ..tokens import address_hmac

            subject = address_hmac(app.settings.secret(), normalise_address(to).key)
            register_written(app.store, app.settings, output, "render", subject)
        app.out.success(f"Wrote {output} ({fmt}, {len(body)} bytes)")
    elif app.out.json:
        app.out.data({"template": name, "subject": parts.subject, "text": parts.text, "html": parts.html,
                      "html_bytes": preview.html_bytes, "inline_once": inline_once})
    else:
        sys.stdout.flush()
        out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
        if out is not None:
            out.write(body)
            out.flush()
        else:  # pragma: no cover - text-only streams
            sys.stdout.write(body.decode("utf-8"))


def _open_in_browser(app: Any, html: str, written: Path | None, template: str) -> None:
    """Open the HTML (the file just written, else a temporary copy) where there is a desktop."""
    if written is not None:
        target = written.resolve()
    else:
        handle, tmp = tempfile.mkstemp(prefix="mailcli-preview-", suffix=".html")
        with os.fdopen(handle, "wb") as file:
            file.write(html.encode("utf-8"))
        target = Path(tmp)
    if not _is_desktop():
        app.out.warn(f"no desktop to open a browser on; the preview is in {target}"
                     f" (or keep a page open with: {app.command('render', template, '--serve')})")
        return
    import webbrowser

    webbrowser.open(target.as_uri())


def _serve(app: Any, templates_dir: Path, name: str, data: Path | None, contact: dict[str, Any] | None,
           context_now: Any, port: int) -> None:
    """Run the preview page until Ctrl-C or SIGTERM."""
    import signal
    import threading

    from ..previewserver import Preview, PreviewServer
    from ..render import compile_template

    def build() -> Preview:
        # Compiled afresh each time: the page shows the files as saved now.
        person = _read_data(data) if data is not None else contact
        parts = compile_template(templates_dir, name).render(context_now(person))
        return Preview(html=parts.html, text=parts.text)

    watched = [templates_dir, *([data] if data is not None else [])]
    try:
        server = PreviewServer(build, watched, port=port)
    except OSError as exc:
        raise UsageError(f"Cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    stop = threading.Event()
    previous = interrupts.install(lambda *_: stop.set(), signal.SIGTERM)
    app.out.info(f"Previewing {name} at {server.url} (text part: {server.url}text); the page reloads when a file"
                 f" in {templates_dir} is saved. Ctrl-C stops")
    try:
        server.serve(stop)
    except KeyboardInterrupt:
        pass
    finally:
        interrupts.restore(previous)
    app.out.info("Stopped")


def lint_cmd(
    ctx: typer.Context,
    templates: Annotated[list[str], typer.Argument(
        help="Template names or folder paths.", metavar="TEMPLATE...", autocompletion=complete_template)],
    to: Annotated[str | None, typer.Option("--to", help="Check with this contact from the database.", metavar="EMAIL")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Sample contact (JSON object) with your custom fields.", metavar="FILE.json")] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="Campaign subject, for templates without subject.txt.")] = None,
    kind: Annotated[str, typer.Option("--kind", help="service: check as a service message (no unsubscribe link"
                                      " needed; links that look like offers are warned about).",
                                      metavar="marketing|service")] = "marketing",
) -> None:
    """Check templates before sending; exit 1 on any error (for CI).

    Reports, each with file:line: undefined or misspelt variables, a missing
    unsubscribe link (HTML and text), a missing subject, HTML over 102 KB after
    inlining, images without alt, links that are not https/mailto, hidden
    content and <script>/<form>. Variables are checked against a sample
    contact, or a real one with --to (or --data). --json prints the findings
    as a list.

    Examples:

        mailcli lint newsletter

        mailcli lint newsletter --to anna@example.nl

        mailcli lint templates/*/ --json

        mailcli lint outage --kind service
    """
    from ..render.lint import lint_template
    from ..render.preview import sender_from_settings
    from ..send.preview import preview_contact

    app = context.get(ctx)
    if kind not in ("marketing", "service"):
        raise UsageError(f"--kind: expected marketing or service, not {kind!r}")
    if to and data:
        raise UsageError("Use either --to or --data, not both")
    contact = _read_data(data) if data is not None else None
    if to:
        contact = preview_contact(app.store, app.settings, to)
    findings = []
    names = []
    for template in templates:
        templates_dir, name, settings = _resolve_template(app, template)
        names.append(name)
        findings += lint_template(
            templates_dir, name, now=clock.now(), contact=contact,
            sender=sender_from_settings(settings) if settings is not None else None,
            unsubscribe_base=settings.unsubscribe.url if settings is not None else None,
            subject=subject or "", kind=kind,
        )
    _lint_verdict(app.out, findings, names)


def _lint_verdict(out: Any, findings: list[Any], names: list[str]) -> None:
    """The findings (errors only with -q), then a MailcliError (exit 1) if any is an error."""
    from ..render.lint import ERROR, WARNING

    errors = sum(1 for f in findings if f.severity == ERROR)
    warnings = sum(1 for f in findings if f.severity == WARNING)
    _print_findings(out, findings)
    if errors:
        raise MailcliError(f"lint found {errors} error(s) and {warnings} warning(s) in {', '.join(names)}")
    if warnings:
        out.info(f"{', '.join(names)}: {warnings} warning(s), no errors")
    else:
        out.success(f"{', '.join(names)}: no problems found")


def _print_findings(out: Any, findings: list[Any]) -> None:
    """Every finding, or with -q the errors only; a JSON list with --json."""
    from ..render.lint import ERROR

    if out.json:
        out.data([f.to_dict() for f in findings])
        return
    for finding in findings:
        if finding.severity == ERROR or not out.quiet:
            out.line(str(finding))


def register(app: typer.Typer) -> None:
    app.command("render")(render_cmd)
    app.command("lint")(lint_cmd)
