"""Card and PSAM cryptography for the simulators (the firmware holds no keys).

3DES follows the PBOC electronic-purse rules (cnblogs ED/EP 5, CSDN TAC and MAC articles, TULAB
rule1/rule2; docs/sources.md):
two-level key diversification, an 8-byte session key, MAC1/MAC2 over the purchase data, the TAC
with the XOR of the diversified TAC key's halves, and the PBOC MAC (IV, 80-padding, DES-CBC, left
4 bytes). A 16-byte key MACs as ANSI X9.19 (DES-CBC with the left half, 3DES on the last block).

SM4: the SM4 session-key input, the MAC block size and the algorithm id are UNCONFIRMED (no public
source found; docs/sources.md). Every SM4 choice is made in `Sm4Suite` below and nowhere
else; the assumptions are:
  * algorithm id 0x04 (by analogy with PBOC 3.0 issuer data where 04 means SM);
  * diversification DK = SM4_ECB(MK, F || ~F) for an 8-byte factor F;
  * session key = SM4_ECB(DPK, random(4) || ATC(2) || serial[2:4] || 80 00 00 00 00 00 00 00);
  * MAC = SM4-CBC over 80-padded 16-byte blocks from the given IV (16 zero bytes by default),
    left 4 bytes of the last block;
  * TAC key = the diversified 16-byte TAC key itself (no halves XOR).
Because the card simulator and the PSAM simulator both use this suite, the firmware (which only
forwards bytes) is exercised exactly as it would be with real SM4 cards.
"""

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

ALG_3DES = 0x00
ALG_SM4 = 0x04  # assumption, see the module docstring

# Test root keys published by the T-Union lab (TULAB docs/cardprofile/README.rst).
TEST_ROOT_KEYS = {
    "purchase": bytes.fromhex("25EC312F61B9687CE3316101E60DB60B"),
    "tac": bytes.fromhex("75944675E96E549E52157A23E361BF98"),
    "lock": bytes.fromhex("515E61C2469BB5F14A809E51252F9B97"),
}


def _ecb(algorithm, data):
    enc = Cipher(algorithm, modes.ECB()).encryptor()
    return enc.update(bytes(data)) + enc.finalize()


def des_ecb(key, block):
    """DES (8-byte key) or 2-key/3-key 3DES (16/24-byte key) ECB encryption."""
    if len(key) not in (8, 16, 24):
        raise ValueError("DES key must be 8, 16 or 24 bytes")
    return _ecb(TripleDES(_k24(key)), block)


def _k24(key):
    # Expand to 3-key form: the library deprecates 8- and 16-byte TripleDES keys.
    key = bytes(key)
    if len(key) == 8:
        return key * 3
    if len(key) == 16:
        return key + key[:8]
    return key


def sm4_ecb(key, block):
    return _ecb(algorithms.SM4(bytes(key)), block)


def xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def pad80(data, block):
    """ISO 9797-1 method 2: append 80, then zeros to a whole block (always adds a byte)."""
    data = bytes(data) + b"\x80"
    return data + b"\x00" * (-len(data) % block)


class DesSuite:
    alg_id = ALG_3DES
    alg_ids = (ALG_3DES,)  # identifiers a card may name for this suite in its INIT answer
    block = 8
    name = "3des"

    @staticmethod
    def diversify(master, factor):
        """PBOC: left = 3DES(MK, F), right = 3DES(MK, ~F)."""
        factor = bytes(factor)
        inverted = bytes(b ^ 0xFF for b in factor)
        return des_ecb(master, factor) + des_ecb(master, inverted)

    @classmethod
    def card_key(cls, root, issuer8, serial_low8):
        """Two levels: the issuer identification first, then the card serial's low 8 bytes."""
        return cls.diversify(cls.diversify(root, issuer8), serial_low8)

    @staticmethod
    def session_key(dpk, random4, atc2, serial4):
        return des_ecb(dpk, bytes(random4) + bytes(atc2) + bytes(serial4)[2:4])

    @staticmethod
    def mac(key, data, iv=None, padded=False):
        """PBOC MAC: 8-byte key = DES-CBC; 16-byte key = X9.19 retail MAC. Left 4 bytes."""
        key = bytes(key)
        msg = bytes(data) if padded else pad80(data, 8)
        if len(msg) % 8:
            raise ValueError("MAC data is not a whole number of blocks")
        state = bytes(iv) if iv is not None else bytes(8)
        single = key[:8]
        for i in range(0, len(msg), 8):
            state = des_ecb(single, xor(state, msg[i : i + 8]))
        if len(key) > 8:
            # X9.19: the chain ran with K_L; finish with decrypt K_R, encrypt K_L.
            dec = Cipher(TripleDES(_k24(key[8:16])), modes.ECB()).decryptor()
            state = des_ecb(single, dec.update(state) + dec.finalize())
        return state[:4]

    @staticmethod
    def tac_key(dtk):
        return xor(dtk[:8], dtk[8:16])


class Sm4Suite:
    """Every SM4 assumption lives here (see the module docstring)."""

    alg_id = ALG_SM4
    alg_ids = (ALG_SM4, 0x01)  # 04 and 01 both assumed (card variants, docs/card-simulator.md)
    block = 16
    name = "sm4"

    @staticmethod
    def diversify(master, factor):
        factor = bytes(factor)
        return sm4_ecb(master, factor + bytes(b ^ 0xFF for b in factor))

    @classmethod
    def card_key(cls, root, issuer8, serial_low8):
        return cls.diversify(cls.diversify(root, issuer8), serial_low8)

    @staticmethod
    def session_key(dpk, random4, atc2, serial4):
        block = bytes(random4) + bytes(atc2) + bytes(serial4)[2:4] + b"\x80" + bytes(7)
        return sm4_ecb(dpk, block)

    @staticmethod
    def mac(key, data, iv=None, padded=False):
        msg = bytes(data) if padded else pad80(data, 16)
        if len(msg) % 16:
            raise ValueError("MAC data is not a whole number of blocks")
        state = bytes(iv) if iv is not None else bytes(16)
        if len(state) < 16:
            state = state + bytes(16 - len(state))
        for i in range(0, len(msg), 16):
            state = sm4_ecb(key, xor(state, msg[i : i + 16]))
        return state[:4]

    @staticmethod
    def tac_key(dtk):
        return bytes(dtk)


SUITES = {ALG_3DES: DesSuite, ALG_SM4: Sm4Suite, "3des": DesSuite, "sm4": Sm4Suite}


def suite(alg):
    """Suite by algorithm id (0x00/0x04) or name ('3des'/'sm4'); KeyError when unknown."""
    return SUITES[alg.lower() if isinstance(alg, str) else alg]


# The purchase formulas, shared by the card and the PSAM simulators.


def mac1(s, session, amount4, txn_type, terminal6, date4, time3):
    return s.mac(session, bytes(amount4) + bytes((txn_type,)) + terminal6 + date4 + time3)


def mac2(s, session, amount4):
    return s.mac(session, amount4)


def tac(s, dtk, amount4, txn_type, terminal6, serial4, date4, time3):
    data = bytes(amount4) + bytes((txn_type,)) + terminal6 + serial4 + date4 + time3
    return s.mac(s.tac_key(dtk), data)


def lock_mac(s, dlk, challenge4, command_header):
    """APPLICATION BLOCK MAC: IV = challenge || zeros, data = the 5-byte command header."""
    return s.mac(dlk, command_header, iv=bytes(challenge4) + bytes(s.block - 4))
