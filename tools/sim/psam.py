"""A virtual T-Union PSAM (the validator's secure module), APDU for APDU.

Facts: MZT, BJ-BUS, SH-AGM and TULAB docs/psamdata1 (docs/sources.md). Files and commands:
* MF: READ BINARY SFI 0x16 ``00 B0 96 00 06`` -> the 6-byte BCD terminal number;
* SELECT the T-Union PSAM application by AID ``A000000632 "MOT.CPSAM01"`` or by FID ``80 11``;
  ``00 A4 00 00 02 3F 00`` goes back to the MF;
* application file 0x17 ``00 B0 97 00 19`` -> key index (1) || issuer (8) || user (8) ||
  start (4) || expiry (4);
* INIT SAM FOR PURCHASE ``80 70 00 00 24`` + data [Le 08] -> terminal transaction serial (4) ||
  MAC1 (4), the serial incrementing after each; without Le it answers ``61 08`` and the data comes
  with GET RESPONSE ``00 C0 00 00 08`` (T=0 style);
* CREDIT SAM FOR PURCHASE ``80 72 00 00 04`` + MAC2 -> 9000 or 9302 (checks the last 8070);
* DES INIT ``80 1A P1 P2 10`` (P1 key usage: 45 lock, 44 TAC; P2 key version) + serial-low-8 ||
  issuer-8, then ``80 FA 05 00 Lc`` + IV || padded data -> 4-byte MAC.
Keys: ``keys[(usage, version)] = (algorithm, root key)``; the defaults are the lab's test keys,
3DES under version 1 and SM4 (same key bytes, see crypto.py) under version 2.
"""

from tools.sim import crypto

PSAM_AID = bytes.fromhex("A000000632") + b"MOT.CPSAM01"
USAGE_PURCHASE, USAGE_TAC, USAGE_LOCK = 0x41, 0x44, 0x45
# ATR of a T=0 card, 3B direct convention; historical bytes spell "TUPSAM".
DEFAULT_ATR = bytes.fromhex("3B6A00008131FE45") + b"TUPSAM" + b"\x00\x00"


def sw(value):
    return bytes(((value >> 8) & 0xFF, value & 0xFF))


def default_keys():
    keys = {}
    for version, alg in ((1, "3des"), (2, "sm4")):
        keys[(USAGE_PURCHASE, version)] = (alg, crypto.TEST_ROOT_KEYS["purchase"])
        keys[(USAGE_TAC, version)] = (alg, crypto.TEST_ROOT_KEYS["tac"])
        keys[(USAGE_LOCK, version)] = (alg, crypto.TEST_ROOT_KEYS["lock"])
    return keys


