# mpy: runtime=micropython32 heapsize=128k timeout=600
# The application on micropython32 (tools/build_micropython32.py): a 32-bit MicroPython v1.27
# with firmware, drivers and the simulation board frozen in, as on an ESP32, at a board's heap.
# Boot, taps, uploads and a parameter update (full bundle at boot, then a delta fetched through
# the uplink) with the whole application (tests/mpy/app_rig.py).
import gc
import sys

import app_rig
import bundle
import cardlists
import mptest
import params

FROZEN = (
    "app",
    "purchase",
    "uplink",
    "uplink_proto",
    "params",
    "bundle",
    "cardlists",
    "fare",
    "decide",
    "record",
    "psam_app",
    "tunion",
    "display",
    "feedback",
    "pn532",
    "psam_link",
    "modem",
    "atmodem",
    "ssd1306",
    "board",
    "sim_uart",
)
LOST = "3104991585000011383"
STOLEN = "3104895199900000003"


def _full(version, fare=200):
    bl = cardlists.blacklist_bytes((LOST,))
    return bundle.build(app_rig.SECRET, version, 0, app_rig.bundle_config(fare), bl)


# Built first, on an empty heap: a full bundle (its blacklist is 12 KB at least) is what a
# validator receives once at provisioning, not in service.
FULL3 = _full(3)
gc.collect()


def test_runs_on_32_bits_with_the_firmware_frozen():
    mptest.eq(sys.maxsize, 0x7FFFFFFF, "a 32-bit build: objects have an ESP32's sizes")
    for name in FROZEN:
        mod = __import__(name)
        where = getattr(mod, "__file__", "")
        mptest.true("/" not in where, "%s loaded from %s, not the frozen copy" % (name, where))
    mptest.true("/" in mptest.__file__, "test helpers load from tests/mpy")
    mptest.eq(app_rig.__file__, "app_rig.py", "the frozen harness, not its source again")


def test_boot_taps_uploads_and_a_parameter_update():
    rig = app_rig.Rig(FULL3)
    try:
        mptest.true(rig.booted, "the PSAM answered at boot")
        v = rig.v
        mptest.eq(v.params.version, 3)
        for i in range(60):
            mptest.eq(rig.tap(), "OK", "tap %d" % i)
            if i % 20 == 19:
                mptest.true(rig.upload(), "upload after tap %d: %s" % (i, v.uplink.last_error))
        s = rig.store
        mptest.eq(rig.card.debits, 60)
        mptest.eq(rig.office.held, s.last_seq, "the back office holds every record")
        mptest.eq(s.acked_seq, s.last_seq)
        # A delta adding a card to the blacklist and raising the fare, fetched through the
        # uplink and activated at once.
        adds = [cardlists.card_key(STOLEN)]
        delta = bundle.build(app_rig.SECRET, 4, 0, app_rig.bundle_config(250), None, (3, adds, []))
        rig.office.offer(4, delta, pkind=2, base=3)
        mptest.true(rig.tap() == "OK")
        mptest.true(rig.upload(), "upload with the offer: %s" % v.uplink.last_error)
        mptest.eq(v.params.version, 4, "the delta is active")
        mptest.eq(v.uplink.params_version, 4)
        mptest.true(v.params.blacklist.contains(STOLEN), "the delta's card is blacklisted")
        before = rig.card.debits
        mptest.eq(rig.tap(), "OK")
        mptest.eq(rig.card.debits, before + 1)
        mptest.true(rig.upload())
        mptest.eq(rig.office.held, rig.store.last_seq, "activation record uploaded too")
    finally:
        rig.close()


def test_a_refused_bundle_keeps_the_active_parameters():
    rig = app_rig.Rig(FULL3)
    try:
        bad = bytearray(
            bundle.build(app_rig.SECRET, 5, 0, app_rig.bundle_config(), None, (3, [], []))
        )
        bad[-1] ^= 1  # the MAC no longer verifies
        rig.office.offer(5, bytes(bad), pkind=2, base=3)
        rig.tap()
        mptest.true(rig.upload(), "the round itself succeeds")
        mptest.eq(rig.v.params.version, 3, "a forged bundle is not activated")
        mptest.eq(rig.v.uplink.params_version, 3)
        mptest.eq(rig.tap(), "OK", "and the validator still sells")
    finally:
        rig.close()


def test_the_heap_stays_flat_over_taps_and_uploads():
    rig = app_rig.Rig(FULL3)
    try:
        for _ in range(30):  # warm up: first segment, caches, the first upload's buffers
            rig.tap()
        rig.upload()
        gc.collect()
        live0 = gc.mem_alloc()
        for i in range(100):
            mptest.eq(rig.tap(), "OK")
            gc.collect()
            if i % 25 == 24:
                mptest.true(rig.upload())
        gc.collect()
        grown = gc.mem_alloc() - live0
        mptest.log("live heap %d -> %d bytes" % (live0, gc.mem_alloc()))
        mptest.true(grown < 2048, "live heap grew %d bytes over 100 taps" % grown)
    finally:
        rig.close()


def test_params_module_is_the_frozen_one_even_with_sources_near():
    # tests/mpy is on the path; a stray firmware source there would shadow the frozen module.
    mptest.eq(params.__file__, "params.py")
