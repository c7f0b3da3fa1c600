"""The virtual card and PSAM: byte-true answers, status words, faults, audit and violations."""

import json
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.sim import apdu_server, crypto
from tools.sim.card import VirtualCard, load_profile, profile_names
from tools.sim.psam import PSAM_AID, VirtualPsam

H = bytes.fromhex
SELECT_EP = H("00A4040008A00000063201010500")
DT = H("20261129203000")


def sw(resp):
    return resp[-2:].hex().upper()


def select(card, aid="A000000632010105"):
    a = H(aid)
    return card.exchange(b"\x00\xa4\x04\x00" + bytes((len(a),)) + a + b"\x00")


def f15_of(fci):
    i = fci.find(b"\x9f\x0c")
    assert i > 0 and fci[i + 2] == 30
    return fci[i + 3 : i + 33]


def boot_psam(psam):
    assert psam.exchange(H("00A40000023F00")) == H("9000")
    tid = psam.exchange(H("00B0960006"))
    assert sw(tid) == "9000"
    assert sw(psam.exchange(b"\x00\xa4\x04\x00\x10" + PSAM_AID)) == "9000"
    return tid[:6]


def purchase(card, psam, amount, aid="A000000632010105", tear=None):
    """A compound purchase spoken in raw APDUs (the firmware's job; here to test the sims)."""
    tid = boot_psam(psam)
    f15 = f15_of(select(card, aid))
    init = card.exchange(H("805003020B01") + amount.to_bytes(4, "big") + tid + b"\x0f")
    if sw(init) != "9000":
        return init, None
    atc, kv, alg, rnd = init[4:6], init[9], init[10], init[11:15]
    data = rnd + atc + amount.to_bytes(4, "big") + b"\x09" + DT + bytes((kv, alg))
    data += f15[12:20] + f15[0:8]
    r = psam.exchange(b"\x80\x70\x00\x00\x24" + data + b"\x08")
    assert sw(r) == "9000", r.hex()
    serial, mac1 = r[:4], r[4:8]
    assert card.exchange(H("80DC00F030") + bytes(48)) == H("9000")
    if tear:
        tear(card)
    debit = card.exchange(H("805401000F") + serial + DT + mac1 + b"\x08")
    return debit, int.from_bytes(atc, "big")


def test_profiles_load_and_cover_the_required_kinds():
    names = profile_names()
    for name in (
        "tunion_plain",
        "social_security",
        "phone_tunion",
        "unionpay_only",
        "mifare_classic",
        "tunion_sm4",
    ):
        assert name in names
        card = VirtualCard.from_profile(name)
        assert len(card.uid) in (4, 7) and len(card.atqa) == 2
        assert bool(card.sak & 0x20) == card.iso_dep
    assert load_profile("tunion_plain")["tunion"]["algorithm"] == "3des"
    assert VirtualCard.from_profile("mifare_classic").exchange(SELECT_EP) is None


def test_select_fci_carries_9f0c_equal_to_file_15():
    card = VirtualCard.from_profile("tunion_plain")
    fci = select(card)
    assert sw(fci) == "9000" and fci[0] == 0x6F
    f15 = f15_of(fci)
    assert card.exchange(H("00B095001E")) == f15 + H("9000")
    assert f15[:8] == H("09981001FFFFFFFF") and f15[10:20] == H("03105228000000000017")


def test_phone_card_partial_name_selects_the_16_byte_aid():
    card = VirtualCard.from_profile("phone_tunion")
    fci = select(card)
    assert sw(fci) == "9000"
    assert H("8410A00000063201010510009156000014A1") in fci


def test_unionpay_only_card_has_no_tunion_app():
    card = VirtualCard.from_profile("unionpay_only")
    assert select(card) == H("6A82")
    assert card.violations == []


def test_violations_are_recorded(allow_violations):
    card = VirtualCard.from_profile("social_security")
    card.exchange(H("00A404000E325041592E5359532E444446303100"))  # PPSE
    assert "PPSE" in card.violations[-1]
    select(card, "A000000333010101")
    assert "not a transit account" in card.violations[-1]
    card.exchange(H("80A8000002830000"))  # GPO to UnionPay
    assert "sent to non-transit" in card.violations[-1]
    select(card)
    card.exchange(H("00B0960037"))
    assert "0x16" in card.violations[-1]
    card.exchange(H("00A40000023F00"))
    assert "file id" in card.violations[-1]
    assert len(card.violations) == 5
    # T-Union names other than the transit account: the EC application, the pilot wallet
    select(card, "A000000632010106")
    assert "not a transit account" in card.violations[-1]
    card.exchange(H("805C000204"))  # a balance read reaching the EC application
    assert "sent to non-transit application A000000632010106" in card.violations[-1]
    select(card, "A000000632101004")
    assert "not a transit account" in card.violations[-1]
    select(card, "A0000006320101")  # a partial name: not one of the listed names either
    assert "not a transit account" in card.violations[-1]
    assert len(card.violations) == 9
    # the listed names are allowed, the SM4-only one included (absent here: 6A82)
    select(card, "A000000632010105")
    select(card, "A000000632010107")
    assert len(card.violations) == 9


