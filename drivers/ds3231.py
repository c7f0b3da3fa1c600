# Maxim DS3231 real-time clock (TCXO, battery-backed) on I2C at 0x68 (datasheet 19-5170,
# "Timekeeping Registers" and "Status Register"). Registers 00h-06h hold seconds, minutes, hours
# (bit 6: 12-hour mode, bit 5 then PM), day of week (1-7), date, month (bit 7: century) and year
# in BCD; 0Eh is Control (bit 7 EOSC: 1 stops the oscillator on battery); 0Fh is Status (bit 7
# OSF: the oscillator stopped since the flag was last cleared, so the time cannot be trusted).
# The chip keeps UTC in 24-hour mode; OSF is cleared by writing 0 to it, after a good time.
import rtcchip
from micropython import const

ADDR = const(0x68)
_REG_TIME = const(0x00)
_REG_CONTROL = const(0x0E)
_REG_STATUS = const(0x0F)
_OSF = const(0x80)
_EOSC = const(0x80)
_CENTURY = const(0x80)
_H12 = const(0x40)
_PM = const(0x20)


class DS3231:
    NAME = "ds3231"

    def __init__(self, i2c, addr=ADDR):
        self.i2c = i2c
        self.addr = addr
        self._buf = bytearray(7)

    def lost_power(self):
        """True when the oscillator stopped (OSF): the time is not to be trusted."""
        return bool(self.i2c.readfrom_mem(self.addr, _REG_STATUS, 1)[0] & _OSF)

    def read(self):
        """-> (seconds since 2000 UTC, lost_power). OSError when the chip does not answer;
        RtcChipError when its registers hold no valid time (treat as lost power)."""
        lost = self.lost_power()
        r = self.i2c.readfrom_mem(self.addr, _REG_TIME, 7)
        ss = rtcchip.unbcd(r[0], 0x7F)
        mi = rtcchip.unbcd(r[1], 0x7F)
        h = r[2]
        if h & _H12:
            hh = rtcchip.unbcd(h, 0x1F) % 12 + (12 if h & _PM else 0)
        else:
            hh = rtcchip.unbcd(h, 0x3F)
        d = rtcchip.unbcd(r[4], 0x3F)
        mo = rtcchip.unbcd(r[5], 0x1F)
        y = 2000 + rtcchip.unbcd(r[6])
        return rtcchip.to_seconds(y, mo, d, hh, mi, ss), lost

    def write(self, secs):
        """Set the chip to `secs` (24-hour mode), start its oscillator, clear OSF."""
        y, mo, d, hh, mi, ss = rtcchip.fields(secs)
        b = self._buf
        b[0] = rtcchip.bcd(ss)
        b[1] = rtcchip.bcd(mi)
        b[2] = rtcchip.bcd(hh)
        b[3] = rtcchip.weekday(secs) + 1
        b[4] = rtcchip.bcd(d)
        b[5] = rtcchip.bcd(mo)  # century bit 0: 20xx
        b[6] = rtcchip.bcd(y % 100)
        self.i2c.writeto_mem(self.addr, _REG_TIME, b)
        ctl = self.i2c.readfrom_mem(self.addr, _REG_CONTROL, 2)
        if ctl[0] & _EOSC:
            self.i2c.writeto_mem(self.addr, _REG_CONTROL, bytes((ctl[0] & ~_EOSC,)))
        self.i2c.writeto_mem(self.addr, _REG_STATUS, bytes((ctl[1] & ~_OSF,)))
