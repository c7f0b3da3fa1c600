# Blacklist lookups on a list built by the host (firmware/cardlists.py format, raw list file),
# through cardlists.CountingBlocks: blocks per lookup and time per lookup.
# argv: list path, sample path (lines "card,expected"), reps.
import gc
import sys
import time

import benchlib
import cardlists as cl

LIST = sys.argv[1]
SAMPLE = sys.argv[2]
reps = benchlib.arg(3, 5)

cards = []
want = []
with open(SAMPLE) as f:
    for line in f:
        c, w = line.split(",")
        cards.append(int(c))
        want.append(w.strip() == "1")
f = open(LIST, "rb")
dev = cl.CountingBlocks(cl.FileBlocks(f))
gc.collect()
h0 = gc.mem_alloc()
bl = cl.Blacklist(dev)
wrong = 0
worst = 0
reads = 0
for c, w in zip(cards, want):
    dev.reset()
    if bl.contains(c) != w:
        wrong += 1
    worst = max(worst, len(dev.touched))
    reads += dev.reads
gc.collect()
held = gc.mem_alloc() - h0
per = []
ratios = []
for _ in range(reps):
    b = benchlib.busy_us(20000, 1)
    t0 = time.ticks_us()
    for c in cards:
        bl.contains(c)
    t = time.ticks_diff(time.ticks_us(), t0) / len(cards)
    per.append(t)
    ratios.append(t / b)
f.close()
benchlib.emit(
    entries=bl.count,
    blocks=bl.blocks,
    lookups=len(cards),
    hits=sum(1 for w in want if w),
    wrong=wrong,
    blacklist_blocks_per_lookup=worst,
    reads_mean=reads / len(cards),
    blacklist_lookup_us=benchlib.median(per),
    lookup_runs=per,
    lookup_vs_busy=benchlib.median(ratios),
    heap_held=held,
)
