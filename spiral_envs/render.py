"""Pictures of game states for ``render_mode="rgb_array"``, drawn with numpy alone.

A frame is a ``uint8`` array of shape ``(height, width, 3)`` whose size is fixed for an env's
whole life (video encoders and ``gymnasium.utils.play`` need that); every size is a multiple of
16 pixels. Board games draw their boards from the shapes here; every other game gets
:func:`text_frame`, its spectator text drawn in a built-in 5x7 pixel font.
"""

from __future__ import annotations

import functools

import numpy as np

Color = tuple[int, int, int]

WHITE: Color = (255, 255, 255)
BLACK: Color = (20, 20, 20)
GREY: Color = (150, 150, 150)
LIGHT_GREY: Color = (215, 215, 215)
RED: Color = (214, 39, 40)
BLUE: Color = (31, 119, 180)
YELLOW: Color = (250, 200, 30)
GREEN: Color = (44, 160, 44)
ORANGE: Color = (255, 127, 14)
LIGHT_BLUE: Color = (140, 190, 230)
LIGHT_ORANGE: Color = (255, 190, 130)

TEXT_COLUMNS = 80
TEXT_ROWS = 16
GLYPH_WIDTH, GLYPH_HEIGHT = 6, 8
"""A glyph's cell in font pixels: 5x7 dots plus one column and one row of spacing."""
TEXT_SCALE = 2

# The classic 5x7 LCD font, printable ASCII (0x20 to 0x7E): five bytes a glyph, one per
# column from the left, least significant bit at the top.
_FONT_HEX = (
    "000000000000005f00000007000700147f147f14242a7f2a12231308646236495522500005030000"
    "001c2241000041221c00082a1c2a0808083e08080050300000080808080800606000002010080402"
    "3e5149453e00427f400042615149462141454b311814127f1027454545393c4a4949300171090503"
    "3649494936064949291e003636000000563600000008142241141414141441221408000201510906"
    "324979413e7e1111117e7f494949363e414141227f4141221c7f494949417f090901013e41415132"
    "7f0808087f00417f41002040413f017f081422417f404040407f0204027f7f0408107f3e4141413e"
    "7f090909063e4151215e7f09192946464949493101017f01013f4040403f1f2040201f7f2018207f"
    "63140814630304780403615149454300007f4141020408102041417f000004020102044040404040"
    "000102040020545454787f484444383844444420384444487f3854545418087e090102081454543c"
    "7f0804047800447d40002040443d00007f10284400417f40007c041804787c080404783844444438"
    "7c14141408081414187c7c080404084854545420043f4440203c4040207c1c2040201c3c4030403c"
    "44281028440c5050503c4464544c44000836410000007f000000413608000804081008"
)
_FIRST, _LAST = 0x20, 0x7E
_UNKNOWN = ord("?")


@functools.cache
def _glyphs() -> np.ndarray:
    """Boolean ``(95, GLYPH_HEIGHT, GLYPH_WIDTH)`` bitmaps of the printable ASCII characters."""
    columns = np.frombuffer(bytes.fromhex(_FONT_HEX), dtype=np.uint8).reshape(-1, 5)
    bits = (columns[:, None, :] >> np.arange(7, dtype=np.uint8)[None, :, None]) & 1
    glyphs = np.zeros((len(columns), GLYPH_HEIGHT, GLYPH_WIDTH), dtype=bool)
    glyphs[:, :7, :5] = bits.astype(bool)
    return glyphs


def blank(height: int, width: int, color: Color = WHITE) -> np.ndarray:
    """A frame of one color."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = color
    return frame


def fill_rect(frame: np.ndarray, top: int, left: int, height: int, width: int, color: Color) -> None:
    frame[max(top, 0) : top + height, max(left, 0) : left + width] = color


def _box(frame: np.ndarray, cy: float, cx: float, reach: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """The clipped square around (cy, cx) and its pixel-centre coordinates."""
    top, left = max(int(cy - reach), 0), max(int(cx - reach), 0)
    bottom = min(int(cy + reach) + 2, frame.shape[0])
    right = min(int(cx + reach) + 2, frame.shape[1])
    ys, xs = np.ogrid[top:bottom, left:right]
    return slice(top, bottom), slice(left, right), ys + 0.5, xs + 0.5


def fill_disc(frame: np.ndarray, cy: float, cx: float, radius: float, color: Color) -> None:
    rows, cols, ys, xs = _box(frame, cy, cx, radius)
    frame[rows, cols][(ys - cy) ** 2 + (xs - cx) ** 2 <= radius**2] = color


def draw_ring(
    frame: np.ndarray, cy: float, cx: float, radius: float, thickness: float, color: Color
) -> None:
    rows, cols, ys, xs = _box(frame, cy, cx, radius)
    squared = (ys - cy) ** 2 + (xs - cx) ** 2
    frame[rows, cols][(squared <= radius**2) & (squared >= (radius - thickness) ** 2)] = color


def draw_segment(
    frame: np.ndarray, start: tuple[float, float], end: tuple[float, float], thickness: float,
    color: Color,
) -> None:  # fmt: skip
    """A straight stroke from ``start`` to ``end`` ((y, x) in pixels), ``thickness`` wide."""
    (y0, x0), (y1, x1) = start, end
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    reach = max(abs(y1 - y0), abs(x1 - x0)) / 2 + thickness
    rows, cols, ys, xs = _box(frame, cy, cx, reach)
    dy, dx = y1 - y0, x1 - x0
    along = np.clip(((ys - y0) * dy + (xs - x0) * dx) / max(dy * dy + dx * dx, 1e-9), 0.0, 1.0)
    squared = (ys - (y0 + along * dy)) ** 2 + (xs - (x0 + along * dx)) ** 2
    frame[rows, cols][squared <= (thickness / 2) ** 2] = color


def draw_text(
    frame: np.ndarray, top: int, left: int, text: str, color: Color = BLACK, scale: int = TEXT_SCALE
) -> None:
    """One line of text; characters outside printable ASCII show as ``?``, the rest is clipped."""
    glyphs = _glyphs()
    cell_h, cell_w = GLYPH_HEIGHT * scale, GLYPH_WIDTH * scale
    for i, char in enumerate(text):
        x = left + i * cell_w
        if x + cell_w > frame.shape[1] or top + cell_h > frame.shape[0]:
            break
        code = ord(char)
        if not _FIRST <= code <= _LAST:
            code = _UNKNOWN
        mask = glyphs[code - _FIRST].repeat(scale, axis=0).repeat(scale, axis=1)
        frame[top : top + cell_h, x : x + cell_w][mask] = color


def wrap(text: str, columns: int) -> list[str]:
    """``text``'s lines, each cut into pieces of at most ``columns`` characters."""
    lines: list[str] = []
    for line in text.splitlines() or [""]:
        line = line.expandtabs(4).rstrip()
        lines.extend(line[i : i + columns] for i in range(0, max(len(line), 1), columns))
    return lines


def text_frame(text: str, *, columns: int = TEXT_COLUMNS, rows: int = TEXT_ROWS) -> np.ndarray:
    """``text`` drawn in a frame of ``columns`` x ``rows`` characters, wrapped and then clipped."""
    cell_h, cell_w = GLYPH_HEIGHT * TEXT_SCALE, GLYPH_WIDTH * TEXT_SCALE
    frame = blank(rows * cell_h, columns * cell_w)
    for row, line in enumerate(wrap(text, columns)[:rows]):
        draw_text(frame, row * cell_h, 0, line)
    return frame
