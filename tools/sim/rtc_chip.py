"""DS3231 and PCF8563 real-time clock chips on the simulated I2C bus (tools/sim/buses.py).

Register maps as the datasheets give them (Maxim DS3231 19-5170 "Timekeeping Registers",
"Control Register", "Status Register"; NXP PCF8563 rev. 11 section 8 "Functional description"):
a register pointer set by the first byte of a write, auto-increment on reads and writes (wrapping
after the last register), time in BCD. What the validator cares about is modelled:

* the chip counts the world's time (``clock()``: the scenario's clock, not the host's), with a
  drift in ppm (``drift_ppm``; a DS3231 is within +-2 ppm at 0-40 C, a PCF8563's crystal +-20 ppm);
* ``power_loss()``: the battery was flat when the main power went: the oscillator stopped, so
  the time restarts at 2000-01-01 00:00:00 with the DS3231's OSF (status bit 7) or the
  PCF8563's VL (seconds bit 7) set, until the firmware writes a good time (and, on the DS3231,
  clears OSF);
* ``present = False``: no chip on the board: the address is not acknowledged (the firmware
  gets OSError(ENODEV));
* ``faults["nack"] = n``: the next n transactions are not acknowledged (a bus glitch).
"""

EPOCH_2000 = 946684800  # 2000-01-01T00:00:00Z in Unix seconds


