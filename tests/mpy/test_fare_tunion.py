# mpy: heapsize=1m timeout=60
# The decision chain on a card as firmware/tunion.py parses it: whitelist, blacklist and fare
# take its fields as they come (issuer bytes, city bytes, interconnect int, 10-byte BCD number).
import bundle
import cardlists as cl
import fare
import log
import mptest
import params
import timeutil
import tunion

log.set_level(log.DEBUG, echo=False)

NOW = timeutil.to_seconds(2026, 11, 30, 12, 0) - 8 * 3600
CFG = {
    "settings": {},
    "whitelist": {"local_issuers": ["05212482"], "local_city": "2482", "issuers": ["02002900"]},
    "fares": {
        "routes": {"101": {"mode": "flat", "fare": 200}},
        "card_types": {"1": {}, "2": {"local_pct": 50, "nonlocal_pct": 100}},
    },
}


def f15(issuer_hex, number19):
    return (
        bytes.fromhex(issuer_hex + "ffffffff")
        + b"\x02\x01"
        + bytes.fromhex("0" + number19)
        + bytes.fromhex("20200101")
        + bytes.fromhex("20301231")
        + b"\x00\x00"
    )


def f17(city, interconnect, card_type):
    return bytes.fromhex("00000156" + "2400" + city + interconnect) + bytes((card_type,))


def decide(raw15, raw17, blacklist, engine, wl):
    info = tunion.parse_15(raw15)
    tunion.parse_17(raw17, info)
    code, local = wl.check(info["issuer"], info["city"], info["interconnect"])
    if code != cl.OK:
        return cl.REASONS[code]
    code = cl.check_blacklist(blacklist, info["card_no"])
    if code != cl.OK:
        return cl.REASONS[code]
    return engine.compute(info, 101, 0, NOW, local=local)


def _setup():
    _, engine, wl = params.check_config(CFG)
    data = bundle.build(b"k", 1, 0, CFG, cl.blacklist_bytes(["3104991585000011383"]))
    hdr = bundle.verify_bytes(data, b"k")
    off, length, _ = hdr.section(bundle.BLACKLIST)
    bl = cl.Blacklist(cl.FileBlocks(bundle.open_bytes(data), off, length))
    return bl, engine, wl


def test_local_card_student_fare():
    bl, engine, wl = _setup()
    res = decide(f15("05212482", "2482000000000000017"), f17("2482", "0000", 2), bl, engine, wl)
    mptest.eq((res.status, res.debit, res.local), (fare.OK, 100, True))
    req = res.request()
    mptest.true(0 <= req["fare_rule"] <= 0xFF and 0 <= req["discount"] <= 0xFFFF)


def test_interconnected_card_from_another_city():
    bl, engine, wl = _setup()
    res = decide(f15("02002900", "3104895199900000003"), f17("2900", "0001", 2), bl, engine, wl)
    mptest.eq((res.status, res.debit, res.local), (fare.OK, 200, False))
    why = decide(f15("02002900", "3104895199900000003"), f17("2900", "0000", 1), bl, engine, wl)
    mptest.eq(why, "card not interconnected")
    why = decide(f15("07550000", "3104895199900000003"), f17("0755", "0001", 1), bl, engine, wl)
    mptest.eq(why, "issuer not on the whitelist")


def test_blacklisted_card_by_its_bcd_number():
    bl, engine, wl = _setup()
    why = decide(f15("02002900", "3104991585000011383"), f17("2900", "0001", 1), bl, engine, wl)
    mptest.eq(why, "card blacklisted")