def test_status_words_for_bad_commands():
    card = VirtualCard.from_profile("tunion_plain")
    select(card)
    assert card.exchange(b"\x00") == H("6700")
    assert card.exchange(H("80EE000000")) == H("6D00")
    assert card.exchange(H("905C030204")) == H("6E00")
    assert card.exchange(H("805C090204")) == H("6A86")
    assert card.exchange(H("805C030205")) == H("6C04")
    assert card.exchange(H("805003020A0100000064000000000001")) == H("6700")
    assert card.exchange(H("805003020B02000000640000000000010F")) == H("9403")
    assert card.exchange(H("805401000F") + bytes(15) + b"\x08") == H("6985")
    assert card.exchange(H("80DC00F030") + bytes(48)) == H("6985")
    assert card.exchange(H("00B2010400")) == H("6A82")
    assert card.exchange(H("00B201F400")) == H("6A83")
    assert card.exchange(H("00B297003D")) == H("6A86")
    assert card.exchange(H("00B097003D")) == H("6C3C")
    assert card.exchange(H("00B0970000")) == card.tu["f17"] + H("9000")
    assert card.exchange(H("00A404000305")) == H("6700")
    assert card.violations == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_raises(data):
    card = VirtualCard.from_profile("tunion_plain")
    select(card)
    resp = card.process_apdu(data)
    assert isinstance(resp, bytes) and len(resp) >= 2
    assert not any("simulator error" in v for v in card.violations)
    # Garbage may well be a command the firmware must never send (a SELECT by file id): that is
    # the point of feeding it here, not a firmware violation for the autouse check to report.
    card.violations.clear()
    psam = VirtualPsam()
    assert len(psam.process_apdu(data)) >= 2


@pytest.mark.parametrize(
    "profile,aid",
    [
        ("tunion_plain", "A000000632010105"),
        ("tunion_sm4", "A000000632010107"),
        ("social_security", "A000000632010105"),
    ],
)
def test_purchase_debits_and_mac2_verifies(profile, aid):
    card, psam = VirtualCard.from_profile(profile), VirtualPsam()
    before = card.balance
    debit, atc = purchase(card, psam, 123, aid)
    assert sw(debit) == "9000" and len(debit) == 10
    assert card.balance == before - 123 and card.atc == atc + 1
    assert psam.exchange(H("8072000004") + debit[4:8]) == H("9000")
    assert card.debits[0]["counter"] == atc and card.debits[0]["tac"] == debit[:4]
    # the proof is keyed by counter + 1, MAC2 first
    proof = card.exchange(H("805A000902") + (atc + 1).to_bytes(2, "big") + b"\x08")
    assert proof == debit[4:8] + debit[:4] + H("9000")
    assert card.exchange(H("805A000902") + atc.to_bytes(2, "big") + b"\x08") == H("6985")
    rec18 = card.exchange(H("00B201C417"))
    assert rec18[5:9] == (123).to_bytes(4, "big") and rec18[9] == 9
    assert card.exchange(H("00B201F430")) == bytes(48) + H("9000")


def test_tac_matches_independent_formula():
    card, psam = VirtualCard.from_profile("tunion_plain"), VirtualPsam()
    debit, _ = purchase(card, psam, 200)
    d = card.debits[0]
    serial_low = H("03105228000000000017")[2:]
    dtk = crypto.DesSuite.card_key(crypto.TEST_ROOT_KEYS["tac"], H("09981001FFFFFFFF"), serial_low)
    key = bytes(a ^ b for a, b in zip(dtk[:8], dtk[8:]))
    data = (200).to_bytes(4, "big") + b"\x09" + psam.terminal_id + d["serial"] + DT
    assert crypto.DesSuite.mac(key, data) == debit[:4]


def test_wrong_mac1_is_9302_and_nothing_is_debited():
    card, psam = VirtualCard.from_profile("tunion_plain"), VirtualPsam()
    tid = boot_psam(psam)
    select(card)
    card.exchange(H("805003020B01") + (100).to_bytes(4, "big") + tid + b"\x0f")
    assert card.exchange(H("805401000F") + bytes(15) + b"\x08") == H("9302")
    assert card.debits == [] and card.balance == 5000


