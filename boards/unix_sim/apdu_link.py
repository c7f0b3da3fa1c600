# APDU link to the simulated card or PSAM on the hub (tools/sim/apdu_server.py): the same
# transceive() a real reader or PSAM UART link offers. Frames: 'A' apdu -> 'R' answer, or 'G' when
# no answer came (card gone / not ISO 14443-4 / PSAM silent); 'I' -> 'I' JSON about the device.
import json

from linkerr import CardGone, LinkTimeout, ProtocolError
from simlink import SimLink


class ApduLink:
    def __init__(self, name="card", address=None, gone=None):
        self.name = name
        self.link = SimLink("apdu", name, address)
        # A card that stops answering has left the field; a silent PSAM timed out.
        self.gone = gone or (CardGone if name == "card" else LinkTimeout)
        self.count = 0  # transceive() calls, for APDU budgets in tests

    def transceive(self, apdu):
        self.count += 1
        self.link.send("A", apdu)
        kind, payload = self.link.recv()
        if kind == "R":
            return payload  # checked by the APDU layer (a short answer is the card's fault)
        if kind == "G":
            raise self.gone("%s: no answer" % self.name)
        raise ProtocolError("unexpected frame %r" % kind)

    def info(self):
        """dict about the card in the field (uid, atqa, sak, ats, iso_dep) or None."""
        self.link.send("I")
        kind, payload = self.link.recv()
        return json.loads(payload) if kind == "I" else None

    @property
    def iso_dep(self):
        got = self.info()
        return bool(got and got.get("iso_dep"))

    def close(self):
        self.link.close()
