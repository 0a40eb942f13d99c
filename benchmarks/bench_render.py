"""Benchmark: complete campaign messages per second for the example newsletter, on one core.

For the same recipients, in the same run, on one CPU:

* Jinja only      — rendering the newsletter's message.html, nothing else: the
                    ceiling no pipeline built on Jinja can pass;
* complete (fast) — what ``send`` does per recipient: subject, HTML from the
                    template inlined once, text part, MIME bytes;
* per-message     — the same with CSS inlined for every message (the fallback
                    for templates whose styles depend on the data);
* generated text  — the fast pipeline for a template without message.txt
                    (the text part made from the HTML by inscriptis);
* EmailMessage    — the complete pipeline with the stdlib ``EmailMessage``
                    writer instead of ``MessageSkeleton``, for comparison.

Prints messages/s and the ratio to the target of 1,000 complete messages/s
per core. ``--quick`` uses fewer messages.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from mailcli.render import MessageSkeleton, RenderContext, compile_template
from mailcli.render.preview import SAMPLE_SENDER

TARGET = 1000.0
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "templates"
FIRST = ["Anne", "Zoë", "Jan", "Søren", "Émile", "Fatima", "Ngozi", "Łukasz", "", "Marie-Claire"]
LAST = ["de Vries", "O'Brien", "Jansen", "Müller", "van den Berg", "Yılmaz", "Smith & Sons", "", "Bakker", "Nowak"]
DOMAINS = ["example.org", "bücher.example", "mail.example.net", "straße.de"]


def contexts(n: int) -> list[RenderContext]:
    now = datetime(2026, 3, 14, 9, 0, tzinfo=timezone.utc)
    out = []
    for i in range(n):
        contact = {
            "email": f"user{i}@{DOMAINS[i % len(DOMAINS)]}",
            "first_name": FIRST[i % len(FIRST)],
            "last_name": LAST[(i // 10) % len(LAST)],
        }
        out.append(RenderContext(
            contact=contact, campaign={"name": "spring", "subject": ""}, sender=dict(SAMPLE_SENDER),
            unsubscribe_url=f"https://news.example.org/unsubscribe?t=Tok{i:012d}abcdefghijklmnop", now=now,
        ))
    return out


def rate(label: str, work: Callable[[RenderContext], object], ctxs: list[RenderContext], n: int) -> float:
    for ctx in ctxs[:50]:  # warm caches (IDNA, compiled regexes)
        work(ctx)
    start = time.perf_counter()
    for i in range(n):
        work(ctxs[i % len(ctxs)])
    elapsed = time.perf_counter() - start
    per_second = n / elapsed
    print(f"{label:<34} {per_second:>9,.0f} msgs/s  {elapsed / n * 1e3:7.3f} ms/msg  {per_second / TARGET:5.2f}x target")
    return per_second


def main() -> int:
    quick = "--quick" in sys.argv
    n = 1000 if quick else 5000
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    ctxs = contexts(500)
    template = compile_template(EXAMPLES, "newsletter")
    if not template.verify_inlining(ctxs[:10]):
        print(f"inline-once disabled: {template.fallback_reason}", file=sys.stderr)
        return 1
    skeleton = MessageSkeleton(from_name="Example Sender", from_address="news@example.org", reply_to="hello@example.org",
                               list_id="news.example.org", list_name="Example news", feedback_id="spring:news:example:EX1")

    def build(ctx: RenderContext, html: str, text: str, subject: str) -> bytes:
        c = ctx.contact
        return skeleton.build(
            to_address=c["email"], to_name=f"{c['first_name']} {c['last_name']}".strip() or None, subject=subject,
            text=text, html=html, message_id=f"<spring.{c['email'].split('@')[0]}@example.org>", date=ctx.now,
            list_unsubscribe=f"<{ctx.unsubscribe_url}>, <mailto:unsubscribe@example.org?subject=u>",
        )

    def jinja_only(ctx: RenderContext) -> object:
        return template._html.render(template.variables(ctx))

    def complete(ctx: RenderContext) -> object:
        parts = template.render(ctx)
        return build(ctx, parts.html, parts.text, parts.subject)

    def per_message(ctx: RenderContext) -> object:
        variables = template.variables(ctx)
        html = template.render_html(variables, per_message=True)
        text = template.render_text(variables, html)
        return build(ctx, html, text, variables["campaign"]["subject"])

    folder = Path(tempfile.mkdtemp(prefix="mailcli-bench-"))
    try:
        shutil.copytree(EXAMPLES, folder / "templates")
        (folder / "templates" / "newsletter" / "message.txt").unlink()
        generated = compile_template(folder / "templates", "newsletter")

        def generated_text(ctx: RenderContext) -> object:
            parts = generated.render(ctx)
            return build(ctx, parts.html, parts.text, parts.subject)

        def email_message(ctx: RenderContext) -> object:
            import email.policy
            from email.headerregistry import Address
            from email.message import EmailMessage
            from email.utils import format_datetime

            parts = template.render(ctx)
            msg = EmailMessage(policy=email.policy.SMTP)
            msg["From"] = Address("Example Sender", "news", "example.org")
            local, _, domain = ctx.contact["email"].partition("@")
            msg["To"] = Address(ctx.contact["first_name"], local, domain.encode("idna").decode())
            msg["Subject"] = parts.subject
            msg["Date"] = format_datetime(ctx.now)
            msg["Message-ID"] = "<spring.x@example.org>"
            msg["List-Unsubscribe"] = f"<{ctx.unsubscribe_url}>"
            msg.set_content(parts.text)
            msg.add_alternative(parts.html, subtype="html")
            return msg.as_bytes()

        size = len(template.render(ctxs[0]).html.encode("utf-8"))
        print(f"example newsletter: {size / 1024:.1f} KB of HTML after inlining; {n} messages per measurement; one core")
        ceiling = rate("Jinja only (message.html)", jinja_only, ctxs, n)
        fast = rate("complete, inline once", complete, ctxs, n)
        slow = rate("complete, inline per message", per_message, ctxs, n)
        rate("complete, text from HTML", generated_text, ctxs, max(n // 5, 200))
        rate("complete, stdlib EmailMessage", email_message, ctxs, max(n // 5, 200))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"complete/Jinja-only: {fast / ceiling:.2f}; inline once is {fast / slow:.1f}x per-message inlining")
    print(f"target {TARGET:,.0f} complete msgs/s per core: {'met' if fast >= TARGET else 'NOT met'} ({fast / TARGET:.1f}x)")
    return 0 if fast >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
