# mpy: heapsize=128k timeout=120 server=tools.params_compile
# (128k: compiling these modules from source takes more heap than the frozen .mpy on a board;
# the lookups themselves are measured to keep under 8 KB.)
# The fleet-scale blacklist: a million cards compiled on the host by tools/params_compile.py
# (the `server=` fixture builds it once into build/params-fixture/ with an oracle sample made
# from a plain Python set), looked up here with an ESP32-sized heap through a counting wrapper.
import gc
import os
import time

import bundle
import cardlists as cl
import mptest

KEY = b"fixture-device-secret"  # tools.params_compile.FIXTURE_KEY
DIR = mptest.repo_root() + "/build/params-fixture/"
BND = DIR + "million.bnd"
ORACLE = DIR + "million.oracle"


def _open():
    f = open(BND, "rb")
    size = os.stat(BND)[6]
    return f, size


def test_million_bundle_verifies_and_fits():
    f, size = _open()
    try:
        t0 = time.ticks_ms()
        hdr = bundle.verify_file(f, KEY, size)
        ms = time.ticks_diff(time.ticks_ms(), t0)
        off, length, _ = hdr.section(bundle.BLACKLIST)
        bl = cl.Blacklist(cl.FileBlocks(f, off, length))
        mptest.eq(bl.count, 1000000)
        per_entry = length / bl.count
        mptest.true(per_entry <= 6.0, "%.3f bytes per entry" % per_entry)
        # 16 MB module: the list takes well under half of it
        mptest.true(length < 8 * 1024 * 1024)
        mptest.log(
            "blacklist 1000000 cards: %d bytes, %.3f bytes/entry, %d blocks; "
            "bundle %d bytes, MAC check %d ms (unix port)"
            % (length, per_entry, bl.blocks, size, ms)
        )
    finally:
        f.close()


def test_million_lookups_match_the_set_oracle_within_two_blocks():
    f, size = _open()
    dev = None
    try:
        hdr = bundle._parse_header(bytearray(f.read(bundle.HEADER)), size)
        off, length, _ = hdr.section(bundle.BLACKLIST)
        dev = cl.CountingBlocks(cl.FileBlocks(f, off, length))
        gc.collect()
        before = gc.mem_free()
        bl = cl.Blacklist(dev)
        hits = misses = 0
        worst = 0
        reads = 0
        t_us = 0
        with open(ORACLE) as o:
            for line in o:
                card, want = line.split(",")
                card = int(card)
                dev.reset()
                t0 = time.ticks_us()
                got = bl.contains(card)
                t_us += time.ticks_diff(time.ticks_us(), t0)
                mptest.eq(got, want.strip() == "1", "card %d" % card)
                if got:
                    hits += 1
                else:
                    misses += 1
                worst = max(worst, len(dev.touched))
                reads += dev.reads
        n = hits + misses
        mptest.true(hits >= 3000 and misses >= 3000, "oracle sample has both kinds")
        mptest.true(worst <= 2, "a lookup touched %d blocks" % worst)
        gc.collect()
        used = before - gc.mem_free()
        mptest.true(used < 8192, "lookups keep %d bytes of heap" % used)
        mptest.log(
            "%d lookups (%d hits): at most %d blocks each, %.2f reads mean, %d us mean "
            "(unix port), heap kept %d bytes" % (n, hits, worst, reads / n, t_us // n, used)
        )
    finally:
        f.close()
