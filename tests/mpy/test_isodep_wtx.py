# mpy: heapsize=64k timeout=60
# ISO 14443-4 block protocol (drivers/isodep.py) against a scripted link, part 2: S(WTX), bounds
# on misbehaving cards, presence check and DESELECT. (The scripted link: isodep_script.py.)
import mptest
from isodep import fwt_us
from isodep_script import ATS, Script, activated, h  # noqa: F401
from linkerr import CardGone, LinkTimeout, ProtocolError

# -- WTX -----------------------------------------------------------------------------------------


def test_wtx_scales_one_wait_only():
    fwt = fwt_us(4)
    dep, link = activated(("0200", h("f20a")), ("f20a", h("029000")), ("0301", h("039000")))
    mptest.hex_eq(dep.exchange(b"\x00"), h("9000"))
    mptest.hex_eq(dep.exchange(b"\x01"), h("9000"))
    mptest.between(link.timeouts[2], 10 * fwt, 10 * fwt + 4000)
    mptest.between(link.timeouts[3], fwt, fwt + 4000)
    mptest.eq(dep.wtx, 1)


def test_wtx_power_bits_are_masked_and_capped_at_fwt_max():
    dep, link = activated(("0200", h("f2fb")), ("f23b", h("029000")), ats=h("0320e0"))
    mptest.hex_eq(dep.exchange(b"\x00"), h("9000"))
    mptest.between(link.timeouts[2], 4949000, 4949000 + 4000)  # 59 x FWT(14) capped


def test_bad_wtxm_is_protocol_error():
    for inf in ("f200", "f23c", "f2"):
        dep, _ = activated(("0200", h(inf)))
        mptest.raises(ProtocolError, dep.exchange, b"\x00")


def test_endless_wtx_is_bounded():
    steps = [("0200", h("f201"))] + [("f201", h("f201"))] * 45
    dep, _ = activated(*steps)
    e = mptest.raises(CardGone, dep.exchange, b"\x00")
    mptest.true("more time" in str(e), str(e))


# -- presence and deselect -----------------------------------------------------------------------


def test_presence_check_and_deselect():
    dep, link = activated(
        ("b2", h("a3")), ("b2", LinkTimeout), ("b2", LinkTimeout), ("c2", h("c2"))
    )
    mptest.true(dep.present())
    mptest.false(dep.present())
    mptest.true(dep.deselect())
    mptest.true(dep.deselect())  # already deselected: nothing sent
    mptest.raises(CardGone, dep.exchange, b"\x00")
    link.done()


def test_deselect_without_answer_reports_false():
    dep, link = activated(("c2", LinkTimeout), ("c2", ProtocolError))
    mptest.false(dep.deselect())
    link.done()


def test_endless_chained_answer_is_bounded():
    steps = [("0200", h("12") + bytes(60))]
    for i in range(20):
        steps.append(("a3" if i % 2 == 0 else "a2", h("13" if i % 2 == 0 else "12") + bytes(60)))
    dep, _ = activated(*steps)
    e = mptest.raises(ProtocolError, dep.exchange, b"\x00")
    mptest.true("too long" in str(e), str(e))
    steps = [("0200", h("12"))] + [
        ("a3" if i % 2 == 0 else "a2", h("13" if i % 2 == 0 else "12")) for i in range(90)
    ]
    dep, _ = activated(*steps)
    mptest.raises(ProtocolError, dep.exchange, b"\x00")  # empty blocks: bounded by count
