# The passenger display: an SSD1306 128x64 through micropython-lib's `ssd1306` driver (a
# framebuf.FrameBuffer). Chinese text comes from the 16x16 glyphs of font_zh16, ASCII from
# framebuf's built-in 8x8 font. Each screen also keeps its text (`lines`) for logs and the bench.
import font_zh16
import framebuf
import messages

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_GLYPH = const(16)
_ASCII_W = const(8)
_GLYPH_BYTES = const(32)


def _money(label, fen):
    return "%s %s%s" % (label, messages.yuan(fen), messages.YUAN_ZH)


class Display:
    def __init__(self, oled, width=128, height=64):
        self.oled = oled
        self.width = width
        self.height = height
        self._glyph_buf = bytearray(_GLYPH_BYTES)
        self._glyph = framebuf.FrameBuffer(self._glyph_buf, _GLYPH, _GLYPH, framebuf.MONO_HLSB)
        self._font = memoryview(font_zh16.BITMAPS)
        self.lines = []
        self.missing = 0  # characters with no glyph (drawn as a box); tests keep this at 0

    def _draw_mixed(self, text, x, y):
        """Chinese at 16 px, ASCII at 8 px (vertically centred in the 16 px row)."""
        oled = self.oled
        for ch in text:
            if ord(ch) < 0x80:
                oled.text(ch, x, y + 4, 1)
                x += _ASCII_W
                continue
            i = font_zh16.CHARS.find(ch)
            if i < 0:
                self.missing += 1
                oled.rect(x + 1, y + 1, _GLYPH - 2, _GLYPH - 2, 1)
            else:
                self._glyph_buf[:] = self._font[i * _GLYPH_BYTES : (i + 1) * _GLYPH_BYTES]
                oled.blit(self._glyph, x, y)
            x += _GLYPH
        return x

    def _show(self, rows):
        """rows: (text, y, size) with size 16 (mixed) or 8 (ASCII only)."""
        oled = self.oled
        oled.fill(0)
        self.lines = []
        for text, y, size in rows:
            if size == 16:
                self._draw_mixed(text, 0, y)
            else:
                oled.text(text, 0, y, 1)
            self.lines.append(text)
        oled.show()

    def idle(self, route, clock_text, signal_text, backlog, warning=None):
        rows = [
            (messages.IDLE_ZH + " " + messages.IDLE_EN, 0, 16),
            ("%s %s" % (messages.ROUTE_ZH, route), 18, 16),
            (clock_text, 38, 8),
            ("%s q%d%s" % (signal_text, backlog, (" " + warning) if warning else ""), 50, 8),
        ]
        self._show(rows)

    def outcome(self, reason, fare=None, balance=None):
        zh, en, _ = messages.text_for(reason)
        rows = [(zh, 0, 16), (en, 18, 8)]
        if fare is not None:
            rows.append((_money(messages.FARE_ZH, fare), 28, 16))
        if balance is not None:
            rows.append((_money(messages.BALANCE_ZH, balance), 46, 16))
        self._show(rows)

    def notice(self, zh, en):
        self._show([(zh, 0, 16), (en, 18, 8)])
