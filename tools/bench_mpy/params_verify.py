# One fleet-signature check (firmware/p256.py: ECDSA P-256 / SHA-256 on MicroPython integers),
# timed `reps` times; the host gives a key, a digest and a signature made with `cryptography`.
# argv: pubkey hex, digest hex, signature hex, reps (0: only the set-up, for callgrind's
# baseline), check a tampered signature too (1, the default; 0 for the instruction count)
import sys
import time

import benchlib
import p256

pub = bytes.fromhex(sys.argv[1])
digest = bytes.fromhex(sys.argv[2])
sig = bytes.fromhex(sys.argv[3])
reps = benchlib.arg(4, 5)
key = p256.public_key(pub)
times = []
ok = True
for _ in range(reps):
    t0 = time.ticks_us()
    ok = p256.verify_digest(key, digest, sig) and ok
    times.append(time.ticks_diff(time.ticks_us(), t0) / 1000)
bad = bytearray(sig)
bad[7] ^= 1
refused = not p256.verify_digest(key, digest, bytes(bad)) if benchlib.arg(5, 1) else True
benchlib.emit(verify_ms=benchlib.median(times), reps=reps, ok=ok, refused_tampered=refused)