def _bcd(v):
    return ((v // 10) << 4) | (v % 10)


def _unbcd(b):
    if (b >> 4) > 9 or (b & 0x0F) > 9:
        return 99  # not BCD: out of every field's range
    return (b >> 4) * 10 + (b & 0x0F)


def _fields(secs):
    import time

    t = time.gmtime(EPOCH_2000 + int(secs))
    return t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, (t.tm_wday + 1) % 7


def _seconds(y, mo, d, hh, mi, ss):
    import calendar

    if not (1 <= mo <= 12 and 1 <= d <= 31 and hh <= 23 and mi <= 59 and ss <= 59):
        return None
    try:
        return calendar.timegm((y, mo, d, hh, mi, ss, 0, 0, 0)) - EPOCH_2000
    except (ValueError, OverflowError):
        return None


class RtcChipSim:
    ADDRESS = 0
    NREGS = 0

    def __init__(self, clock, start=None, drift_ppm=0.0):
        """clock(): the world's time in seconds since 2000; start: the chip's time now (None:
        the world's: a chip set at the factory)."""
        self.clock = clock
        self.drift_ppm = drift_ppm
        self.present = True
        self.faults = {}
        self.regs = bytearray(self.NREGS)
        self.ptr = 0
        self.raw = None  # time registers written with no valid time: read back as written
        self.writes = 0  # time writes by the firmware
        self.transactions = 0
        self._set(clock() if start is None else start)

    # ---- the chip's counting --------------------------------------------------------------
    def _set(self, secs):
        self.raw = None
        self._base = secs
        self._at = self.clock()

    def time(self):
        """The chip's time now (what its registers read)."""
        elapsed = self.clock() - self._at
        return int(self._base + elapsed + elapsed * self.drift_ppm / 1e6)

    def set_time(self, secs):
        """Set as at the factory or by a technician: running, flag clear."""
        self._set(secs)
        self._flag(False)

    def set_drift(self, ppm):
        self._set(self.time())  # the drift so far is kept
        self.drift_ppm = ppm

    def power_loss(self):
        self._set(0)
        self._flag(True)

    # ---- I2C -------------------------------------------------------------------------------
    def _nack(self):
        if not self.present:
            return True
        n = self.faults.get("nack", 0)
        if n:
            self.faults["nack"] = n - 1
            return True
        return False

    def i2c_write(self, data):
        self.transactions += 1
        if self._nack():
            return False
        if not data:
            return True
        self.ptr = data[0] % self.NREGS
        body = data[1:]
        if not body:
            return True
        self._load()
        touched = set()
        for b in body:
            touched.add(self.ptr)
            self._write_reg(self.ptr, b)
            self.ptr = (self.ptr + 1) % self.NREGS
        self._store(touched)
        return True

    def i2c_read(self, n):
        self.transactions += 1
        if self._nack():
            return None
        self._load()
        out = bytearray()
        for _ in range(n):
            out.append(self.regs[self.ptr])
            self.ptr = (self.ptr + 1) % self.NREGS
        return bytes(out)

    def _write_reg(self, reg, b):
        self.regs[reg] = b

    def _written(self, secs):
        if secs is None:  # no valid time: the registers keep what was written, as a chip's do
            self.raw = bytes(self.regs[self.TIME.start : self.TIME.stop])
            return
        self.writes += 1
        self._set(secs)

    def state(self):
        return {
            "present": self.present,
            "time": self.time(),
            "lost": self.lost(),
            "drift_ppm": self.drift_ppm,
            "writes": self.writes,
            "transactions": self.transactions,
        }


class DS3231Sim(RtcChipSim):
    ADDRESS = 0x68
    NREGS = 0x13  # 00h-12h
    TIME = range(0, 7)

    def __init__(self, clock, start=None, drift_ppm=0.0):
        super().__init__(clock, start, drift_ppm)
        self.regs[0x0E] = 0x1C  # power-on: EOSC 0, INTCN 1, RS2 RS1 1
        self.regs[0x0F] = 0x08  # EN32kHz
        self.regs[0x11] = 25  # 25.00 C

    def lost(self):
        return bool(self.regs[0x0F] & 0x80)

    def _flag(self, on):
        self.regs[0x0F] = (self.regs[0x0F] | 0x80) if on else (self.regs[0x0F] & 0x7F)

    def _load(self):
        if self.raw is not None:
            self.regs[self.TIME.start : self.TIME.stop] = self.raw
            return
        y, mo, d, hh, mi, ss, wd = _fields(self.time())
        r = self.regs
        r[0], r[1], r[2] = _bcd(ss), _bcd(mi), _bcd(hh)
        r[3] = wd + 1
        r[4], r[5], r[6] = _bcd(d), _bcd(mo) | (0x80 if y >= 2100 else 0), _bcd(y % 100)

    def _write_reg(self, reg, b):
        if reg == 0x0F:
            # OSF can only be cleared by a write; the status bits 2-0 are read-only here.
            b = (b & 0x78) | (self.regs[0x0F] & b & 0x80) | (self.regs[0x0F] & 0x07)
        elif reg in (0x11, 0x12):
            return  # temperature: read-only
        self.regs[reg] = b

    def _store(self, touched):
        if not touched & set(self.TIME):
            return
        r = self.regs
        h = r[2]
        if h & 0x40:
            hh = _unbcd(h & 0x1F) % 12 + (12 if h & 0x20 else 0)
        else:
            hh = _unbcd(h & 0x3F)
        y = 2000 + _unbcd(r[6]) + (100 if r[5] & 0x80 else 0)
        secs = _seconds(
            y, _unbcd(r[5] & 0x1F), _unbcd(r[4] & 0x3F), hh, _unbcd(r[1]), _unbcd(r[0])
        )
        self._written(secs)


class PCF8563Sim(RtcChipSim):
    ADDRESS = 0x51
    NREGS = 0x10  # 00h-0Fh
    TIME = range(2, 9)

    def __init__(self, clock, start=None, drift_ppm=0.0):
        self._vl = False
        super().__init__(clock, start, drift_ppm)

    def lost(self):
        return self._vl or bool(self.regs[0] & 0x20)

    def _flag(self, on):
        self._vl = on

    def _load(self):
        if self.raw is not None:
            self.regs[self.TIME.start : self.TIME.stop] = self.raw
            return
        y, mo, d, hh, mi, ss, wd = _fields(self.time())
        r = self.regs
        r[2] = _bcd(ss) | (0x80 if self._vl else 0)
        r[3], r[4], r[5], r[6] = _bcd(mi), _bcd(hh), _bcd(d), wd
        r[7], r[8] = _bcd(mo), _bcd(y % 100)

    def _store(self, touched):
        if 2 in touched:
            self._vl = bool(self.regs[2] & 0x80)  # VL is cleared by writing the seconds
        if not touched & set(self.TIME):
            return
        r = self.regs
        secs = _seconds(
            2000 + _unbcd(r[8]),
            _unbcd(r[7] & 0x1F),
            _unbcd(r[5] & 0x3F),
            _unbcd(r[4] & 0x3F),
            _unbcd(r[3] & 0x7F),
            _unbcd(r[2] & 0x7F),
        )
        self._written(secs)


CHIPS = {"ds3231": DS3231Sim, "pcf8563": PCF8563Sim}


def add_rtc_commands(hub, chips):
    """ctl commands over {name: chip}: rtc_state, rtc_set, rtc_power_loss, rtc_present,
    rtc_drift, rtc_nack."""

    def state(chip):
        return chips[chip].state()

    def set_time(chip, secs):
        chips[chip].set_time(int(secs))
        return True

    def power_loss(chip):
        chips[chip].power_loss()
        return True

    def present(chip, on):
        chips[chip].present = bool(on)
        return True

    def drift(chip, ppm):
        chips[chip].set_drift(float(ppm))
        return True

    def nack(chip, n=1):
        chips[chip].faults["nack"] = int(n)
        return True

    for name, fn in (
        ("rtc_state", state),
        ("rtc_set", set_time),
        ("rtc_power_loss", power_loss),
        ("rtc_present", present),
        ("rtc_drift", drift),
        ("rtc_nack", nack),
    ):
        hub.command(name)(fn)