def test_insufficient_available_balance_is_9401_overdraft_counts():
    card = VirtualCard.from_profile("tunion_overdraft")  # real 150, overdraft limit 1000
    select(card)
    assert card.exchange(H("805C030204")) == (150).to_bytes(4, "big") + H("9000")
    assert card.exchange(H("805C000204")) == (1150).to_bytes(4, "big") + H("9000")
    assert card.exchange(H("805C010204")) == (1000).to_bytes(4, "big") + H("9000")
    ok = card.exchange(H("805003020B0100000400000000000001"))
    assert sw(ok) == "9000"
    assert card.exchange(H("805003020B0100001000000000000001")) == H("9401")


def test_overdraft_is_used_after_the_real_balance():
    card, psam = VirtualCard.from_profile("tunion_overdraft"), VirtualPsam()
    debit, _ = purchase(card, psam, 400)
    assert sw(debit) == "9000"
    assert card.balance == 0 and card.tu["used_overdraft"] == 250


def test_tearing_before_and_after_debit():
    card, psam = VirtualCard.from_profile("tunion_plain"), VirtualPsam()
    card.fail_before(ins=0x54)
    resp, atc = purchase(card, psam, 100)
    assert resp is None and card.debits == [] and not card.present
    card.place()
    card.fail_after(ins=0x54)
    resp, atc = purchase(card, psam, 100)
    assert resp is None and len(card.debits) == 1 and not card.present
    assert card.exchange(SELECT_EP) is None  # gone until placed again
    card.place()
    select(card)
    proof = card.exchange(H("805A000902") + (atc + 1).to_bytes(2, "big") + b"\x08")
    assert proof[4:8] == card.debits[0]["tac"]


def test_forced_answers_and_index_faults():
    card = VirtualCard.from_profile("tunion_plain")
    card.force_sw(0xA4, 0x6A81)
    assert select(card) == H("6A81")
    card.force_response(0xA4, b"\x6f\x02\x84")
    assert select(card) == b"\x6f\x02\x84"
    assert sw(select(card)) == "9000"
    card.fail_before(index=4)  # the fifth command since the card arrived
    assert card.exchange(H("805C030204"))[-2:] == H("9000")
    assert card.exchange(H("805C030204")) is None


def test_lock_with_psam_mac_and_locked_answers():
    for profile, aid, version, p1 in (
        ("tunion_plain", "A000000632010105", 1, 0),
        ("tunion_sm4", "A000000632010107", 2, 1),
    ):
        card, psam = VirtualCard.from_profile(profile), VirtualPsam()
        boot_psam(psam)
        f15 = f15_of(select(card, aid))
        assert card.exchange(b"\x84\x1e" + bytes((p1, 0, 4)) + bytes(4)) == H(
            "6985"
        )  # no challenge
        challenge = card.exchange(H("0084000004"))[:4]
        assert psam.exchange(bytes((0x80, 0x1A, 0x45, version, 0x10)) + f15[12:20] + f15[:8]) == H(
            "9000"
        )
        block = 16 if p1 else 8
        body = bytes((0x84, 0x1E, p1, 0, 4, 0x80))
        body += bytes(-len(body) % block)
        iv = challenge + bytes(block - 4)
        mac = psam.exchange(b"\x80\xfa\x05\x00" + bytes((len(iv + body),)) + iv + body)
        assert sw(mac) == "9000"
        card.exchange(H("0084000004"))
        assert card.exchange(b"\x84\x1e" + bytes((p1, 0, 4)) + mac[:4]) == H("9302")  # stale
        assert card.tu["lock"] is None
        # a good MAC over a fresh challenge locks it
        challenge = card.exchange(H("0084000004"))[:4]
        iv = challenge + bytes(block - 4)
        mac = psam.exchange(b"\x80\xfa\x05\x00" + bytes((len(iv + body),)) + iv + body)
        assert card.exchange(b"\x84\x1e" + bytes((p1, 0, 4)) + mac[:4]) == H("9000")
        assert sw(select(card, aid)) == "6283"
        assert card.exchange(H("805C030204")) == H("6A81")


