# The scripted ISO 14443-4 link shared by test_isodep.py and test_isodep_wtx.py: every frame
# the reader sends is checked and every answer (or failure) is chosen by the test.
import mptest
from isodep import IsoDep

ATS = bytes.fromhex("0578804000")  # FSCI 8, TA1, TB1 = FWI 4 / SFGI 0, TC1


class Script:
    """A link that expects `steps` in order: (frame sent as hex, answer bytes or exception)."""

    def __init__(self, *steps):
        self.steps = list(steps)
        self.sent = []
        self.timeouts = []

    def frame(self, data, timeout_us):
        data = bytes(data)
        self.sent.append(data)
        self.timeouts.append(timeout_us)
        if not self.steps:
            raise AssertionError("unexpected frame %s" % data.hex())
        want, answer = self.steps.pop(0)
        if want is not None and data.hex() != want:
            raise AssertionError("sent %s, expected %s" % (data.hex(), want))
        if isinstance(answer, type) and issubclass(answer, Exception):
            raise answer("scripted")
        return answer

    def done(self):
        mptest.eq(self.steps, [], "steps left over")


def h(s):
    return bytes.fromhex(s)


def activated(*steps, ats=ATS, max_frame=64):
    link = Script(("e050", ats), *steps)
    dep = IsoDep(link, max_frame)
    mptest.hex_eq(dep.activate(), ats)
    return dep, link
