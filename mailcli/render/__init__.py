"""Templates to messages: Jinja rendering, CSS inlining, text part, MIME and lint.

The public surface the send engine and the commands use:

* ``compile_template(templates_dir, name) -> CompiledTemplate`` once per
  campaign, then ``CompiledTemplate.render(RenderContext) -> RenderedParts``
  per recipient (``verify_inlining`` on a few samples when a campaign starts);
* ``MessageSkeleton`` (``render.mime``) once per campaign, then ``build(...)``
  per recipient for the wire bytes;
* ``check_header_value`` wherever a header value is formed;
* ``lint_template`` (``render.lint``) for CI.

``render/`` never opens a socket: stylesheets come from the templates folder
or not at all.
"""

from __future__ import annotations

from mailcli.errors import HeaderInjectionError, TemplateError

from .mime import AddressError, MessageSkeleton, check_header_value
from .template import CompiledTemplate, compile_template
from .values import RenderContext, RenderedParts

__all__ = [
    "AddressError",
    "CompiledTemplate",
    "HeaderInjectionError",
    "MessageSkeleton",
    "RenderContext",
    "RenderedParts",
    "TemplateError",
    "check_header_value",
    "compile_template",
]
