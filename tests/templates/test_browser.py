"""The example newsletter in a real browser: headless Chromium at 600 px and 375 px.

Screenshots are decoded here (zlib and struct, no imaging library) and checked
for what a reader would notice: the page is not blank, the masthead and the
button are drawn, the button spans the narrow screen with even margins (the
``@media`` rules apply, nothing is cut off), and dark mode darkens the card.
Nothing generated is kept: files live in pytest's temporary folder.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mailcli.render import compile_template
from mailcli.render.preview import preview_context

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")

MASTHEAD = (0x1F, 0x3A, 0x68)
BUTTON = (0x24, 0x57, 0xC5)


def decode_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """``(width, height, rows, bytes per pixel)`` of an 8-bit RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and color in (2, 6) and interlace == 0
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


def pixel(rows: list[bytes], bpp: int, x: int, y: int) -> tuple[int, int, int]:
    r, g, b = rows[y][x * bpp:x * bpp + 3]
    return (r, g, b)


def near(color: tuple[int, int, int], target: tuple[int, int, int], tolerance: int = 6) -> bool:
    return all(abs(c - t) <= tolerance for c, t in zip(color, target, strict=True))


def screenshot(html_file: Path, tmp_path: Path, width: int, *, dark: bool = False) -> tuple[int, int, list[bytes], int]:
    png = tmp_path / f"shot-{width}{'-dark' if dark else ''}.png"
    args = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},1100", f"--screenshot={png}",
    ]
    if dark:
        args.append("--force-dark-mode")
    subprocess.run([*args, html_file.as_uri()], capture_output=True, timeout=120, check=False)
    assert png.is_file(), "chromium wrote no screenshot"
    return decode_png(png.read_bytes())


@pytest.fixture(scope="module")
def newsletter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    template = compile_template(REPO / "examples" / "templates", "newsletter")
    parts = template.render(preview_context(now=datetime(2026, 3, 14, tzinfo=timezone.utc)))
    path = tmp_path_factory.mktemp("browser") / "newsletter.html"
    path.write_text(parts.html, encoding="utf-8")
    return path


def button_run(rows: list[bytes], bpp: int, width: int) -> tuple[int, int]:
    """The widest horizontal run of button colour: ``(first x, last x)``."""
    best = (0, -1)
    for y in range(0, len(rows), 2):
        xs = [x for x in range(width) if near(pixel(rows, bpp, x, y), BUTTON)]
        if xs and xs[-1] - xs[0] > best[1] - best[0]:
            best = (xs[0], xs[-1])
    return best


@pytest.mark.parametrize("width", [600, 375])
def test_newsletter_renders_and_fits_the_screen(newsletter: Path, tmp_path: Path, width: int) -> None:
    w, h, rows, bpp = screenshot(newsletter, tmp_path, width)
    assert w == width and h == 1100
    colours = {pixel(rows, bpp, x, y) for y in range(0, h, 7) for x in range(0, w, 3)}
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    assert any(near(c, MASTHEAD) for c in colours), "no masthead"
    first, last = button_run(rows, bpp, w)
    assert last > first, "no button"
    # Below 620 px the button is a full-width block inside 18 px padding:
    # even margins prove the layout reflowed to the screen instead of being cut off.
    assert abs(first - (w - 1 - last)) <= 3
    assert 12 <= first <= 40


def test_newsletter_dark_mode_darkens_the_card(newsletter: Path, tmp_path: Path) -> None:
    _, _, light_rows, bpp = screenshot(newsletter, tmp_path, 375)
    _, _, dark_rows, dark_bpp = screenshot(newsletter, tmp_path, 375, dark=True)
    # a point in the white card below the masthead, left of the text
    light = pixel(light_rows, bpp, 6, 300)
    dark = pixel(dark_rows, dark_bpp, 6, 300)
    assert sum(light) > 700 and sum(dark) < 200, (light, dark)
