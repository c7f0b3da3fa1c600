# A simulated UART that counts the driver's writes and reads: what a UART "transaction" stands
# for in the PN532 HSU bus-cost figures (test_pn532_transports.py, test_pn532_purchase.py).
from sim_uart import SimUART


class CountingUART(SimUART):
    calls = 0

    def write(self, data):
        self.calls += 1
        return SimUART.write(self, data)

    def readinto(self, buf, n=None):
        self.calls += 1
        return SimUART.readinto(self, buf, n)
