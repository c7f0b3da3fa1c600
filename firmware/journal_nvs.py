# The journal's sequence high-water mark in the ESP32's NVS, so that numbers are never reused
# even after the littlefs partition is reformatted (docs/journal.md, "Sequence numbers").
#   j = journal.Journal("/journal", {"mark": journal_nvs.NvsMark()})
# NVS is written once per `hwm_step` (1,024) records: nothing on the tap's path most of the time.
import log

_log = log.get("journal")
_KEY = "hwm"
_ENOENT = -4354  # ESP_ERR_NVS_NOT_FOUND, raised as OSError by esp32.NVS.get_i32


class NvsMark:
    def __init__(self, namespace="journal", nvs=None):
        if nvs is None:
            import esp32  # only on a board; tests pass their own object

            nvs = esp32.NVS(namespace)
        self.nvs = nvs

    def load(self):
        try:
            v = self.nvs.get_i32(_KEY)
        except OSError as e:
            if e.args and e.args[0] == _ENOENT:
                return None
            raise
        # i32 holds the u32 mark: read it back unsigned
        return v & 0xFFFFFFFF

    def save(self, n):
        if n > 0x7FFFFFFF:
            n -= 0x100000000  # store the u32 mark in the i32 slot
        self.nvs.set_i32(_KEY, n)
        self.nvs.commit()
