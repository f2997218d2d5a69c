"""QR images of codes: PNG for screens, SVG for print.

Byte mode, the standard 4-module quiet zone, error correction M for codes
shown on a phone screen (clean, lit, short-lived) and Q for printed venue
codes (scuffed, glared, photographed at an angle).
"""

from __future__ import annotations

import io
import re
from xml.sax.saxutils import escape

import qrcode
from qrcode.constants import ERROR_CORRECT_M, ERROR_CORRECT_Q

# What XML 1.0 cannot hold (control characters but tab and newline, and
# the two non-characters), even escaped: one would make the SVG unreadable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

QUIET_ZONE = 4
SCREEN = ERROR_CORRECT_M
PRINT = ERROR_CORRECT_Q


def matrix(text: str, *, error_correction: int = SCREEN) -> list[list[bool]]:
    """The module matrix of ``text``, quiet zone included."""
    code = qrcode.QRCode(error_correction=error_correction, border=QUIET_ZONE)
    code.add_data(text.encode("utf-8"), optimize=0)
    code.make(fit=True)
    return code.get_matrix()


def png(text: str, *, error_correction: int = SCREEN, box_size: int = 8) -> bytes:
    """A PNG of about 500 px for a typical code (a crisp 8 px per module)."""
    code = qrcode.QRCode(error_correction=error_correction, border=QUIET_ZONE, box_size=box_size)
    code.add_data(text.encode("utf-8"), optimize=0)
    code.make(fit=True)
    image = code.make_image(fill_color="black", back_color="white")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def svg(
    text: str,
    *,
    error_correction: int = SCREEN,
    caption: list[str] | None = None,
    size_mm: int = 60,
) -> bytes:
    """An SVG that prints at ``size_mm`` wide: the code, and under it the
    caption lines (escaped: labels come from departments)."""
    modules = matrix(text, error_correction=error_correction)
    n = len(modules)
    path = "".join(
        f"M{x} {y}h1v1h-1z" for y, row in enumerate(modules) for x, dark in enumerate(row) if dark
    )
    lines = [line for line in (_NOT_XML.sub("", line) for line in caption or []) if line]
    line_height = max(2.0, n / 16)
    height = n + (len(lines) * line_height * 1.4 + line_height if lines else 0)
    captions = "".join(
        f'<text x="{n / 2:g}" y="{n + line_height * (1.2 + 1.4 * i):g}" '
        f'font-size="{line_height:g}" text-anchor="middle" '
        f'font-family="Noto Sans CJK SC, Source Han Sans SC, PingFang SC, '
        f'Microsoft YaHei, sans-serif">{escape(line)}</text>'
        for i, line in enumerate(lines)
    )
    document = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" '
        f'width="{size_mm}mm" height="{size_mm * height / n:g}mm" '
        f'viewBox="0 0 {n} {height:g}">'
        f'<rect width="{n}" height="{height:g}" fill="#fff"/>'
        f'<path d="{path}" fill="#000" shape-rendering="crispEdges"/>'
        f"{captions}</svg>\n"
    )
    return document.encode("utf-8")