class VirtualPsam:
    def __init__(self, terminal_id="000000000001", key_index=1, keys=None, serial=1, atr=None):
        tid = bytes.fromhex(terminal_id) if isinstance(terminal_id, str) else bytes(terminal_id)
        if len(tid) != 6:
            raise ValueError("terminal_id must be 6 bytes")
        self.terminal_id = tid
        self.key_index = key_index
        self.keys = keys or default_keys()
        self.serial = serial
        self.atr = atr or DEFAULT_ATR
        self.issuer = bytes.fromhex("0000000000000001")
        self.user = bytes.fromhex("0000000000000001")
        self.dates = bytes.fromhex("2020010120391231")
        self.audit = []
        self.mute = 0  # commands to leave unanswered (exchange -> None)
        self.forced = []
        self.reset()

    def reset(self):
        self.in_app = False
        self.session = None  # (suite, session key, amount4) of the last 8070
        self.derived = None  # (suite, key) of the last 801A
        self.pending_response = None

    def force_sw(self, ins, status, times=1):
        self.forced.append({"ins": ins, "response": sw(status), "times": times})

    def exchange(self, apdu):
        """What the UART link gets: None when the PSAM stays silent (mute)."""
        apdu = bytes(apdu)
        if self.mute:
            self.mute -= 1
            self.audit.append({"apdu": apdu, "resp": None})
            return None
        for item in self.forced:
            if len(apdu) > 1 and item["ins"] == apdu[1]:
                item["times"] -= 1
                if item["times"] <= 0:
                    self.forced.remove(item)
                self.audit.append({"apdu": apdu, "resp": item["response"], "forced": True})
                return item["response"]
        return self.process_apdu(apdu)

    def process_apdu(self, apdu):
        apdu = bytes(apdu)
        try:
            resp = self._dispatch(apdu)
        except Exception:  # a simulator bug must still answer like a card would
            resp = sw(0x6F00)
        self.audit.append({"apdu": apdu, "resp": resp})
        return resp

    def _dispatch(self, apdu):
        if len(apdu) < 4:
            return sw(0x6700)
        cla, ins, p1, p2 = apdu[:4]
        body = apdu[4:]
        data, le = b"", None
        if len(body) == 1:
            le = body[0] or 256
        elif len(body) > 1:
            lc = body[0]
            if lc == 0 or len(body) not in (1 + lc, 2 + lc):
                return sw(0x6700)
            data = body[1 : 1 + lc]
            if len(body) == 2 + lc:
                le = body[-1] or 256
        if ins != 0xC0:
            self.pending_response = None
        if (cla, ins) == (0x00, 0xA4):
            return self._select(p1, p2, data)
        if (cla, ins) == (0x00, 0xB0):
            return self._read_binary(p1, p2, data, le)
        if (cla, ins) == (0x00, 0xC0):
            pending = self.pending_response
            self.pending_response = None
            if pending is None:
                return sw(0x6985)
            if le != len(pending):
                return sw(0x6C00 | len(pending))
            return pending + b"\x90\x00"
        if (cla, ins) == (0x00, 0x84):
            if le not in (4, 8):
                return sw(0x6700)
            return bytes(range(le)) + b"\x90\x00"
        if cla != 0x80:
            return sw(0x6E00 if ins in (0x70, 0x72, 0x1A, 0xFA) else 0x6D00)
        if not self.in_app:
            return sw(0x6985) if ins in (0x70, 0x72, 0x1A, 0xFA) else sw(0x6D00)
        if ins == 0x70:
            return self._init_purchase(p1, p2, data, le)
        if ins == 0x72:
            return self._credit(p1, p2, data)
        if ins == 0x1A:
            return self._des_init(p1, p2, data)
        if ins == 0xFA:
            return self._des_mac(p1, p2, data)
        return sw(0x6D00)

    def _select(self, p1, p2, data):
        if p1 == 0x04 and data == PSAM_AID:
            self.in_app = True
            return sw(0x9000)
        if p1 == 0x00 and data == b"\x80\x11":
            self.in_app = True
            return sw(0x9000)
        if p1 == 0x00 and data == b"\x3f\x00":
            self.in_app = False
            return sw(0x9000)
        if p1 not in (0x00, 0x04):
            return sw(0x6A86)
        return sw(0x6A82)

    def _read_binary(self, p1, p2, data, le):
        if not p1 & 0x80 or data:
            return sw(0x6A86 if not data else 0x6700)
        sfi = p1 & 0x1F
        if sfi == 0x16 and not self.in_app:
            content = self.terminal_id
        elif sfi == 0x17 and self.in_app:
            content = bytes((self.key_index,)) + self.issuer + self.user + self.dates
        else:
            return sw(0x6A82)
        rest = content[p2:]
        if le is None or le == 256:
            return rest + b"\x90\x00"
        if le > len(rest):
            return sw(0x6C00 | len(rest))
        return rest[:le] + b"\x90\x00"

    def _init_purchase(self, p1, p2, data, le):
        if p1 or p2:
            return sw(0x6A86)
        if len(data) != 0x24:
            return sw(0x6700)
        rnd, atc, amount4, txn_type = data[0:4], data[4:6], data[6:10], data[10]
        date4, time3 = data[11:15], data[15:18]
        version, alg_id = data[18], data[19]
        serial_low, issuer = data[20:28], data[28:36]
        entry = self.keys.get((USAGE_PURCHASE, version))
        if entry is None:
            return sw(0x6A88)
        s = crypto.suite(entry[0])
        if alg_id not in s.alg_ids:
            return sw(0x6A80)
        dpk = s.card_key(entry[1], issuer, serial_low)
        serial4 = self.serial.to_bytes(4, "big")
        self.serial = (self.serial + 1) & 0xFFFFFFFF
        session = s.session_key(dpk, rnd, atc, serial4)
        mac1 = crypto.mac1(s, session, amount4, txn_type, self.terminal_id, date4, time3)
        self.session = (s, session, bytes(amount4))
        out = serial4 + mac1
        if le is None:
            self.pending_response = out
            return sw(0x6108)
        if le != 8:
            return sw(0x6C08)
        return out + b"\x90\x00"

    def _credit(self, p1, p2, data):
        if p1 or p2:
            return sw(0x6A86)
        if len(data) != 4:
            return sw(0x6700)
        session = self.session
        self.session = None
        if session is None:
            return sw(0x6985)
        s, key, amount4 = session
        return sw(0x9000 if crypto.mac2(s, key, amount4) == data else 0x9302)

    def _des_init(self, p1, p2, data):
        if len(data) != 16:
            return sw(0x6700)
        entry = self.keys.get((p1, p2))
        if entry is None:
            return sw(0x6A88)
        s = crypto.suite(entry[0])
        key = s.card_key(entry[1], data[8:16], data[0:8])
        self.derived = (s, s.tac_key(key) if p1 == USAGE_TAC else key)
        return sw(0x9000)

    def _des_mac(self, p1, p2, data):
        if p1 != 0x05 or p2 != 0x00:
            return sw(0x6A86)
        if self.derived is None:
            return sw(0x6985)
        s, key = self.derived
        iv_len = s.block
        body = data[iv_len:]
        if len(data) <= iv_len or len(body) % s.block:
            return sw(0x6700)
        return s.mac(key, body, iv=data[:iv_len], padded=True) + b"\x90\x00"
