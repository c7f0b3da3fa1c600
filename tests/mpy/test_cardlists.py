# mpy: heapsize=4m timeout=120
# Whitelist and blacklist under MicroPython: seeded lists against a plain set as the oracle,
# blocks touched per lookup, overlays (deltas), damaged lists and bad card numbers.
# Building lists is the host's job; doing it here needs a big heap (64-bit ints fragment it).
# Lookups on the million-card list run with an ESP32-sized heap in test_cardlists_million.py.
import cardlists as cl
import log
import mptest

log.set_level(log.DEBUG, echo=False)


class MemBlocks:
    """bytes as a read-only block device, so lookups can be counted without a file system."""

    def __init__(self, data):
        self.data = data

    def readblocks(self, num, buf, offset=0):
        a = num * cl.BLOCK + offset
        if a + len(buf) > len(self.data):
            raise OSError(5)
        buf[:] = self.data[a : a + len(buf)]


def seeded_cards(n, seed):
    # A counter-based generator both runtimes reproduce: mix() of seed+i, folded into 19 digits.
    out = [0] * n
    for i in range(n):
        out[i] = cl.mix(seed * 1000003 + i) % 10**19
    return out


def _check_against_set(n, seed, probes):
    cards = seeded_cards(n, seed)
    oracle = set(cards)
    data = cl.blacklist_bytes(cards)
    dev = cl.CountingBlocks(MemBlocks(data))
    bl = cl.Blacklist(dev)
    mptest.eq(bl.count, len(oracle))
    worst = 0
    for c in cards:
        dev.reset()
        mptest.true(bl.contains(c), "listed card %d missed (n=%d)" % (c, n))
        worst = max(worst, len(dev.touched))
    # misses: random numbers and neighbours of listed cards (a near miss must stay a miss)
    extra = seeded_cards(probes, seed + 7)
    for c in extra + [(x + 1) % 10**19 for x in cards[:probes]]:
        dev.reset()
        mptest.eq(bl.contains(c), c in oracle, "card %d" % c)
        worst = max(worst, len(dev.touched))
    return worst, len(data)


def test_blacklist_matches_set_for_many_sizes():
    for n, seed in ((0, 1), (1, 2), (2, 3), (17, 4), (300, 5), (2500, 6)):
        worst, size = _check_against_set(n, seed, 200)
        mptest.true(worst <= 2, "n=%d touched %d blocks" % (n, worst))
    mptest.log("n=2500: %d bytes" % size)


def test_empty_list_holds_nothing():
    bl = cl.Blacklist(MemBlocks(cl.empty_blacklist_bytes()))
    mptest.eq(bl.count, 0)
    for c in seeded_cards(50, 11):
        mptest.false(bl.contains(c))


def test_card_number_forms_agree():
    card = "3104991585000011383"
    data = cl.blacklist_bytes([card])
    bl = cl.Blacklist(MemBlocks(data))
    mptest.true(bl.contains(card))
    mptest.true(bl.contains(3104991585000011383))
    mptest.true(bl.contains(bytes.fromhex("0" + card)))  # 10-byte BCD with the pad nibble
    mptest.false(bl.contains("3104991585000011384"))


def test_bad_card_numbers_are_refused_with_a_reason():
    bl = cl.Blacklist(MemBlocks(cl.blacklist_bytes([5])))
    for bad in ("12ab", "", bytes(9), b"\xff" * 10, 10**19, -1):
        mptest.raises(cl.ListError, bl.contains, bad)
    log.clear()
    mptest.eq(cl.check_blacklist(bl, b"\xff" * 10), cl.BAD_CARD)
    mptest.true(log.find("card refused"), "a bad card number is logged")
    mptest.eq(cl.check_blacklist(bl, "0000000000000000005"), cl.BLACKLISTED)
    mptest.eq(cl.check_blacklist(bl, "0000000000000000006"), cl.OK)
    mptest.eq(cl.check_blacklist(None, "0000000000000000006"), cl.OK)