def test_permanent_lock_and_locked_1a_record():
    card = VirtualCard.from_profile("tunion_plain", lock="permanent")
    assert select(card) == H("9303")
    card = VirtualCard.from_profile("tunion_plain", locked_1a=["2702"])
    select(card)
    card.exchange(H("805003020B0100000001000000000001"))
    rec = bytearray(card.record_1a(0x2702))
    assert card.exchange(H("80DC02D080") + rec) == H("9407")
    card.exchange(H("805003020B0100000001000000000001"))
    assert card.exchange(H("80DC09D080") + bytes(128)) == H("6A83")


def test_psam_serial_increments_and_get_response_path():
    psam = VirtualPsam(terminal_id="112233445566", serial=7)
    assert boot_psam(psam) == H("112233445566")
    assert psam.exchange(H("00B0970019"))[0] == 1
    data = bytes(18) + b"\x01\x00" + bytes(16)
    assert psam.exchange(b"\x80\x70\x00\x00\x24" + data) == H("6108")
    first = psam.exchange(H("00C0000008"))
    assert first[:4] == (7).to_bytes(4, "big") and sw(first) == "9000"
    second = psam.exchange(b"\x80\x70\x00\x00\x24" + data + b"\x08")
    assert second[:4] == (8).to_bytes(4, "big")
    assert psam.exchange(H("8072000004") + bytes(4)) == H("9302")
    assert psam.exchange(H("8072000004") + bytes(4)) == H("6985")
    bad = bytes(18) + b"\x09\x00" + bytes(16)
    assert psam.exchange(b"\x80\x70\x00\x00\x24" + bad + b"\x08") == H("6A88")
    psam.mute = 1
    assert psam.exchange(H("00B0970019")) is None


def test_psam_needs_its_application_selected():
    psam = VirtualPsam()
    assert psam.exchange(b"\x80\x70\x00\x00\x24" + bytes(36)) == H("6985")
    assert psam.exchange(H("00A4000002801100")) == H("9000")
    assert psam.exchange(H("00B0960006")) == H("6A82")
    assert psam.exchange(H("00A40000023F00")) == H("9000")


# -- the hub server, over a real socket ----------------------------------------------------------


class Client:
    def __init__(self, port, kind, name):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(("%s %s\n" % (kind, name)).encode())
        self.f = self.sock.makefile("rb")
        assert self.f.readline() == b"OK\n"

    def frame(self, kind, payload=b""):
        self.sock.sendall(kind + len(payload).to_bytes(2, "big") + payload)
        hdr = self.f.read(3)
        return hdr[:1], self.f.read(int.from_bytes(hdr[1:], "big"))

    def call(self, cmd, **args):
        kind, payload = self.frame(b"C", json.dumps({"cmd": cmd, "args": args}).encode())
        answer = json.loads(payload)
        assert answer["ok"], answer
        return answer["result"]


@pytest.fixture
def server():
    hub = apdu_server.build()
    port = hub.start_in_thread()
    yield port
    hub.stop()


def test_apdu_server_round_trip(server):
    ctl = Client(server, "ctl", "world")
    card = Client(server, "apdu", "card")
    psam = Client(server, "apdu", "psam")
    assert card.frame(b"A", SELECT_EP) == (b"G", b"")
    assert "tunion_plain" in ctl.call("profiles")
    ctl.call("place_card", profile="tunion_plain")
    kind, info = card.frame(b"I")
    assert kind == b"I" and json.loads(info)["iso_dep"] is True
    kind, resp = card.frame(b"A", SELECT_EP)
    assert kind == b"R" and resp[-2:] == H("9000")
    kind, atr = psam.frame(b"I")
    assert json.loads(atr)["atr"].startswith("3b")
    assert psam.frame(b"A", H("00B0960006"))[1] == H("0000000000019000")
    ctl.call("fault", when="before", ins=0xB0)
    assert card.frame(b"A", H("00B097003C")) == (b"G", b"")
    assert ctl.call("card", label="tunion_plain")["present"] is False
    ctl.call("place_card", label="tunion_plain")
    ctl.call("force", ins=0xA4, sw="6A82")
    assert card.frame(b"A", SELECT_EP)[1] == H("6A82")
    assert len(ctl.call("audit")) >= 3
    assert ctl.call("violations") == {"tunion_plain": []}
    ctl.call("place_card", profile="mifare_classic")
    assert card.frame(b"A", SELECT_EP) == (b"G", b"")
    ctl.call("remove_card")
    assert card.frame(b"I") == (b"G", b"")
    ctl.call("psam_mute", n=1)
    assert psam.frame(b"A", H("00B0960006")) == (b"G", b"")
    kind, payload = ctl.frame(b"C", json.dumps({"cmd": "card", "args": {"label": "x"}}).encode())
    assert json.loads(payload)["ok"] is False
