"""What a render worker sends back can always be read by the sending process."""

from __future__ import annotations

import pickle

from mailcli.errors import MailcliError, TemplateError
from mailcli.send.pool import reply_frame


class _Needy(Exception):
    """An exception whose constructor wants more than its message, as some have."""

    def __init__(self, what: str, where: str) -> None:
        super().__init__(f"{what} at {where}")


def test_an_exception_that_would_not_unpickle_comes_back_as_its_text() -> None:
    # Unpickling calls the class with its message alone; this one cannot be
    # made so, and the sending process would never settle the batch.
    with_text = pickle.loads(reply_frame(7, False, _Needy("broken", "line 3")))
    assert with_text[:2] == (7, False)
    assert type(with_text[2]) is MailcliError and str(with_text[2]) == "broken at line 3"


def test_a_mailcli_error_and_a_result_come_back_as_they_were() -> None:
    seq, ok, error = pickle.loads(reply_frame(1, False, TemplateError("message.html:4: oops", hint="fix it")))
    assert (seq, ok, type(error), str(error), error.hint) == (1, False, TemplateError, "message.html:4: oops", "fix it")
    assert pickle.loads(reply_frame(2, True, [(b"bytes", None), (None, ("a problem", False))])) == (
        2, True, [(b"bytes", None), (None, ("a problem", False))])
