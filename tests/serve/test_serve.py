"""`mailcli serve`: a real server process, a real HTTP client (RFC 8058 one-click)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.feedback.test_feedback_support import Seeded, add_campaign, seed
from tests.serve_support import Server, one_click

PEOPLE = ["ann@example.org", "bob@example.org", "cy@example.org", "dee@example.org"]


@pytest.fixture
def served(project: Path) -> Iterator[tuple[Server, Seeded]]:
    seeded = seed(project, PEOPLE, lists=("news", "events"))
    server = Server(project)
    try:
        yield server, seeded
    finally:
        server.stop()


def _one_click(server: Server, token: str, *, multipart: bool = False) -> httpx.Response:
    return one_click(server.url, token, multipart=multipart)


def test_get_shows_a_button_and_changes_nothing(served: tuple[Server, Seeded]) -> None:
    server, s = served
    before = s.counts()
    for _ in range(3):  # a link scanner fetching the URL again and again
        response = httpx.get(server.url, params={"t": s.token("ann@example.org")})
        assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<form method="post"' in response.text and 'name="List-Unsubscribe" value="One-Click"' in response.text
    assert "ann@example.org" not in response.text
    assert "set-cookie" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert httpx.head(server.url, params={"t": s.token("ann@example.org")}).status_code == 200
    assert s.counts() == before
    assert s.membership("ann@example.org")[0] == "subscribed"


def test_urlencoded_and_multipart_one_click_unsubscribe_from_that_list(served: tuple[Server, Seeded]) -> None:
    server, s = served
    campaign, _ = add_campaign(s, "may")
    plain = _one_click(server, s.token("ann@example.org"))
    assert plain.status_code == 200, plain.text
    assert "set-cookie" not in plain.headers and "location" not in plain.headers
    assert "unsubscribed" in plain.text
    multi = _one_click(server, s.token("bob@example.org", "events"), multipart=True)
    assert multi.status_code == 200, multi.text
    assert multi.request.headers["content-type"].startswith("multipart/form-data")

    status, at, channel = s.membership("ann@example.org")
    assert (status, channel) == ("unsubscribed", "one-click") and at
    assert s.membership("ann@example.org", "events")[0] == "subscribed"  # only the token's list
    assert s.membership("bob@example.org", "events")[0] == "unsubscribed"
    assert s.membership("bob@example.org", "news")[0] == "subscribed"
    assert s.membership("cy@example.org")[0] == "subscribed"
    assert s.suppressions("ann@example.org") == {"news": "unsubscribed"}
    # attributed to the latest campaign on that list, so report counts it
    assert (s.contacts["ann@example.org"], campaign, "unsubscribed", "one-click", "news") in s.events("unsubscribed")


def test_repeat_is_idempotent(served: tuple[Server, Seeded]) -> None:
    server, s = served
    token = s.token("cy@example.org")
    first = _one_click(server, token)
    after_first = (s.counts(), s.membership("cy@example.org"))
    second = _one_click(server, token, multipart=True)
    third = _one_click(server, token)
    assert first.status_code == second.status_code == third.status_code == 200
    assert first.text == second.text == third.text
    assert (s.counts(), s.membership("cy@example.org")) == after_first
    assert len(s.events("unsubscribed")) == 1


def test_the_page_button_posts_the_token_in_the_form(served: tuple[Server, Seeded]) -> None:
    server, s = served
    page = httpx.get(server.url, params={"t": s.token("dee@example.org")})
    action = re.search(r'action="([^"]+)"', page.text)
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]+)">', page.text))
    assert action and fields["List-Unsubscribe"] == "One-Click"
    # a browser posts the hidden fields to the form's action
    response = httpx.post(str(httpx.URL(server.url).join(action.group(1).replace("&amp;", "&"))), data=fields)
    assert response.status_code == 200
    assert s.membership("dee@example.org")[0] == "unsubscribed"
    # the token in the form body alone is accepted as well
    s2 = httpx.post(server.url, data={"List-Unsubscribe": "One-Click", "t": s.token("dee@example.org", "events")})
    assert s2.status_code == 200 and s.membership("dee@example.org", "events")[0] == "unsubscribed"


def test_bad_tokens_get_one_uniform_answer_and_change_nothing(served: tuple[Server, Seeded]) -> None:
    server, s = served
    token = s.token("ann@example.org")
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    other = s.token("bob@example.org")
    swapped = other[:12] + token[12:]  # bob's uid with ann's MAC: knowing one token does not help
    before = s.counts()
    answers = []
    for bad in (flipped, swapped, token[:-2], "", "not-a-token", token + "A"):
        answers.append(_one_click(server, bad))
        answers.append(httpx.get(server.url, params={"t": bad}))
    answers.append(httpx.post(server.url, data={"List-Unsubscribe": "One-Click"}))  # no token at all
    assert {a.status_code for a in answers} == {400}
    assert len({a.text for a in answers}) == 1
    assert s.counts() == before
    assert all(s.membership(p)[0] == "subscribed" for p in PEOPLE)


def test_erased_contact_gets_the_same_200(served: tuple[Server, Seeded]) -> None:
    server, s = served
    token = s.token("bob@example.org")
    done = _one_click(server, s.token("ann@example.org"))
    s.store.conn.execute("DELETE FROM contacts WHERE id = ?", (s.contacts["bob@example.org"],))
    gone = _one_click(server, token)
    assert gone.status_code == 200 and gone.text == done.text


def test_other_paths_methods_and_sizes(served: tuple[Server, Seeded]) -> None:
    server, s = served
    assert httpx.get(server.base + "/admin").status_code == 404
    assert httpx.post(server.base + "/", data={"List-Unsubscribe": "One-Click"}).status_code == 404
    put = httpx.put(server.url, params={"t": s.token("ann@example.org")})
    assert put.status_code == 405 and "POST" in put.headers["allow"]
    big = httpx.post(server.url, params={"t": s.token("ann@example.org")},
                     content=b"List-Unsubscribe=One-Click&x=" + b"a" * 70_000,
                     headers={"content-type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413
    no_field = httpx.post(server.url, params={"t": s.token("ann@example.org")}, data={"other": "1"})
    assert no_field.status_code == 400
    assert s.membership("ann@example.org")[0] == "subscribed"


def _part(headers: str, value: str) -> str:
    return f"--XX\r\n{headers}\r\n\r\n{value}\r\n"


_FIELD = 'Content-Disposition: form-data; name="{}"'
# Bodies that are not a form in ways only a parser notices: each a plain 400, never a 5xx.
MALFORMED_FORMS = {
    "an unknown charset": _part(_FIELD + "\r\nContent-Type: text/plain; charset=x-bogus", "{}") + "--XX--\r\n",
    "a charset that is no text": _part(_FIELD + "\r\nContent-Type: text/plain; charset=base64", "{}") + "--XX--\r\n",
    "a codec without replacement": _part(_FIELD + "\r\nContent-Type: text/plain; charset=idna", "{}") + "--XX--\r\n",
    "an encoded charset": _part(_FIELD + "\r\nContent-Type: text/plain; charset*=x-bogus''abc", "{}") + "--XX--\r\n",
    "a NUL in the charset": _part(_FIELD + "\r\nContent-Type: text/plain; charset=\"utf-8\x00\"", "{}") + "--XX--\r\n",
    "comments nested deep": _part(_FIELD + "\r\nContent-Type: text/plain; x=" + "(" * 5000, "{}") + "--XX--\r\n",
    "a nested multipart": _part(_FIELD + "\r\nContent-Type: multipart/mixed; boundary=YY",
                                "--YY\r\n\r\n{}\r\n--YY--") + "--XX--\r\n",
    "messages nested deep": _part(_FIELD + "\r\nContent-Type: message/rfc822",
                                  "Content-Type: message/rfc822\r\n\r\n" * 1500 + "{}") + "--XX--\r\n",
    "more parts than a form has": _part(_FIELD, "{}") + _part("Content-Disposition: form-data", "") * 120
    + "--XX--\r\n",
    "no closing delimiter": _part(_FIELD, "{}"),
}


@pytest.mark.parametrize("case", list(MALFORMED_FORMS))
def test_a_malformed_form_is_a_plain_400_on_every_route(served: tuple[Server, Seeded], case: str) -> None:
    server, s = served
    before = s.counts()
    multipart = {"content-type": "multipart/form-data; boundary=XX"}
    body = MALFORMED_FORMS[case]
    unsubscribe = httpx.post(server.url, params={"t": s.token("ann@example.org")}, headers=multipart,
                             content=body.replace('"{}"', '"List-Unsubscribe"').replace("{}", "One-Click").encode())
    consent = _part('Content-Disposition: form-data; name="consent"', "yes")
    sign_up = httpx.post(server.base + "/subscribe/news", headers=multipart,
                         content=(consent + body.replace('"{}"', '"email"').replace("{}", "new@example.org")).encode())
    assert (unsubscribe.status_code, sign_up.status_code) == (400, 400), (unsubscribe.text, sign_up.text)
    assert s.counts() == before and s.membership("ann@example.org")[0] == "subscribed"
    assert server.stop() == 0
    assert "Traceback" not in "".join(server.log) and "Error" not in "".join(server.log)


def test_a_urlencoded_form_that_is_no_form_is_a_plain_400(served: tuple[Server, Seeded]) -> None:
    server, s = served
    token = s.token("ann@example.org")
    urlencoded = {"content-type": "application/x-www-form-urlencoded"}
    for body in (b"List-Unsubscribe=One-Click&a=\xff", b"List-Unsubscribe=One-Click" + b"&" * 150):
        assert httpx.post(server.url, params={"t": token}, headers=urlencoded, content=body).status_code == 400
    # A part without a name, or a charset the form names rightly, still makes a form.
    body = (_part("Content-Disposition: form-data", "x")
            + _part(_FIELD.format("List-Unsubscribe") + "\r\nContent-Type: text/plain; charset=iso-8859-1",
                    "One-Click") + "--XX--\r\n")
    done = httpx.post(server.url, params={"t": token}, content=body.encode(),
                      headers={"content-type": "multipart/form-data; boundary=XX"})
    assert done.status_code == 200 and s.membership("ann@example.org")[0] == "unsubscribed"


def test_sigterm_stops_cleanly_and_the_log_has_no_addresses_or_tokens(served: tuple[Server, Seeded]) -> None:
    server, s = served
    token = s.token("ann@example.org")
    assert _one_click(server, token).status_code == 200
    assert server.stop() == 0
    log = "".join(server.log)
    assert "Stopped" in log
    assert "POST /unsubscribe 200" in log and "outcome=unsubscribed" in log
    assert "@example.org" not in log.replace("news.example.org", "") and token not in log
    assert "Traceback" not in log


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_is_one_log_line_and_a_traceback_only_with_debug(project: Path, debug: bool) -> None:
    import sqlite3

    server = Server(project, *(["--debug"] if debug else []))
    try:
        conn = sqlite3.connect(project / "mailcli.db")
        conn.execute("ALTER TABLE lists RENAME TO lists_gone")  # a database damaged under the server
        conn.commit()
        conn.close()
        answer = httpx.get(server.base + "/subscribe/news")
        assert answer.status_code == 503 and "Traceback" not in answer.text
    finally:
        assert server.stop() == 0
    log = "".join(server.log)
    assert ("Traceback" in log) is debug, log
    line = "error while handling GET /subscribe/news"
    assert (line + ": OperationalError: no such table: lists\n" in log) is not debug, log


def test_failure_limiter_slows_down_only_clients_with_bad_tokens() -> None:
    from mailcli.feedback.web import FailureLimiter

    moment = [1000.0]
    limiter = FailureLimiter(limit=3, window=60, max_clients=2, now=lambda: moment[0])
    for _ in range(3):
        assert not limiter.blocked("10.0.0.1")
        limiter.failed("10.0.0.1")
    assert limiter.blocked("10.0.0.1") and not limiter.blocked("10.0.0.2")
    moment[0] += 61
    assert not limiter.blocked("10.0.0.1")
    limiter.failed("a")
    limiter.failed("b")
    limiter.failed("c")  # the table stays bounded
    assert len(limiter._hits) == 2


def test_port_in_use_is_one_clear_line(project: Path) -> None:
    import socket

    from tests.conftest import run_mailcli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_mailcli("serve", "--port", str(port), cwd=project, timeout=60)
    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("host", "problem"), [("999.1.1.1", "is not an IP address"), ("::g", "is not an IP address"),
                                               ("bad_host", "is not a host name or an IP address")])
def test_an_address_that_is_none_is_a_usage_error_before_anything_listens(project: Path, host: str,
                                                                          problem: str) -> None:
    from tests.conftest import run_mailcli

    result = run_mailcli("serve", "--host", host, "--port", "0", cwd=project, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[0] == f"Error: --host {host!r} {problem}"
    assert "Warning" not in result.stderr and "Serving" not in result.stderr
