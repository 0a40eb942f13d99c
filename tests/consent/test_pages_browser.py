"""The pages people see from `mailcli serve`, in headless Chromium at 375 and 1280 px, in Dutch and English.

The sign-up form, the confirmation page and the unsubscribe page are fetched
from a real `serve` over HTTP, then shown side by side (each in an iframe as
wide as the screen: headless Chromium lays a window out at 500 px at least)
and checked for horizontal overflow (no element reaches past the right edge,
nothing scrolls sideways) and screenshotted; the screenshots must show a
page, not a blank. Every text on the pages must come from the language file
(or be a name the sender configured). With SCREENSHOT_DIR set the PNGs are
copied there to look at.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from mailcli.locales import days, texts
from tests.conftest import Cli, set_smtp
from tests.serve_support import Server, tokens_by_email
from tests.smtpserver import SmtpServer
from tests.templates.test_browser import CHROMIUM, decode_png, pixel

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")

WIDTHS = (375, 1280)
PAGES = ("subscribe", "confirm", "unsubscribe")
HEIGHT = 760  # of each page's frame
LISTS = {"en": "news", "nl": "nieuwsbrief"}
WORDING = {"en": "Yes, send me the monthly newsletter of Bakery De Vries in Utrecht.",
           "nl": "Ja, stuur mij de maandelijkse nieuwsbrief van Bakkerij De Vries uit Utrecht."}
SENDER = "Bakkerij De Vries"

_HARNESS = """<!doctype html><html><body style="margin:0;background:#fff">{frames}
<script>
var results = {{}}, frames = document.querySelectorAll('iframe'), left = frames.length;
frames.forEach(function (f) {{ f.addEventListener('load', function () {{
  var d = f.contentDocument, w = d.documentElement.clientWidth, over = [];
  d.querySelectorAll('body *').forEach(function (e) {{
    var r = e.getBoundingClientRect();
    if (r.width && r.right > w + 0.5) over.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : ''));
  }});
  results[f.name] = {{width: w, scroll: d.documentElement.scrollWidth, over: over}};
  if (--left === 0) document.body.setAttribute('data-result', JSON.stringify(results));
}}); }});
</script></body></html>"""


def _chromium(tmp: Path, width: int, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / ("profile-" + Path(url).stem + "-" + extra[0].lstrip("-").split("=")[0])
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--allow-file-access-from-files", "--virtual-time-budget=5000",
         f"--user-data-dir={profile}",
         f"--window-size={width},{HEIGHT * len(PAGES)}", *extra, url],
        capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """language -> page -> the HTML serve answered."""
    root = tmp_path_factory.mktemp("pages")
    cli = Cli()
    assert cli("init", str(root / "proj"), "--name", SENDER).exit_code == 0
    project = root / "proj"
    found: dict[str, dict[str, str]] = {}
    with SmtpServer() as relay:
        set_smtp(project, "127.0.0.1", relay.port)
        with (project / "mailcli.toml").open("a", encoding="utf-8") as config:
            for language, name in LISTS.items():
                config.write(f'\n[lists.{name}]\nconsent_text = "{WORDING[language]}"\nlanguage = "{language}"\n')
        (project / "people.csv").write_text("email\nann@example.org\n", encoding="utf-8")
        for name in LISTS.values():
            assert cli("-C", str(project), "import", str(project / "people.csv"), "--list", name,
                       "--basis", "customer").exit_code == 0
        server = Server(project)
        try:
            for language, name in LISTS.items():
                form = httpx.get(f"{server.base}/subscribe/{name}").text
                httpx.post(f"{server.base}/subscribe/{name}", data={"email": f"new-{language}@example.org",
                                                                     "consent": "yes"})
                mail = _wait_for_mail(relay, f"new-{language}@example.org")
                token = re.search(rb"confirm\?t=3D([A-Za-z0-9_-]{40})|confirm\?t=([A-Za-z0-9_-]{40})", mail)
                assert token
                value = (token.group(1) or token.group(2)).decode()
                confirm = httpx.get(f"{server.base}/confirm", params={"t": value}).text
                unsubscribe = httpx.get(server.url, params={"t": tokens_by_email(project, name)["ann@example.org"]}).text
                found[language] = {"subscribe": form, "confirm": confirm, "unsubscribe": unsubscribe}
        finally:
            server.stop()
    return found


def _wait_for_mail(relay: SmtpServer, address: str) -> bytes:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for message in relay.messages:
            if address in message.rcpt_tos:
                return message.data.replace(b"=\r\n", b"")
        time.sleep(0.05)
    raise AssertionError(f"no confirmation mail to {address}")


@pytest.fixture(scope="module")
def shown(pages: dict[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
          ) -> dict[tuple[str, int], tuple[dict[str, dict[str, object]], Path]]:
    """(language, width) -> (the overflow measured in each page, the screenshot)."""
    folder = tmp_path_factory.mktemp("shots")
    jobs = []
    for language, by_page in pages.items():
        for page, text in by_page.items():
            (folder / f"{language}-{page}.html").write_text(text, encoding="utf-8")
        for width in WIDTHS:
            frames = "".join(
                f'<iframe name="{page}" src="{language}-{page}.html" style="border:0;display:block;'
                f'width:{width}px;height:{HEIGHT}px"></iframe>' for page in PAGES)
            harness = folder / f"{language}-{width}.html"
            harness.write_text(_HARNESS.format(frames=frames), encoding="utf-8")
            jobs.append((language, width, harness))

    def run(job: tuple[str, int, Path]) -> tuple[tuple[str, int], tuple[dict[str, dict[str, object]], Path]]:
        language, width, harness = job
        for _ in range(3):  # on a loaded machine the frames can miss chromium's time budget: again
            dom = _chromium(folder, width, harness.as_uri(), "--dump-dom").stdout
            match = re.search(r'data-result="([^"]*)"', dom)
            if match:
                break
        assert match, dom[-2000:]
        png = folder / f"{language}-{width}.png"
        _chromium(folder, width, harness.as_uri(), f"--screenshot={png}")
        assert png.is_file(), "chromium wrote no screenshot"
        return (language, width), (json.loads(html.unescape(match.group(1))), png)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(pool.map(run, jobs))
    target = os.environ.get("SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for _, png in results.values():
            shutil.copy(png, Path(target) / png.name)
    return results


@pytest.mark.parametrize("language", ["en", "nl"])
@pytest.mark.parametrize("width", WIDTHS)
def test_no_page_overflows_the_screen(shown: dict[tuple[str, int], tuple[dict[str, dict[str, object]], Path]],
                                      language: str, width: int) -> None:
    measured, _ = shown[(language, width)]
    assert set(measured) == set(PAGES)
    for page, result in measured.items():
        assert result["width"] == width, (page, result)
        assert result["scroll"] == width and result["over"] == [], (language, width, page, result)


@pytest.mark.parametrize("language", ["en", "nl"])
@pytest.mark.parametrize("width", WIDTHS)
def test_the_screenshots_show_the_pages(shown: dict[tuple[str, int], tuple[dict[str, dict[str, object]], Path]],
                                        language: str, width: int) -> None:
    _, png = shown[(language, width)]
    w, h, rows, bpp = decode_png(png.read_bytes())
    assert w == width
    for index in range(len(PAGES)):  # each frame: text and a blue button, not a blank
        top = index * HEIGHT
        colours = {pixel(rows, bpp, x, y) for y in range(top, min(h, top + HEIGHT), 3) for x in range(0, min(w, 700), 3)}
        assert len(colours) > 20, f"{PAGES[index]} looks blank"
        assert any(abs(r - 0x1A) < 12 and abs(g - 0x5F) < 12 and abs(b - 0xB4) < 12 for r, g, b in colours), \
            f"{PAGES[index]}: no button"


class _Texts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.found.append(data.strip())


@pytest.mark.parametrize("language", ["en", "nl"])
def test_every_text_on_the_pages_comes_from_the_language_file(pages: dict[str, dict[str, str]], language: str) -> None:
    values = {"list": LISTS[language], "sender": SENDER, "days": days(language, 7), "url": ""}
    allowed = {WORDING[language]}
    for section in texts(language).values():
        for text in section.values():
            allowed.add(text.format(**values) if "{" in text and "{n}" not in text else text)
    for page, body in pages[language].items():
        assert f'<html lang="{language}">' in body
        parser = _Texts()
        parser.feed(body)
        assert parser.found, page
        for text in parser.found:
            bare = text[1:-1] if text.startswith("(") and text.endswith(")") else text
            assert bare in allowed, f"{language} {page}: {text!r} is not from the language file"
