# NXP PCF8563 real-time clock (battery-backed) on I2C at 0x51 (datasheet PCF8563 rev. 11, section
# 8.4 "Time and date registers"). Registers 02h-08h hold VL_seconds (bit 7 VL: the supply fell
# below the low-voltage threshold, so the time cannot be trusted), minutes, hours (24-hour),
# days, weekdays (0-6), century_months (bit 7 C: the century; this driver keeps 20xx and writes
# 0) and years, in BCD. 00h is Control_status_1 (bit 5 STOP halts the clock). VL is cleared only
# by writing the seconds register with VL = 0, which a write of the time does.
import rtcchip
from micropython import const

ADDR = const(0x51)
_REG_CS1 = const(0x00)
_REG_TIME = const(0x02)
_VL = const(0x80)
_STOP = const(0x20)


class PCF8563:
    NAME = "pcf8563"

    def __init__(self, i2c, addr=ADDR):
        self.i2c = i2c
        self.addr = addr
        self._buf = bytearray(7)

    def lost_power(self):
        return bool(self.i2c.readfrom_mem(self.addr, _REG_TIME, 1)[0] & _VL)

    def read(self):
        """-> (seconds since 2000 UTC, lost_power); OSError when the chip does not answer,
        RtcChipError when its registers hold no valid time."""
        cs1 = self.i2c.readfrom_mem(self.addr, _REG_CS1, 1)[0]
        r = self.i2c.readfrom_mem(self.addr, _REG_TIME, 7)
        lost = bool(r[0] & _VL) or bool(cs1 & _STOP)
        ss = rtcchip.unbcd(r[0], 0x7F)
        mi = rtcchip.unbcd(r[1], 0x7F)
        hh = rtcchip.unbcd(r[2], 0x3F)
        d = rtcchip.unbcd(r[3], 0x3F)
        mo = rtcchip.unbcd(r[5], 0x1F)
        y = 2000 + rtcchip.unbcd(r[6])
        return rtcchip.to_seconds(y, mo, d, hh, mi, ss), lost

    def write(self, secs):
        """Set the chip to `secs`, clear VL (seconds written with bit 7 = 0), run the clock."""
        y, mo, d, hh, mi, ss = rtcchip.fields(secs)
        b = self._buf
        b[0] = rtcchip.bcd(ss)
        b[1] = rtcchip.bcd(mi)
        b[2] = rtcchip.bcd(hh)
        b[3] = rtcchip.bcd(d)
        b[4] = rtcchip.weekday(secs)
        b[5] = rtcchip.bcd(mo)
        b[6] = rtcchip.bcd(y % 100)
        cs1 = self.i2c.readfrom_mem(self.addr, _REG_CS1, 1)[0]
        if cs1 & _STOP:
            self.i2c.writeto_mem(self.addr, _REG_CS1, bytes((cs1 & ~_STOP,)))
        self.i2c.writeto_mem(self.addr, _REG_TIME, b)
