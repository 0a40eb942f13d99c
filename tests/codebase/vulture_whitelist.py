"""Names vulture reports as unused that are used, each with what uses it.

vulture reads this file beside ``mailcli/`` (``tests/codebase/test_code_health.py``);
the test also runs it, so a listed module-level name that is renamed or
deleted fails there. ``_`` stands for names vulture cannot reach from a
module (methods of classes defined inside a function, attributes set on a
library's objects). A command function that typer registers with a
decorator is recognised by the test's ``ignore_decorators``.
"""

# ruff: noqa: B018 - each line is an expression that only names a thing

from __future__ import annotations

import mailcli
from mailcli import errors
from mailcli.commands import completion
from mailcli.config import settings
from mailcli.feedback import reports
from mailcli.importer import decoding, feed, workers
from mailcli.privacy import registry
from mailcli.render import environment, linthtml, mimebody, unroll
from mailcli.send import outgoing, replies
from mailcli.store import campaigns


class _Anything:
    def __getattr__(self, name: str) -> _Anything:
        return self


_ = _Anything()

completion.Shell.bash  # typer offers an Enum's members as the choices of `mailcli completion SHELL`
completion.Shell.zsh  # (the same)
completion.Shell.fish  # (the same)

mailcli.__getattr__  # Python calls a module's __getattr__ for a name the package exports lazily
mailcli.__dir__  # and its __dir__ for dir(mailcli)
errors.ExitCode.OK  # exit code 0: the documented table of exit codes starts with it
settings.RetentionSettings.bounced  # the retention periods are read by name through RETENTION_KEYS
settings.RetentionSettings.inactive  # (the same)
settings.RetentionSettings.send_log  # (the same)
settings.RetentionSettings.audit_log  # (the same)
campaigns.Campaign.frozen_at  # a column of the campaign row, filled with the others from _COLUMNS
reports.RecipientStatus.remote_mta  # a field of a parsed delivery report, asserted by the bounce tests
reports.Arf.user_agent  # a field of a parsed complaint, asserted by the bounce tests
registry.PersonalTable.keep_reason  # states, in the registry itself, why a kept table outlives an erasure
registry.unclassified_tables  # the registry's completeness test asks it for tables nobody classified
decoding.line_decoder  # the decoder on its own, for the mixed-encoding tests
feed.ImportFeed.workers_used  # a seam: tests and the CSV fuzzer see whether the two readers ran
workers.worker_main  # the reader process's entry point, started as python -c "...worker_main(...)"
mimebody.quoted_printable  # the reference encoder the faster quoted_printable_text is tested against
outgoing.CallbackHooks  # hooks from plain callables, for driving the transport in its tests
environment.MailTemplate.renders_flat  # a seam: tests see whether a template took the flat render path
environment.MailEnvironment.template_class  # jinja2 makes every template of the environment this class
environment.MailEnvironment.intercepted_binops  # jinja2 compiles these operators as calls to call_binop
environment.MailEnvironment.call  # jinja2's sandbox calls it for every call a template makes
environment.MailEnvironment.make_globals  # jinja2 makes every template's globals with it when it loads the template
_.concat  # jinja2's Template.render joins a template's output with its environment's concat
_.__self  # the first parameter of the sandbox's call, named as jinja2 names it
linthtml._TreeBuilder.handle_starttag  # HTMLParser calls these
linthtml._TreeBuilder.handle_endtag  # (the same)
linthtml._TreeBuilder.handle_data  # (the same)
unroll._Substitute.visit_For  # jinja2's NodeTransformer calls visit_<node type>
unroll._Substitute.visit_Mul  # (the same)
unroll._Substitute.visit_Name  # (the same)
unroll._Substitute.visit_Getattr  # (the same)
replies.ReplyReader.connection_made  # asyncio calls a Protocol's callbacks
replies.ReplyReader.data_received  # (the same)
replies.ReplyReader.eof_received  # (the same)
replies.ReplyReader.connection_lost  # (the same)
replies.ReplyReader.pause_writing  # (the same)
replies.ReplyReader.resume_writing  # (the same)
_.handle_DATA  # aiosmtpd calls the demo sink's handler for each message (demo.py)
_.log_message  # http.server calls these on the preview page's handler (previewserver.py)
_.do_GET  # (the same)
_.daemon_threads  # read by socketserver: request threads do not keep the process alive
_.nameservers  # read by dnspython's Resolver: ask the DNS server given on the command line
_._CHUNK_SIZE  # read by io.TextIOWrapper: how many bytes one read decodes (importer/decoding.py)
_.external_attr  # read by zipfile: the mode of each file in an access export (0600)
_.compress_type  # read by zipfile: each file deflated
_.will_close  # read by waitress' channel: close the connection on its next turn (feedback/web.py)
_.parser_class  # called by waitress' channel to make each request's parser (feedback/web.py)