def test_damaged_list_is_refused_or_reported_not_crashing():
    cards = seeded_cards(2000, 21)
    data = bytearray(cl.blacklist_bytes(cards))
    bad = bytearray(data)
    bad[0] ^= 1
    mptest.raises(cl.ListError, cl.Blacklist, MemBlocks(bytes(bad)))
    bad = bytearray(data)
    bad[4] = 40  # k + r no longer 64
    mptest.raises(cl.ListError, cl.Blacklist, MemBlocks(bytes(bad)))
    # a data block whose head no longer covers the bucket it is asked for
    bad = bytearray(data)
    n_index = 1
    for blk in range(1 + n_index, len(bad) // cl.BLOCK):
        bad[blk * cl.BLOCK : blk * cl.BLOCK + 4] = b"\xff\xff\xff\xff"
    bl = cl.Blacklist(MemBlocks(bytes(bad)))
    log.clear()
    mptest.eq(cl.check_blacklist(bl, cards[0]), cl.LIST_UNAVAILABLE)
    mptest.true(log.find("blacklist lookup failed"))
    # a list cut short: the read fails, the check reports it
    bl = cl.Blacklist(MemBlocks(bytes(data[: 2 * cl.BLOCK])))
    mptest.eq(cl.check_blacklist(bl, cards[0]), cl.LIST_UNAVAILABLE)


def test_random_damage_to_data_blocks_never_crashes():
    # Flash rot or a bad copy: every lookup answers True/False or raises ListError, which
    # check_blacklist turns into LIST_UNAVAILABLE; nothing else escapes.
    cards = seeded_cards(1500, 51)
    good = cl.blacklist_bytes(cards)
    rng = 12345
    outcomes = {"answer": 0, "error": 0}
    for trial in range(60):
        data = bytearray(good)
        for _ in range(1 + trial % 7):
            rng = cl.mix(rng)
            pos = 2 * cl.BLOCK + rng % (len(data) - 2 * cl.BLOCK)
            data[pos] = (rng >> 20) & 0xFF
            if trial % 5 == 0:  # sometimes wreck a data block head
                blk = 2 + (rng >> 40) % (len(data) // cl.BLOCK - 2)
                data[blk * cl.BLOCK + 8] = 0xFF
        bl = cl.Blacklist(MemBlocks(bytes(data)))
        for c in cards[:40] + seeded_cards(20, trial):
            try:
                bl.contains(c)
                outcomes["answer"] += 1
            except cl.ListError:
                outcomes["error"] += 1
            mptest.true(cl.check_blacklist(bl, c) in (cl.OK, cl.BLACKLISTED, cl.LIST_UNAVAILABLE))
    mptest.true(outcomes["error"] > 0, repr(outcomes))


class _MemFile:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def seek(self, p):
        self.pos = p

    def readinto(self, buf):
        chunk = self.data[self.pos : self.pos + len(buf)]
        buf[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def test_overlay_adds_and_removes_over_the_base():
    base = seeded_cards(500, 31)
    adds = seeded_cards(40, 32)
    removes = base[:30]
    ov_bytes = cl.merge_overlay(b"", adds, removes)
    ov = cl.Overlay(_MemFile(ov_bytes), len(ov_bytes))
    dev = cl.CountingBlocks(MemBlocks(cl.blacklist_bytes(base)))
    bl = cl.Blacklist(dev, ov)
    oracle = (set(base) - set(removes)) | set(adds)
    for c in base + adds + seeded_cards(100, 33):
        mptest.eq(bl.contains(c), c in oracle, "card %d" % c)
    # a later delta re-adds a removed card and removes an added one
    ov2 = cl.merge_overlay(ov_bytes, [removes[0]], [adds[0]])
    bl.overlay = cl.Overlay(_MemFile(ov2), len(ov2))
    mptest.true(bl.contains(removes[0]))
    mptest.false(bl.contains(adds[0]))


def test_overlay_limit_and_bad_overlay():
    many = seeded_cards(cl.OVERLAY_MAX + 1, 41)
    mptest.raises(cl.ListError, cl.merge_overlay, b"", many, [])
    mptest.raises(cl.ListError, cl.Overlay, _MemFile(b"x" * 10), 10)


WL = {"local_issuers": ["05212482"], "local_city": "2482", "issuers": ["02002900", "01011000"]}


def test_whitelist_local_interconnected_and_refused():
    wl = cl.Whitelist(WL)
    local = bytes.fromhex("05212482ffffffff")
    sh = bytes.fromhex("02002900ffffffff")
    other = bytes.fromhex("07550000ffffffff")
    mptest.eq(wl.check(local, b"\x24\x82", b"\x00\x00"), (cl.OK, True))
    mptest.eq(wl.check(sh, b"\x29\x00", b"\x00\x01"), (cl.OK, False))
    mptest.eq(wl.check(sh, b"\x29\x00", 0x0001), (cl.OK, False), "tunion.parse_17 gives an int")
    mptest.eq(wl.check(sh, b"\x29\x00", 0), (cl.NOT_INTERCONNECTED, False))
    mptest.eq(wl.check(sh, b"\x29\x00", b"\x00\x00"), (cl.NOT_INTERCONNECTED, False))
    mptest.eq(wl.check(other, b"\x07\x55", b"\x00\x01"), (cl.NOT_WHITELISTED, False))
    # a whitelisted issuer's card issued for this city counts as local
    mptest.eq(wl.check(sh, b"\x24\x82", b"\x00\x00"), (cl.OK, True))
    log.clear()
    mptest.eq(wl.check(b"\x05\x21", b"\x24\x82", b"\x00\x01"), (cl.BAD_CARD, False))
    mptest.eq(wl.check(local, b"\x24", b"\x00\x01"), (cl.BAD_CARD, False))
    mptest.eq(wl.check(None, b"\x24\x82", b"\x00\x01"), (cl.BAD_CARD, False))
    mptest.true(log.find("card refused"))


def test_whitelist_check_of_a_card_read_allocates_nothing():
    import gc

    wl = cl.Whitelist(WL)
    local = bytes.fromhex("05212482ffffffff")
    sh = bytes.fromhex("01011000ffffffff")
    city = b"\x29\x00"
    wl.check(sh, city, 1)  # warm-up
    for issuer, flag, want in ((local, 0, (cl.OK, True)), (sh, 1, (cl.OK, False))):
        gc.collect()
        a0 = gc.mem_alloc()
        gc.disable()
        try:
            got = wl.check(issuer, city, flag)
            used = gc.mem_alloc() - a0
        finally:
            gc.enable()
        mptest.eq(got, want)
        mptest.eq(used, 0, "check() of tunion.py's fields allocated %d bytes" % used)
    # the same answers as the field-by-field path for every combination
    for issuer in (local, sh, bytes.fromhex("07550000ffffffff"), bytes.fromhex("02002900ff")):
        for city in (b"\x24\x82", b"\x29\x00"):
            for flag in (0, 1, 2):
                fast = wl.check(issuer, city, flag)
                slow = wl._check_any(issuer, city, bytes((0, flag)))
                mptest.eq(fast, slow, "%s %s %d" % (issuer.hex(), city.hex(), flag))


def test_whitelist_of_a_thousand_issuers_against_a_set():
    codes = ["%08x" % (cl.mix(i) & 0xFFFFFFFF) for i in range(1000)]
    cfg = {"local_issuers": ["05212482"], "local_city": "2482", "issuers": codes}
    wl = cl.Whitelist(cfg)
    oracle = set(codes)
    mptest.eq(wl.count, len(oracle))
    for i in range(1000, 1400):
        probe = "%08x" % (cl.mix(i) & 0xFFFFFFFF)
        mptest.eq(wl.listed(probe), probe in oracle)
    for c in codes:
        mptest.true(wl.listed(c))
        got = wl.check(bytes.fromhex(c + "ffffffff"), b"\x99\x99", 1)
        mptest.eq(got, (cl.OK, False) if c != "05212482" else (cl.OK, True))


def test_whitelist_config_errors():
    mptest.raises(cl.ListError, cl.Whitelist, {"local_city": "2482"})
    mptest.raises(cl.ListError, cl.Whitelist, {"local_issuers": [], "local_city": "2482"})
    bad = dict(WL)
    bad["issuers"] = ["0200290"]
    mptest.raises(cl.ListError, cl.Whitelist, bad)
    bad["issuers"] = ["zz002900"]
    mptest.raises(cl.ListError, cl.Whitelist, bad)
