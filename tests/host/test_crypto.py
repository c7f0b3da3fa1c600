"""The simulators' cryptography: PBOC MAC, diversification, purchase formulas, SM4 suite."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tools.sim import crypto
from tools.sim.crypto import DesSuite, Sm4Suite


def test_pboc_mac_matches_the_published_worked_example():
    # JC-EPURSE load-TAC example (a public JavaCard e-purse course report): with its course IV of
    # 11s it gives 96436186...; with the PBOC IV of zeros the same data give 3813AE55....
    key = bytes.fromhex("0DCAE673EF6DFC0F")
    data = bytes.fromhex("000010000000000010000200112233445520180620214822")
    assert DesSuite.mac(key, data, iv=b"\x11" * 8).hex().upper() == "96436186"
    assert DesSuite.mac(key, data).hex().upper() == "3813AE55"


def test_padding_always_adds_80():
    assert crypto.pad80(b"", 8) == b"\x80" + bytes(7)
    assert crypto.pad80(bytes(8), 8) == bytes(8) + b"\x80" + bytes(7)
    assert crypto.pad80(bytes(5), 8) == bytes(5) + b"\x80\x00\x00"
    assert len(crypto.pad80(bytes(15), 16)) == 16


def test_des_known_answer():
    # FIPS 81 / classic DES test: key 0123456789ABCDEF, "Now is t" -> 3FA40E8A984D4815.
    key = bytes.fromhex("0123456789ABCDEF")
    assert crypto.des_ecb(key, b"Now is t").hex().upper() == "3FA40E8A984D4815"


def test_sm4_known_answer():
    # GB/T 32907 example 1: key = plaintext = 0123456789ABCDEFFEDCBA9876543210.
    k = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    assert crypto.sm4_ecb(k, k).hex().upper() == "681EDF34D206965E86B3E94F536E4246"


def test_diversification_uses_factor_and_its_complement():
    mk = crypto.TEST_ROOT_KEYS["purchase"]
    f = bytes.fromhex("0998100100000017")
    dk = DesSuite.diversify(mk, f)
    assert dk[:8] == crypto.des_ecb(mk, f)
    assert dk[8:] == crypto.des_ecb(mk, bytes(b ^ 0xFF for b in f))
    two = DesSuite.card_key(mk, b"\x09\x98\x10\x01\xff\xff\xff\xff", f)
    assert two == DesSuite.diversify(DesSuite.diversify(mk, b"\x09\x98\x10\x01" + b"\xff" * 4), f)
    assert len(Sm4Suite.diversify(mk, f)) == 16


def test_retail_mac_differs_from_single_des_and_uses_both_halves():
    k = bytes(range(16))
    assert DesSuite.mac(k, b"abc") != DesSuite.mac(k[:8], b"abc")
    assert DesSuite.mac(k, b"abc") != DesSuite.mac(k[:8] + bytes(8), b"abc")


def test_mac_refuses_unpadded_block_misalignment():
    with pytest.raises(ValueError):
        DesSuite.mac(bytes(8), b"abc", padded=True)
    with pytest.raises(ValueError):
        Sm4Suite.mac(bytes(16), bytes(8), padded=True)
    with pytest.raises(ValueError):
        crypto.des_ecb(bytes(5), bytes(8))


def test_suite_lookup():
    assert crypto.suite(0) is DesSuite and crypto.suite("SM4") is Sm4Suite
    assert crypto.suite(crypto.ALG_SM4) is Sm4Suite
    with pytest.raises(KeyError):
        crypto.suite(7)


@given(st.binary(min_size=4, max_size=4), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF))
def test_mac1_and_mac2_change_with_every_input(rnd, atc, serial):
    for s in (DesSuite, Sm4Suite):
        dpk = s.card_key(crypto.TEST_ROOT_KEYS["purchase"], b"\x01" * 8, b"\x02" * 8)
        sk = s.session_key(dpk, rnd, atc.to_bytes(2, "big"), serial.to_bytes(4, "big"))
        other = s.session_key(
            dpk, rnd, ((atc + 1) & 0xFFFF).to_bytes(2, "big"), serial.to_bytes(4, "big")
        )
        assert sk != other
        a = crypto.mac1(
            s, sk, b"\x00\x00\x00\x64", 9, bytes(6), b"\x20\x26\x11\x29", b"\x12\x00\x00"
        )
        b = crypto.mac1(
            s, sk, b"\x00\x00\x00\x65", 9, bytes(6), b"\x20\x26\x11\x29", b"\x12\x00\x00"
        )
        assert len(a) == 4 and a != b
        assert crypto.mac2(s, sk, b"\x00\x00\x00\x64") != crypto.mac2(
            s, other, b"\x00\x00\x00\x64"
        )


def test_tac_key_is_halves_xor_for_des_and_whole_for_sm4():
    dtk = bytes(range(16))
    assert DesSuite.tac_key(dtk) == bytes(a ^ b for a, b in zip(dtk[:8], dtk[8:]))
    assert Sm4Suite.tac_key(dtk) == dtk
