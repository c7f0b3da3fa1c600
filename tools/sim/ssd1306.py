"""An SSD1306 OLED controller on the simulated I2C bus: command decoding, GDDRAM, and PNG frames.

It understands what micropython-lib's ssd1306 driver sends: control byte 0x80/0x00 followed by
commands (with their argument bytes), or 0x40 followed by display data written in horizontal
addressing mode inside the column/page window. Each data burst that ends a frame (the window's
last byte) counts as one shown frame; `snapshot()` renders the panel as a PNG with Pillow.
"""

from pathlib import Path

# command -> number of argument bytes that follow it
ARGS = {
    0x20: 1, 0x21: 2, 0x22: 2, 0x81: 1, 0xA8: 1, 0xD3: 1, 0xD5: 1, 0xD9: 1, 0xDA: 1, 0xDB: 1,
    0x8D: 1,
}  # fmt: skip


class SSD1306:
    def __init__(self, width=128, height=64):
        self.width = width
        self.pages = height // 8
        self.height = height
        self.ram = bytearray(width * self.pages)
        self.on = False
        self.inverted = False
        self.contrast = 0x7F
        self.col_start, self.col_end = 0, width - 1
        self.page_start, self.page_end = 0, self.pages - 1
        self.col, self.page = 0, 0
        self.frames = 0
        self.commands = 0
        self._pending = None  # (command, args collected, args needed)

    # I2C device interface (tools/sim/buses.py)
    def i2c_write(self, data):
        if not data:
            return True
        control, body = data[0], data[1:]
        if control & 0x40:
            self._data(body)
        else:
            for byte in body:
                self._command_byte(byte)
        return True

    def i2c_read(self, n):
        return bytes(n)  # status reads are not used by the driver

    def _command_byte(self, byte):
        self.commands += 1
        if self._pending:
            cmd, args, need = self._pending
            args.append(byte)
            if len(args) == need:
                self._pending = None
                self._apply(cmd, args)
            return
        need = ARGS.get(byte, 0)
        if need:
            self._pending = (byte, [], need)
        else:
            self._apply(byte, [])

    def _apply(self, cmd, args):
        if cmd == 0xAE:
            self.on = False
        elif cmd == 0xAF:
            self.on = True
        elif cmd == 0xA6:
            self.inverted = False
        elif cmd == 0xA7:
            self.inverted = True
        elif cmd == 0x81:
            self.contrast = args[0]
        elif cmd == 0x21:
            self.col_start, self.col_end = args[0] % self.width, args[1] % self.width
            self.col = self.col_start
        elif cmd == 0x22:
            self.page_start, self.page_end = args[0] % self.pages, args[1] % self.pages
            self.page = self.page_start

    def _data(self, body):
        for byte in body:
            self.ram[self.page * self.width + self.col] = byte
            if self.col < self.col_end:
                self.col += 1
                continue
            self.col = self.col_start
            if self.page < self.page_end:
                self.page += 1
            else:
                self.page = self.page_start
                self.frames += 1

    def pixel(self, x, y):
        on = bool(self.ram[(y // 8) * self.width + x] >> (y % 8) & 1)
        return on != self.inverted

    def ascii_art(self):
        return "\n".join(
            "".join("#" if self.pixel(x, y) else "." for x in range(self.width))
            for y in range(self.height)
        )

    def snapshot(self, path, scale=3):
        from PIL import Image

        img = Image.new("RGB", (self.width, self.height))
        lit, dark = (120, 200, 255), (8, 12, 20)
        img.putdata(
            [
                lit if self.on and self.pixel(x, y) else dark
                for y in range(self.height)
                for x in range(self.width)
            ]
        )
        img = img.resize((self.width * scale, self.height * scale), Image.NEAREST)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        return str(path)
