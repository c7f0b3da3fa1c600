# mpy: runtime=micropython32 heapsize=128k timeout=600 server=tools.bench_app_world
# The whole application with the simulation board's real drivers on micropython32 (the firmware
# frozen, 32-bit objects): PN532 on I2C with a virtual T-Union card, the PSAM link, the SIM7600
# modem driver under the uplink to a real collector, the display and the feedback pins
# (tools/bench_app_world.py). It boots, sells, uploads every record and takes a parameter delta
# the collector publishes, within a heap of an ESP32's order.
import gc
import time

import app_rig
import mptest

STOLEN = "3104895199900000003"


def test_boots_sells_uploads_and_activates_a_delta_with_real_drivers():
    world = app_rig.World()
    rig = app_rig.Rig(
        world.info["bundle"],
        img="/tmp/runtime32-drivers-%d" % (time.ticks_us() & 0xFFFFFF),
        drivers=True,
    )
    del world
    gc.collect()
    try:
        v = rig.v
        mptest.true(rig.booted, "the PSAM answered at boot over its UART")
        mptest.eq(v.params.version, 3)
        for i in range(24):
            if i == 12:
                rig.world.call("bench_publish_delta", version=4, base=3, cards=[STOLEN])
            mptest.eq(rig.tap(), "OK", "tap %d" % i)
            rig.between_taps()
            if i % 8 == 7:
                rig.before_upload()
                mptest.true(rig.upload(), "upload after tap %d: %s" % (i, v.uplink.last_error))
        rig.before_upload()
        mptest.true(rig.upload(), v.uplink.last_error)
        s = rig.store
        mptest.eq(s.acked_seq, s.last_seq, "the collector acknowledged every record")
        mptest.eq(v.params.version, 4, "the delta came through the modem and is active")
        mptest.true(v.params.blacklist.contains(STOLEN))
        mptest.eq(rig.parts.feedback.played[-1], "ok", "the rider heard the accepted tone")
        mptest.eq(rig.world.call("bench_violations"), [], "only the transit account addressed")
        gc.collect()
        mptest.log(
            "live heap %d B, the simulated buses keep %d B" % (gc.mem_alloc(), app_rig.SIM_HELD[0])
        )
    finally:
        rig.close()
